//! The dump and restore commands of each engine. Commands run as the instance's system user
//! (when the agent runs as root), write to stdout / read from stdin, and never touch a temp file.

use std::path::PathBuf;

use super::BackupError;
use super::manifest::BackupMethod;
use super::settings::EngineConnection;
use crate::command::ToolCommand;
use crate::instances::Engine;

/// `program` from the connection's `bin_dir`, or from PATH when it is empty.
pub(crate) fn tool(conn: &EngineConnection, program: &str, args: Vec<String>) -> ToolCommand {
    let program = if conn.bin_dir.as_os_str().is_empty() { PathBuf::from(program) } else { conn.bin_dir.join(program) };
    ToolCommand::new(program).args(args)
}

pub(crate) fn pg_conn(c: &EngineConnection) -> Vec<String> {
    vec![
        format!("--host={}", c.host),
        format!("--port={}", c.port),
        format!("--username={}", c.user),
        "--no-password".into(),
    ]
}

pub(crate) fn maria_conn(c: &EngineConnection) -> Vec<String> {
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

pub(crate) fn redis_conn(c: &EngineConnection) -> Vec<String> {
    if c.host.starts_with('/') {
        vec!["-s".into(), c.host.clone()]
    } else {
        vec!["-h".into(), c.host.clone(), "-p".into(), c.port.to_string()]
    }
}

/// One statement at the server at `c`, its answer alone on stdout (no headers): SQL for
/// PostgreSQL and MariaDB, a command for Redis (split at spaces). Plan changes read and set the
/// engine's memory settings with it.
pub fn statement_tool(engine: Engine, c: &EngineConnection, statement: &str) -> ToolCommand {
    match engine {
        Engine::Postgresql => {
            let mut a = pg_conn(c);
            let db = if c.database.is_empty() { "postgres" } else { c.database.as_str() };
            a.extend([format!("--dbname={db}"), "-XAtq".into(), "-c".into(), statement.into()]);
            tool(c, "psql", a)
        }
        Engine::Mariadb => {
            let mut a = maria_conn(c);
            a.extend(["-N".into(), "-B".into(), "-e".into(), statement.into()]);
            tool(c, "mariadb", a)
        }
        Engine::Redis => {
            let mut a = redis_conn(c);
            a.extend(statement.split_whitespace().map(String::from));
            tool(c, "redis-cli", a)
        }
    }
}

/// A query whose last line of output is the data directory the server at `c` serves: a backup
/// checks it before dumping, so that a connection aimed at another instance's server never fills
/// this instance's backup with someone else's data.
pub fn data_dir_query(engine: Engine, c: &EngineConnection) -> ToolCommand {
    match engine {
        Engine::Postgresql => {
            let mut a = pg_conn(c);
            let db = if c.database.is_empty() { "postgres" } else { c.database.as_str() };
            a.extend([format!("--dbname={db}"), "-XAtq".into(), "-c".into(), "SHOW data_directory".into()]);
            tool(c, "psql", a)
        }
        Engine::Mariadb => {
            let mut a = maria_conn(c);
            a.extend(["-N".into(), "-B".into(), "-e".into(), "SELECT @@datadir".into()]);
            tool(c, "mariadb", a)
        }
        Engine::Redis => {
            let mut a = redis_conn(c);
            a.extend(["CONFIG".into(), "GET".into(), "dir".into()]);
            tool(c, "redis-cli", a)
        }
    }
}

/// The command whose stdout is the backup.
pub fn dump_tool(engine: Engine, method: BackupMethod, c: &EngineConnection) -> ToolCommand {
    match (engine, method) {
        // One tar on stdout needs WAL fetched into it (-X fetch) and a single tablespace.
        (Engine::Postgresql, BackupMethod::Physical) => {
            let mut a: Vec<String> =
                ["--pgdata=-", "--format=tar", "--wal-method=fetch", "--checkpoint=fast"].map(String::from).into();
            a.extend(pg_conn(c));
            tool(c, "pg_basebackup", a)
        }
        // zstd compresses; pg_dump's own compression would only cost CPU.
        (Engine::Postgresql, BackupMethod::Logical) => {
            let mut a: Vec<String> = ["--format=custom", "--compress=0"].map(String::from).into();
            a.extend(pg_conn(c));
            a.push(format!("--dbname={}", c.database));
            tool(c, "pg_dump", a)
        }
        (Engine::Mariadb, BackupMethod::Logical) => {
            let mut a = maria_conn(c);
            a.extend(["--single-transaction", "--routines", "--events", "--triggers", "--hex-blob"].map(String::from));
            if c.database.is_empty() {
                a.push("--all-databases".into());
            } else {
                a.extend(["--databases".into(), c.database.clone()]);
            }
            tool(c, "mariadb-dump", a)
        }
        (Engine::Mariadb, BackupMethod::Physical) => {
            let mut a = vec!["--backup".into(), "--stream=xbstream".into(), "--target-dir=/tmp".into()];
            a.extend(maria_conn(c));
            tool(c, "mariabackup", a)
        }
        (Engine::Redis, _) => {
            let mut a = redis_conn(c);
            a.extend(["--rdb".into(), "-".into()]);
            tool(c, "redis-cli", a)
        }
    }
}

/// The database a PostgreSQL logical restore goes into: the request's new database, else the
/// connection's database (the one `pg_dump` dumps).
pub fn pg_restore_database<'a>(c: &'a EngineConnection, database: Option<&'a str>) -> &'a str {
    database.unwrap_or(&c.database)
}

/// A query whose last line of output is the owner of database `db` (`pg_database.datdba`), or
/// nothing if there is no such database. `db` is a validated identifier or the configured name;
/// it is quoted as an SQL literal all the same.
pub fn pg_database_owner_query(c: &EngineConnection, db: &str) -> ToolCommand {
    let mut a = pg_conn(c);
    let literal = format!("'{}'", db.replace('\'', "''"));
    a.extend([
        "--dbname=postgres".into(),
        "-XAtq".into(),
        "-c".into(),
        format!("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = {literal}"),
    ]);
    tool(c, "psql", a)
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

/// Where the decoded stream goes, and what runs before and after it.
#[derive(Debug)]
pub struct RestorePlan {
    /// Runs first (`createdb` of a new database).
    pub before: Option<ToolCommand>,
    pub into: RestoreSink,
    /// Runs once the stream is in (`mariabackup --prepare`).
    pub after: Option<ToolCommand>,
}

#[derive(Debug)]
pub enum RestoreSink {
    /// The stream is the tool's stdin.
    Tool(ToolCommand),
    /// The stream is written to this new file in the data directory (created there by name,
    /// beneath the folder's handle, never through an existing name).
    File(std::ffi::OsString),
}

impl RestorePlan {
    fn into_tool(tool: ToolCommand) -> Self {
        Self { before: None, into: RestoreSink::Tool(tool), after: None }
    }
}

pub fn restore_plan(engine: Engine, method: BackupMethod, target: &RestoreTarget) -> Result<RestorePlan, BackupError> {
    match (engine, method, target) {
        (Engine::Postgresql, BackupMethod::Physical, RestoreTarget::DataDir(dir)) => {
            Ok(RestorePlan::into_tool(ToolCommand::new("tar").args(["-x", "-f", "-", "-C"]).arg(dir)))
        }
        (Engine::Postgresql, BackupMethod::Logical, RestoreTarget::Server { connection: c, database, .. }) => {
            let db = pg_restore_database(c, database.as_deref());
            let mut args = pg_conn(c);
            // One transaction: a failure part-way leaves the database as it was. The job adds
            // --role=<the database's owner>, so the dump's statements never run as the superuser.
            args.extend(["--no-owner".into(), "--single-transaction".into(), "--exit-on-error".into()]);
            args.push(format!("--dbname={db}"));
            let mut create = pg_conn(c);
            create.extend(["--maintenance-db=postgres".into(), db.to_owned()]);
            // Runs only if the database does not exist yet (the job asks first).
            let before = Some(tool(c, "createdb", create));
            Ok(RestorePlan { before, ..RestorePlan::into_tool(tool(c, "pg_restore", args)) })
        }
        (Engine::Mariadb, BackupMethod::Logical, RestoreTarget::Server { connection: c, .. }) => {
            Ok(RestorePlan::into_tool(tool(c, "mariadb", maria_conn(c))))
        }
        (Engine::Mariadb, BackupMethod::Physical, RestoreTarget::DataDir(dir)) => Ok(RestorePlan {
            after: Some(
                ToolCommand::new("mariabackup").arg("--prepare").arg(format!("--target-dir={}", dir.display())),
            ),
            ..RestorePlan::into_tool(ToolCommand::new("mbstream").args(["-x", "-C"]).arg(dir))
        }),
        (Engine::Redis, _, RestoreTarget::DataDir(_)) => {
            Ok(RestorePlan { before: None, into: RestoreSink::File("dump.rdb".into()), after: None })
        }
        (Engine::Redis, _, RestoreTarget::Server { .. })
        | (_, BackupMethod::Physical, RestoreTarget::Server { .. }) => Err(BackupError::PhysicalRestoreNeedsDataDir),
        (_, BackupMethod::Logical, RestoreTarget::DataDir(_)) => Err(BackupError::LogicalRestoreNeedsServer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn dump_commands_follow_the_connection() {
        let c = crate::backup::BackupConfig::default();
        let t = dump_tool(Engine::Postgresql, BackupMethod::Physical, &c.postgresql);
        assert_eq!(t.name(), "pg_basebackup");
        assert!(t.shown().contains(" --wal-method=fetch "), "{}", t.shown());
        let t = dump_tool(Engine::Mariadb, BackupMethod::Logical, &c.mariadb);
        assert!(t.shown().contains(" --socket=/run/mysqld/mysqld.sock "), "{}", t.shown());
        assert!(t.shown().ends_with(" --all-databases"), "{}", t.shown());
        let t = dump_tool(Engine::Redis, BackupMethod::Logical, &c.redis);
        assert_eq!(t.shown(), "redis-cli -h 127.0.0.1 -p 6379 --rdb -");
        let mut with_bin = c.redis.clone();
        with_bin.bin_dir = "/opt/redis/bin".into();
        let t = dump_tool(Engine::Redis, BackupMethod::Physical, &with_bin);
        assert_eq!(t.program(), Path::new("/opt/redis/bin/redis-cli"));
    }

    #[test]
    fn a_restore_target_must_fit_the_method() {
        let c = crate::backup::BackupConfig::default();
        let server = RestoreTarget::Server { connection: c.postgresql.clone(), database: None, instance_server: true };
        let dir = RestoreTarget::DataDir("/srv/new".into());
        let e = restore_plan(Engine::Postgresql, BackupMethod::Physical, &server).unwrap_err();
        assert!(matches!(e, BackupError::PhysicalRestoreNeedsDataDir), "{e:?}");
        let e = restore_plan(Engine::Postgresql, BackupMethod::Logical, &dir).unwrap_err();
        assert!(matches!(e, BackupError::LogicalRestoreNeedsServer), "{e:?}");
        let plan = restore_plan(Engine::Postgresql, BackupMethod::Physical, &dir).unwrap();
        let RestoreSink::Tool(tool) = &plan.into else { panic!("a physical PostgreSQL backup restores through tar") };
        assert_eq!(tool.shown(), "tar -x -f - -C /srv/new");
        let plan = restore_plan(Engine::Postgresql, BackupMethod::Logical, &server).unwrap();
        let RestoreSink::Tool(tool) = &plan.into else {
            panic!("a logical PostgreSQL backup restores through pg_restore")
        };
        for part in [" --no-owner ", " --single-transaction ", " --exit-on-error ", " --dbname=postgres"] {
            assert!(tool.shown().contains(part), "{part:?} missing from {}", tool.shown());
        }
        assert!(!tool.shown().contains("--create"), "--create cannot run in one transaction: {}", tool.shown());
        let created = plan.before.as_ref().map(ToolCommand::shown).unwrap_or_default();
        assert!(created.starts_with("createdb ") && created.ends_with(" postgres"), "{created}");
        let q = pg_database_owner_query(&c.postgresql, "it's");
        assert!(q.shown().contains("datname = 'it''s'"), "{}", q.shown());
    }
}
