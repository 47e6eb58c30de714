//! The dump and restore commands of each engine. Commands run as the instance's system user
//! (when the agent runs as root), write to stdout / read from stdin, and never touch a temp file.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::BackupError;
use super::manifest::BackupMethod;
use super::settings::EngineConnection;
use crate::instances::Engine;

/// A program and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl Tool {
    fn new(conn: &EngineConnection, program: &str, args: Vec<String>) -> Self {
        let program =
            if conn.bin_dir.as_os_str().is_empty() { PathBuf::from(program) } else { conn.bin_dir.join(program) };
        Self { program, args }
    }

    pub fn name(&self) -> String {
        self.program.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }

    /// The command, run as `os_user` when the agent is root, with stdio as given.
    pub fn command(&self, os_user: &str) -> Result<tokio::process::Command, BackupError> {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args).current_dir("/").kill_on_drop(true);
        if nix::unistd::geteuid().is_root() && !os_user.is_empty() && os_user != "root" {
            let user = nix::unistd::User::from_name(os_user).ok().flatten().ok_or_else(|| {
                BackupError::FailedPrecondition(format!("system user {os_user:?} of the instance does not exist"))
            })?;
            cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw()).env("HOME", &user.dir);
        }
        Ok(cmd)
    }

    /// First line of `--version`, for the manifest; empty if the tool does not say.
    pub async fn version(&self) -> String {
        let out = tokio::process::Command::new(&self.program).arg("--version").stdin(Stdio::null()).output().await;
        // mariabackup prints its version on stderr, the others on stdout.
        let first_line =
            |b: Vec<u8>| String::from_utf8_lossy(&b).lines().find(|l| !l.trim().is_empty()).map(str::to_owned);
        out.ok().and_then(|o| first_line(o.stdout).or_else(|| first_line(o.stderr))).unwrap_or_default()
    }
}

fn pg_conn(c: &EngineConnection) -> Vec<String> {
    vec![
        format!("--host={}", c.host),
        format!("--port={}", c.port),
        format!("--username={}", c.user),
        "--no-password".into(),
    ]
}

fn maria_conn(c: &EngineConnection) -> Vec<String> {
    let mut a = if c.host.starts_with('/') {
        vec![format!("--socket={}", c.host)]
    } else {
        vec![format!("--host={}", c.host), format!("--port={}", c.port), "--protocol=TCP".into()]
    };
    if !c.user.is_empty() {
        a.push(format!("--user={}", c.user));
    }
    a
}

fn redis_conn(c: &EngineConnection) -> Vec<String> {
    if c.host.starts_with('/') {
        vec!["-s".into(), c.host.clone()]
    } else {
        vec!["-h".into(), c.host.clone(), "-p".into(), c.port.to_string()]
    }
}

/// A query whose last line of output is the data directory the server at `c` serves: a backup
/// checks it before dumping, so that a connection aimed at another instance's server never fills
/// this instance's backup with someone else's data.
pub fn data_dir_query(engine: Engine, c: &EngineConnection) -> Tool {
    match engine {
        Engine::Postgresql => {
            let mut a = pg_conn(c);
            let db = if c.database.is_empty() { "postgres" } else { c.database.as_str() };
            a.extend([format!("--dbname={db}"), "-XAtq".into(), "-c".into(), "SHOW data_directory".into()]);
            Tool::new(c, "psql", a)
        }
        Engine::Mariadb => {
            let mut a = maria_conn(c);
            a.extend(["-N".into(), "-B".into(), "-e".into(), "SELECT @@datadir".into()]);
            Tool::new(c, "mariadb", a)
        }
        Engine::Redis => {
            let mut a = redis_conn(c);
            a.extend(["CONFIG".into(), "GET".into(), "dir".into()]);
            Tool::new(c, "redis-cli", a)
        }
    }
}

/// The command whose stdout is the backup.
pub fn dump_tool(engine: Engine, method: BackupMethod, c: &EngineConnection) -> Result<Tool, BackupError> {
    Ok(match (engine, method) {
        // One tar on stdout needs WAL fetched into it (-X fetch) and a single tablespace.
        (Engine::Postgresql, BackupMethod::Physical) => {
            let mut a: Vec<String> =
                ["--pgdata=-", "--format=tar", "--wal-method=fetch", "--checkpoint=fast"].map(String::from).into();
            a.extend(pg_conn(c));
            Tool::new(c, "pg_basebackup", a)
        }
        // zstd compresses; pg_dump's own compression would only cost CPU.
        (Engine::Postgresql, BackupMethod::Logical) => {
            let mut a: Vec<String> = ["--format=custom", "--compress=0"].map(String::from).into();
            a.extend(pg_conn(c));
            a.push(format!("--dbname={}", c.database));
            Tool::new(c, "pg_dump", a)
        }
        (Engine::Mariadb, BackupMethod::Logical) => {
            let mut a = maria_conn(c);
            a.extend(["--single-transaction", "--routines", "--events", "--triggers", "--hex-blob"].map(String::from));
            if c.database.is_empty() {
                a.push("--all-databases".into());
            } else {
                a.extend(["--databases".into(), c.database.clone()]);
            }
            Tool::new(c, "mariadb-dump", a)
        }
        (Engine::Mariadb, BackupMethod::Physical) => {
            let mut a = vec!["--backup".into(), "--stream=xbstream".into(), "--target-dir=/tmp".into()];
            a.extend(maria_conn(c));
            Tool::new(c, "mariabackup", a)
        }
        (Engine::Redis, _) => {
            let mut a = redis_conn(c);
            a.extend(["--rdb".into(), "-".into()]);
            Tool::new(c, "redis-cli", a)
        }
    })
}

/// Redis has one backup form, the RDB snapshot, which is recorded as physical.
pub fn effective_method(engine: Engine, method: BackupMethod) -> BackupMethod {
    if engine == Engine::Redis { BackupMethod::Physical } else { method }
}

/// Where a restore goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreTarget {
    /// A new (empty or missing) data directory: physical backups and Redis.
    DataDir(PathBuf),
    /// A running server: logical backups. `database`: restore a PostgreSQL dump into this new
    /// database instead of recreating the dumped one. `instance_server`: the server must serve the
    /// instance's own data directory (checked first, as for a backup), so that a connection aimed
    /// at another instance's server never gets this backup's data.
    Server { connection: EngineConnection, database: Option<String>, instance_server: bool },
}

/// How the decoded stream is consumed, and what runs after it.
#[derive(Debug)]
pub enum RestorePlan {
    /// The stream is the stdin of `tool`; `before` runs first, `after` once it succeeded.
    Pipe { before: Option<Tool>, tool: Tool, after: Option<Tool> },
    /// The stream is written to this file.
    File(PathBuf),
}

pub fn restore_plan(engine: Engine, method: BackupMethod, target: &RestoreTarget) -> Result<RestorePlan, BackupError> {
    let wrong = |what: &str| Err(BackupError::FailedPrecondition(what.to_owned()));
    match (engine, method, target) {
        (Engine::Postgresql, BackupMethod::Physical, RestoreTarget::DataDir(dir)) => Ok(RestorePlan::Pipe {
            before: None,
            tool: Tool {
                program: "tar".into(),
                args: vec!["-x".into(), "-f".into(), "-".into(), "-C".into(), path(dir)],
            },
            after: None,
        }),
        (Engine::Postgresql, BackupMethod::Logical, RestoreTarget::Server { connection: c, database, .. }) => {
            let mut args = pg_conn(c);
            args.extend(["--no-owner".into(), "--exit-on-error".into()]);
            let before = match database {
                Some(db) => {
                    args.push(format!("--dbname={db}"));
                    let mut create = pg_conn(c);
                    create.push(db.clone());
                    Some(Tool::new(c, "createdb", create))
                }
                None => {
                    args.extend(["--create".into(), "--dbname=postgres".into()]);
                    None
                }
            };
            Ok(RestorePlan::Pipe { before, tool: Tool::new(c, "pg_restore", args), after: None })
        }
        (Engine::Mariadb, BackupMethod::Logical, RestoreTarget::Server { connection: c, .. }) => {
            Ok(RestorePlan::Pipe { before: None, tool: Tool::new(c, "mariadb", maria_conn(c)), after: None })
        }
        (Engine::Mariadb, BackupMethod::Physical, RestoreTarget::DataDir(dir)) => Ok(RestorePlan::Pipe {
            before: None,
            tool: Tool { program: "mbstream".into(), args: vec!["-x".into(), "-C".into(), path(dir)] },
            after: Some(Tool {
                program: "mariabackup".into(),
                args: vec!["--prepare".into(), format!("--target-dir={}", path(dir))],
            }),
        }),
        (Engine::Redis, _, RestoreTarget::DataDir(dir)) => Ok(RestorePlan::File(dir.join("dump.rdb"))),
        (Engine::Redis, _, RestoreTarget::Server { .. })
        | (_, BackupMethod::Physical, RestoreTarget::Server { .. }) => {
            wrong("a physical backup restores into a data directory, not into a running server; give target_data_dir")
        }
        (_, BackupMethod::Logical, RestoreTarget::DataDir(_)) => {
            wrong("a logical backup restores into a running server (a new database), not into a data directory")
        }
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        let c = crate::backup::BackupConfig::default();
        let t = dump_tool(Engine::Postgresql, BackupMethod::Physical, &c.postgresql).unwrap();
        assert_eq!(t.name(), "pg_basebackup");
        assert!(t.args.contains(&"--wal-method=fetch".to_owned()));
        let t = dump_tool(Engine::Mariadb, BackupMethod::Logical, &c.mariadb).unwrap();
        assert!(t.args.contains(&"--socket=/run/mysqld/mysqld.sock".to_owned()));
        assert!(t.args.contains(&"--all-databases".to_owned()));
        let t = dump_tool(Engine::Redis, BackupMethod::Logical, &c.redis).unwrap();
        assert_eq!(t.args, ["-h", "127.0.0.1", "-p", "6379", "--rdb", "-"]);
        let e = restore_plan(
            Engine::Postgresql,
            BackupMethod::Physical,
            &RestoreTarget::Server { connection: c.postgresql.clone(), database: None, instance_server: true },
        )
        .unwrap_err();
        assert!(e.to_string().contains("target_data_dir"));
    }
}
