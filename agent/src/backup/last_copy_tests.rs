//! Retention through the service against `dir` destinations and stand-in tools: the last good copy
//! and the good copy of a degraded slot survive, DeleteBackup of the last good copy must be meant,
//! backups without two destinations off the host are refused, and a retention pass records the
//! health that metrics and GetStatus show. Each refusal beside the allowed path.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::retention::{KeepRule, Slot};
use super::test_fixture::{Fixture, backup_id, instance};
use super::*;
use crate::error::{ErrorCode, HasErrorCode};
use crate::instances::PlanName;
use crate::ops::OpState;

async fn take(f: &Fixture, svc: &BackupService, kind: BackupKind, request: &str, keep_days: Option<u32>) -> String {
    let inst = instance(PlanName::Starter);
    let op = svc.start_with(&inst, BackupMethod::Physical, kind, request, keep_days).await.unwrap();
    let done = f.wait(&op).await;
    assert_eq!(done.state, OpState::Succeeded, "{:?}", done.error);
    backup_id(&done)
}

#[tokio::test]
async fn the_newest_good_backup_survives_its_expiry_and_the_older_expired_one_goes() {
    let f = Fixture::new();
    let svc = f.service(None, 1);
    let older = take(&f, &svc, BackupKind::Manual, "m1", Some(1)).await;
    let newest = take(&f, &svc, BackupKind::Manual, "m2", Some(1)).await;
    let manifest = svc.get("r1", &newest).await.unwrap().manifest;
    assert_eq!(manifest.expires.unwrap().duration_since(manifest.started).unwrap(), Duration::from_secs(86_400));
    // Two days on both have expired: only the older goes.
    let later = SystemTime::now() + Duration::from_secs(2 * 86_400);
    let outcome = svc.apply_retention(&instance(PlanName::Starter), later).await.unwrap();
    assert_eq!(outcome.removed, std::slice::from_ref(&older));
    assert_eq!(outcome.kept, [(newest.clone(), KeepRule::LastGoodCopy)]);
    assert!(f.data_file("az1", &newest).exists() && !f.data_file("az1", &older).exists());
    // Out of bounds keep days are refused before anything runs.
    let inst = instance(PlanName::Starter);
    let e = svc.start_with(&inst, BackupMethod::Physical, BackupKind::Manual, "m3", Some(3651)).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    assert!(e.to_string().contains("manual_keep_days"), "{e}");
}

#[tokio::test]
async fn a_slot_whose_newest_backup_is_degraded_keeps_its_newest_complete_one() {
    let f = Fixture::new();
    let svc = f.service(None, 1);
    let first = take(&f, &svc, BackupKind::Scheduled, "s0", None).await;
    let good = take(&f, &svc, BackupKind::Scheduled, "s1", None).await;
    let degraded = take(&f, &svc, BackupKind::Scheduled, "s2", None).await;
    // The newest loses its copy on az3: degraded.
    std::fs::remove_dir_all(f.dir.path().join("dest/az3/r1").join(&degraded)).unwrap();
    assert_eq!(svc.get("r1", &degraded).await.unwrap().state, BackupState::Degraded);
    let now = SystemTime::now();
    let outcome = svc.apply_retention(&instance(PlanName::Starter), now).await.unwrap();
    assert_eq!(outcome.removed, [first], "the older complete one of the day still goes");
    let rule = |id: &str| outcome.kept.iter().find(|(k, _)| k == id).map(|(_, r)| *r);
    assert!(matches!(rule(&degraded), Some(KeepRule::Newest(Slot::Day(_)))), "{:?}", outcome.kept);
    assert!(matches!(rule(&good), Some(KeepRule::GoodCopyOf(Slot::Day(_)))), "{:?}", outcome.kept);
    // Repaired, the degraded one covers its slot alone: the extra copy goes at the next pass.
    let rep = f.wait(&svc.repair("r1", &degraded, "rep").await.unwrap()).await;
    assert_eq!(rep.state, OpState::Succeeded, "{:?}", rep.error);
    let outcome = svc.apply_retention(&instance(PlanName::Starter), now).await.unwrap();
    assert_eq!(outcome.removed, [good]);
}

#[tokio::test]
async fn deleting_the_last_good_copy_must_be_asked_for_in_so_many_words() {
    let f = Fixture::new();
    let svc = f.service(None, 1);
    let older = take(&f, &svc, BackupKind::Manual, "m1", None).await;
    let newest = take(&f, &svc, BackupKind::Manual, "m2", None).await;
    let e = svc.delete("r1", &newest, "d-1", false).await.unwrap_err();
    assert!(matches!(e, BackupError::LastGoodCopy { .. }), "{e:?}");
    assert_eq!(e.code(), ErrorCode::FailedPrecondition);
    assert!(e.to_string().contains(&newest) && e.to_string().contains("delete_last_good_copy"), "{e}");
    assert!(f.data_file("az1", &newest).exists(), "nothing deleted");
    // Any other backup goes without the flag; then the last one with it.
    assert_eq!(f.wait(&svc.delete("r1", &older, "d-2", false).await.unwrap()).await.state, OpState::Succeeded);
    assert_eq!(f.wait(&svc.delete("r1", &newest, "d-3", true).await.unwrap()).await.state, OpState::Succeeded);
    assert!(svc.list("r1").await.is_empty());
}

#[tokio::test]
async fn backups_to_destinations_on_this_host_are_refused_unless_the_config_accepts_them() {
    let f = Fixture::new();
    let mut config = f.config(None);
    config.accept_on_host_destinations = false;
    let keys = crate::backup::BackupKeys::host_only(Arc::new(KekWrapper::from_kek(&[1; 32]).unwrap()));
    let strict = BackupService::new(config, f.dir.path(), keys, vec![f.dir.path().into()], f.engine.clone()).unwrap();
    let inst = instance(PlanName::Starter);
    for kind in [BackupKind::Manual, BackupKind::Scheduled] {
        let e = strict.start(&inst, BackupMethod::Physical, kind, "refused").await.unwrap_err();
        assert!(matches!(e, BackupError::NotOffHost { .. }), "{e:?}");
        assert_eq!(e.code(), ErrorCode::FailedPrecondition);
        let msg = e.to_string();
        assert!(msg.contains("0 of 3 destinations are off this host's disks"), "{msg}");
        assert!(msg.contains("az1 on this host") && msg.contains("accept_on_host_destinations = true"), "{msg}");
    }
    assert!(!f.dir.path().join("dest/az1/r1").exists(), "nothing was written");
    // The same destinations, accepted in the config: the backup is taken.
    let taken = take(&f, &f.service(None, 1), BackupKind::Manual, "accepted", None).await;
    // Its request retried where the rule now refuses: the recorded operation, not a refusal.
    let again = strict.start(&inst, BackupMethod::Physical, BackupKind::Manual, "accepted").await.unwrap();
    assert_eq!(backup_id(&again), taken);
}

#[tokio::test]
async fn a_retention_pass_records_the_last_good_backup_the_degraded_ones_and_unreachable_destinations() {
    let f = Fixture::new();
    let svc = f.service(None, 1);
    let inst = instance(PlanName::Starter);
    let first = take(&f, &svc, BackupKind::Manual, "m1", None).await;
    svc.apply_retention(&inst, SystemTime::now()).await.unwrap();
    let health = svc.health();
    let h = health.instance("r1").unwrap();
    let first_finished = svc.get("r1", &first).await.unwrap().manifest.finished;
    assert_eq!(h.last_good, Some(first_finished));
    assert_eq!((h.degraded, h.newest_id.as_deref(), h.newest_copies.len()), (0, Some(first.as_str()), 3));
    assert!(health.destinations().values().all(|d| d.reachable && d.failed_checks == 0));

    // az2 made unreachable (its folder replaced by a file): 0 and one failed check; the others 1.
    let az2 = f.dir.path().join("dest/az2");
    std::fs::rename(&az2, f.dir.path().join("az2-away")).unwrap();
    std::fs::write(&az2, b"not a folder").unwrap();
    svc.apply_retention(&inst, SystemTime::now()).await.unwrap();
    let d = health.destinations();
    assert_eq!((d["az2"].reachable, d["az2"].failed_checks), (false, 1));
    assert!(d["az2"].last_error.is_some());
    assert_eq!((d["az1"].reachable, d["az1"].failed_checks), (true, 0));
    assert_eq!(health.instance("r1").unwrap().degraded, 1, "az2's copy cannot be seen");

    // Back, and a new backup: the last good backup moves to it (the age starts again).
    std::fs::remove_file(&az2).unwrap();
    std::fs::rename(f.dir.path().join("az2-away"), &az2).unwrap();
    let second = take(&f, &svc, BackupKind::Manual, "m2", None).await;
    svc.apply_retention(&inst, SystemTime::now()).await.unwrap();
    let h = health.instance("r1").unwrap();
    assert!(h.last_good.unwrap() > first_finished);
    assert_eq!((h.degraded, h.newest_id.as_deref()), (0, Some(second.as_str())));
    assert!(health.destinations()["az2"].reachable);
    assert_eq!(health.destinations()["az2"].failed_checks, 1, "the count of failed checks stays");
}

#[tokio::test]
async fn a_manifest_rewritten_in_storage_does_not_count_as_the_last_good_backup() {
    let f = Fixture::new();
    let svc = f.service(None, 1);
    let inst = instance(PlanName::Starter);
    let real = take(&f, &svc, BackupKind::Manual, "m1", None).await;
    svc.apply_retention(&inst, SystemTime::now()).await.unwrap();
    assert!(svc.health().instance("r1").unwrap().last_good.is_some(), "the authentic backup counts");
    // Its finish time moved a day on in every copy, as anyone who can write there can: the MAC no
    // longer matches, so it neither counts as good (the age alert stays) nor gets deleted.
    let later = crate::timefmt::format(SystemTime::now() + Duration::from_secs(86_400));
    for az in ["az1", "az2", "az3"] {
        let path = f.dir.path().join("dest").join(az).join("r1").join(&real).join("manifest.json");
        let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        m["finished"] = later.clone().into();
        std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
    }
    let outcome = svc.apply_retention(&inst, SystemTime::now()).await.unwrap();
    assert!(outcome.removed.is_empty() && outcome.kept.is_empty(), "{outcome:?}");
    let h = svc.health().instance("r1").unwrap();
    assert_eq!((h.last_good, h.newest_id), (None, None));
    assert!(f.data_file("az1", &real).exists());
}
