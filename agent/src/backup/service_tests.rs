//! The service end to end against `dir` destinations, with a stand-in dump tool (a script named
//! `redis-cli` in `bin_dir` that prints a fixed file, and names the folder it serves when asked),
//! so it runs without any database server.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

use super::engine_commands::RestoreTarget;
use super::settings::DestinationConfig;
use super::*;
use crate::instances::{Engine as DbEngine, Instance, PlanName, fixtures};
use crate::locks::ResourceLocks;
use crate::ops::{self, OpState, OperationRecord, OpsSettings};

struct Fixture {
    dir: tempfile::TempDir,
    engine: ops::OperationEngine,
    data: Vec<u8>,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = ops::OperationEngine::open(
            &dir.path().join("ops"),
            OpsSettings { max_concurrent: 4, retention: Duration::from_secs(3600), max_finished: 100 },
            ResourceLocks::default(),
            CancellationToken::new(),
        )
        .unwrap();
        // Compressible but not trivial: 3 MiB, several chunks of 64 KiB once compressed.
        let data: Vec<u8> = (0..3 << 20).map(|i: u32| ((i / 7) ^ (i >> 11)) as u8).collect();
        std::fs::write(dir.path().join("dump.bin"), &data).unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let script = bin.join("redis-cli");
        // `CONFIG GET dir` answers with the folder in `served` (the instance's, unless a test changes it).
        std::fs::write(dir.path().join("served"), "dir\n/srv/db/r1\n").unwrap();
        let (served, dump) = (dir.path().join("served"), dir.path().join("dump.bin"));
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\ncase \"$*\" in *'CONFIG GET dir'*) exec cat {};; esac\nexec cat {}\n",
                served.display(),
                dump.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self { dir, engine, data }
    }

    fn config(&self, broken: Option<&str>) -> BackupConfig {
        let mut c = BackupConfig { chunk_size: 64 << 10, ..BackupConfig::default() };
        c.redis.bin_dir = self.dir.path().join("bin");
        for az in ["az1", "az2", "az3"] {
            let path = if broken == Some(az) {
                self.dir.path().join("dump.bin/x")
            } else {
                self.dir.path().join("dest").join(az)
            };
            c.destinations.push(DestinationConfig::Dir { name: az.into(), path });
        }
        c
    }

    fn service(&self, broken: Option<&str>, key: u8) -> Arc<BackupService> {
        self.service_with(broken, Arc::new(KekWrapper::from_kek(&[key; 32]).unwrap()))
    }

    fn service_with(&self, broken: Option<&str>, keys: Arc<dyn KeyWrapper>) -> Arc<BackupService> {
        BackupService::new(self.config(broken), self.dir.path(), keys, self.engine.clone()).unwrap()
    }

    fn data_file(&self, az: &str, b: &str) -> PathBuf {
        self.dir.path().join("dest").join(az).join("r1").join(b).join("data")
    }
}

fn instance(plan: PlanName) -> Instance {
    let mut spec = fixtures::spec("r1");
    spec.engine = DbEngine::Redis;
    spec.os_user = String::new();
    spec.plan.name = plan;
    Instance { id: "r1".into(), spec, created: SystemTime::now(), updated: SystemTime::now(), generation: 1 }
}

async fn wait(engine: &ops::OperationEngine, op: &OperationRecord) -> OperationRecord {
    let mut rx = engine.watch(&op.id).unwrap();
    loop {
        let r = rx.borrow_and_update().clone();
        if r.state.is_finished() {
            return r;
        }
        tokio::time::timeout(Duration::from_secs(30), rx.changed()).await.unwrap().unwrap();
    }
}

fn backup_id(op: &OperationRecord) -> String {
    op.result.as_ref().unwrap()["backup_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn backup_verify_restore_round_trip() {
    let f = Fixture::new();
    let svc = f.service(None, 1);
    let inst = instance(PlanName::Starter);
    let op = svc.start(&inst, BackupMethod::Physical, BackupKind::Manual, "req-1").await.unwrap();
    let done = wait(&f.engine, &op).await;
    assert_eq!(done.state, OpState::Succeeded, "{:?}", done.error);
    let id = backup_id(&done);
    let list = svc.list("r1").await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].state, BackupState::Complete);
    assert_eq!(list[0].manifest.raw_bytes, f.data.len() as u64);
    assert!(list[0].manifest.stored_bytes < f.data.len() as u64 / 2, "zstd compressed the stream");
    assert_eq!(std::fs::read(f.data_file("az1", &id)).unwrap(), std::fs::read(f.data_file("az3", &id)).unwrap());

    // The same request again is the same operation, not a second backup.
    let again = svc.start(&inst, BackupMethod::Physical, BackupKind::Manual, "req-1").await.unwrap();
    assert_eq!(again.id, op.id);

    let v = wait(&f.engine, &svc.verify("r1", &id, Some("az2".into()), "v-1").await.unwrap()).await;
    assert_eq!(v.state, OpState::Succeeded, "{:?}", v.error);

    let target = f.dir.path().join("restored");
    let r = svc.restore(&inst, &id, RestoreTarget::DataDir(target.clone()), None, "r-1").await.unwrap();
    let r = wait(&f.engine, &r).await;
    assert_eq!(r.state, OpState::Succeeded, "{:?}", r.error);
    assert_eq!(std::fs::read(target.join("dump.rdb")).unwrap(), f.data);

    // A flipped byte in the third chunk on az2: verify names it; az1 is still good.
    let path = f.data_file("az2", &id);
    let mut stored = std::fs::read(&path).unwrap();
    let chunk = (64 << 10) + 16;
    stored[2 * chunk + 100] ^= 0x01;
    std::fs::write(&path, stored).unwrap();
    let v = wait(&f.engine, &svc.verify("r1", &id, Some("az2".into()), "v-2").await.unwrap()).await;
    assert_eq!(v.state, OpState::Failed);
    let msg = v.error.unwrap().message;
    assert!(msg.contains("chunk 2 ") && msg.contains("az2"), "{msg}");
    let v = wait(&f.engine, &svc.verify("r1", &id, Some("az1".into()), "v-3").await.unwrap()).await;
    assert_eq!(v.state, OpState::Succeeded);

    // Another host KEK: restore is refused before anything is written.
    let other = f.service(None, 2);
    let target2 = f.dir.path().join("restored2");
    let r = wait(
        &f.engine,
        &other.restore(&inst, &id, RestoreTarget::DataDir(target2.clone()), None, "r-2").await.unwrap(),
    )
    .await;
    assert_eq!(r.state, OpState::Failed);
    let msg = r.error.unwrap().message;
    assert!(msg.contains("cannot be unwrapped"), "{msg}");
    assert!(!target2.exists());

    let d = wait(&f.engine, &svc.delete("r1", &id, "d-1").await.unwrap()).await;
    assert_eq!(d.state, OpState::Succeeded);
    assert!(svc.list("r1").await.is_empty());
    assert!(!f.data_file("az1", &id).exists());
}

#[tokio::test]
async fn degraded_then_repaired() {
    let f = Fixture::new();
    let svc = f.service(Some("az3"), 1);
    let inst = instance(PlanName::Starter);
    let done = wait(&f.engine, &svc.start(&inst, BackupMethod::Physical, BackupKind::Manual, "q").await.unwrap()).await;
    assert_eq!(done.state, OpState::Succeeded, "{:?}", done.error);
    assert_eq!(done.result.as_ref().unwrap()["state"], "degraded");
    let id = backup_id(&done);
    let healthy = f.service(None, 1);
    let info = healthy.get("r1", &id).await.unwrap();
    assert_eq!(info.state, BackupState::Degraded);
    assert_eq!(info.destinations[2].state, DestinationState::Missing);
    let rep = wait(&f.engine, &healthy.repair("r1", &id, "rep").await.unwrap()).await;
    assert_eq!(rep.state, OpState::Succeeded, "{:?}", rep.error);
    assert_eq!(healthy.get("r1", &id).await.unwrap().state, BackupState::Complete);
    assert_eq!(std::fs::read(f.data_file("az3", &id)).unwrap(), std::fs::read(f.data_file("az1", &id)).unwrap());
}

#[tokio::test]
async fn quota_and_retention() {
    let f = Fixture::new();
    let svc = f.service(None, 1);
    let inst = instance(PlanName::Starter);
    for i in 0..10 {
        let op = svc.start(&inst, BackupMethod::Physical, BackupKind::Manual, &format!("m{i}")).await.unwrap();
        assert_eq!(wait(&f.engine, &op).await.state, OpState::Succeeded);
    }
    let e = svc.start(&inst, BackupMethod::Physical, BackupKind::Manual, "m10").await.unwrap_err();
    assert!(matches!(e, BackupError::QuotaExhausted { limit: 10, .. }), "{e}");
    assert!(e.to_string().contains("starter"), "{e}");
    // Scheduled backups do not count against the manual quota.
    let s =
        wait(&f.engine, &svc.start(&inst, BackupMethod::Physical, BackupKind::Scheduled, "s1").await.unwrap()).await;
    assert_eq!(s.state, OpState::Succeeded, "{:?}", s.error);
    let scheduled = backup_id(&s);
    // keep_daily = 7: nothing expired now, exactly the scheduled one 8 days later.
    assert!(svc.apply_retention("r1", SystemTime::now()).await.unwrap().is_empty());
    let later = SystemTime::now() + Duration::from_secs(8 * 86_400);
    assert_eq!(svc.apply_retention("r1", later).await.unwrap(), vec![scheduled]);
    assert_eq!(svc.list("r1").await.len(), 10);
}

#[tokio::test]
async fn interrupted_backup_leaves_nothing() {
    let f = Fixture::new();
    let svc = f.service(None, 1);
    // What a crash leaves: an in-flight record and partial files, no manifest.
    let inflight = f.dir.path().join("backups/inflight/b00000000000000000001.json");
    let mut uploads = Vec::new();
    for az in ["az1", "az2", "az3"] {
        let dir = f.dir.path().join("dest").join(az).join("r1/b00000000000000000001");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(".data.partial"), b"partial").unwrap();
        uploads.push(serde_json::json!({ "destination": az, "key": "r1/b00000000000000000001/data", "handle": "" }));
    }
    let record = serde_json::json!({ "instance_id": "r1", "backup_id": "b00000000000000000001", "uploads": uploads });
    std::fs::write(&inflight, serde_json::to_vec(&record).unwrap()).unwrap();
    assert_eq!(svc.clean_interrupted().await, vec!["b00000000000000000001".to_owned()]);
    assert!(!inflight.exists());
    for az in ["az1", "az2", "az3"] {
        let dir = f.dir.path().join("dest").join(az).join("r1/b00000000000000000001");
        assert!(!dir.join(".data.partial").exists());
    }
    assert!(svc.list("r1").await.is_empty());
}

#[test]
fn backup_ids_are_stable() {
    let a = service::backup_id_for("r1", "x");
    assert_eq!(a, service::backup_id_for("r1", "x"));
    assert_ne!(a, service::backup_id_for("r2", "x"));
    service::check_backup_id(&a).unwrap();
    assert!(service::check_backup_id("../etc").is_err());
    let _ = Path::new("");
}

#[tokio::test]
async fn without_a_kek_backups_are_refused_as_failed_precondition() {
    let f = Fixture::new();
    let inst = instance(PlanName::Starter);
    let mut config = crate::config::Config::default();
    config.keys.kek_file = f.dir.path().join("no-such-kek");
    let svc = f.service_with(None, keywrap::from_config(&config, false));
    let e = svc.start(&inst, BackupMethod::Physical, BackupKind::Manual, "req-1").await.unwrap_err();
    assert!(matches!(e, BackupError::FailedPrecondition(_)), "{e:?}");
    assert!(e.to_string().contains("key-encryption key") && e.to_string().contains("no-such-kek"), "{e}");
}

#[tokio::test]
async fn backups_wrapped_under_the_retired_host_key_are_refused_by_name() {
    let f = Fixture::new();
    let svc = f.service(None, 1);
    let inst = instance(PlanName::Starter);
    let done =
        wait(&f.engine, &svc.start(&inst, BackupMethod::Physical, BackupKind::Manual, "req-1").await.unwrap()).await;
    assert_eq!(done.state, OpState::Succeeded, "{:?}", done.error);
    let id = backup_id(&done);
    assert_eq!(svc.get("r1", &id).await.unwrap().manifest.key_wrapper, keywrap::KEK_WRAPPER);
    for az in ["az1", "az2", "az3"] {
        let path = f.dir.path().join("dest").join(az).join("r1").join(&id).join("manifest.json");
        let text =
            std::fs::read_to_string(&path).unwrap().replace(keywrap::KEK_WRAPPER, keywrap::RETIRED_HOST_KEY_WRAPPER);
        std::fs::write(&path, text).unwrap();
    }
    let v = wait(&f.engine, &svc.verify("r1", &id, None, "v-1").await.unwrap()).await;
    assert_eq!(v.state, OpState::Failed);
    let msg = v.error.unwrap().message;
    assert!(msg.contains("retired backup host key"), "{msg}");
}

#[test]
fn physical_size_estimate_counts_regular_files_below_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("base/1")).unwrap();
    std::fs::write(dir.path().join("PG_VERSION"), b"15\n").unwrap();
    std::fs::write(dir.path().join("base/1/1259"), vec![0u8; 8192]).unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("big"), vec![0u8; 100_000]).unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("pg_tblspc_link")).unwrap();
    assert_eq!(super::jobs::estimate_size(dir.path()), 3 + 8192, "links are not followed");
    assert_eq!(super::jobs::estimate_size(&dir.path().join("missing")), 0, "unknown, not an error");
}

#[tokio::test]
async fn a_server_serving_another_data_directory_is_not_dumped() {
    let f = Fixture::new();
    std::fs::write(f.dir.path().join("served"), "dir\n/srv/db/other-instance\n").unwrap();
    let svc = f.service(None, 7);
    let op = svc
        .start(&instance(PlanName::Starter), BackupMethod::Physical, BackupKind::Manual, "wrong-server")
        .await
        .unwrap();
    let done = wait(&f.engine, &op).await;
    assert_eq!(done.state, OpState::Failed);
    let e = done.error.unwrap();
    assert_eq!(e.code, crate::error::ErrorCode::FailedPrecondition, "{e:?}");
    assert!(e.message.contains("/srv/db/other-instance") && e.message.contains("[backup.redis]"), "{}", e.message);
    assert!(svc.list("r1").await.is_empty(), "nothing may be stored for a refused backup");
    assert!(!f.dir.path().join("dest/az1/r1").exists(), "no upload may start before the check");
}
