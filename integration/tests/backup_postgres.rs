//! PostgreSQL 15 with pgbench data: physical (pg_basebackup tar) and logical (pg_dump -Fc) backups
//! through the real pipeline to three destinations, restored into fresh clusters, data identical.
//! A logical restore runs as the target database's owner and is all or nothing.
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
        .restore(&inst, &phys, RestoreTarget::DataDir(restored_dir.clone()), Some("az2".into()), None, "phys-restore")
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
        .restore(
            &in_place,
            &phys,
            RestoreTarget::DataDir(restored_dir.clone()),
            Some("az2".into()),
            None,
            "in-place-bad",
        )
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
        .restore(&in_place, &phys, RestoreTarget::DataDir(restored_dir.clone()), Some("az1".into()), None, "in-place")
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
    let refused = h.wait(&svc.restore(&inst, &logical, wrong, None, None, "logical-wrong-server").await.unwrap()).await;
    let message = refused.error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
    assert_eq!(refused.state, OpState::Failed, "{refused:?}");
    assert!(message.contains("serves data directory"), "{message}");
    assert_eq!(refused.error.as_ref().map(|e| e.code), Some(ErrorCode::FailedPrecondition));
    assert!(
        fresh.psql("postgres", "SELECT count(*) FROM pg_database WHERE datname = 'bench'") == "0",
        "nothing was restored into the wrong server"
    );
    // Into the connection's database, made by the restore since it does not exist yet.
    let target =
        RestoreTarget::Server { connection: fresh.connection("bench"), database: None, instance_server: false };
    let r = svc.restore(&inst, &logical, target, None, None, "logical-restore").await.unwrap();
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
    let v = svc.verify("pg1", &phys, Some("az2".into()), None, "verify-az2").await.unwrap();
    assert_eq!(h.wait(&v).await.state, OpState::Failed, "verify must notice the flipped byte on az2");
    for az in ["az1", "az3"] {
        let v = svc.verify("pg1", &phys, Some(az.into()), None, &format!("verify-{az}")).await.unwrap();
        h.succeed(&v).await;
    }
}

const ITEMS_CHECK: &str = "SELECT count(*) || ':' || md5(string_agg(v, ',' ORDER BY id)) FROM items";

/// The dump holds what the tenant put in their database, so pg_restore runs as the target
/// database's owner role: every restored object belongs to it, not to postgres. And it is all or
/// nothing: a statement refused late (at the index, after the data) rolls everything back, and a
/// copy whose last chunk is damaged is refused, naming the chunk, before anything reaches the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_logical_restore_runs_as_the_database_owner_and_all_or_nothing() {
    let source = PgServer::init();
    source.psql("postgres", "CREATE ROLE shop_owner");
    source.psql("postgres", "CREATE DATABASE shop OWNER shop_owner");
    source.psql(
        "shop",
        "SET ROLE shop_owner; \
         CREATE TABLE items AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 40000) g; \
         CREATE INDEX items_v_idx ON items (v); \
         CREATE FUNCTION item_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM items'",
    );
    let expected = source.psql("shop", ITEMS_CHECK);
    let h = Harness::new();
    // Small chunks: the damaged one is the last of many.
    let config = BackupConfig {
        destinations: h.dir_destinations(),
        postgresql: source.connection("shop"),
        chunk_size: 64 << 10,
        ..BackupConfig::default()
    };
    let svc = h.service(config);
    let inst = instance("pg1", Engine::Postgresql, "postgres", &source.data);
    let op = svc.start(&inst, BackupMethod::Logical, BackupKind::Manual, "logical").await.unwrap();
    let id = backup_id(&h.succeed(&op).await);
    let chunks = svc.get("pg1", &id).await.unwrap().manifest.chunk_count;
    assert!(chunks > 3, "{chunks} chunks");

    // The target: a database of the tenant's role, with a table of its own in it.
    let fresh = PgServer::init();
    fresh.psql("postgres", "CREATE ROLE tenant_owner");
    fresh.psql("postgres", "CREATE DATABASE shop OWNER tenant_owner");
    fresh.psql("shop", "SET ROLE tenant_owner; CREATE TABLE marker (x int); INSERT INTO marker VALUES (1)");
    let unchanged = |when: &str| {
        let tables = fresh.psql(
            "shop",
            "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'",
        );
        assert_eq!(tables, "items_v_idx,marker", "{when}: the database changed");
        assert_eq!(fresh.psql("shop", "SELECT count(*) FROM marker"), "1", "{when}");
        assert_eq!(fresh.psql("shop", "SELECT count(*) FROM pg_proc WHERE proname = 'item_count'"), "0", "{when}");
    };
    let target =
        || RestoreTarget::Server { connection: fresh.connection("shop"), database: None, instance_server: false };

    // A relation in the way of the index, which comes after the table and its 40,000 rows: the
    // restore fails there, and the table, its rows and the function are rolled back with it.
    fresh.psql("shop", "SET ROLE tenant_owner; CREATE TABLE items_v_idx (x int)");
    let failed =
        h.wait(&svc.restore(&inst, &id, target(), Some("az1".into()), None, "late-failure").await.unwrap()).await;
    assert_eq!(failed.state, OpState::Failed, "{failed:?}");
    let message = failed.error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
    assert!(message.contains("pg_restore") && message.contains("items_v_idx"), "{message}");
    unchanged("after a statement failed part-way");

    // The last chunk damaged on az2: refused, naming it, and nothing reached the server.
    let object = h.state.join("dest/az2").join(data_key("pg1", &id));
    let mut bytes = std::fs::read(&object).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 0x01;
    std::fs::write(&object, &bytes).unwrap();
    let failed = h.wait(&svc.restore(&inst, &id, target(), Some("az2".into()), None, "damaged").await.unwrap()).await;
    assert_eq!(failed.state, OpState::Failed, "{failed:?}");
    assert_eq!(failed.error.as_ref().map(|e| e.code), Some(ErrorCode::FailedPrecondition));
    let message = failed.error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
    assert!(message.contains(&format!("chunk {} ", chunks - 1)) && message.contains("az2"), "{message}");
    unchanged("after a damaged copy");

    // The allowed path: the intact copy restores, and everything it made belongs to tenant_owner.
    fresh.psql("shop", "DROP TABLE items_v_idx");
    h.succeed(&svc.restore(&inst, &id, target(), Some("az1".into()), None, "good").await.unwrap()).await;
    assert_eq!(fresh.psql("shop", ITEMS_CHECK), expected);
    assert_eq!(fresh.psql("shop", "SELECT tableowner FROM pg_tables WHERE tablename = 'items'"), "tenant_owner");
    assert_eq!(
        fresh.psql("shop", "SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE proname = 'item_count'"),
        "tenant_owner"
    );
    assert_eq!(
        fresh.psql("shop", "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'items_v_idx'"),
        "tenant_owner"
    );
}
