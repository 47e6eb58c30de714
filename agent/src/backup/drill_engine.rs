//! What a restore drill runs, per engine: the server binary chosen from the instance's engine
//! version, the throw-away server's own config (written into the scratch folder), the command
//! that starts it on a private unix socket with no TCP port, how the drill connects, and the
//! queries that find and count a table the instance owns. Builders only; `drill.rs` runs them.
//!
//! The scratch folder (`<drill_dir>/<operation id>`) holds `data/` (the engine's data folder,
//! owned by the instance's OS user), `run/` (its sockets and pid file, owned by that user, 0700,
//! so no other user reaches the server) and the config file (root's, read by the server).

use std::path::{Path, PathBuf};

use super::settings::EngineConnection;
use crate::command::ToolCommand;
use crate::instances::Engine;

pub const DATA: &str = "data";
pub const RUN: &str = "run";
/// Any number: the server listens only on the unix socket named after it, in `run/`.
pub const PG_SOCKET_PORT: u16 = 5432;
pub const MARIA_SOCKET: &str = "mysqld.sock";
pub const REDIS_SOCKET: &str = "redis.sock";

/// The schemas of MariaDB that are the server's own, never the instance's tables.
const MARIA_SYSTEM_SCHEMAS: &str = "'mysql', 'information_schema', 'performance_schema', 'sys'";

/// The scratch folder of one drill.
#[derive(Debug, Clone)]
pub struct Scratch {
    pub root: PathBuf,
}

impl Scratch {
    pub fn data(&self) -> PathBuf {
        self.root.join(DATA)
    }

    pub fn run(&self) -> PathBuf {
        self.root.join(RUN)
    }
}

/// Where an engine's programs live on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineBinaries {
    /// The server (`postgres`, `mariadbd`, `redis-server`).
    pub server: PathBuf,
    /// What makes an empty server for a logical backup (`initdb`, `mariadb-install-db`).
    pub init: Option<PathBuf>,
    /// The folder of the client tools (`psql`, `pg_restore`); empty = PATH.
    pub client_dir: PathBuf,
}

/// The binaries of `engine` at `version` (Debian's layout). PostgreSQL needs the major version:
/// `/usr/lib/postgresql/<major>/bin`. `None` if the version names no PostgreSQL major.
pub fn binaries(engine: Engine, version: &str) -> Option<EngineBinaries> {
    match engine {
        Engine::Postgresql => {
            let dir = super::settings::postgresql_bin_dir(version)?;
            Some(EngineBinaries { server: dir.join("postgres"), init: Some(dir.join("initdb")), client_dir: dir })
        }
        Engine::Mariadb => Some(EngineBinaries {
            server: "/usr/sbin/mariadbd".into(),
            init: Some("/usr/bin/mariadb-install-db".into()),
            client_dir: PathBuf::new(),
        }),
        Engine::Redis => {
            Some(EngineBinaries { server: "/usr/bin/redis-server".into(), init: None, client_dir: PathBuf::new() })
        }
    }
}

/// The file name of the throw-away server's config in the scratch folder (MariaDB takes its
/// settings on the command line).
pub fn config_name(engine: Engine) -> Option<&'static str> {
    match engine {
        Engine::Postgresql => Some("postgresql.conf"),
        Engine::Mariadb => None,
        Engine::Redis => Some("redis.conf"),
    }
}

/// A single-quoted PostgreSQL config string.
fn pg_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "''"))
}

/// The files the server reads from the scratch folder, name and content. Debian keeps
/// `postgresql.conf` in /etc, so a restored data folder has none of its own (and one that has is
/// the source's, with its ports and paths): the drill's own config names everything.
pub fn config_files(engine: Engine, scratch: &Scratch) -> Vec<(&'static str, String)> {
    match engine {
        Engine::Postgresql => vec![
            (
                "postgresql.conf",
                format!(
                    "# A restore drill's throw-away server: no TCP, a private socket folder.\n\
                     data_directory = {data}\n\
                     hba_file = {hba}\n\
                     ident_file = {ident}\n\
                     listen_addresses = ''\n\
                     unix_socket_directories = {run}\n\
                     port = {PG_SOCKET_PORT}\n\
                     max_connections = 10\n\
                     shared_buffers = 16MB\n\
                     fsync = off\n\
                     synchronous_commit = off\n\
                     archive_mode = off\n\
                     logging_collector = off\n\
                     log_destination = 'stderr'\n",
                    data = pg_quote(&scratch.data()),
                    hba = pg_quote(&scratch.root.join("pg_hba.conf")),
                    ident = pg_quote(&scratch.root.join("pg_ident.conf")),
                    run = pg_quote(&scratch.run()),
                ),
            ),
            // Only the socket exists, and only the instance's user can reach it (run/ is 0700).
            ("pg_hba.conf", "local all all trust\n".into()),
            ("pg_ident.conf", String::new()),
        ],
        Engine::Redis => vec![(
            "redis.conf",
            format!(
                "# A restore drill's throw-away server: no TCP, a private socket.\n\
                 port 0\n\
                 unixsocket {run}/{REDIS_SOCKET}\n\
                 unixsocketperm 700\n\
                 dir {data}\n\
                 dbfilename dump.rdb\n\
                 pidfile {run}/redis.pid\n\
                 save \"\"\n\
                 appendonly no\n\
                 daemonize no\n\
                 logfile \"\"\n",
                run = scratch.run().display(),
                data = scratch.data().display(),
            ),
        )],
        Engine::Mariadb => Vec::new(),
    }
}

/// The command that runs the throw-away server in the foreground, logging to stderr.
///
/// PostgreSQL: the settings that keep it off the network are given on the command line as well,
/// where they win over `postgresql.auto.conf` in the restored data folder (ALTER SYSTEM there
/// could say `listen_addresses = '*'`). MariaDB: `--no-defaults` reads no /etc config,
/// `--skip-networking` opens no port, `--skip-grant-tables` lets the drill read whatever accounts
/// the backup holds (the socket's folder admits the instance's user only).
pub fn server_command(engine: Engine, bins: &EngineBinaries, scratch: &Scratch) -> ToolCommand {
    let run = scratch.run();
    match engine {
        Engine::Postgresql => ToolCommand::new(&bins.server)
            .arg(format!("--config-file={}", scratch.root.join("postgresql.conf").display()))
            .args(["-c", "listen_addresses="])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", run.display()))
            .args(["-c", &format!("port={PG_SOCKET_PORT}"), "-c", "archive_mode=off"]),
        Engine::Mariadb => ToolCommand::new(&bins.server).args([
            "--no-defaults".to_owned(),
            format!("--datadir={}", scratch.data().display()),
            format!("--socket={}", run.join(MARIA_SOCKET).display()),
            format!("--pid-file={}", run.join("mysqld.pid").display()),
            format!("--tmpdir={}", run.display()),
            "--skip-networking".into(),
            "--skip-grant-tables".into(),
            "--skip-log-bin".into(),
            "--innodb-buffer-pool-size=32M".into(),
        ]),
        Engine::Redis => ToolCommand::new(&bins.server).arg(scratch.root.join("redis.conf")),
    }
}

/// Makes an empty server in `data/` for a logical backup to be loaded into.
pub fn init_command(engine: Engine, bins: &EngineBinaries, scratch: &Scratch, superuser: &str) -> Option<ToolCommand> {
    let init = bins.init.as_ref()?;
    let data = scratch.data();
    match engine {
        Engine::Postgresql => Some(ToolCommand::new(init).arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            superuser,
            "--no-sync",
            "--no-instructions",
        ])),
        // --tmpdir goes on to the bootstrapping mariadbd: its temporary tables stay in the
        // private run/ folder, never in a /tmp another bootstrap on the host shares.
        Engine::Mariadb => Some(ToolCommand::new(init).args([
            "--no-defaults".to_owned(),
            format!("--datadir={}", data.display()),
            format!("--tmpdir={}", scratch.run().display()),
            "--skip-test-db".into(),
            "--skip-name-resolve".into(),
        ])),
        Engine::Redis => None,
    }
}

/// How the drill's clients (and a logical restore) reach the throw-away server.
pub fn connection(engine: Engine, bins: &EngineBinaries, scratch: &Scratch, superuser: &str) -> EngineConnection {
    let run = scratch.run();
    match engine {
        Engine::Postgresql => EngineConnection {
            host: run.display().to_string(),
            port: PG_SOCKET_PORT,
            user: superuser.into(),
            database: "postgres".into(),
            bin_dir: bins.client_dir.clone(),
        },
        Engine::Mariadb => EngineConnection {
            host: run.join(MARIA_SOCKET).display().to_string(),
            port: 0,
            ..EngineConnection::default()
        },
        Engine::Redis => EngineConnection {
            host: run.join(REDIS_SOCKET).display().to_string(),
            port: 0,
            ..EngineConnection::default()
        },
    }
}

fn client(c: &EngineConnection, program: &str) -> ToolCommand {
    let program = if c.bin_dir.as_os_str().is_empty() { PathBuf::from(program) } else { c.bin_dir.join(program) };
    ToolCommand::new(program)
}

/// `psql` on database `db` running `sql`, unaligned, tuples only, tab-separated.
pub fn psql(c: &EngineConnection, db: &str, sql: &str) -> ToolCommand {
    client(c, "psql").args([
        format!("--host={}", c.host),
        format!("--port={}", c.port),
        format!("--username={}", c.user),
        format!("--dbname={db}"),
        "--no-password".into(),
        "-XAtq".into(),
        "--field-separator=\t".into(),
        "-v".into(),
        "ON_ERROR_STOP=1".into(),
        "-c".into(),
        sql.into(),
    ])
}

/// `mariadb` through the socket running `sql`, batch mode, no column names.
pub fn mariadb(c: &EngineConnection, sql: &str) -> ToolCommand {
    client(c, "mariadb").args([format!("--socket={}", c.host), "-N".into(), "-B".into(), "-e".into(), sql.into()])
}

pub fn redis_cli(c: &EngineConnection, args: &[&str]) -> ToolCommand {
    client(c, "redis-cli").args(["-s", &c.host]).args(args)
}

/// A probe that succeeds once the server answers queries.
pub fn ready_probe(engine: Engine, c: &EngineConnection) -> ToolCommand {
    match engine {
        Engine::Postgresql => psql(c, "postgres", "SELECT 1"),
        Engine::Mariadb => mariadb(c, "SELECT 1"),
        Engine::Redis => redis_cli(c, &["PING"]),
    }
}

/// The databases of a PostgreSQL cluster that take connections, one per line.
pub const PG_DATABASES: &str =
    "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname";

/// The user table of the current database with the most rows by the planner's count
/// (`reltuples`, kept in the catalog, so a restored cluster has it; -1 = never counted), the
/// larger one on a tie: `rows<TAB>bytes<TAB>"schema"."table"` (quoted by the server, last, so a
/// name holding a tab cannot shift the other fields).
pub const PG_LARGEST_TABLE: &str = "SELECT greatest(c.reltuples, 0)::bigint, pg_relation_size(c.oid), \
     format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
     ORDER BY 1 DESC, 2 DESC LIMIT 1";

/// The largest MariaDB table outside the system schemas, quoted by the server.
pub fn maria_largest_table() -> String {
    format!(
        "SELECT CONCAT('`', REPLACE(table_schema, '`', '``'), '`.`', REPLACE(table_name, '`', '``'), '`') \
         FROM information_schema.tables WHERE table_type = 'BASE TABLE' \
         AND table_schema NOT IN ({MARIA_SYSTEM_SCHEMAS}) \
         ORDER BY data_length + index_length DESC, table_rows DESC LIMIT 1"
    )
}

/// `SELECT count(*)` of a table name already quoted by the server.
pub fn count_rows(quoted_table: &str) -> String {
    format!("SELECT count(*) FROM {quoted_table}")
}

/// One `rows<TAB>bytes<TAB>name` line of [`PG_LARGEST_TABLE`].
pub fn parse_pg_largest(line: &str) -> Option<(u64, u64, String)> {
    let mut parts = line.splitn(3, '\t');
    let rows = parts.next()?.trim().parse().ok()?;
    let bytes = parts.next()?.trim().parse().ok()?;
    let name = parts.next()?.trim_end_matches(['\r', '\n']);
    (!name.is_empty()).then(|| (rows, bytes, name.to_owned()))
}

/// The one number a count query prints.
pub fn parse_count(out: &str) -> Option<u64> {
    out.lines().map(str::trim).rfind(|l| !l.is_empty())?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> Scratch {
        Scratch { root: "/var/lib/dbagent-drills/op-1".into() }
    }

    #[test]
    fn binaries_follow_the_engine_version() {
        let pg = binaries(Engine::Postgresql, "15.4").unwrap();
        assert_eq!(pg.server, Path::new("/usr/lib/postgresql/15/bin/postgres"));
        assert_eq!(pg.init.as_deref(), Some(Path::new("/usr/lib/postgresql/15/bin/initdb")));
        assert_eq!(binaries(Engine::Postgresql, "16").unwrap().client_dir, Path::new("/usr/lib/postgresql/16/bin"));
        assert_eq!(binaries(Engine::Postgresql, ""), None, "no major, no binary guessed");
        assert_eq!(binaries(Engine::Postgresql, "latest"), None);
        assert_eq!(binaries(Engine::Mariadb, "").unwrap().server, Path::new("/usr/sbin/mariadbd"));
        assert_eq!(binaries(Engine::Redis, "7").unwrap().server, Path::new("/usr/bin/redis-server"));
    }

    #[test]
    fn servers_listen_only_on_a_socket_in_the_scratch_folder() {
        let s = scratch();
        let pg_bins = binaries(Engine::Postgresql, "15").unwrap();
        let files = config_files(Engine::Postgresql, &s);
        let conf = &files.iter().find(|(n, _)| *n == "postgresql.conf").unwrap().1;
        for line in [
            "listen_addresses = ''",
            "unix_socket_directories = '/var/lib/dbagent-drills/op-1/run'",
            "data_directory = '/var/lib/dbagent-drills/op-1/data'",
            "hba_file = '/var/lib/dbagent-drills/op-1/pg_hba.conf'",
            "archive_mode = off",
        ] {
            assert!(conf.lines().any(|l| l == line), "{line:?} missing from\n{conf}");
        }
        let hba = &files.iter().find(|(n, _)| *n == "pg_hba.conf").unwrap().1;
        assert_eq!(hba.trim(), "local all all trust", "no host lines: nothing over TCP");
        let pg = server_command(Engine::Postgresql, &pg_bins, &s).shown();
        // On the command line too, where it overrides ALTER SYSTEM in the restored data folder.
        assert!(pg.contains(" -c listen_addresses= "), "{pg}");
        assert!(pg.contains(" -c unix_socket_directories=/var/lib/dbagent-drills/op-1/run "), "{pg}");

        let maria = server_command(Engine::Mariadb, &binaries(Engine::Mariadb, "").unwrap(), &s).shown();
        for part in [
            "--no-defaults",
            "--skip-networking",
            "--socket=/var/lib/dbagent-drills/op-1/run/mysqld.sock",
            "--datadir=/var/lib/dbagent-drills/op-1/data",
        ] {
            assert!(maria.contains(part), "{part} missing from {maria}");
        }
        assert!(!maria.contains("--port") && !maria.contains("--bind-address"), "{maria}");

        let redis = &config_files(Engine::Redis, &s)[0].1;
        assert!(redis.lines().any(|l| l == "port 0"), "{redis}");
        assert!(redis.lines().any(|l| l == "unixsocket /var/lib/dbagent-drills/op-1/run/redis.sock"), "{redis}");
        assert!(!redis.contains("bind "), "{redis}");
        assert!(config_files(Engine::Mariadb, &s).is_empty());
    }

    #[test]
    fn clients_reach_the_private_socket() {
        let s = scratch();
        let bins = binaries(Engine::Postgresql, "15").unwrap();
        let c = connection(Engine::Postgresql, &bins, &s, "postgres");
        let probe = ready_probe(Engine::Postgresql, &c);
        assert_eq!(probe.program(), Path::new("/usr/lib/postgresql/15/bin/psql"));
        assert!(probe.shown().contains("--host=/var/lib/dbagent-drills/op-1/run --port=5432 "), "{}", probe.shown());
        let m = connection(Engine::Mariadb, &binaries(Engine::Mariadb, "").unwrap(), &s, "");
        assert!(
            mariadb(&m, "SELECT 1")
                .shown()
                .starts_with("mariadb --socket=/var/lib/dbagent-drills/op-1/run/mysqld.sock ")
        );
        let r = connection(Engine::Redis, &binaries(Engine::Redis, "").unwrap(), &s, "");
        assert_eq!(
            ready_probe(Engine::Redis, &r).shown(),
            "redis-cli -s /var/lib/dbagent-drills/op-1/run/redis.sock PING"
        );
        let init = init_command(Engine::Postgresql, &bins, &s, "postgres").unwrap().shown();
        assert!(init.contains("-D /var/lib/dbagent-drills/op-1/data -A trust -U postgres"), "{init}");
    }

    #[test]
    fn table_queries_skip_system_schemas_and_parse_what_the_servers_print() {
        assert!(PG_LARGEST_TABLE.contains("NOT IN ('pg_catalog', 'information_schema')"));
        assert!(maria_largest_table().contains("NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')"));
        assert_eq!(
            parse_pg_largest("100000\t13434880\tpublic.pgbench_accounts\n"),
            Some((100000, 13434880, "public.pgbench_accounts".into()))
        );
        assert_eq!(
            parse_pg_largest("0\t8192\t\"odd\"\"s\".\"a\ttab\"\n"),
            Some((0, 8192, "\"odd\"\"s\".\"a\ttab\"".into())),
            "a tab inside the quoted name stays in the name"
        );
        assert_eq!(parse_pg_largest(""), None);
        assert_eq!(parse_pg_largest("x\t1\tt"), None);
        assert_eq!(count_rows("`shop`.`items`"), "SELECT count(*) FROM `shop`.`items`");
        assert_eq!(parse_count("20000\n"), Some(20000));
        assert_eq!(parse_count("\n 7 \n\n"), Some(7));
        assert_eq!(parse_count("ERR\n"), None);
    }
}
