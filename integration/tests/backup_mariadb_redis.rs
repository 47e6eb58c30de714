//! MariaDB (mariadb-dump) and Redis (RDB) through the real pipeline to three destinations,
//! restored into fresh servers, data identical.

use dbagent::backup::engine_commands::RestoreTarget;
use dbagent::backup::manifest::data_key;
use dbagent::backup::settings::EngineConnection;
use dbagent::backup::{BackupConfig, BackupKind, BackupMethod};
use dbagent::instances::Engine;
use dbagent::ops::OpState;
use dbagent_integration::backup_harness::{Harness, backup_id, instance};
use dbagent_integration::servers::{MariaServer, OwnedDir, RedisServer};

fn maria_conn(s: &MariaServer, db: &str) -> EngineConnection {
    EngineConnection {
        host: "127.0.0.1".into(),
        port: s.port,
        user: "root".into(),
        database: db.into(),
        bin_dir: Default::default(),
    }
}

const MARIA_CHECK: &str =
    "SELECT COUNT(*), MD5(GROUP_CONCAT(CONCAT_WS(':', id, v, n) ORDER BY id SEPARATOR ',')) FROM shop.items";

/// 20,000 InnoDB rows in shop.items; returns their [`MARIA_CHECK`].
fn seed_shop(server: &MariaServer) -> String {
    server.sql("CREATE DATABASE shop; CREATE TABLE shop.items (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(64), n DOUBLE) ENGINE=InnoDB");
    server.sql("INSERT INTO shop.items (v, n) SELECT MD5(seq), seq / 7 FROM shop.seq_1_to_20000");
    let check = server.sql(MARIA_CHECK);
    assert!(check.starts_with("20000\t"), "{check}");
    check
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_logical_round_trip() {
    let source = MariaServer::start();
    let expected = seed_shop(&source);

    let h = Harness::new();
    // Small chunks, so that a damaged last chunk comes after much of the dump.
    let config = BackupConfig {
        destinations: h.dir_destinations(),
        mariadb: maria_conn(&source, ""),
        chunk_size: 64 << 10,
        ..BackupConfig::default()
    };
    let svc = h.service(config);
    let inst = instance("maria1", Engine::Mariadb, "mysql", &source.data);
    let op = svc.start(&inst, BackupMethod::Logical, BackupKind::Manual, "m-1").await.unwrap();
    let id = backup_id(&h.succeed(&op).await);
    let chunks = svc.get("maria1", &id).await.unwrap().manifest.chunk_count;
    assert!(chunks > 2, "{chunks} chunks");

    // All or nothing: the last chunk damaged on az2 is found before a statement reaches the server.
    let object = h.state.join("dest/az2").join(data_key("maria1", &id));
    let mut bytes = std::fs::read(&object).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 0x01;
    std::fs::write(&object, &bytes).unwrap();
    let fresh = MariaServer::start();
    let target =
        || RestoreTarget::Server { connection: maria_conn(&fresh, ""), database: None, instance_server: false };
    let failed = h.wait(&svc.restore(&inst, &id, target(), Some("az2".into()), None, "m-damaged").await.unwrap()).await;
    assert_eq!(failed.state, OpState::Failed, "{failed:?}");
    let message = failed.error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
    assert!(message.contains(&format!("chunk {} ", chunks - 1)), "the error names the last chunk: {message}");
    let shop = "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = 'shop'";
    assert_eq!(fresh.sql(shop), "0", "nothing of the damaged copy reached the server");

    h.succeed(&svc.restore(&inst, &id, target(), Some("az1".into()), None, "m-restore").await.unwrap()).await;
    assert_eq!(fresh.sql(MARIA_CHECK), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_rdb_round_trip() {
    let source = RedisServer::start(None);
    for i in 0..2000 {
        source.cli(&["SET", &format!("key:{i}"), &format!("value-{}", i * 31)]);
    }
    source.cli(&["RPUSH", "list", "a", "b", "c"]);
    let expected_size = source.cli(&["DBSIZE"]);
    let h = Harness::new();
    let conn = EngineConnection { host: "127.0.0.1".into(), port: source.port, ..EngineConnection::default() };
    let config = BackupConfig { destinations: h.dir_destinations(), redis: conn, ..BackupConfig::default() };
    let svc = h.service(config);
    let inst = instance("redis1", Engine::Redis, "redis", source.root.path());
    let op = svc.start(&inst, BackupMethod::Physical, BackupKind::Manual, "r-1").await.unwrap();
    let id = backup_id(&h.succeed(&op).await);

    let dir = OwnedDir::new("redis");
    h.succeed(
        &svc.restore(&inst, &id, RestoreTarget::DataDir(dir.path().to_path_buf()), None, None, "r-restore")
            .await
            .unwrap(),
    )
    .await;
    let restored = RedisServer::start(Some(dir));
    assert_eq!(restored.cli(&["DBSIZE"]), expected_size);
    assert_eq!(restored.cli(&["GET", "key:1999"]), format!("value-{}", 1999 * 31));
    assert_eq!(restored.cli(&["LRANGE", "list", "0", "-1"]), "a\nb\nc");
}

/// mariabackup streams xbstream; the restore unpacks it with mbstream and prepares it, and a
/// server started on the folder has the same rows. The server has Debian's accounts (unix_socket
/// only) and the connection is the default's shape: a socket and no user, so the dump, running as
/// OS user mysql, logs in as mysql@localhost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_physical_round_trip() {
    let source = MariaServer::start_debian_auth();
    let expected = seed_shop(&source);

    let h = Harness::new();
    let mut config = BackupConfig { destinations: h.dir_destinations(), ..BackupConfig::default() };
    assert!(config.mariadb.user.is_empty(), "the default MariaDB connection names no user");
    config.mariadb.host = source.socket.display().to_string();
    let svc = h.service(config);
    let inst = instance("maria1", Engine::Mariadb, "mysql", &source.data);
    let op = svc.start(&inst, BackupMethod::Physical, BackupKind::Manual, "mp-1").await.unwrap();
    let done = h.succeed(&op).await;
    let id = backup_id(&done);
    let info = svc.get("maria1", &id).await.unwrap();
    assert!(info.manifest.tool_version.contains("mariabackup"), "{:?}", info.manifest.tool_version);
    assert!(done.progress.total > 0, "a physical backup knows about its size: {:?}", done.progress);

    let root = OwnedDir::new("mysql");
    let restored_dir = root.path().join("data");
    h.succeed(
        &svc.restore(&inst, &id, RestoreTarget::DataDir(restored_dir.clone()), Some("az3".into()), None, "mp-restore")
            .await
            .unwrap(),
    )
    .await;
    let restored = MariaServer::on(root, restored_dir);
    assert_eq!(restored.sql(MARIA_CHECK), expected);
}
