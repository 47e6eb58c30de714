//! Making each engine serve the files without a restart, through its own client run as the
//! instance's OS user (`[backup.<engine>]` says how to reach it, as for backups):
//! - PostgreSQL: `ALTER SYSTEM SET ssl = on` and the three file settings, then `pg_reload_conf()`;
//!   the settings it had are read first and put back if the new certificate is not served.
//! - MariaDB: `FLUSH SSL` (MariaDB 10.4+; MySQL's `ALTER INSTANCE RELOAD TLS` is a syntax error there). Its `ssl_cert`/`ssl_key`/`ssl_ca` are read at start only,
//!   so mariadbd must have been started with the agent's paths (checked before anything is written).
//! - Redis: `CONFIG SET tls-cert-file ... tls-key-file ... tls-ca-cert-file ...`, which Redis
//!   applies at once; it needs a `tls-port` (checked first).

use std::time::Duration;

use super::DbTlsError;
use super::files::TlsPaths;
use crate::backup::engine_commands::{maria_conn, pg_conn, redis_conn, tool};
use crate::backup::settings::EngineConnection;
use crate::command::{CommandError, ToolCommand};
use crate::instances::{Engine, Instance};

/// A client call that has not answered by then is given up (the engine is then "not answering").
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

const PG_SETTINGS: [&str; 4] = ["ssl", "ssl_ca_file", "ssl_cert_file", "ssl_key_file"];
const REDIS_SETTINGS: [&str; 3] = ["tls-ca-cert-file", "tls-cert-file", "tls-key-file"];

/// What the engine says before the install: the TLS port to check, and the settings to put back.
#[derive(Debug, Clone)]
pub struct Before {
    pub port: u16,
    previous: Vec<(String, String)>,
}

fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn engine_error(instance: &Instance, conn: &EngineConnection, reason: String) -> DbTlsError {
    DbTlsError::Engine {
        engine: instance.spec.engine.as_str(),
        at: format!("{} port {}", conn.host, conn.port),
        reason,
    }
}

async fn run(instance: &Instance, conn: &EngineConnection, command: ToolCommand) -> Result<String, DbTlsError> {
    let command = command.run_as(&instance.spec.os_user)?;
    match tokio::time::timeout(TOOL_TIMEOUT, command.output()).await {
        Ok(Ok(out)) => Ok(String::from_utf8_lossy(&out).into_owned()),
        Ok(Err(CommandError::Failed { stderr, .. })) => Err(engine_error(instance, conn, stderr.trim().to_owned())),
        Ok(Err(other)) => Err(other.into()),
        Err(_) => {
            Err(engine_error(instance, conn, format!("{} did not answer within {TOOL_TIMEOUT:?}", command.name())))
        }
    }
}

fn psql(conn: &EngineConnection, statements: &[String]) -> ToolCommand {
    let mut a = pg_conn(conn);
    a.extend(["--dbname=postgres".into(), "-XAtq".into(), "-v".into(), "ON_ERROR_STOP=1".into()]);
    for s in statements {
        a.extend(["-c".into(), s.clone()]);
    }
    tool(conn, "psql", a)
}

fn mariadb(conn: &EngineConnection, sql: &str) -> ToolCommand {
    let mut a = maria_conn(conn);
    a.extend(["-N".into(), "-B".into(), "-e".into(), sql.into()]);
    tool(conn, "mariadb", a)
}

fn redis(conn: &EngineConnection, args: &[&str]) -> ToolCommand {
    let mut a = redis_conn(conn);
    a.extend(args.iter().map(|s| (*s).to_owned()));
    tool(conn, "redis-cli", a)
}

/// Redis answers errors on stdout with exit code 0.
fn redis_ok(instance: &Instance, conn: &EngineConnection, out: &str) -> Result<(), DbTlsError> {
    match out.lines().find(|l| l.starts_with("ERR") || l.starts_with("(error)")) {
        Some(line) => Err(engine_error(instance, conn, line.to_owned())),
        None => Ok(()),
    }
}

/// Reads what the engine has now and checks it can take the new files without a restart.
pub async fn before(instance: &Instance, conn: &EngineConnection, paths: &TlsPaths) -> Result<Before, DbTlsError> {
    match instance.spec.engine {
        Engine::Postgresql => {
            let list = PG_SETTINGS.map(literal).join(", ");
            let sql = format!("SELECT name || '=' || setting FROM pg_settings WHERE name IN ({list}) ORDER BY name");
            let out = run(instance, conn, psql(conn, &[sql])).await?;
            let previous = out
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect::<Vec<_>>();
            if previous.len() != PG_SETTINGS.len() {
                return Err(engine_error(instance, conn, format!("unexpected answer about its TLS settings: {out:?}")));
            }
            Ok(Before { port: conn.port, previous })
        }
        Engine::Mariadb => {
            let out = run(instance, conn, mariadb(conn, "SELECT @@port, @@ssl_cert, @@ssl_key, @@ssl_ca")).await?;
            let fields: Vec<&str> = out.trim_end().split('\t').collect();
            let [port, cert, key, ca] = fields.as_slice() else {
                return Err(engine_error(instance, conn, format!("unexpected answer about its TLS settings: {out:?}")));
            };
            let wanted = [&paths.cert, &paths.key, &paths.ca].map(|p| p.display().to_string());
            if [*cert, *key, *ca] != [wanted[0].as_str(), wanted[1].as_str(), wanted[2].as_str()] {
                return Err(engine_error(
                    instance,
                    conn,
                    format!(
                        "MariaDB reads its certificate paths at start only: start mariadbd with ssl_cert={}, ssl_key={}, \
                         ssl_ca={} (it has ssl_cert={cert}, ssl_key={key}, ssl_ca={ca})",
                        wanted[0], wanted[1], wanted[2]
                    ),
                ));
            }
            let port = port.parse().map_err(|_| engine_error(instance, conn, format!("port {port:?}")))?;
            Ok(Before { port, previous: Vec::new() })
        }
        Engine::Redis => {
            let mut args = vec!["CONFIG", "GET", "tls-port"];
            args.extend(REDIS_SETTINGS);
            let out = run(instance, conn, redis(conn, &args)).await?;
            redis_ok(instance, conn, &out)?;
            let lines: Vec<&str> = out.lines().collect();
            let pairs: Vec<(String, String)> =
                lines.chunks(2).filter_map(|c| Some((c.first()?.to_string(), c.get(1)?.to_string()))).collect();
            let port = pairs.iter().find(|(k, _)| k == "tls-port").and_then(|(_, v)| v.parse::<u16>().ok());
            let Some(port) = port.filter(|p| *p != 0) else {
                return Err(engine_error(
                    instance,
                    conn,
                    "Redis serves TLS only on its tls-port, which is 0: start redis-server with a tls-port".into(),
                ));
            };
            let previous = pairs.into_iter().filter(|(k, _)| k != "tls-port").collect();
            Ok(Before { port, previous })
        }
    }
}

/// Points the engine at the files and makes it load them.
pub async fn apply(instance: &Instance, conn: &EngineConnection, paths: &TlsPaths) -> Result<(), DbTlsError> {
    let [cert, key, ca] = [&paths.cert, &paths.key, &paths.ca].map(|p| p.display().to_string());
    match instance.spec.engine {
        Engine::Postgresql => {
            let settings =
                [("ssl", "on".to_owned()), ("ssl_cert_file", cert), ("ssl_key_file", key), ("ssl_ca_file", ca)];
            pg_set_and_reload(instance, conn, &settings).await
        }
        Engine::Mariadb => run(instance, conn, mariadb(conn, "FLUSH SSL")).await.map(drop),
        Engine::Redis => {
            let args = ["CONFIG", "SET", "tls-cert-file", &cert, "tls-key-file", &key, "tls-ca-cert-file", &ca];
            let out = run(instance, conn, redis(conn, &args)).await?;
            redis_ok(instance, conn, &out)
        }
    }
}

/// After the previous files are back: the previous settings back, and the engine reloaded.
pub async fn restore(instance: &Instance, conn: &EngineConnection, before: &Before) -> Result<(), DbTlsError> {
    match instance.spec.engine {
        Engine::Postgresql => {
            let settings: Vec<(&str, String)> = before
                .previous
                .iter()
                .filter_map(|(k, v)| PG_SETTINGS.iter().find(|s| *s == k).map(|s| (*s, v.clone())))
                .collect();
            pg_set_and_reload(instance, conn, &settings).await
        }
        Engine::Mariadb => run(instance, conn, mariadb(conn, "FLUSH SSL")).await.map(drop),
        Engine::Redis => {
            let mut args = vec!["CONFIG".to_owned(), "SET".to_owned()];
            for (k, v) in &before.previous {
                args.extend([k.clone(), v.clone()]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = run(instance, conn, redis(conn, &args)).await?;
            redis_ok(instance, conn, &out)
        }
    }
}

async fn pg_set_and_reload(
    instance: &Instance,
    conn: &EngineConnection,
    settings: &[(&str, String)],
) -> Result<(), DbTlsError> {
    // Each -c runs on its own: ALTER SYSTEM refuses a transaction block.
    let mut statements: Vec<String> =
        settings.iter().map(|(k, v)| format!("ALTER SYSTEM SET {k} = {}", literal(v))).collect();
    statements.push("SELECT pg_reload_conf()".into());
    run(instance, conn, psql(conn, &statements)).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_with_a_quote_stays_one_sql_literal() {
        assert_eq!(literal("/srv/o'brien/x.crt"), "'/srv/o''brien/x.crt'");
    }

    #[test]
    fn postgresql_settings_are_set_one_statement_each_then_reloaded() {
        let c = crate::backup::BackupConfig::default();
        let t = psql(&c.postgresql, &["ALTER SYSTEM SET ssl = 'on'".into(), "SELECT pg_reload_conf()".into()]);
        let shown = t.shown();
        assert!(shown.contains("-c ALTER SYSTEM SET ssl = 'on' -c SELECT pg_reload_conf()"), "{shown}");
        assert!(shown.contains("ON_ERROR_STOP=1"), "a failed statement must fail the tool: {shown}");
    }
}
