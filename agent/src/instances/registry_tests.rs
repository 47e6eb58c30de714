use super::*;
use crate::error::{ErrorCode, HasErrorCode};
use crate::instances::fixtures::{rules, spec};

fn open(dir: &Path) -> Registry {
    Registry::open(dir.join("instances"), rules(), ResourceLocks::default()).unwrap()
}

#[tokio::test]
async fn register_is_idempotent_and_refuses_a_different_spec() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open(dir.path());
    let (created, outcome) = reg.register("pg-1", spec("pg-1")).await.unwrap();
    assert_eq!(outcome, Outcome::Created);
    assert_eq!(created.generation, 1);
    assert_eq!(created.created, created.updated);
    assert!(dir.path().join("instances/pg-1.json").is_file());

    let (again, outcome) = reg.register("pg-1", spec("pg-1")).await.unwrap();
    assert_eq!((again, outcome), (created.clone(), Outcome::Existing));

    let mut other = spec("pg-1");
    other.plan.cpu_millis = 4000;
    let e = reg.register("pg-1", other).await.unwrap_err();
    assert!(matches!(&e, RegistryError::AlreadyRegistered { instance } if instance == "pg-1"), "{e}");
    assert!(e.to_string().contains("use UpdateInstance"), "{e}");
    assert_eq!(e.code(), ErrorCode::AlreadyExists);
    assert_eq!(reg.get("pg-1").unwrap(), created);
    assert_eq!(reg.count(), 1);
}

#[tokio::test]
async fn register_validates_id_and_spec() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open(dir.path());
    let e = reg.register("../x", spec("x")).await.unwrap_err();
    assert!(matches!(&e, RegistryError::Invalid(f) if f.field == "id"), "{e}");
    let mut bad = spec("pg-1");
    bad.os_user = "Root".to_owned();
    let e = reg.register("pg-1", bad).await.unwrap_err();
    assert!(matches!(&e, RegistryError::Invalid(f) if f.field == "spec.os_user"), "{e}");
    assert_eq!(reg.count(), 0);
}

#[tokio::test]
async fn register_refuses_shared_data_dir_or_device() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open(dir.path());
    let mut first = spec("pg-1");
    first.volume.device = Some("/dev/vdb".into());
    reg.register("pg-1", first).await.unwrap();

    for wanted in ["/srv/db/pg-1", "/srv/db/pg-1/inner"] {
        let mut s = spec("pg-2");
        s.data_dir = wanted.into();
        let e = reg.register("pg-2", s).await.unwrap_err();
        assert!(
            matches!(&e, RegistryError::DataDirOverlaps { data_dir, other, other_data_dir }
                if data_dir == Path::new(wanted) && other == "pg-1" && other_data_dir == Path::new("/srv/db/pg-1")),
            "{e}"
        );
        assert_eq!(e.code(), ErrorCode::AlreadyExists);
    }
    // The other way round: the new data_dir contains an existing one.
    reg.register("pg-3", spec("outer/pg-3")).await.unwrap();
    let e = reg.register("pg-4", spec("outer")).await.unwrap_err();
    assert!(matches!(&e, RegistryError::DataDirOverlaps { other, .. } if other == "pg-3"), "{e}");

    let mut s = spec("pg-2");
    s.volume.device = Some("/dev/vdb".into());
    let e = reg.register("pg-2", s).await.unwrap_err();
    assert!(
        matches!(&e, RegistryError::DeviceInUse { device, other } if device == Path::new("/dev/vdb") && other == "pg-1"),
        "{e}"
    );
    assert_eq!(e.code(), ErrorCode::AlreadyExists);

    // A sibling whose name extends the other's is not nested.
    reg.register("pg-5", spec("pg-10")).await.unwrap();
    assert_eq!(reg.list().iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["pg-1", "pg-3", "pg-5"]);
}

#[tokio::test]
async fn update_bumps_generation_and_checks_the_expected_one() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open(dir.path());
    let (created, _) = reg.register("pg-1", spec("pg-1")).await.unwrap();
    let mut s = spec("pg-1");
    s.plan.cpu_millis = 4000;
    let updated = reg.update("pg-1", s.clone(), Some(1)).await.unwrap();
    assert_eq!(updated.generation, 2);
    assert_eq!(updated.created, created.created);
    assert!(updated.updated >= created.updated);
    assert_eq!(updated.spec, s);

    let e = reg.update("pg-1", spec("pg-1"), Some(1)).await.unwrap_err();
    assert!(
        matches!(&e, RegistryError::GenerationMismatch { instance, expected: 1, actual: 2 } if instance == "pg-1"),
        "{e}"
    );
    assert!(e.to_string().contains("read it again and retry"), "{e}");
    assert_eq!(e.code(), ErrorCode::Aborted);
    assert_eq!(reg.get("pg-1").unwrap(), updated);

    let third = reg.update("pg-1", spec("pg-1"), None).await.unwrap();
    assert_eq!(third.generation, 3);

    let e = reg.update("pg-9", spec("pg-9"), None).await.unwrap_err();
    assert!(matches!(e, RegistryError::NotFound(id) if id == "pg-9"));
}

#[tokio::test]
async fn update_refuses_immutable_fields() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open(dir.path());
    reg.register("pg-1", spec("pg-1")).await.unwrap();
    let mut engine = spec("pg-1");
    engine.engine = Engine::Mariadb;
    let mut data_dir = spec("pg-1");
    data_dir.data_dir = "/srv/db/elsewhere".into();
    let mut device = spec("pg-1");
    device.volume.device = Some("/dev/vdc".into());
    let e = reg.update("pg-1", engine, None).await.unwrap_err();
    assert!(
        matches!(&e, RegistryError::EngineChange { instance, from: Engine::Postgresql, to: Engine::Mariadb } if instance == "pg-1"),
        "{e}"
    );
    assert!(e.to_string().contains("from postgresql to mariadb") && e.to_string().contains("StartUpgrade"), "{e}");
    assert_eq!(e.code(), ErrorCode::FailedPrecondition);
    let e = reg.update("pg-1", data_dir, None).await.unwrap_err();
    assert!(
        matches!(&e, RegistryError::DataDirChange { from, to, .. }
            if from == Path::new("/srv/db/pg-1") && to == Path::new("/srv/db/elsewhere")),
        "{e}"
    );
    assert!(e.to_string().contains("register a new instance"), "{e}");
    assert_eq!(e.code(), ErrorCode::FailedPrecondition);
    let e = reg.update("pg-1", device, None).await.unwrap_err();
    assert!(
        matches!(&e, RegistryError::DeviceChange { from: None, to: Some(to), .. } if to == Path::new("/dev/vdc")),
        "{e}"
    );
    assert!(e.to_string().contains("from none (an agent-managed file) to /dev/vdc"), "{e}");
    assert_eq!(e.code(), ErrorCode::FailedPrecondition);
    assert_eq!(reg.get("pg-1").unwrap().generation, 1);
    // A spec that changes none of them still updates.
    let mut plan = spec("pg-1");
    plan.plan.cpu_millis = 4000;
    assert_eq!(reg.update("pg-1", plan, None).await.unwrap().generation, 2);
}

#[tokio::test]
async fn remove_deletes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open(dir.path());
    let (created, _) = reg.register("pg-1", spec("pg-1")).await.unwrap();
    assert_eq!(reg.remove("pg-1").await.unwrap(), created);
    assert!(!dir.path().join("instances/pg-1.json").exists());
    assert!(matches!(reg.get("pg-1"), Err(RegistryError::NotFound(_))));
    assert!(matches!(reg.remove("pg-1").await, Err(RegistryError::NotFound(_))));
    // The data_dir is free again.
    reg.register("pg-2", spec("pg-1")).await.unwrap();
}

#[tokio::test]
async fn reopen_restores_everything() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open(dir.path());
    reg.register("pg-1", spec("pg-1")).await.unwrap();
    reg.register("pg-2", spec("pg-2")).await.unwrap();
    reg.register("pg-3", spec("pg-3")).await.unwrap();
    let mut s = spec("pg-2");
    s.backup_policy = None;
    reg.update("pg-2", s, Some(1)).await.unwrap();
    reg.remove("pg-3").await.unwrap();
    let before = reg.list();
    drop(reg);

    let reopened = open(dir.path());
    assert_eq!(reopened.list(), before);
    assert_eq!(reopened.count(), 2);
}

/// The registry's policy is `Keep`: a corrupt instance file quarantines that one instance. The
/// others open, the file is left exactly as it was, and every call on the quarantined id (get,
/// register, update, remove) is refused with FAILED_PRECONDITION naming the file and the reason.
#[tokio::test]
async fn a_corrupt_instance_file_quarantines_that_instance_and_the_others_open() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("instances");
    let reg = open(dir.path());
    let (created, _) = reg.register("pg-1", spec("pg-1")).await.unwrap();
    drop(reg);
    let good = std::fs::read(folder.join("pg-1.json")).unwrap();

    let full = std::fs::read_to_string(folder.join("pg-1.json")).unwrap().replace("pg-1", "pg-2");
    let misnamed = full.replace("\"id\": \"pg-2\"", "\"id\": \"pg-1\"");
    let invalid_id = full.replace("\"id\": \"pg-2\"", "\"id\": \"PG-2\"");
    for (file, content, says) in [
        ("pg-2.json", &full[..full.len() / 2], "not a valid instance file"),
        ("pg-2.json", &misnamed[..], "\"pg-1\""),
        ("PG-2.json", &invalid_id[..], "must match"),
    ] {
        std::fs::write(folder.join(file), content).unwrap();
        let reg = open(dir.path());
        assert_eq!(reg.list(), vec![created.clone()], "{file}: the good instance opens");
        let quarantined = reg.quarantined();
        assert_eq!(quarantined.len(), 1, "{file}");
        assert!(quarantined[0].file.ends_with(file) && quarantined[0].reason.contains(says), "{quarantined:?}");
        if file == "pg-2.json" {
            for e in [
                reg.get("pg-2").unwrap_err(),
                reg.register("pg-2", spec("pg-2")).await.unwrap_err(),
                reg.update("pg-2", spec("pg-2"), None).await.unwrap_err(),
                reg.remove("pg-2").await.unwrap_err(),
            ] {
                assert!(matches!(&e, RegistryError::Quarantined { instance, .. } if instance == "pg-2"), "{e}");
                assert!(e.to_string().contains(says) && e.to_string().contains("repair or restore"), "{e}");
                assert_eq!(e.code(), ErrorCode::FailedPrecondition);
            }
        }
        assert_eq!(std::fs::read_to_string(folder.join(file)).unwrap(), content, "the corrupt file is left as it was");
        assert_eq!(std::fs::read(folder.join("pg-1.json")).unwrap(), good, "the good record is intact");
        std::fs::remove_file(folder.join(file)).unwrap();
    }
    // Repaired, the registry opens with its instance and quarantines nothing.
    let reg = open(dir.path());
    assert_eq!(reg.list(), vec![created]);
    assert!(reg.quarantined().is_empty());
}

/// What an agent before the shared JSON store wrote: an upgraded agent must read it as it is.
#[tokio::test]
async fn reads_an_instance_file_in_the_format_written_before() {
    const PG_1: &str = r#"{
  "id": "pg-1",
  "spec": {
    "engine": "postgresql",
    "engine_version": "15.4",
    "systemd_unit": "postgresql@15-main.service",
    "data_dir": "/srv/db/pg-1",
    "os_user": "postgres",
    "volume": {
      "device": null,
      "size_bytes": 10737418240,
      "filesystem": "ext4"
    },
    "log_sources": [
      {
        "file_glob": "/var/log/postgresql/*.log"
      },
      {
        "journald_unit": "postgresql@15-main.service"
      }
    ],
    "plan": {
      "name": "starter",
      "cpu_millis": 2000,
      "memory_bytes": 4294967296,
      "io_read_iops": 3000,
      "io_write_iops": 3000,
      "io_read_bps": 104857600,
      "io_write_bps": 104857600,
      "disk_bytes": 10737418240
    },
    "maintenance_window": {
      "weekday": "sunday",
      "start_minute_utc": 120,
      "duration_minutes": 60
    },
    "backup_policy": {
      "daily_at_minute_utc": 180,
      "keep_daily": 7,
      "enabled": true
    }
  },
  "created": "2024-05-01T10:00:00.123Z",
  "updated": "2024-05-01T10:00:00.123Z",
  "generation": 2
}"#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("instances")).unwrap();
    std::fs::write(dir.path().join("instances/pg-1.json"), PG_1).unwrap();
    let reg = open(dir.path());
    let at = UNIX_EPOCH + Duration::from_millis(1_714_557_600_123);
    let expected = Instance { id: "pg-1".into(), spec: spec("pg-1"), created: at, updated: at, generation: 2 };
    assert_eq!(reg.get("pg-1").unwrap(), expected);
    // Written back, the file has the same shape.
    let mut s = spec("pg-1");
    s.plan.cpu_millis = 4000;
    reg.update("pg-1", s, Some(2)).await.unwrap();
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("instances/pg-1.json")).unwrap()).unwrap();
    let mut before: serde_json::Value = serde_json::from_str(PG_1).unwrap();
    before["spec"]["plan"]["cpu_millis"] = 4000.into();
    before["generation"] = 3.into();
    before["updated"] = written["updated"].clone();
    assert_eq!(written, before);
}

#[tokio::test]
async fn busy_while_an_operation_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let locks = ResourceLocks::default();
    let reg = Registry::open(dir.path().join("instances"), rules(), locks.clone()).unwrap();
    reg.register("pg-1", spec("pg-1")).await.unwrap();

    let held = locks.lock("pg-1").await;
    let e = reg.update("pg-1", spec("pg-1"), None).await.unwrap_err();
    assert!(matches!(&e, RegistryError::Busy { instance } if instance == "pg-1"), "{e}");
    assert!(e.to_string().contains("retry when it has finished"), "{e}");
    assert_eq!(e.code(), ErrorCode::Aborted);
    assert!(matches!(reg.remove("pg-1").await, Err(RegistryError::Busy { .. })));
    let mut changed = spec("pg-1");
    changed.plan.cpu_millis = 4000;
    assert!(matches!(reg.register("pg-1", changed).await, Err(RegistryError::Busy { .. })));
    // A plain retry of the registration still gets its answer.
    let (_, outcome) = reg.register("pg-1", spec("pg-1")).await.unwrap();
    assert_eq!(outcome, Outcome::Existing);
    // Reads and other instances are not blocked.
    assert!(reg.get("pg-1").is_ok());
    reg.register("pg-2", spec("pg-2")).await.unwrap();
    drop(held);
    reg.remove("pg-1").await.unwrap();
}

#[tokio::test]
async fn failed_write_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("instances");
    let reg = open(dir.path());
    let (created, _) = reg.register("pg-1", spec("pg-1")).await.unwrap();
    // A folder where the temporary file goes makes the atomic write fail.
    std::fs::create_dir(folder.join(".pg-1.json.tmp")).unwrap();
    std::fs::create_dir(folder.join(".pg-2.json.tmp")).unwrap();
    let mut s = spec("pg-1");
    s.plan.cpu_millis = 4000;
    let e = reg.update("pg-1", s, None).await.unwrap_err();
    assert!(
        matches!(&e, RegistryError::Storage { context, source: JsonStoreError::Io { path, .. } }
            if context == "update instance pg-1" && path.ends_with("pg-1.json")),
        "{e}"
    );
    assert_eq!(e.code(), ErrorCode::Internal);
    assert!(matches!(reg.register("pg-2", spec("pg-2")).await, Err(RegistryError::Storage { .. })));
    assert_eq!(reg.list(), vec![created.clone()]);
    assert_eq!(open(dir.path()).list(), vec![created], "the file on disk is unchanged too");
}

#[tokio::test]
async fn restore_targets_stay_in_the_data_roots_and_out_of_other_instances() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open(dir.path());
    reg.register("pg-1", spec("pg-1")).await.unwrap();
    reg.register("pg-2", spec("pg-2")).await.unwrap();

    reg.check_restore_dir("pg-1", Path::new("/srv/db/pg-1")).unwrap();
    reg.check_restore_dir("pg-1", Path::new("/srv/db/pg-1-restored")).unwrap();
    for (target, field_error) in [
        ("/etc/cron.d/x", true),
        ("/srv/db", true),
        ("/srv/db/../../etc", true),
        ("relative/dir", true),
        ("/srv/db/pg-2", false),
        ("/srv/db/pg-2/nested", false),
        ("/srv/db/pg-1/nested", false),
    ] {
        let e = reg.check_restore_dir("pg-1", Path::new(target)).unwrap_err();
        match field_error {
            true => assert!(
                matches!(&e, RegistryError::Invalid(f) if f.to_string().contains("target_data_dir")),
                "{target}: {e}"
            ),
            false => {
                assert!(
                    matches!(&e, RegistryError::RestoreDirOverlaps { target: t, .. } if t == Path::new(target)),
                    "{target}: {e}"
                );
                assert_eq!(e.code(), ErrorCode::FailedPrecondition);
            }
        }
    }
    let e = reg.check_restore_dir("pg-9", Path::new("/srv/db/new")).unwrap_err();
    assert!(matches!(e, RegistryError::NotFound(_)), "{e}");
}

#[tokio::test]
async fn a_data_dir_through_a_link_out_of_the_data_roots_is_refused() {
    let state = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let mut r = rules();
    r.data_roots = vec![root.path().to_path_buf()];
    let reg = Registry::open(state.path().join("instances"), r, ResourceLocks::default()).unwrap();
    // The database's user owns the data root and plants a link to a folder of root's.
    std::os::unix::fs::symlink(elsewhere.path(), root.path().join("15")).unwrap();
    let mut s = spec("x");
    s.data_dir = root.path().join("15/main");
    let e = reg.register("pg-1", s.clone()).await.unwrap_err();
    assert!(
        matches!(&e, RegistryError::LeavesDataRoots { field, path, data_roots }
            if field == "spec.data_dir" && path == &s.data_dir && data_roots == &[root.path().to_path_buf()]),
        "{e}"
    );
    assert!(e.to_string().contains("symbolic link"), "{e}");
    assert_eq!(e.code(), ErrorCode::FailedPrecondition);
    assert!(reg.list().is_empty());
    // The same path without the link registers, and the check still runs before a mount.
    std::fs::remove_file(root.path().join("15")).unwrap();
    reg.register("pg-1", s.clone()).await.unwrap();
    reg.check_no_escape("data_dir", &s.data_dir).unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), root.path().join("15")).unwrap();
    assert!(
        reg.check_no_escape("data_dir", &s.data_dir).is_err(),
        "a link planted after registration is caught at mount time"
    );
}

/// A passwd database with the accounts the os_user tests need, whatever this host has.
fn accounts(name: &str) -> Option<(u32, u32)> {
    match name {
        "postgres" => Some((105, 110)),
        "redis" => Some((999, 999)),
        "tenant" => Some((1000, 1000)),
        "daemon" => Some((1, 1)),
        "wheelie" => Some((1001, 0)),
        "nfsnobody" => Some((65534, 65534)),
        _ => None,
    }
}

#[tokio::test]
async fn os_user_that_is_root_or_a_system_account_on_this_host_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let reg = open(dir.path()).with_accounts(accounts);
    for (user, why) in [
        ("daemon", "static system account (uid 1"),
        ("wheelie", "is root (uid or gid 0)"),
        ("nfsnobody", "is nobody (65534)"),
        ("root", "is root or a system account"),
        ("nobody", "is root or a system account"),
    ] {
        let mut s = spec("pg-1");
        s.os_user = user.to_owned();
        let e = reg.register("pg-1", s).await.unwrap_err();
        assert!(
            matches!(&e, RegistryError::Invalid(f) if f.field == "spec.os_user" && f.reason.contains(why)),
            "{user}: {e}"
        );
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
    }
    assert_eq!(reg.count(), 0, "nothing registered");

    // Engine users (dynamic system accounts 100-999), regular users and users not created yet pass.
    for (i, user) in ["postgres", "redis", "tenant", "not-created-yet"].iter().enumerate() {
        let mut s = spec(&format!("pg-{i}"));
        s.os_user = (*user).to_owned();
        reg.register(&format!("pg-{i}"), s).await.unwrap_or_else(|e| panic!("{user}: {e}"));
    }
    // An update cannot switch to a refused account either.
    let mut s = spec("pg-0");
    s.os_user = "daemon".to_owned();
    let e = reg.update("pg-0", s, None).await.unwrap_err();
    assert!(matches!(&e, RegistryError::Invalid(f) if f.field == "spec.os_user"), "{e}");
    assert_eq!(reg.get("pg-0").unwrap().spec.os_user, "postgres");
}

/// Remainders as a test sets them.
#[derive(Default)]
struct Remainders(std::sync::Mutex<Vec<String>>);

#[tonic::async_trait]
impl InstanceLeftovers for Remainders {
    async fn remains(&self, _id: &str) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn remove_says_what_remains_even_while_an_operation_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let locks = ResourceLocks::default();
    let reg = Registry::open(dir.path().join("instances"), rules(), locks.clone()).unwrap();
    let left = Arc::new(Remainders::default());
    reg.set_leftovers(left.clone());
    reg.register("pg-1", spec("pg-1")).await.unwrap();

    let held = locks.try_lock("pg-1").unwrap();
    let e = reg.remove("pg-1").await.unwrap_err();
    assert!(matches!(&e, RegistryError::Busy { .. }), "nothing named remains: busy, as before: {e}");
    *left.0.lock().unwrap() = vec!["operation op-1 (volume.create, running): wait for it to finish".into()];
    let e = reg.remove("pg-1").await.unwrap_err();
    assert!(matches!(&e, RegistryError::Remains { verb: "removed", .. }), "{e}");
    assert!(e.to_string().contains("operation op-1 (volume.create, running)"), "{e}");
    assert_eq!(e.code(), ErrorCode::FailedPrecondition);
    drop(held);
    left.0.lock().unwrap().clear();
    reg.remove("pg-1").await.unwrap();
}

#[tokio::test]
async fn a_maintenance_window_set_alone_keeps_the_spec_and_survives_a_reopen() {
    use crate::instances::{MaintenanceWindow, Weekday};
    let dir = tempfile::tempdir().unwrap();
    let reg = open(dir.path());
    let (created, _) = reg.register("pg-1", spec("pg-1")).await.unwrap();
    let window = MaintenanceWindow { weekday: Weekday::Sunday, start_minute_utc: 23 * 60, duration_minutes: 180 };
    let updated = reg.set_maintenance_window("pg-1", window.clone()).await.unwrap();
    assert_eq!(updated.spec.maintenance_window.as_ref(), Some(&window));
    assert_eq!(updated.generation, created.generation + 1);
    let rest = |s: &InstanceSpec| InstanceSpec { maintenance_window: None, ..s.clone() };
    assert_eq!(rest(&updated.spec), rest(&created.spec), "only the window changed");
    // The same window again changes nothing, not even the generation.
    assert_eq!(reg.set_maintenance_window("pg-1", window.clone()).await.unwrap().generation, updated.generation);
    drop(reg);
    let reopened = open(dir.path());
    assert_eq!(reopened.get("pg-1").unwrap().spec.maintenance_window, Some(window));
    // Refusals name the request's field; the stored window stays.
    let short = MaintenanceWindow { weekday: Weekday::Monday, start_minute_utc: 0, duration_minutes: 14 };
    let e = reopened.set_maintenance_window("pg-1", short).await.unwrap_err();
    assert!(matches!(&e, RegistryError::Invalid(f) if f.field == "window.duration_minutes"), "{e}");
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    let late = MaintenanceWindow { weekday: Weekday::Monday, start_minute_utc: 1440, duration_minutes: 60 };
    let e = reopened.set_maintenance_window("pg-1", late).await.unwrap_err();
    assert!(matches!(&e, RegistryError::Invalid(f) if f.field == "window.start_minute_utc"), "{e}");
    assert_eq!(reopened.get("pg-1").unwrap().generation, updated.generation);
    let e =
        reopened.set_maintenance_window("pg-9", updated.spec.maintenance_window.clone().unwrap()).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
}
