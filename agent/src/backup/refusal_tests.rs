//! What the service refuses, each refusal beside the path that is allowed, against `dir`
//! destinations and stand-in tools (`test_fixture`).

use super::engine_commands::RestoreTarget;
use super::test_fixture::{Fixture, backup_id, instance, postgres_instance};
use super::*;
use crate::error::ErrorCode;
use crate::instances::PlanName;
use crate::ops::{OpError, OpState, OperationRecord};

async fn take_backup(f: &Fixture, svc: &BackupService, request: &str) -> String {
    let op =
        svc.start(&instance(PlanName::Starter), BackupMethod::Physical, BackupKind::Manual, request).await.unwrap();
    let done = f.wait(&op).await;
    assert_eq!(done.state, OpState::Succeeded, "{:?}", done.error);
    backup_id(&done)
}

fn failure(op: &OperationRecord) -> OpError {
    assert_eq!(op.state, OpState::Failed, "{op:?}");
    op.error.clone().unwrap()
}

#[tokio::test]
async fn without_a_kek_backups_are_refused_as_failed_precondition() {
    let f = Fixture::new();
    let inst = instance(PlanName::Starter);
    let mut config = crate::config::Config::default();
    config.keys.kek_file = f.dir.path().join("no-such-kek");
    let svc = f.service_with(None, BackupKeys::host_only(keywrap::from_config(&config, false)));
    let e = svc.start(&inst, BackupMethod::Physical, BackupKind::Manual, "req-1").await.unwrap_err();
    assert!(matches!(e, BackupError::KekUnavailable { .. }), "{e:?}");
    assert!(e.to_string().contains("key-encryption key") && e.to_string().contains("no-such-kek"), "{e}");
    // With a KEK the same request is taken.
    take_backup(&f, &f.service(None, 1), "req-1").await;
}

/// StartBackup (and the scheduler, which calls it) in production: refused without an off-host key,
/// taken with a recovery recipient.
#[tokio::test]
async fn in_production_a_backup_without_an_off_host_key_is_refused_and_taken_with_a_recovery_recipient() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    let inst = instance(PlanName::Starter);
    let mut config = crate::config::Config::default();
    config.keys.kek_file = f.dir.path().join("kek");
    std::fs::write(&config.keys.kek_file, [4u8; 32]).unwrap();
    std::fs::set_permissions(&config.keys.kek_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let svc = f.service_with(None, BackupKeys::from_config(&config, false).unwrap());
    let e = svc.start(&inst, BackupMethod::Physical, BackupKind::Manual, "req-1").await.unwrap_err();
    assert!(matches!(e, BackupError::HostOnlyKeys), "{e:?}");
    assert_eq!(crate::error::HasErrorCode::code(&e), ErrorCode::FailedPrecondition);
    let identity = crate::recovery_key::RecoveryIdentity::generate();
    config.keys.recovery_recipients = vec![identity.recipient()];
    let svc = f.service_with(None, BackupKeys::from_config(&config, false).unwrap());
    let id = take_backup(&f, &svc, "req-1").await;
    let wraps = svc.get("r1", &id).await.unwrap().manifest.key_wraps;
    assert_eq!(wraps[1].key_id, identity.recipient(), "{wraps:?}");
}

#[tokio::test]
async fn a_restore_under_another_hosts_kek_is_refused_naming_both_keys() {
    let f = Fixture::new();
    let svc = f.service(None, 1);
    let id = take_backup(&f, &svc, "req-1").await;
    let other = f.service(None, 2);
    let target = f.dir.path().join("restored-elsewhere");
    let inst = instance(PlanName::Starter);
    let op = other.restore(&inst, &id, RestoreTarget::DataDir(target.clone()), None, None, "r-2").await.unwrap();
    let e = failure(&f.wait(&op).await);
    assert_eq!(e.code, ErrorCode::FailedPrecondition);
    let (wrote, host) = (
        svc.get("r1", &id).await.unwrap().manifest.key_wraps[0].key_id.clone(),
        KekWrapper::from_kek(&[2; 32]).unwrap(),
    );
    assert!(e.message.contains(&wrote) && e.message.contains(&host.key_id()), "{}", e.message);
    assert!(!target.exists(), "nothing may be written before the key opens");
    // The host that wrote it restores it.
    let op = svc.restore(&inst, &id, RestoreTarget::DataDir(target.clone()), None, None, "r-1").await.unwrap();
    assert_eq!(f.wait(&op).await.state, OpState::Succeeded);
    assert_eq!(std::fs::read(target.join("dump.rdb")).unwrap(), f.data);
}

#[tokio::test]
async fn backups_wrapped_under_the_retired_host_key_are_refused_by_name() {
    let f = Fixture::new();
    let svc = f.service(None, 1);
    let id = take_backup(&f, &svc, "req-1").await;
    assert_eq!(svc.get("r1", &id).await.unwrap().manifest.key_wraps[0].wrapper, keywrap::KEK_WRAPPER);
    let v = f.wait(&svc.verify("r1", &id, None, None, "v-1").await.unwrap()).await;
    assert_eq!(v.state, OpState::Succeeded, "{:?}", v.error);
    for az in ["az1", "az2", "az3"] {
        let path = f.dir.path().join("dest").join(az).join("r1").join(&id).join("manifest.json");
        let text =
            std::fs::read_to_string(&path).unwrap().replace(keywrap::KEK_WRAPPER, keywrap::RETIRED_HOST_KEY_WRAPPER);
        std::fs::write(&path, text).unwrap();
    }
    let e = failure(&f.wait(&svc.verify("r1", &id, None, None, "v-2").await.unwrap()).await);
    assert!(e.message.contains("retired backup host key"), "{}", e.message);
}

#[tokio::test]
async fn a_copy_is_read_only_from_a_destination_that_holds_it_complete() {
    let f = Fixture::new();
    let svc = f.service(Some("az3"), 1);
    let id = take_backup(&f, &svc, "req-1").await;
    let healthy = f.service(None, 1);
    let e = healthy.verify("r1", &id, Some("az3".into()), None, "v-az3").await.unwrap_err();
    assert!(matches!(&e, BackupError::NotOnDestination { destination, .. } if destination == "az3"), "{e:?}");
    let v = f.wait(&healthy.verify("r1", &id, Some("az2".into()), None, "v-az2").await.unwrap()).await;
    assert_eq!(v.state, OpState::Succeeded, "{:?}", v.error);
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
    let e = failure(&f.wait(&op).await);
    assert_eq!(e.code, ErrorCode::FailedPrecondition, "{e:?}");
    assert!(e.message.contains("/srv/db/other-instance") && e.message.contains("[backup.redis]"), "{}", e.message);
    assert!(svc.list("r1").await.is_empty(), "nothing may be stored for a refused backup");
    assert!(!f.dir.path().join("dest/az1/r1").exists(), "no upload may start before the check");
}

#[tokio::test]
async fn a_server_that_does_not_answer_is_told_apart_from_a_wrong_one() {
    let f = Fixture::new();
    f.fault("fail-query");
    let svc = f.service(None, 1);
    let op = svc.start(&instance(PlanName::Starter), BackupMethod::Physical, BackupKind::Manual, "down").await.unwrap();
    let e = failure(&f.wait(&op).await);
    assert_eq!(e.code, ErrorCode::FailedPrecondition, "{e:?}");
    assert!(e.message.contains("did not say which data directory"), "{}", e.message);
    assert!(e.message.contains("Could not connect"), "the tool's reason is kept: {}", e.message);
    assert!(!e.message.contains("serves data directory"), "{}", e.message);
    f.clear_fault("fail-query");
    take_backup(&f, &svc, "up").await;
}

#[tokio::test]
async fn a_failed_dump_reports_the_tool_its_exit_status_and_stderr_and_leaves_nothing() {
    let f = Fixture::new();
    f.fault("fail-dump");
    let svc = f.service(None, 1);
    let op = svc.start(&instance(PlanName::Starter), BackupMethod::Physical, BackupKind::Manual, "bad").await.unwrap();
    let e = failure(&f.wait(&op).await);
    assert_eq!(e.code, ErrorCode::Internal, "{e:?}");
    for part in ["redis-cli", "exit status: 3", "THE-DUMP-REASON"] {
        assert!(e.message.contains(part), "{part:?} missing from {}", e.message);
    }
    assert!(svc.list("r1").await.is_empty());
    for az in ["az1", "az2", "az3"] {
        let left = std::fs::read_dir(f.dir.path().join("dest").join(az).join("r1")).map(|d| d.count()).unwrap_or(0);
        assert_eq!(left, 0, "{az} keeps leftovers of a failed dump");
    }
    assert_eq!(std::fs::read_dir(f.dir.path().join("backups/inflight")).unwrap().count(), 0);
    f.clear_fault("fail-dump");
    take_backup(&f, &svc, "good").await;
}

#[tokio::test]
async fn a_dump_that_writes_much_to_stderr_first_still_completes() {
    let f = Fixture::new();
    f.fault("flood-stderr");
    let svc = f.service(None, 1);
    let id = tokio::time::timeout(std::time::Duration::from_secs(60), take_backup(&f, &svc, "chatty"))
        .await
        .expect("the dump stalled on its stderr");
    assert_eq!(svc.get("r1", &id).await.unwrap().manifest.raw_bytes, f.data.len() as u64);
}

#[tokio::test]
async fn a_failed_restore_tool_reports_its_name_exit_status_and_stderr() {
    let f = Fixture::new();
    let svc = f.service(None, 1);
    let pg = postgres_instance();
    let op = svc.start(&pg, BackupMethod::Logical, BackupKind::Manual, "logical").await.unwrap();
    let done = f.wait(&op).await;
    assert_eq!(done.state, OpState::Succeeded, "{:?}", done.error);
    let id = backup_id(&done);
    let connection = svc.connection_for(&pg).await;
    let into_server =
        || RestoreTarget::Server { connection: connection.clone(), database: None, instance_server: true };
    let op = svc.restore(&pg, &id, into_server(), None, None, "restore-ok").await.unwrap();
    let done = f.wait(&op).await;
    assert_eq!(done.state, OpState::Succeeded, "{:?}", done.error);
    assert_eq!(std::fs::read(f.dir.path().join("restored.bin")).unwrap(), f.data);

    let args = std::fs::read_to_string(f.dir.path().join("restore.args")).unwrap();
    assert!(args.contains("--role=shop_owner") && args.contains("--single-transaction"), "{args}");

    f.fault("fail-restore");
    let e = failure(&f.wait(&svc.restore(&pg, &id, into_server(), None, None, "restore-bad").await.unwrap()).await);
    assert_eq!(e.code, ErrorCode::Internal, "{e:?}");
    for part in ["pg_restore", "exit status: 1", "THE-RESTORE-REASON"] {
        assert!(e.message.contains(part), "{part:?} missing from {}", e.message);
    }
}

#[tokio::test]
async fn a_data_directory_restore_needs_an_empty_folder_or_the_stopped_instance_and_a_planted_pid_file_is_not_followed()
{
    let f = Fixture::new();
    let svc = f.service(None, 1);
    let id = take_backup(&f, &svc, "req-1").await;
    let mut pg = postgres_instance();
    pg.spec.data_dir = f.dir.path().join("data");
    std::fs::create_dir(&pg.spec.data_dir).unwrap();

    let e = svc.restore(&pg, &id, RestoreTarget::DataDir("relative/dir".into()), None, None, "rel").await.unwrap_err();
    assert!(matches!(e, BackupError::Invalid(_)), "{e:?}");

    let full = f.dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("PG_VERSION"), "15").unwrap();
    let e = svc.restore(&pg, &id, RestoreTarget::DataDir(full.clone()), None, None, "full").await.unwrap_err();
    assert!(matches!(&e, BackupError::RestoreTargetNotEmpty { dir } if *dir == full), "{e:?}");

    // In place while the cluster runs (its postmaster.pid is there): refused; once stopped: done.
    std::fs::write(pg.spec.data_dir.join("postmaster.pid"), "1\n").unwrap();
    let in_place = RestoreTarget::DataDir(pg.spec.data_dir.clone());
    let e = svc.restore(&pg, &id, in_place.clone(), None, None, "in-place-running").await.unwrap_err();
    assert!(matches!(&e, BackupError::InstanceRunning { instance, .. } if instance == "r1"), "{e:?}");
    std::fs::remove_file(pg.spec.data_dir.join("postmaster.pid")).unwrap();
    // A FIFO planted as postmaster.pid (by a tenant, as the cluster's user) neither hangs the check
    // nor counts as a running cluster; a link to a file elsewhere is not followed either.
    let pid = pg.spec.data_dir.join("postmaster.pid");
    nix::unistd::mkfifo(&pid, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let op = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        svc.restore(&pg, &id, in_place.clone(), None, None, "in-place-fifo"),
    )
    .await
    .expect("a FIFO as postmaster.pid hung the restore check")
    .unwrap();
    let done = f.wait(&op).await;
    assert_eq!(done.state, OpState::Succeeded, "{:?}", done.error);
    assert_eq!(std::fs::read(pg.spec.data_dir.join("dump.rdb")).unwrap(), f.data);
    assert!(!pid.exists(), "the old content, the FIFO with it, was replaced by the restore");
    std::os::unix::fs::symlink(f.dir.path().join("dump.bin"), &pid).unwrap();
    let op = svc.restore(&pg, &id, in_place, None, None, "in-place-stopped").await.unwrap();
    assert_eq!(f.wait(&op).await.state, OpState::Succeeded);
    assert_eq!(std::fs::read(pg.spec.data_dir.join("dump.rdb")).unwrap(), f.data);
    assert_eq!(std::fs::read(f.dir.path().join("dump.bin")).unwrap(), f.data, "the link's target is untouched");
}

/// A logical restore reads the whole copy before the first byte reaches the server: a copy whose
/// last chunk is damaged fails naming that chunk, and pg_restore never ran. The intact copy on
/// another destination restores, as the database's owner.
#[tokio::test]
async fn a_logical_restore_with_a_damaged_last_chunk_sends_nothing_to_the_server() {
    let f = Fixture::new();
    let svc = f.service(None, 1);
    let pg = postgres_instance();
    let done = f.wait(&svc.start(&pg, BackupMethod::Logical, BackupKind::Manual, "logical").await.unwrap()).await;
    assert_eq!(done.state, OpState::Succeeded, "{:?}", done.error);
    let id = backup_id(&done);
    let chunks = svc.get("r1", &id).await.unwrap().manifest.chunk_count;
    assert!(chunks > 2, "the test needs several chunks, has {chunks}");
    let path = f.data_file("az2", &id);
    let mut stored = std::fs::read(&path).unwrap();
    let last = stored.len() - 20;
    stored[last] ^= 0x01;
    std::fs::write(&path, stored).unwrap();

    let connection = svc.connection_for(&pg).await;
    let into_server =
        || RestoreTarget::Server { connection: connection.clone(), database: None, instance_server: true };
    let e =
        failure(&f.wait(&svc.restore(&pg, &id, into_server(), Some("az2".into()), None, "bad").await.unwrap()).await);
    assert_eq!(e.code, ErrorCode::FailedPrecondition, "{e:?}");
    let named = format!("chunk {} ", chunks - 1);
    assert!(e.message.contains(&named) && e.message.contains("az2"), "{named:?} missing from {}", e.message);
    assert!(!f.dir.path().join("restore.args").exists(), "pg_restore was started before the copy was checked");
    assert!(!f.dir.path().join("restored.bin").exists(), "bytes reached the server");

    let ok = f.wait(&svc.restore(&pg, &id, into_server(), Some("az1".into()), None, "good").await.unwrap()).await;
    assert_eq!(ok.state, OpState::Succeeded, "{:?}", ok.error);
    assert_eq!(std::fs::read(f.dir.path().join("restored.bin")).unwrap(), f.data);
}
