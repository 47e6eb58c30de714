//! The service end to end against `dir` destinations and stand-in tools (`test_fixture`): what
//! works. `refusal_tests` has what is refused, each beside the path that is allowed.

use std::time::{Duration, SystemTime};

use super::engine_commands::RestoreTarget;
use super::test_fixture::{Fixture, backup_id, instance};
use super::*;
use crate::instances::PlanName;
use crate::ops::OpState;

#[tokio::test]
async fn backup_verify_restore_round_trip() {
    let f = Fixture::new();
    let svc = f.service(None, 1);
    let inst = instance(PlanName::Starter);
    let op = svc.start(&inst, BackupMethod::Physical, BackupKind::Manual, "req-1").await.unwrap();
    let done = f.wait(&op).await;
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

    let v = f.wait(&svc.verify("r1", &id, Some("az2".into()), None, "v-1").await.unwrap()).await;
    assert_eq!(v.state, OpState::Succeeded, "{:?}", v.error);

    let target = f.dir.path().join("restored");
    let r = svc.restore(&inst, &id, RestoreTarget::DataDir(target.clone()), None, None, "r-1").await.unwrap();
    let r = f.wait(&r).await;
    assert_eq!(r.state, OpState::Succeeded, "{:?}", r.error);
    assert_eq!(std::fs::read(target.join("dump.rdb")).unwrap(), f.data);

    // A flipped byte in the third chunk on az2: verify names it; az1 is still good.
    let path = f.data_file("az2", &id);
    let mut stored = std::fs::read(&path).unwrap();
    let chunk = (64 << 10) + 16;
    stored[2 * chunk + 100] ^= 0x01;
    std::fs::write(&path, stored).unwrap();
    let v = f.wait(&svc.verify("r1", &id, Some("az2".into()), None, "v-2").await.unwrap()).await;
    assert_eq!(v.state, OpState::Failed);
    let msg = v.error.unwrap().message;
    assert!(msg.contains("chunk 2 ") && msg.contains("az2"), "{msg}");
    let v = f.wait(&svc.verify("r1", &id, Some("az1".into()), None, "v-3").await.unwrap()).await;
    assert_eq!(v.state, OpState::Succeeded);

    let d = f.wait(&svc.delete("r1", &id, "d-1", true).await.unwrap()).await;
    assert_eq!(d.state, OpState::Succeeded);
    assert!(svc.list("r1").await.is_empty());
    assert!(!f.data_file("az1", &id).exists());
}

#[tokio::test]
async fn degraded_then_repaired() {
    let f = Fixture::new();
    let svc = f.service(Some("az3"), 1);
    let inst = instance(PlanName::Starter);
    let done = f.wait(&svc.start(&inst, BackupMethod::Physical, BackupKind::Manual, "q").await.unwrap()).await;
    assert_eq!(done.state, OpState::Succeeded, "{:?}", done.error);
    assert_eq!(done.result.as_ref().unwrap()["state"], "degraded");
    let id = backup_id(&done);
    let healthy = f.service(None, 1);
    let info = healthy.get("r1", &id).await.unwrap();
    assert_eq!(info.state, BackupState::Degraded);
    assert_eq!(info.destinations[2].state, DestinationState::Missing);
    let rep = f.wait(&healthy.repair("r1", &id, "rep").await.unwrap()).await;
    assert_eq!(rep.state, OpState::Succeeded, "{:?}", rep.error);
    assert_eq!(healthy.get("r1", &id).await.unwrap().state, BackupState::Complete);
    assert_eq!(std::fs::read(f.data_file("az3", &id)).unwrap(), std::fs::read(f.data_file("az1", &id)).unwrap());
}

#[tokio::test]
async fn quota_and_retention() {
    let f = Fixture::new();
    let svc = f.service(None, 1);
    let inst = instance(PlanName::Starter);
    let mut manual = Vec::new();
    for i in 0..10 {
        let op = svc.start(&inst, BackupMethod::Physical, BackupKind::Manual, &format!("m{i}")).await.unwrap();
        let done = f.wait(&op).await;
        assert_eq!(done.state, OpState::Succeeded);
        manual.push(backup_id(&done));
    }
    let e = svc.start(&inst, BackupMethod::Physical, BackupKind::Manual, "m10").await.unwrap_err();
    assert!(matches!(e, BackupError::QuotaExhausted { limit: 10, .. }), "{e}");
    assert_eq!(crate::error::HasErrorCode::code(&e), crate::error::ErrorCode::ResourceExhausted);
    let msg = e.to_string();
    assert!(msg.contains("starter") && msg.contains(&format!("the oldest is {}", manual[0])), "{msg}");
    // Scheduled backups do not count against the manual quota.
    let s = f.wait(&svc.start(&inst, BackupMethod::Physical, BackupKind::Scheduled, "s1").await.unwrap()).await;
    assert_eq!(s.state, OpState::Succeeded, "{:?}", s.error);
    let scheduled = backup_id(&s);
    // Manual backups expire after the default 30 days, recorded in their manifests; the scheduled
    // one has no expiry of its own (the GFS rule decides) and is the newest of today.
    let listed = svc.list("r1").await;
    let m0 = listed.iter().find(|b| b.manifest.backup_id == manual[0]).unwrap();
    let life = m0.manifest.expires.unwrap().duration_since(m0.manifest.started).unwrap();
    assert_eq!(life, Duration::from_secs(30 * 86_400));
    assert!(listed.iter().find(|b| b.manifest.backup_id == scheduled).unwrap().manifest.expires.is_none());
    assert!(svc.apply_retention(&inst, SystemTime::now()).await.unwrap().removed.is_empty());
    let later = SystemTime::now() + Duration::from_secs(31 * 86_400);
    let outcome = svc.apply_retention(&inst, later).await.unwrap();
    assert_eq!(outcome.removed, manual, "every manual backup expired");
    assert_eq!(outcome.kept.len(), 1);
    assert_eq!(outcome.kept[0].0, scheduled);
    assert_eq!(svc.list("r1").await.len(), 1);
    // The quota has room again.
    let op = svc.start(&inst, BackupMethod::Physical, BackupKind::Manual, "m11").await.unwrap();
    assert_eq!(f.wait(&op).await.state, OpState::Succeeded);
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
fn physical_size_estimate_counts_regular_files_below_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("base/1")).unwrap();
    std::fs::write(dir.path().join("PG_VERSION"), b"15\n").unwrap();
    std::fs::write(dir.path().join("base/1/1259"), vec![0u8; 8192]).unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("big"), vec![0u8; 100_000]).unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("pg_tblspc_link")).unwrap();
    assert_eq!(super::backup_job::estimate_size(dir.path()), 3 + 8192, "links are not followed");
    assert_eq!(super::backup_job::estimate_size(&dir.path().join("missing")), 0, "unknown, not an error");
    // The tenant swapped the data directory itself for a link: nothing behind it is walked.
    let swapped = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), swapped.path().join("data")).unwrap();
    assert_eq!(super::backup_job::estimate_size(&swapped.path().join("data")), 0, "a linked data dir is not walked");
    std::os::unix::fs::symlink(dir.path(), swapped.path().join("data2")).unwrap();
    assert_eq!(super::backup_job::estimate_size(&swapped.path().join("data2")), 0, "not even a link to the real one");
}
