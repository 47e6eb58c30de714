use super::*;
use crate::error::{ErrorCode, HasErrorCode};
use crate::health::memory::MemoryProber;
use crate::instances::fixtures::{rules, spec};
use crate::locks::ResourceLocks;
use crate::maintenance::Clock;
use crate::ops::{OpState, OpsSettings};
use crate::upgrade::health::UpgradeHealth;
use crate::upgrade::minor::memory::memory_minor_upgrades;
use std::path::Path;
use tokio_util::sync::CancellationToken;

/// Backups as the catalog would report them: the newest complete one, if any.
pub(in crate::upgrade) struct FakeBackups(pub Option<SystemTime>);

#[tonic::async_trait]
impl BackupFacts for FakeBackups {
    async fn newest_complete_backup(&self, _instance: &str) -> Option<SystemTime> {
        self.0
    }
    async fn server_address(&self, _instance: &Instance) -> (String, u16) {
        ("/var/run/postgresql".into(), 5432)
    }
}

/// A Tuesday noon: the fixture's window (Sunday 02:00 UTC) is days away, so a submitted upgrade waits.
pub(in crate::upgrade) struct Tuesday;
impl Clock for Tuesday {
    fn now(&self) -> SystemTime {
        humantime::parse_rfc3339("2026-12-01T12:00:00Z").unwrap()
    }
}

/// `<lib>/<major>/bin` with the files the checks look for.
fn install(lib: &Path, major: u32, files: &[&str]) {
    let bin = lib.join(major.to_string()).join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for f in files {
        std::fs::write(bin.join(f), b"").unwrap();
    }
}

async fn service(dir: &Path, newest_backup: Option<SystemTime>) -> UpgradeService {
    let locks = ResourceLocks::default();
    let registry = Arc::new(Registry::open(dir.join("instances"), rules(), locks.clone()).unwrap());
    registry.register("pg-1", spec("pg-1")).await.unwrap();
    let mut maria = spec("maria-1");
    maria.engine = Engine::Mariadb;
    maria.engine_version = "10.11".into();
    maria.systemd_unit = "mariadb.service".into();
    maria.os_user = "mysql".into();
    maria.log_sources.clear();
    registry.register("maria-1", maria).await.unwrap();
    let settings = OpsSettings { max_concurrent: 2, retention: Duration::from_secs(3600), max_finished: 100 };
    let (operations, _) = OperationEngine::open(&dir.join("ops"), settings, locks, CancellationToken::new()).unwrap();
    operations.set_window_clock(Arc::new(Tuesday));
    let lib = dir.join("lib");
    install(&lib, 15, &["postgres"]);
    install(&lib, 17, &["postgres", "pg_upgrade"]);
    let config = UpgradeConfig { postgresql_lib_dir: lib, ..UpgradeConfig::default() };
    let minor = memory_minor_upgrades(registry.clone(), operations.clone(), dir);
    UpgradeService {
        minor,
        registry,
        operations,
        backups: Arc::new(FakeBackups(newest_backup)),
        health: UpgradeHealth { prober: Arc::new(MemoryProber::default()), probe_deadline: Duration::from_secs(1) },
        config,
    }
}

fn request(request_id: &str, instance: &str, target: &str) -> UpgradeRequest {
    UpgradeRequest {
        request_id: request_id.into(),
        instance_id: instance.into(),
        target_version: target.into(),
        force: false,
        package_repository: String::new(),
        packages: Vec::new(),
    }
}

fn hours_ago(h: u64) -> Option<SystemTime> {
    Some(SystemTime::now() - Duration::from_secs(h * 3600))
}

#[tokio::test]
async fn routes_other_engines_and_own_majors_to_minor_upgrades_refuses_missing_binaries_and_submits_a_valid_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path(), hours_ago(1)).await;

    // MariaDB has no major upgrade: its request is read as a minor one, and "17" is none of its versions.
    let e = svc.start(request("r1", "maria-1", "17")).await.unwrap_err();
    assert!(matches!(e, UpgradeError::Minor(_)), "{e}");
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    assert!(e.to_string().starts_with("target_version: "), "{e}");

    let e = svc.start(request("r2", "pg-1", "14")).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::FailedPrecondition);
    assert!(e.to_string().contains("downgrades are never offered"), "{e}");

    let e = svc.start(request("r3", "pg-1", "16")).await.unwrap_err();
    assert!(matches!(e, UpgradeError::NotInstalled { major: 16, .. }), "{e}");
    assert!(e.to_string().contains("install postgresql-16"), "{e}");

    let e = svc.start(request("r4", "pg-1", "17.1")).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    assert!(e.to_string().starts_with("target_version: "), "{e}");

    let e = svc.start(request("r5", "nope", "17")).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound, "{e}");

    // The allowed path: submitted, waiting for Sunday's window (not forced), the same on a retry.
    let op = svc.start(request("r6", "pg-1", "17")).await.unwrap();
    assert_eq!(op.kind, KIND);
    assert_eq!(op.params["target_version"], "17");
    let waiting = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let r = svc.operations.get(&op.id).unwrap();
            if r.state == OpState::WaitingForWindow {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the upgrade waits for the instance's window");
    assert!(waiting.window_start.is_some());
    let again = svc.start(request("r6", "pg-1", "17")).await.unwrap();
    assert_eq!(again.id, op.id);
    svc.operations.cancel(&op.id).await.unwrap();
}

#[tokio::test]
async fn refuses_without_a_recent_backup_naming_the_knob_and_the_newest_backup() {
    let dir = tempfile::tempdir().unwrap();
    let none = service(dir.path(), None).await;
    let e = none.start(request("r1", "pg-1", "17")).await.unwrap_err();
    assert!(matches!(e, UpgradeError::NoRecentBackup { max_age_hours: 24, .. }), "{e}");
    assert_eq!(e.code(), ErrorCode::FailedPrecondition);
    let text = e.to_string();
    assert!(text.contains("upgrade.max_backup_age_hours") && text.contains("it has none"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let old = service(dir.path(), hours_ago(30)).await;
    let text = old.start(request("r1", "pg-1", "17")).await.unwrap_err().to_string();
    assert!(text.contains("the newest complete one is from"), "{text}");

    // The same request passes the backup check with a backup inside the limit.
    let dir = tempfile::tempdir().unwrap();
    let fresh = service(dir.path(), hours_ago(23)).await;
    let op = fresh.start(request("r1", "pg-1", "17")).await.unwrap();
    fresh.operations.cancel(&op.id).await.unwrap();
}

#[test]
fn config_refuses_no_backup_requirement_and_relative_folders() {
    let ok = UpgradeConfig::default();
    assert!(ok.validate().is_ok());
    let c = UpgradeConfig { max_backup_age_hours: 0, ..UpgradeConfig::default() };
    assert_eq!(c.validate().unwrap_err().0, "upgrade.max_backup_age_hours");
    let c = UpgradeConfig { postgresql_lib_dir: "usr/lib".into(), ..UpgradeConfig::default() };
    assert_eq!(c.validate().unwrap_err().0, "upgrade.postgresql_lib_dir");
    let c = UpgradeConfig { expected_minutes: 0, ..UpgradeConfig::default() };
    assert_eq!(c.validate().unwrap_err().0, "upgrade.expected_minutes");
}
