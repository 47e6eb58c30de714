use super::*;
use crate::error::{ErrorCode, HasErrorCode};
use crate::health::memory::MemoryProber;
use crate::instances::Registry;
use crate::instances::fixtures::{rules, spec};
use crate::locks::ResourceLocks;
use crate::ops::{OpState, OperationEngine, OpsSettings};
use crate::upgrade::UpgradeConfig;
use crate::upgrade::health::UpgradeHealth;
use crate::upgrade::service::UpgradeRequest;
use crate::upgrade::service::tests::{FakeBackups, Tuesday};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;
use tokio_util::sync::CancellationToken;

/// The agent as started on `dir` (an existing state is reopened), with a backup `backup_age` old.
async fn start(dir: &Path, backup_age: Option<Duration>) -> (UpgradeService, CancellationToken) {
    let locks = ResourceLocks::default();
    let registry = Arc::new(Registry::open(dir.join("instances"), rules(), locks.clone()).unwrap());
    if registry.get("pg-1").is_err() {
        registry.register("pg-1", spec("pg-1")).await.unwrap();
    }
    let settings = OpsSettings { max_concurrent: 2, retention: Duration::from_secs(3600), max_finished: 100 };
    let root = CancellationToken::new();
    let (operations, _) = OperationEngine::open(&dir.join("ops"), settings, locks, root.clone()).unwrap();
    operations.set_window_clock(Arc::new(Tuesday));
    let lib = dir.join("lib");
    for (major, files) in [(15, &["postgres"][..]), (17, &["postgres", "pg_upgrade"][..])] {
        let bin = lib.join(major.to_string()).join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for f in files {
            std::fs::write(bin.join(f), b"").unwrap();
        }
    }
    let service = UpgradeService {
        minor: crate::upgrade::minor::memory::memory_minor_upgrades(registry.clone(), operations.clone(), dir),
        registry,
        operations,
        backups: Arc::new(FakeBackups(backup_age.map(|a| SystemTime::now() - a))),
        health: UpgradeHealth { prober: Arc::new(MemoryProber::default()), probe_deadline: Duration::from_secs(1) },
        config: UpgradeConfig { postgresql_lib_dir: lib, ..UpgradeConfig::default() },
    };
    (service, root)
}

async fn state_becomes(svc: &UpgradeService, id: &str, want: OpState) -> crate::ops::OperationRecord {
    let mut rx = svc.operations.watch(id).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|r| r.state == want)).await;
    r.unwrap_or_else(|_| panic!("{id} never became {want:?}: {:?}", svc.operations.get(id))).unwrap().clone()
}

const HOUR: Duration = Duration::from_secs(3600);

/// Submits an upgrade that waits for Sunday's window, then stops the agent (its root token).
async fn waiting_upgrade_then_stop(dir: &Path) -> crate::ops::OperationRecord {
    let (svc, root) = start(dir, Some(HOUR)).await;
    let req = UpgradeRequest {
        request_id: "up-1".into(),
        instance_id: "pg-1".into(),
        target_version: "17".into(),
        force: false,
        package_repository: String::new(),
        packages: Vec::new(),
    };
    let op = svc.start(req).await.unwrap();
    let waiting = state_becomes(&svc, &op.id, OpState::WaitingForWindow).await;
    root.cancel();
    assert!(svc.operations.drain(Duration::from_secs(5)).await);
    waiting
}

#[tokio::test]
async fn a_waiting_upgrade_is_rearmed_after_a_restart_for_the_same_window() {
    let dir = tempfile::tempdir().unwrap();
    let before = waiting_upgrade_then_stop(dir.path()).await;

    let (svc, _root) = start(dir.path(), Some(HOUR)).await;
    let waiting = svc.operations.waiting_for_window();
    assert_eq!(waiting.len(), 1);
    svc.rearm(&waiting[0]).await.expect("the upgrade passes its checks again");
    let after = svc.operations.get(&before.id).unwrap();
    assert_eq!(after.state, OpState::WaitingForWindow);
    assert_eq!(after.window_start, before.window_start, "the same next window");
    assert!(after.window_start.is_some());
    // Re-armed: a task waits on it, so a cancel ends it (a record left without one would stay
    // waiting for ever).
    svc.operations.cancel(&before.id).await.unwrap();
    state_becomes(&svc, &before.id, OpState::Cancelled).await;
}

#[tokio::test]
async fn a_waiting_upgrade_that_would_be_refused_now_is_not_rearmed_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let before = waiting_upgrade_then_stop(dir.path()).await;
    // Restarted a day and a half later: the backup the upgrade needs is now too old.
    let (svc, _root) = start(dir.path(), Some(36 * HOUR)).await;
    let e = svc.rearm(&svc.operations.waiting_for_window()[0]).await.unwrap_err();
    assert!(matches!(e, UpgradeError::NoRecentBackup { .. }), "{e}");
    assert_eq!(e.code(), ErrorCode::FailedPrecondition);
    assert!(e.to_string().contains("max_backup_age_hours"), "{e}");
    assert_eq!(svc.operations.get(&before.id).unwrap().state, OpState::WaitingForWindow, "left to the caller");
}
