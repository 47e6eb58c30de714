use super::*;
use crate::instances::fixtures::{rules, spec};
use crate::instances::model::Engine;

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
    assert!(matches!(&e, RegistryError::AlreadyExists(m) if m.contains("UpdateInstance")), "{e}");
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

    for data_dir in ["/srv/db/pg-1", "/srv/db/pg-1/inner"] {
        let mut s = spec("pg-2");
        s.data_dir = data_dir.into();
        let e = reg.register("pg-2", s).await.unwrap_err();
        assert!(matches!(&e, RegistryError::AlreadyExists(m) if m.contains("instance pg-1")), "{e}");
    }
    // The other way round: the new data_dir contains an existing one.
    reg.register("pg-3", spec("outer/pg-3")).await.unwrap();
    let e = reg.register("pg-4", spec("outer")).await.unwrap_err();
    assert!(matches!(&e, RegistryError::AlreadyExists(m) if m.contains("instance pg-3")), "{e}");

    let mut s = spec("pg-2");
    s.volume.device = Some("/dev/vdb".into());
    let e = reg.register("pg-2", s).await.unwrap_err();
    assert!(matches!(&e, RegistryError::AlreadyExists(m) if m.contains("/dev/vdb") && m.contains("pg-1")), "{e}");

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
    assert!(matches!(&e, RegistryError::Conflict(m) if m.contains("generation 2")), "{e}");
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
    for (s, field, advice) in [
        (engine, "spec.engine", "StartUpgrade"),
        (data_dir, "spec.data_dir", "new instance"),
        (device, "spec.volume.device", "new instance"),
    ] {
        let e = reg.update("pg-1", s, None).await.unwrap_err();
        assert!(matches!(&e, RegistryError::FailedPrecondition(m) if m.contains(field) && m.contains(advice)), "{e}");
    }
    assert_eq!(reg.get("pg-1").unwrap().generation, 1);
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

#[tokio::test]
async fn corrupt_or_misnamed_file_fails_open() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("instances");
    let reg = open(dir.path());
    reg.register("pg-1", spec("pg-1")).await.unwrap();
    drop(reg);

    std::fs::write(folder.join("pg-2.json"), b"{ not json").unwrap();
    let e = Registry::open(folder.clone(), rules(), ResourceLocks::default()).err().unwrap();
    assert!(matches!(&e, RegistryError::Corrupt { context, .. } if context.contains("pg-2.json")), "{e}");

    std::fs::copy(folder.join("pg-1.json"), folder.join("pg-2.json")).unwrap();
    let e = Registry::open(folder, rules(), ResourceLocks::default()).err().unwrap();
    assert!(matches!(&e, RegistryError::Corrupt { context, .. } if context.contains("pg-2.json")), "{e}");
    assert!(e.to_string().contains("\"pg-1\""), "{e}");
}

#[tokio::test]
async fn busy_while_an_operation_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let locks = ResourceLocks::default();
    let reg = Registry::open(dir.path().join("instances"), rules(), locks.clone()).unwrap();
    reg.register("pg-1", spec("pg-1")).await.unwrap();

    let held = locks.lock("pg-1").await;
    let e = reg.update("pg-1", spec("pg-1"), None).await.unwrap_err();
    assert!(matches!(&e, RegistryError::Busy(m) if m.contains("pg-1") && m.contains("retry")), "{e}");
    assert!(matches!(reg.remove("pg-1").await, Err(RegistryError::Busy(_))));
    let mut changed = spec("pg-1");
    changed.plan.cpu_millis = 4000;
    assert!(matches!(reg.register("pg-1", changed).await, Err(RegistryError::Busy(_))));
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
    assert!(matches!(&e, RegistryError::Io { context, .. } if context.contains("update instance pg-1")), "{e}");
    assert!(matches!(reg.register("pg-2", spec("pg-2")).await, Err(RegistryError::Io { .. })));
    assert_eq!(reg.list(), vec![created]);
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
                assert!(matches!(&e, RegistryError::FailedPrecondition(m) if m.contains("overlaps")), "{target}: {e}")
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
    assert!(matches!(&e, RegistryError::FailedPrecondition(m) if m.contains("symbolic link")), "{e}");
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
