//! Asking a running PostgreSQL server over its Unix socket, with `psql` run as the engine's OS user
//! (peer authentication, as postgresql-common sets up): the settings a new cluster must share, the
//! installed extensions, the size, and a write that proves the server accepts writes. The health
//! check itself is the shared probe's (`super::health`).

use std::path::PathBuf;

use crate::command::ToolCommand;

/// Where a server listens and who may ask it.
#[derive(Debug, Clone)]
pub struct ServerAt {
    /// The engine's OS user (peer authentication over the socket).
    pub os_user: String,
    /// The socket folder (`/var/run/postgresql`).
    pub socket_dir: String,
    pub port: u16,
    /// psql of the newest major installed: it talks to older servers too.
    pub psql: PathBuf,
}

/// The settings of the old cluster the new one must be initialised with (pg_upgrade refuses a
/// new cluster whose encoding, locale or checksum setting differs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldSettings {
    pub collate: String,
    pub ctype: String,
    pub encoding: String,
    pub data_checksums: bool,
    pub version_num: u32,
    pub data_dir: PathBuf,
}

/// A libpq connection string naming `db`, so a database called `a=b` is not read as options.
fn conninfo(db: &str) -> String {
    format!("dbname='{}'", db.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl ServerAt {
    /// The rows `sql` returns in `db`, fields split on `|`.
    pub async fn query(&self, db: &str, sql: &str) -> Result<Vec<Vec<String>>, String> {
        let cmd = ToolCommand::new(&self.psql)
            .arg(format!("--host={}", self.socket_dir))
            .arg(format!("--port={}", self.port))
            .arg(format!("--dbname={}", conninfo(db)))
            .args(["-XAtq", "--no-password", "--field-separator=|", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .run_as(&self.os_user)
            .map_err(|e| e.to_string())?;
        let out = cmd.output().await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out);
        Ok(text.lines().filter(|l| !l.is_empty()).map(|l| l.split('|').map(str::to_owned).collect()).collect())
    }

    async fn one_row(&self, db: &str, sql: &str) -> Result<Vec<String>, String> {
        let rows = self.query(db, sql).await?;
        rows.into_iter().next().ok_or_else(|| format!("{sql:?} returned no row"))
    }

    pub async fn settings(&self) -> Result<OldSettings, String> {
        let row = self
            .one_row(
                "template1",
                "SELECT datcollate, datctype, pg_encoding_to_char(encoding), current_setting('data_checksums'), \
                 current_setting('server_version_num'), current_setting('data_directory') FROM pg_database WHERE \
                 datname = 'template1'",
            )
            .await?;
        let [collate, ctype, encoding, checksums, version, data_dir] =
            <[String; 6]>::try_from(row).map_err(|r| format!("unexpected settings row {r:?}"))?;
        Ok(OldSettings {
            collate,
            ctype,
            encoding,
            data_checksums: checksums == "on",
            version_num: version.parse().map_err(|_| format!("server_version_num {version:?}"))?,
            data_dir: PathBuf::from(data_dir),
        })
    }

    /// The databases that accept connections (template0 does not and holds no extension of its own).
    pub async fn databases(&self) -> Result<Vec<String>, String> {
        let rows = self.query("postgres", "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1").await?;
        Ok(rows.into_iter().filter_map(|r| r.into_iter().next()).collect())
    }

    /// Every extension installed in any database, each once (plpgsql included).
    pub async fn extensions(&self) -> Result<Vec<String>, String> {
        let mut all = Vec::new();
        for db in self.databases().await? {
            for row in self.query(&db, "SELECT extname FROM pg_extension ORDER BY 1").await? {
                if let Some(name) = row.into_iter().next()
                    && !all.contains(&name)
                {
                    all.push(name);
                }
            }
        }
        all.sort();
        Ok(all)
    }

    /// The size of all databases, as the server counts it (no walk of the data folder as root).
    pub async fn size_bytes(&self) -> Result<u64, String> {
        let row = self.one_row("postgres", "SELECT sum(pg_database_size(oid))::bigint FROM pg_database").await?;
        row.first().and_then(|v| v.parse().ok()).ok_or_else(|| format!("database size {row:?}"))
    }

    /// A write the server accepts: `txid_current()` assigns a transaction id, so it succeeds only on
    /// a primary that takes writes, and it touches no customer table.
    pub async fn accepts_write(&self) -> Result<(), String> {
        self.one_row("postgres", "SELECT txid_current()").await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn conninfo_quotes_names_that_look_like_options() {
        assert_eq!(super::conninfo("a b=c"), "dbname='a b=c'");
        assert_eq!(super::conninfo(r"it's\x"), r"dbname='it\'s\\x'");
    }
}
