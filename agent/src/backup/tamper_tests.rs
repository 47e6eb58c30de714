//! Storage that is not trusted: manifests rewritten in a `dir` destination are refused by restore,
//! verify, repair and retention before they act, each refusal beside the untouched path that
//! works; and a backup id is never reused, so a failed run cannot delete a completed backup.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::action::BackupAction;
use super::engine_commands::RestoreTarget;
use super::test_fixture::{Fixture, backup_id, instance};
use super::*;
use crate::error::ErrorCode;
use crate::instances::PlanName;
use crate::ops::{OpState, OperationRecord};

const AZS: [&str; 3] = ["az1", "az2", "az3"];

async fn take_backup(f: &Fixture, svc: &BackupService, kind: BackupKind, request: &str) -> String {
    let op = svc.start(&instance(PlanName::Starter), BackupMethod::Physical, kind, request).await.unwrap();
    let done = f.wait(&op).await;
    assert_eq!(done.state, OpState::Succeeded, "{:?}", done.error);
    backup_id(&done)
}

fn manifest_path(f: &Fixture, az: &str, instance: &str, id: &str) -> PathBuf {
    f.dir.path().join("dest").join(az).join(instance).join(id).join("manifest.json")
}

/// Rewrites field `field` of the stored manifest on `azs`, as someone with write access to the
/// destination would.
fn tamper(f: &Fixture, azs: &[&str], id: &str, field: &str, value: serde_json::Value) {
    for az in azs {
        let path = manifest_path(f, az, "r1", id);
        let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        m[field] = value.clone();
        std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    }
}

async fn verify(f: &Fixture, svc: &BackupService, id: &str, az: &str, request: &str) -> OperationRecord {
    f.wait(&svc.verify("r1", id, Some(az.into()), None, request).await.unwrap()).await
}

#[tokio::test]
async fn a_manifest_naming_another_instance_is_refused_by_restore_and_verify_before_anything_is_written() {
    let f = Fixture::new();
    let svc = f.service(None, 1);
    let id = take_backup(&f, &svc, BackupKind::Manual, "req-1").await;
    let good = svc.get("r1", &id).await.unwrap().manifest;
    tamper(&f, &AZS, &id, "instance_id", "r2".into());
    let target = f.dir.path().join("restored");
    let e = svc
        .restore(&instance(PlanName::Starter), &id, RestoreTarget::DataDir(target.clone()), None, None, "r-1")
        .await
        .unwrap_err();
    assert!(matches!(e, BackupError::ManifestForeign { .. }), "{e:?}");
    assert!(e.to_string().contains("names another instance") && e.to_string().contains(&id), "{e}");
    assert_eq!(crate::error::HasErrorCode::code(&e), ErrorCode::FailedPrecondition);
    let e = svc.verify("r1", &id, None, None, "v-1").await.unwrap_err();
    assert!(matches!(e, BackupError::ManifestForeign { .. }), "{e:?}");
    assert!(!target.exists(), "nothing may be written for a refused manifest");

    // The manifest put back as it was: the same restore goes through.
    tamper(&f, &AZS, &id, "instance_id", good.instance_id.into());
    let inst = instance(PlanName::Starter);
    let op = svc.restore(&inst, &id, RestoreTarget::DataDir(target.clone()), None, None, "r-2").await.unwrap();
    assert_eq!(f.wait(&op).await.state, OpState::Succeeded);
    assert_eq!(std::fs::read(target.join("dump.rdb")).unwrap(), f.data);
}

#[tokio::test]
async fn another_instances_backup_copied_under_this_instance_is_not_restored() {
    let f = Fixture::new();
    let svc = f.service(None, 1);
    let id = take_backup(&f, &svc, BackupKind::Manual, "req-1").await;
    // r1's backup copied whole into r2's prefix, then its manifest rewritten to name r2: the
    // MAC and the wrapped key are bound to r1.
    for az in AZS {
        let (from, to) = (f.dir.path().join("dest").join(az).join("r1"), f.dir.path().join("dest").join(az).join("r2"));
        std::fs::create_dir_all(to.join(&id)).unwrap();
        for file in ["data", "manifest.json"] {
            std::fs::copy(from.join(&id).join(file), to.join(&id).join(file)).unwrap();
        }
    }
    let e = svc.verify("r2", &id, None, None, "v-copied").await.unwrap_err();
    assert!(matches!(e, BackupError::ManifestForeign { .. }), "{e:?}");
    for az in AZS {
        let path = manifest_path(&f, az, "r2", &id);
        let text =
            std::fs::read_to_string(&path).unwrap().replace("\"instance_id\": \"r1\"", "\"instance_id\": \"r2\"");
        std::fs::write(&path, text).unwrap();
    }
    let op = f.wait(&svc.verify("r2", &id, None, None, "v-renamed").await.unwrap()).await;
    assert_eq!(op.state, OpState::Failed);
    let msg = op.error.unwrap().message;
    assert!(msg.contains("cannot be unwrapped") && msg.contains(&id), "{msg}");
    // r1's own copy still verifies.
    assert_eq!(verify(&f, &svc, &id, "az1", "v-r1").await.state, OpState::Succeeded);
}

#[tokio::test]
async fn a_huge_chunk_size_is_refused_before_anything_is_allocated() {
    let f = Fixture::new();
    let svc = f.service(None, 1);
    let id = take_backup(&f, &svc, BackupKind::Manual, "req-1").await;
    tamper(&f, &AZS, &id, "chunk_size", serde_json::json!(1u64 << 40));
    let e = svc.verify("r1", &id, None, None, "v-1").await.unwrap_err();
    assert!(matches!(e, BackupError::ManifestNotAuthenticated { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("manifest not authenticated") && msg.contains("chunk_size") && msg.contains("az1"), "{msg}");
    tamper(&f, &AZS, &id, "chunk_size", serde_json::json!(64 << 10));
    assert_eq!(verify(&f, &svc, &id, "az1", "v-2").await.state, OpState::Succeeded);
}

#[tokio::test]
async fn a_rewritten_manifest_marks_that_copy_bad_and_repair_replaces_it_from_a_good_one() {
    let f = Fixture::new();
    let svc = f.service(None, 1);
    let id = take_backup(&f, &svc, BackupKind::Manual, "req-1").await;
    // Sizes that still fit together: only the MAC tells.
    let raw = svc.get("r1", &id).await.unwrap().manifest.raw_bytes;
    tamper(&f, &["az1"], &id, "raw_bytes", serde_json::json!(raw + 1));
    let v = verify(&f, &svc, &id, "az1", "v-1").await;
    assert_eq!(v.state, OpState::Failed);
    let err = v.error.unwrap();
    assert_eq!(err.code, ErrorCode::FailedPrecondition);
    assert!(err.message.contains("manifest not authenticated") && err.message.contains("az1"), "{}", err.message);
    assert_eq!(verify(&f, &svc, &id, "az2", "v-2").await.state, OpState::Succeeded);

    // Repair reads from a copy that authenticates, whichever it was asked for, and replaces az1's.
    let rep = f.wait(&svc.repair("r1", &id, "rep").await.unwrap()).await;
    assert_eq!(rep.state, OpState::Succeeded, "{:?}", rep.error);
    assert_eq!(rep.result.unwrap()["repaired"], serde_json::json!(["az1"]));
    assert_eq!(verify(&f, &svc, &id, "az1", "v-3").await.state, OpState::Succeeded);
}

#[tokio::test]
async fn retention_deletes_only_on_the_word_of_an_authentic_manifest() {
    let f = Fixture::new();
    let svc = f.service(None, 1);
    let manual = take_backup(&f, &svc, BackupKind::Manual, "m1").await;
    let expiring = take_backup(&f, &svc, BackupKind::Manual, "m2").await;
    let scheduled = take_backup(&f, &svc, BackupKind::Scheduled, "s1").await;
    // The first manual backup made to look expired on every destination: retention leaves it.
    tamper(&f, &AZS, &manual, "expires", "2001-01-01T00:00:00.000Z".into());
    let inst = instance(PlanName::Starter);
    assert!(svc.apply_retention(&inst, SystemTime::now()).await.unwrap().removed.is_empty());
    // A month on, the genuine manual backup has expired and goes; the newest (scheduled) stays.
    let later = SystemTime::now() + Duration::from_secs(31 * 86_400);
    assert_eq!(svc.apply_retention(&inst, later).await.unwrap().removed, vec![expiring.clone()]);
    for az in AZS {
        assert!(f.data_file(az, &manual).exists(), "{az} still holds the manual backup");
        assert!(!f.data_file(az, &expiring).exists(), "{az}: the expired one is gone");
        assert!(f.data_file(az, &scheduled).exists(), "{az}: the last good copy stays");
    }
}

#[tokio::test]
async fn a_manifest_of_format_1_or_without_a_mac_is_refused_by_name() {
    let f = Fixture::new();
    let svc = f.service(None, 1);
    let id = take_backup(&f, &svc, BackupKind::Manual, "req-1").await;
    let mac = svc.get("r1", &id).await.unwrap().manifest.mac;
    tamper(&f, &["az1"], &id, "mac", "".into());
    tamper(&f, &["az2"], &id, "format", 1.into());
    for (az, why) in [("az1", "no MAC"), ("az2", "format 1")] {
        let e = svc.verify("r1", &id, Some(az.into()), None, "v").await.unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, BackupError::CopyUnusable { .. }), "{e:?}");
        assert!(msg.contains("manifest not authenticated") && msg.contains(az) && msg.contains(why), "{msg}");
    }
    assert_eq!(verify(&f, &svc, &id, "az3", "v-az3").await.state, OpState::Succeeded);
    tamper(&f, &["az1"], &id, "mac", mac.into());
    assert_eq!(verify(&f, &svc, &id, "az1", "v-az1").await.state, OpState::Succeeded);
}

#[tokio::test]
async fn a_request_retried_after_its_record_was_pruned_gets_a_fresh_id_and_leaves_the_first_backup() {
    let f = Fixture::new();
    let svc = f.service(None, 1);
    let first = take_backup(&f, &svc, BackupKind::Manual, "req-1").await;
    let inst = instance(PlanName::Starter);
    // While the record is kept, the same request is the same operation and the same backup.
    let again = svc.start(&inst, BackupMethod::Physical, BackupKind::Manual, "req-1");
    assert_eq!(backup_id(&f.wait(&again.await.unwrap()).await), first);
    f.engine.prune(SystemTime::now() + Duration::from_secs(2 * 3600)).unwrap();
    // The retry fails (its dump fails): its clean-up must not reach the first backup.
    f.fault("fail-dump");
    let op = svc.start(&inst, BackupMethod::Physical, BackupKind::Manual, "req-1");
    let retried = f.wait(&op.await.unwrap()).await;
    assert_eq!(retried.state, OpState::Failed);
    assert_ne!(retried.params["backup_id"], serde_json::json!(first), "a fresh id");
    assert!(retried.params["backup_id"].as_str().unwrap() > first.as_str(), "ids sort by time");
    f.clear_fault("fail-dump");
    assert_eq!(svc.list("r1").await.len(), 1);
    assert_eq!(verify(&f, &svc, &first, "az1", "v-1").await.state, OpState::Succeeded);
}

#[tokio::test]
async fn a_run_whose_id_is_taken_fails_before_writing_and_leaves_the_completed_backup_alone() {
    let f = Fixture::new();
    let svc = f.service(None, 1);
    let first = take_backup(&f, &svc, BackupKind::Manual, "req-1").await;
    let before = std::fs::read(f.data_file("az1", &first)).unwrap();
    // What the service never does: a second run under the same id, whose dump fails.
    f.fault("fail-dump");
    let action = BackupAction::Start {
        instance: Box::new(instance(PlanName::Starter)),
        method: BackupMethod::Physical,
        kind: BackupKind::Manual,
        backup_id: first.clone(),
        keep_days: None,
    };
    let op = f.wait(&svc.submit_for_tests("reused", action).await.unwrap()).await;
    assert_eq!(op.state, OpState::Failed);
    let err = op.error.unwrap();
    assert_eq!(err.code, ErrorCode::Aborted);
    assert!(err.message.contains("already used") && err.message.contains(&first), "{}", err.message);
    f.clear_fault("fail-dump");
    for az in AZS {
        assert_eq!(std::fs::read(f.data_file(az, &first)).unwrap(), before, "{az} untouched");
        assert!(manifest_path(&f, az, "r1", &first).exists(), "{az} keeps its manifest");
    }
    assert_eq!(verify(&f, &svc, &first, "az2", "v-1").await.state, OpState::Succeeded);
    // A run with a fresh id goes through beside it.
    take_backup(&f, &svc, BackupKind::Manual, "req-2").await;
    assert_eq!(svc.list("r1").await.len(), 2);
}

#[tokio::test]
async fn an_oversized_manifest_is_refused_unread_and_only_that_copy_is_marked_bad() {
    let f = Fixture::new();
    let svc = f.service(None, 1);
    let id = take_backup(&f, &svc, BackupKind::Manual, "req-1").await;
    let path = manifest_path(&f, "az1", "r1", &id);
    let good = std::fs::read(&path).unwrap();
    let mut huge = good.clone();
    huge.resize((catalog::MAX_MANIFEST_BYTES + 1) as usize, b' ');
    std::fs::write(&path, &huge).unwrap();
    let info = svc.get("r1", &id).await.unwrap();
    let DestinationState::Failed(reason) = &info.destinations[0].state else { panic!("{info:?}") };
    assert!(reason.contains("az1") && reason.contains("more than the 1048576 bytes"), "{reason}");
    let e = svc.verify("r1", &id, Some("az1".into()), None, "v-1").await.unwrap_err();
    assert!(matches!(e, BackupError::CopyUnusable { .. }), "{e:?}");
    assert_eq!(verify(&f, &svc, &id, "az2", "v-2").await.state, OpState::Succeeded);
    // Exactly at the limit it is read (and, padded with spaces, still the same JSON).
    huge.truncate(catalog::MAX_MANIFEST_BYTES as usize);
    std::fs::write(&path, &huge).unwrap();
    assert_eq!(verify(&f, &svc, &id, "az1", "v-3").await.state, OpState::Succeeded);
}

#[tokio::test]
async fn the_same_request_sent_twice_at_once_is_one_operation_and_one_backup() {
    let f = Fixture::new();
    let svc = f.service(None, 1);
    let inst = instance(PlanName::Starter);
    // Both pick a fresh id before either is recorded; the second is answered with the first.
    let (a, b) = tokio::join!(
        svc.start(&inst, BackupMethod::Physical, BackupKind::Manual, "req-1"),
        svc.start(&inst, BackupMethod::Physical, BackupKind::Manual, "req-1")
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.id, b.id);
    assert_eq!(a.params["backup_id"], b.params["backup_id"]);
    assert_eq!(f.wait(&a).await.state, OpState::Succeeded);
    assert_eq!(svc.list("r1").await.len(), 1);
    // Another request with another method is still refused as a reused request id.
    let e = svc.start(&inst, BackupMethod::Logical, BackupKind::Manual, "req-1").await.unwrap_err();
    assert!(matches!(e, BackupError::Ops(crate::ops::OpsError::RequestIdReused { .. })), "{e:?}");
}
