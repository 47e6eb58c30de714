//! Backups to three buckets of a real Garage (S3): PostgreSQL physical and logical round trips, one
//! destination down (degraded, then repaired), and a SIGKILL mid-backup (afterwards no manifest
//! anywhere, multipart uploads aborted, the operation interrupted). Without Garage the
//! tests panic (integration/run-tests.sh installs it).

use std::process::Command;
use std::time::{Duration, Instant};

use dbagent::backup::engine_commands::RestoreTarget;
use dbagent::backup::{BackupConfig, BackupKind, BackupMethod, BackupState, DestinationState};
use dbagent::instances::Engine;
use dbagent::ops::OpState;
use dbagent_integration::backup_harness::{Harness, backup_id, instance};
use dbagent_integration::garage::Garage;
use dbagent_integration::servers::{OwnedDir, PG_BIN, PgServer, run_as};

fn pgbench(server: &PgServer, scale: &str) -> String {
    server.psql("postgres", "CREATE DATABASE bench");
    let port = server.port.to_string();
    run_as(
        "postgres",
        &format!("{PG_BIN}/pgbench"),
        &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-i", "-s", scale, "-q", "bench"],
    );
    run_as(
        "postgres",
        &format!("{PG_BIN}/pgbench"),
        &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-t", "100", "bench"],
    );
    server.pgbench_fingerprint("bench")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_to_three_garage_buckets() {
    let garage = Garage::start(&["zone-a", "zone-b", "zone-c"]);
    let source = PgServer::init();
    let expected = pgbench(&source, "2");
    let h = Harness::new();
    let config = BackupConfig {
        destinations: garage.destinations(None),
        postgresql: source.connection("bench"),
        part_size: 5 << 20,
        ..BackupConfig::default()
    };
    let svc = h.service(config);
    let inst = instance("pg1", Engine::Postgresql, "postgres", &source.data);

    let phys =
        backup_id(&h.succeed(&svc.start(&inst, BackupMethod::Physical, BackupKind::Manual, "p").await.unwrap()).await);
    let info = svc.get("pg1", &phys).await.unwrap();
    assert_eq!(info.state, BackupState::Complete);
    for b in &garage.buckets {
        let keys = garage.list_keys(b);
        assert!(keys.contains(&format!("pg1/{phys}/manifest.json")), "{b}: {keys:?}");
        assert!(!garage.list_multipart_uploads(b).contains("<UploadId>"), "{b} has unfinished uploads");
    }
    let root = OwnedDir::new("postgres");
    let dir = root.path().join("data");
    h.succeed(
        &svc.restore(&inst, &phys, RestoreTarget::DataDir(dir.clone()), Some("az3".into()), None, "pr").await.unwrap(),
    )
    .await;
    assert_eq!(PgServer::on(root, dir).pgbench_fingerprint("bench"), expected);

    let logical =
        backup_id(&h.succeed(&svc.start(&inst, BackupMethod::Logical, BackupKind::Manual, "l").await.unwrap()).await);
    let fresh = PgServer::init();
    // Into the connection's database, made by the restore since it does not exist yet.
    let target =
        RestoreTarget::Server { connection: fresh.connection("bench"), database: None, instance_server: false };
    h.succeed(&svc.restore(&inst, &logical, target, Some("az2".into()), None, "lr").await.unwrap()).await;
    assert_eq!(fresh.pgbench_fingerprint("bench"), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_destination_down_then_repaired() {
    let garage = Garage::start(&["r-a", "r-b", "r-c"]);
    let source = PgServer::init();
    pgbench(&source, "1");
    let h = Harness::new();
    let base = BackupConfig {
        postgresql: source.connection("bench"),
        part_size: 5 << 20,
        max_retries: 1,
        ..BackupConfig::default()
    };
    let down = h.service(BackupConfig { destinations: garage.destinations(Some("az2")), ..base.clone() });
    let inst = instance("pg1", Engine::Postgresql, "postgres", &source.data);
    let done = h.succeed(&down.start(&inst, BackupMethod::Physical, BackupKind::Manual, "d").await.unwrap()).await;
    assert_eq!(done.result.as_ref().unwrap()["state"], "degraded", "{:?}", done.result);
    let id = backup_id(&done);

    let up = h.service(BackupConfig { destinations: garage.destinations(None), ..base });
    let info = up.get("pg1", &id).await.unwrap();
    assert_eq!(info.state, BackupState::Degraded);
    assert_eq!(info.destinations[1].state, DestinationState::Missing);
    h.succeed(&up.repair("pg1", &id, "rep").await.unwrap()).await;
    assert_eq!(up.get("pg1", &id).await.unwrap().state, BackupState::Complete);
    h.succeed(&up.verify("pg1", &id, Some("az2".into()), None, "v").await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_backup_leaves_nothing() {
    let garage = Garage::start(&["k-a", "k-b", "k-c"]);
    let source = PgServer::init();
    pgbench(&source, "2");
    let state = tempfile::tempdir().unwrap();
    // Slow enough (256 KiB/s) that the kill lands mid-stream.
    let config = BackupConfig {
        destinations: garage.destinations(None),
        postgresql: source.connection("bench"),
        part_size: 5 << 20,
        rate_limit_bytes_per_sec: 256 << 10,
        ..BackupConfig::default()
    };
    let inst = instance("pg1", Engine::Postgresql, "postgres", &source.data);
    std::fs::write(state.path().join("config.json"), serde_json::to_vec(&config).unwrap()).unwrap();
    std::fs::write(state.path().join("instance.json"), serde_json::to_vec(&inst).unwrap()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_backup-crash-helper"))
        .arg(state.path())
        .arg(state.path().join("config.json"))
        .arg(state.path().join("instance.json"))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !garage.buckets.iter().all(|b| garage.list_multipart_uploads(b).contains("<UploadId>")) {
        assert!(Instant::now() < deadline, "no multipart uploads appeared");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Uploads are open and, at 256 KiB/s, far from done: the kill lands mid-stream.
    nix_kill(child.id());
    let _ = child.wait();

    let (h, interrupted) = Harness::open(state.path());
    assert_eq!(interrupted.len(), 1);
    assert_eq!(interrupted[0].kind, "backup.start");
    assert_eq!(h.engine.get(&interrupted[0].id).unwrap().state, OpState::Interrupted);
    let svc = h.service(BackupConfig { rate_limit_bytes_per_sec: 0, ..config });
    let cleaned = svc.clean_interrupted().await;
    assert_eq!(cleaned.len(), 1);
    for b in &garage.buckets {
        assert!(!garage.list_multipart_uploads(b).contains("<UploadId>"), "{b}: {}", garage.list_multipart_uploads(b));
        assert!(garage.list_keys(b).is_empty(), "{b}: {:?}", garage.list_keys(b));
    }
    assert!(svc.list("pg1").await.is_empty());
}

fn nix_kill(pid: u32) {
    let status = Command::new("kill").args(["-KILL", &pid.to_string()]).status().expect("run kill");
    assert!(status.success());
}
