//! The catalog rebuilt from `dir` destinations by an agent that never took the backups (another
//! KEK, no record of them): listed, authenticated per copy with the keys at hand, refused copies
//! reported with their reason, folder names read from storage validated.

use std::path::PathBuf;

use super::*;
use crate::backup::keywrap::KEK_WRAPPER;
use crate::backup::test_fixture::{Fixture, backup_id, instance};
use crate::backup::{BackupKeys, BackupKind, BackupMethod, BackupService, KekWrapper, KeyWrapper};
use crate::instances::PlanName;
use crate::ops::OpState;

async fn take_backup(f: &Fixture, svc: &BackupService, request: &str) -> String {
    let op =
        svc.start(&instance(PlanName::Starter), BackupMethod::Physical, BackupKind::Manual, request).await.unwrap();
    let done = f.wait(&op).await;
    assert_eq!(done.state, OpState::Succeeded, "{:?}", done.error);
    backup_id(&done)
}

fn manifest_path(f: &Fixture, az: &str, id: &str) -> PathBuf {
    f.dir.path().join("dest").join(az).join("r1").join(id).join("manifest.json")
}

fn tamper(f: &Fixture, az: &str, id: &str, field: &str, value: serde_json::Value) {
    let path = manifest_path(f, az, id);
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    m[field] = value;
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

fn auth_of(b: &FoundBackup, az: &str) -> Option<Result<(), String>> {
    b.copies.iter().find(|c| c.status.name == az).unwrap().authentication.clone()
}

#[tokio::test]
async fn an_agent_with_another_kek_lists_the_backups_says_it_cannot_authenticate_them_and_names_the_key() {
    let f = Fixture::new();
    let old = f.service(None, 1);
    let id = take_backup(&f, &old, "req-1").await;
    let writer_key = KekWrapper::from_kek(&[1; 32]).unwrap().key_id();

    // A new agent: another KEK, no operation records of its own used for the listing.
    let new = f.service(None, 2);
    let found = new.list_from_destinations("r1").await.unwrap();
    assert!(found.unreachable.is_empty() && !found.truncated);
    assert_eq!(found.backups.len(), 1);
    let b = &found.backups[0];
    assert_eq!((b.backup_id.as_str(), b.state), (id.as_str(), FoundState::Complete));
    assert_eq!(b.key_wraps, [KeyWrapName { wrapper: KEK_WRAPPER.into(), key_id: writer_key.clone() }]);
    let reason = b.authentication.clone().unwrap_err();
    assert!(reason.contains(&writer_key) && reason.contains(&id), "{reason}");
    for az in ["az1", "az2", "az3"] {
        assert!(auth_of(b, az).unwrap().is_err(), "{az} cannot authenticate without the key");
    }

    // The agent holding the key that wrote it: every copy authenticates.
    let found = old.list_from_destinations("r1").await.unwrap();
    let b = &found.backups[0];
    assert_eq!(b.authentication, Ok(()));
    for az in ["az1", "az2", "az3"] {
        assert_eq!(auth_of(b, az), Some(Ok(())), "{az}");
    }
    assert_eq!(b.manifest.as_ref().unwrap().backup_id, id);
}

#[tokio::test]
async fn a_rewritten_copy_is_reported_as_refused_while_the_untouched_copies_authenticate() {
    let f = Fixture::new();
    let svc = f.service(None, 1);
    let id = take_backup(&f, &svc, "req-1").await;
    let raw = svc.get("r1", &id).await.unwrap().manifest.raw_bytes;
    // Sizes that still fit together: only the MAC tells. And a copy naming another instance.
    tamper(&f, "az1", &id, "raw_bytes", serde_json::json!(raw + 1));
    tamper(&f, "az2", &id, "instance_id", "r2".into());

    let found = svc.list_from_destinations("r1").await.unwrap();
    let b = &found.backups[0];
    assert_eq!(b.authentication, Ok(()), "az3 is untouched");
    assert_eq!(b.state, FoundState::Degraded, "az2's copy is not of this instance");
    let az1 = auth_of(b, "az1").unwrap().unwrap_err();
    assert!(az1.contains("MAC does not match"), "{az1}");
    assert_eq!(auth_of(b, "az2"), None, "a refused shape is never authenticated");
    let az2 = &b.copies.iter().find(|c| c.status.name == "az2").unwrap().status.state;
    assert!(matches!(az2, DestinationState::Failed(e) if e.contains("names another instance")), "{az2:?}");
    assert_eq!(auth_of(b, "az3"), Some(Ok(())));
    assert_eq!(b.manifest.as_ref().unwrap().raw_bytes, raw, "the manifest shown is the authenticated one");
}

#[tokio::test]
async fn a_backup_refused_on_every_destination_is_listed_as_refused_with_the_reason_never_trusted() {
    let f = Fixture::new();
    let svc = f.service(None, 1);
    let id = take_backup(&f, &svc, "req-1").await;
    for az in ["az1", "az2", "az3"] {
        tamper(&f, az, &id, "chunk_size", serde_json::json!(1u64 << 40));
    }
    let found = svc.list_from_destinations("r1").await.unwrap();
    assert_eq!(found.backups.len(), 1, "reported, not hidden");
    let b = &found.backups[0];
    assert_eq!(b.state, FoundState::Refused);
    assert!(b.manifest.is_none() && b.key_wraps.is_empty(), "nothing of a refused manifest is shown");
    let reason = b.authentication.clone().unwrap_err();
    assert!(reason.contains("chunk_size"), "{reason}");
    // The registered-instance listing keeps leaving it out, as before.
    assert!(svc.list("r1").await.is_empty());
}

#[tokio::test]
async fn instance_folders_on_the_destinations_are_listed_only_when_named_like_instance_ids() {
    let f = Fixture::new();
    let svc = f.service(None, 1);
    take_backup(&f, &svc, "req-1").await;
    let az1 = f.dir.path().join("dest/az1");
    for bad in ["Not_An_Id", "-dash", &"a".repeat(64)] {
        std::fs::create_dir(az1.join(bad)).unwrap();
    }
    std::fs::create_dir(f.dir.path().join("dest/az3/pg-7")).unwrap();
    std::fs::write(az1.join("file-not-folder"), b"x").unwrap();
    std::os::unix::fs::symlink(f.dir.path(), az1.join("linked")).unwrap();

    let found = svc.instances_on_destinations().await.unwrap();
    assert_eq!(found.instance_ids, ["pg-7", "r1"]);
    assert!(found.unreachable.is_empty() && !found.truncated);

    let e = svc.list_from_destinations("Not_An_Id").await.unwrap_err();
    assert!(matches!(e, BackupError::Invalid(_)), "{e:?}");
}

#[tokio::test]
async fn a_destination_that_cannot_be_listed_is_reported_and_the_others_still_answer() {
    let f = Fixture::new();
    let svc = f.service(None, 1);
    take_backup(&f, &svc, "req-1").await;
    // az2 is a path below a file: it cannot be listed, the others answer.
    let partly = f.service(Some("az2"), 1);
    let found = partly.instances_on_destinations().await.unwrap();
    assert_eq!(found.instance_ids, ["r1"]);
    assert_eq!(found.unreachable.len(), 1);
    assert_eq!(found.unreachable[0].0, "az2");
    let listed = partly.list_from_destinations("r1").await.unwrap();
    assert_eq!(listed.backups.len(), 1);
    assert_eq!(listed.unreachable.len(), 1);
}

#[tokio::test]
async fn a_backup_sealed_to_the_recovery_key_is_listed_as_needing_it_on_an_agent_without_its_kek() {
    use crate::recovery_key::{RecoveryIdentity, RecoveryRecipients};
    let f = Fixture::new();
    let operator = RecoveryIdentity::generate();
    let recipients = RecoveryRecipients::parse(&[operator.recipient()]).unwrap();
    let kek = |byte: u8| -> std::sync::Arc<dyn KeyWrapper> {
        std::sync::Arc::new(KekWrapper::from_kek(&[byte; 32]).unwrap())
    };
    let old = f.service_with(None, BackupKeys::host_only(kek(1)).with_recipients(recipients));
    let id = take_backup(&f, &old, "req-1").await;

    // A new host: its own KEK, no KeyService; the recovery key is given only with a restore.
    let new = f.service_with(None, BackupKeys::host_only(kek(2)));
    let found = new.list_from_destinations("r1").await.unwrap();
    let b = &found.backups[0];
    assert_eq!(b.backup_id, id);
    let wrappers: Vec<&str> = b.key_wraps.iter().map(|k| k.wrapper.as_str()).collect();
    assert!(wrappers.contains(&"age-x25519-v1") && wrappers.contains(&KEK_WRAPPER), "{wrappers:?}");
    let recovery = b.key_wraps.iter().find(|k| k.wrapper == "age-x25519-v1").unwrap();
    assert_eq!(recovery.key_id, operator.recipient(), "the recipient to bring is named");
    let reason = b.authentication.clone().unwrap_err();
    assert!(reason.contains("no recovery key was given") && reason.contains(&operator.recipient()), "{reason}");

    // The old host still authenticates it with its KEK.
    assert_eq!(old.list_from_destinations("r1").await.unwrap().backups[0].authentication, Ok(()));
}
