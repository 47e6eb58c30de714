//! The engine settings a plan change sets in a running server (MariaDB `innodb_buffer_pool_size`,
//! Redis `maxmemory`) survive the server's restart: the agent's real engine control
//! (`plan::ToolEngineControl`, the code a ChangePlan runs) against real servers from Debian's
//! packages, each restarted twice — once to show a setting made only at runtime is lost, once to
//! show the kept one is read back.

use dbagent::backup::settings::BackupConfig;
use dbagent::instances::Engine;
use dbagent::plan::engine::mariadb_file;
use dbagent::plan::engine_settings::EngineSetting;
use dbagent::plan::{EngineControl, ToolEngineControl};
use dbagent_integration::backup_harness::instance;
use dbagent_integration::servers::{MariaServer, OwnedDir, RedisServer};
use std::path::PathBuf;

const MIB: u64 = 1 << 20;

fn setting(name: &str, value: u64) -> EngineSetting {
    EngineSetting { name: name.into(), value, needs_restart: false }
}

fn control(backup: BackupConfig, data_root: PathBuf, mariadb_config_dir: PathBuf) -> ToolEngineControl {
    ToolEngineControl {
        backup,
        data_roots: vec![data_root],
        postgresql_config_root: "/nonexistent-dbagent-test".into(),
        mariadb_config_dir,
    }
}

#[tokio::test]
async fn mariadb_buffer_pool_set_by_a_plan_change_is_kept_across_a_restart() {
    // root's, like /etc/mysql/mariadb.conf.d.
    let conf_dir = tempfile::tempdir().unwrap();
    let mut server = MariaServer::start_debian_auth_reading(conf_dir.path());
    let mut backup = BackupConfig::default();
    backup.mariadb.host = server.socket.display().to_string();
    let engines = control(backup, server.root.path().to_path_buf(), conf_dir.path().to_path_buf());
    // unit dbagent-test-m1.service: the server's group is [mariadbd].
    let m1 = instance("m1", Engine::Mariadb, "mysql", &server.data);
    let pool = "innodb_buffer_pool_size";
    let default = engines.read(&m1, pool).await.unwrap();
    assert_ne!(default, 256 * MIB, "the test needs a default other than the value it sets");

    // Set at runtime only: the restart loses it (what happened before the agent kept them).
    engines.set_runtime(&m1, &setting(pool, 256 * MIB)).await.unwrap();
    assert_eq!(engines.read(&m1, pool).await.unwrap(), 256 * MIB);
    server.restart();
    assert_eq!(engines.read(&m1, pool).await.unwrap(), default, "a runtime-only setting survived a restart");

    // Set and kept: the restart reads it from the agent's file.
    engines.set_runtime(&m1, &setting(pool, 256 * MIB)).await.unwrap();
    let kept = engines.keep_for_next_start(&m1, &[setting(pool, 256 * MIB)]).await.unwrap();
    assert_eq!(PathBuf::from(&kept), conf_dir.path().join(mariadb_file("m1")));
    let text = std::fs::read_to_string(&kept).unwrap();
    assert!(text.contains("[mariadbd]\ninnodb_buffer_pool_size = 268435456\n"), "{text}");
    server.restart();
    assert_eq!(engines.read(&m1, pool).await.unwrap(), 256 * MIB, "the kept setting was not read at the restart");
}

#[tokio::test]
async fn redis_maxmemory_set_by_a_plan_change_is_kept_across_a_restart() {
    let mut server = RedisServer::start(Some(OwnedDir::new("redis")));
    let mut backup = BackupConfig::default();
    backup.redis.port = server.port;
    let engines = control(backup, server.root.path().to_path_buf(), "/nonexistent-dbagent-test".into());
    let r1 = instance("r1", Engine::Redis, "redis", server.root.path());
    assert_eq!(engines.read(&r1, "maxmemory").await.unwrap(), 0);

    engines.set_runtime(&r1, &setting("maxmemory", 96 * MIB)).await.unwrap();
    server.restart();
    assert_eq!(engines.read(&r1, "maxmemory").await.unwrap(), 0, "a runtime-only setting survived a restart");

    engines.set_runtime(&r1, &setting("maxmemory", 96 * MIB)).await.unwrap();
    assert_eq!(engines.keep_for_next_start(&r1, &[setting("maxmemory", 96 * MIB)]).await.unwrap(), "CONFIG REWRITE");
    server.restart();
    assert_eq!(engines.read(&r1, "maxmemory").await.unwrap(), 96 * MIB, "the kept setting was not read at the restart");
}
