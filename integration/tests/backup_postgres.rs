//! PostgreSQL 15 with pgbench data: physical (pg_basebackup tar) and logical (pg_dump -Fc) backups
//! through the real pipeline to three destinations, restored into fresh clusters, data identical.
//! Destinations: Garage buckets when DBAGENT_TEST_GARAGE is set up (see backup_s3.rs), `dir` here.

use dbagent::backup::engine_commands::RestoreTarget;
use dbagent::backup::manifest::data_key;
use dbagent::backup::restore_dir::ASIDE;
use dbagent::backup::{BackupConfig, BackupKind, BackupMethod, BackupState};
use dbagent::error::ErrorCode;
use dbagent::instances::Engine;
use dbagent::ops::OpState;
use dbagent_integration::backup_harness::{Harness, backup_id, instance};
use dbagent_integration::servers::{OwnedDir, PG_BIN, PgServer, run_as};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_physical_and_logical_round_trip() {
    let source = PgServer::init();
    source.psql("postgres", "CREATE DATABASE bench");
    run_as(
        "postgres",
        &format!("{PG_BIN}/pgbench"),
        &["-h", "127.0.0.1", "-p", &source.port.to_string(), "-U", "postgres", "-i", "-s", "2", "-q", "bench"],
    );
    run_as(
        "postgres",
        &format!("{PG_BIN}/pgbench"),
        &["-h", "127.0.0.1", "-p", &source.port.to_string(), "-U", "postgres", "-t", "200", "-c", "2", "bench"],
    );
    let expected = source.pgbench_fingerprint("bench");

    // Two clusters on the host, and the configured connection points at the other one: the
    // backup of pg1 must dump pg1's own cluster (its port from postmaster.pid), never the other.
    let other = PgServer::init();
    other.psql("postgres", "CREATE DATABASE bench");
    let h = Harness::new();
    let config = BackupConfig {
        destinations: h.dir_destinations(),
        postgresql: other.connection("bench"),
        ..BackupConfig::default()
    };
    let svc = h.service(config);
    let inst = instance("pg1", Engine::Postgresql, "postgres", &source.data);

    // Physical: restore into a new data folder, start a cluster on it.
    let op = svc.start(&inst, BackupMethod::Physical, BackupKind::Manual, "phys-1").await.unwrap();
    let done = h.succeed(&op).await;
    let phys = backup_id(&done);
    let progress = &done.progress;
    assert!(
        progress.total > 0 && progress.done <= progress.total,
        "a physical backup knows about its size: {progress:?}"
    );
    assert!(
        progress.message.contains("az1") && progress.message.contains("az3"),
        "bytes out per destination: {progress:?}"
    );
    let info = svc.get("pg1", &phys).await.unwrap();
    assert_eq!(info.state, BackupState::Complete);
    assert!(info.manifest.tool_version.contains("pg_basebackup"), "{}", info.manifest.tool_version);
    let root = OwnedDir::new("postgres");
    let restored_dir = root.path().join("data");
    let r = svc
        .restore(&inst, &phys, RestoreTarget::DataDir(restored_dir.clone()), Some("az2".into()), "phys-restore")
        .await
        .unwrap();
    h.succeed(&r).await;
    let restored = PgServer::on(root, restored_dir.clone());
    assert_eq!(restored.pgbench_fingerprint("bench"), expected);

    // In place: the restored cluster, changed and stopped, is the data directory of an instance.
    restored.psql("bench", "DELETE FROM pgbench_history");
    let changed = restored.pgbench_fingerprint("bench");
    assert_ne!(changed, expected);
    restored.stop();
    let in_place = instance("pg1", Engine::Postgresql, "postgres", &restored_dir);
    // A flipped byte in az2's copy fails the restore part-way: the old data must come back whole.
    let object = h.state.join("dest/az2").join(data_key("pg1", &phys));
    let mut bytes = std::fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&object, &bytes).unwrap();
    let r = svc
        .restore(&in_place, &phys, RestoreTarget::DataDir(restored_dir.clone()), Some("az2".into()), "in-place-bad")
        .await
        .unwrap();
    let failed = h.wait(&r).await;
    assert_eq!(failed.state, OpState::Failed, "a corrupt copy must fail the restore: {failed:?}");
    let message = failed.error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
    assert!(message.contains("chunks"), "the restore must fail on the damaged chunk, part-way: {message}");
    assert_eq!(
        failed.error.as_ref().map(|e| e.code),
        Some(ErrorCode::FailedPrecondition),
        "corrupt, not a tool failure"
    );
    assert!(!restored_dir.join(ASIDE).exists(), "the set-aside folder is gone after the rollback");
    restored.start();
    assert_eq!(restored.pgbench_fingerprint("bench"), changed, "a failed restore in place lost or mixed data");
    restored.stop();
    let r = svc
        .restore(&in_place, &phys, RestoreTarget::DataDir(restored_dir.clone()), Some("az1".into()), "in-place")
        .await
        .unwrap();
    h.succeed(&r).await;
    assert!(!restored_dir.join(ASIDE).exists(), "the old data is dropped after a successful restore");
    restored.start();
    assert_eq!(restored.pgbench_fingerprint("bench"), expected, "restore in place");

    // Logical: restore into a fresh cluster (pg_restore --create).
    let op = svc.start(&inst, BackupMethod::Logical, BackupKind::Manual, "logical-1").await.unwrap();
    let logical = backup_id(&h.succeed(&op).await);
    let fresh = PgServer::init();
    // Restoring into the instance's own server checks that it is the instance's: `fresh` is not.
    let wrong =
        RestoreTarget::Server { connection: fresh.connection("postgres"), database: None, instance_server: true };
    let refused = h.wait(&svc.restore(&inst, &logical, wrong, None, "logical-wrong-server").await.unwrap()).await;
    let message = refused.error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
    assert_eq!(refused.state, OpState::Failed, "{refused:?}");
    assert!(message.contains("serves data directory"), "{message}");
    assert_eq!(refused.error.as_ref().map(|e| e.code), Some(ErrorCode::FailedPrecondition));
    assert!(
        fresh.psql("postgres", "SELECT count(*) FROM pg_database WHERE datname = 'bench'") == "0",
        "nothing was restored into the wrong server"
    );
    let target =
        RestoreTarget::Server { connection: fresh.connection("postgres"), database: None, instance_server: false };
    let r = svc.restore(&inst, &logical, target, None, "logical-restore").await.unwrap();
    h.succeed(&r).await;
    assert_eq!(fresh.pgbench_fingerprint("bench"), expected);

    // An instance whose folder no running server serves: the configured server (the other
    // cluster) is not dumped in its name.
    let stray = instance("pg9", Engine::Postgresql, "postgres", other.root.path());
    let op = svc.start(&stray, BackupMethod::Physical, BackupKind::Manual, "stray-1").await.unwrap();
    let refused = h.wait(&op).await;
    let message = refused.error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
    assert_eq!(refused.state, OpState::Failed, "{refused:?}");
    assert!(message.contains("serves data directory") && message.contains("pg9"), "{message}");
    assert_eq!(refused.error.as_ref().map(|e| e.code), Some(ErrorCode::FailedPrecondition));
    assert!(svc.list("pg9").await.is_empty());

    // Verify reads every chunk on every healthy destination; az2's copy was damaged above.
    let v = svc.verify("pg1", &phys, Some("az2".into()), "verify-az2").await.unwrap();
    assert_eq!(h.wait(&v).await.state, OpState::Failed, "verify must notice the flipped byte on az2");
    for az in ["az1", "az3"] {
        let v = svc.verify("pg1", &phys, Some(az.into()), &format!("verify-{az}")).await.unwrap();
        h.succeed(&v).await;
    }
}
