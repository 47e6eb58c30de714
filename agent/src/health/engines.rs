//! The real probes, one per engine, through the engines' own protocol clients (no CLI spawned
//! every few seconds). Where the server is: the `[backup.<engine>]` connection and, for
//! PostgreSQL, the port of the cluster running on the instance's data directory
//! (`BackupConfig::connection_for`), so the probe and the backups reach the same server. Who the
//! probe is: `health.monitor_user` (PostgreSQL, MariaDB) or `health.redis_user`, never the
//! connection's (superuser) user.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{Healthy, ProbeError, Prober, settings::HealthSettings};
use crate::backup::BackupConfig;
use crate::backup::settings::EngineConnection;
use crate::instances::{Engine, Instance};

/// PostgreSQL: one query that reads a catalog table every role may read, and the version.
pub const PG_QUERY: &str = "SELECT current_setting('server_version') FROM pg_database LIMIT 1";
/// MariaDB: reads a table of information_schema, which a user with USAGE alone can read.
pub const MARIA_QUERY: &str = "SELECT VERSION() FROM information_schema.SCHEMATA LIMIT 1";

pub struct EngineProber {
    settings: HealthSettings,
    connections: BackupConfig,
    data_roots: Vec<PathBuf>,
}

impl EngineProber {
    pub fn new(settings: HealthSettings, connections: BackupConfig, data_roots: Vec<PathBuf>) -> Self {
        Self { settings, connections, data_roots }
    }
}

#[async_trait::async_trait]
impl Prober for EngineProber {
    async fn check(&self, instance: &Instance, deadline: Duration) -> Result<Healthy, ProbeError> {
        let engine = instance.spec.engine;
        let started = Instant::now();
        let probe = async {
            let conn = self.connections.connection_for(instance, &self.data_roots).await;
            match engine {
                Engine::Postgresql => postgresql(&conn, &self.settings).await,
                Engine::Mariadb => mariadb(&conn, &self.settings).await,
                Engine::Redis => redis(&conn, &self.settings).await,
            }
        };
        // Dropping the probe at the deadline drops its connection: nothing lingers.
        let server_version = tokio::time::timeout(deadline, probe).await.map_err(|_| ProbeError::Deadline {
            engine: engine.as_str(),
            target: instance.id.clone(),
            deadline,
        })??;
        Ok(Healthy { server_version, latency: started.elapsed() })
    }
}

/// `host:port`, or the socket path: for messages.
fn shown(c: &EngineConnection) -> String {
    if c.host.starts_with('/') { c.host.clone() } else { format!("{}:{}", c.host, c.port) }
}

/// The first line of a root-only secret file; `None` when no file is configured.
async fn password(file: &std::path::Path, key: &str) -> Result<Option<String>, ProbeError> {
    if file.as_os_str().is_empty() {
        return Ok(None);
    }
    let text = tokio::fs::read_to_string(file)
        .await
        .map_err(|e| ProbeError::Setup(format!("{key}: read {}: {e}", file.display())))?;
    Ok(Some(text.lines().next().unwrap_or_default().to_owned()))
}

/// As `health.monitor_user` over the socket folder (peer authentication, see docs/operations.md).
async fn postgresql(c: &EngineConnection, s: &HealthSettings) -> Result<String, ProbeError> {
    let mut config = tokio_postgres::Config::new();
    if c.host.starts_with('/') {
        config.host_path(&c.host);
    } else {
        config.host(&c.host);
    }
    config.port(c.port).user(&s.monitor_user).dbname(&s.postgresql_database).application_name("dbagent-health");
    let err = |e: tokio_postgres::Error| ProbeError::Connect {
        engine: "postgresql",
        target: shown(c),
        user: s.monitor_user.clone(),
        message: e.to_string(),
    };
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(err)?;
    // The connection drives the socket; it ends when the client is dropped.
    let driver = tokio::spawn(connection);
    let row = client.query_one(PG_QUERY, &[]).await.map_err(|e| ProbeError::Query {
        engine: "postgresql",
        target: shown(c),
        query: PG_QUERY,
        message: e.to_string(),
    });
    drop(client);
    driver.abort();
    let row = row?;
    row.try_get::<_, String>(0).map_err(|e| ProbeError::Query {
        engine: "postgresql",
        target: shown(c),
        query: PG_QUERY,
        message: e.to_string(),
    })
}

/// As `health.monitor_user` over the socket (or TCP when the connection says so).
async fn mariadb(c: &EngineConnection, s: &HealthSettings) -> Result<String, ProbeError> {
    use mysql_async::prelude::Queryable;
    let pass = password(&s.mariadb_password_file, "health.mariadb_password_file").await?;
    let mut opts = mysql_async::OptsBuilder::default().user(Some(s.monitor_user.clone())).pass(pass).stmt_cache_size(0);
    opts = if c.host.starts_with('/') {
        opts.socket(Some(c.host.clone()))
    } else {
        // Not the client's switch to the server's socket: the probe checks what it was told to.
        opts.ip_or_hostname(c.host.clone()).tcp_port(c.port).prefer_socket(false)
    };
    let mut conn = mysql_async::Conn::new(opts).await.map_err(|e| ProbeError::Connect {
        engine: "mariadb",
        target: shown(c),
        user: s.monitor_user.clone(),
        message: e.to_string(),
    })?;
    let version: Result<Option<String>, _> = conn.query_first(MARIA_QUERY).await;
    // A clean COM_QUIT; the server would also notice a dropped socket.
    let _ = conn.disconnect().await;
    let query_err =
        |message: String| ProbeError::Query { engine: "mariadb", target: shown(c), query: MARIA_QUERY, message };
    version.map_err(|e| query_err(e.to_string()))?.ok_or_else(|| query_err("no row".into()))
}

/// PING, a keyspace read (DBSIZE) and `INFO server`, pipelined in one round trip.
async fn redis(c: &EngineConnection, s: &HealthSettings) -> Result<String, ProbeError> {
    let pass = password(&s.redis_password_file, "health.redis_password_file").await?;
    let addr = if c.host.starts_with('/') {
        redis::ConnectionAddr::Unix(PathBuf::from(&c.host))
    } else {
        redis::ConnectionAddr::Tcp(c.host.clone(), c.port)
    };
    let info = redis::ConnectionInfo {
        addr,
        redis: redis::RedisConnectionInfo {
            db: 0,
            username: (!s.redis_user.is_empty()).then(|| s.redis_user.clone()),
            password: pass,
            protocol: redis::ProtocolVersion::RESP2,
        },
    };
    let connect_err = |e: redis::RedisError| ProbeError::Connect {
        engine: "redis",
        target: shown(c),
        user: if s.redis_user.is_empty() { "default".into() } else { s.redis_user.clone() },
        message: e.to_string(),
    };
    let client = redis::Client::open(info).map_err(connect_err)?;
    let mut conn = client.get_multiplexed_async_connection().await.map_err(connect_err)?;
    let (pong, _keys, info): (String, i64, String) =
        redis::pipe().cmd("PING").cmd("DBSIZE").cmd("INFO").arg("server").query_async(&mut conn).await.map_err(
            |e| ProbeError::Query {
                engine: "redis",
                target: shown(c),
                query: "PING; DBSIZE; INFO server",
                message: e.to_string(),
            },
        )?;
    if pong != "PONG" {
        return Err(ProbeError::Query {
            engine: "redis",
            target: shown(c),
            query: "PING",
            message: format!("answered {pong:?}"),
        });
    }
    Ok(redis_version(&info).unwrap_or_default().to_owned())
}

/// `redis_version:7.0.15` from the text of `INFO server`.
fn redis_version(info: &str) -> Option<&str> {
    info.lines().find_map(|l| l.strip_prefix("redis_version:")).map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redis_version_is_read_from_info() {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\n";
        assert_eq!(redis_version(info), Some("7.0.15"));
        assert_eq!(redis_version("# Server\r\n"), None);
    }

    #[tokio::test]
    async fn a_server_that_does_not_exist_is_a_connect_failure_naming_the_monitor_role() {
        let s = HealthSettings::default();
        let c = EngineConnection { host: "/nonexistent-dbagent-socket-dir".into(), port: 5432, ..Default::default() };
        let e = postgresql(&c, &s).await.unwrap_err();
        assert!(matches!(&e, ProbeError::Connect { user, .. } if user == "dbagent_monitor"), "{e:?}");
        let c = EngineConnection { host: "/nonexistent-dbagent-socket-dir/m.sock".into(), ..Default::default() };
        let e = mariadb(&c, &s).await.unwrap_err();
        assert!(matches!(&e, ProbeError::Connect { .. }), "{e:?}");
        let e = redis(&c, &s).await.unwrap_err();
        assert!(matches!(&e, ProbeError::Connect { .. }), "{e:?}");
        // A password file that cannot be read is the agent's problem, said as such.
        let s = HealthSettings { mariadb_password_file: "/nonexistent-dbagent/pw".into(), ..s };
        let e = mariadb(&c, &s).await.unwrap_err();
        assert!(matches!(&e, ProbeError::Setup(m) if m.contains("health.mariadb_password_file")), "{e:?}");
    }
}
