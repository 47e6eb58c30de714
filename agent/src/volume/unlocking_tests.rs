//! Opening with a missing or wrong key, finishing an interrupted rotation, the start-up pass, and a
//! data_dir that something else is mounted on.

use std::path::Path;

use crate::error::ErrorCode;
use crate::volume::crypt::CryptBackend;
use crate::volume::host::HostOps;
use crate::volume::test_fixture::{code, fixture, settings};
use crate::volume::{KeyError, KeyProvider, VolumeError, VolumeOutcome};

#[tokio::test]
async fn missing_or_wrong_key_is_refused() {
    let f = fixture();
    f.register("pg-1", None).await;
    f.volumes.create("pg-1", false).await.unwrap();
    f.volumes.close("pg-1").await.unwrap();
    f.keys.forget("pg-1", None).await.unwrap();
    let e = f.volumes.open("pg-1").await.unwrap_err();
    assert!(matches!(e, VolumeError::Key(KeyError::Missing { version: 1, .. })), "{e}");
    assert_eq!(code(&e), ErrorCode::FailedPrecondition);
    assert_eq!(f.volumes.get("pg-1").await.unwrap().last_error.as_deref(), Some(e.to_string().as_str()));

    // A different key under the same version: refused, nothing activated.
    f.keys.key("pg-1", 1, true, 256).await.unwrap();
    let e = f.volumes.open("pg-1").await.unwrap_err();
    assert!(matches!(e, VolumeError::WrongKey { .. }), "{e}");
    assert_eq!(code(&e), ErrorCode::FailedPrecondition);
    assert!(!f.volumes.get("pg-1").await.unwrap().active);
}

#[tokio::test]
async fn interrupted_rotation_is_completed_at_open() {
    let f = fixture();
    f.register("pg-1", None).await;
    f.volumes.create("pg-1", false).await.unwrap();
    f.volumes.close("pg-1").await.unwrap();
    // The header got the new keyslot and lost the old one, then the agent died.
    let file = f.dir.path().join("volumes/pg-1.img");
    let old = f.keys.key("pg-1", 1, false, 256).await.unwrap();
    let new = f.keys.key("pg-1", 2, true, 256).await.unwrap();
    let loopdev = f.host.attach_loop(&file).unwrap();
    let slot = f.crypt.verify(&loopdev, old.as_bytes()).unwrap();
    f.crypt.add_keyslot(&loopdev, old.as_bytes(), new.as_bytes(), &settings(&[]).format.pbkdf).unwrap();
    f.crypt.destroy_keyslot(&loopdev, slot).unwrap();
    f.host.detach_loop(&loopdev).unwrap();

    assert_eq!(f.volumes.open("pg-1").await.unwrap(), VolumeOutcome::Opened);
    assert_eq!(f.volumes.get("pg-1").await.unwrap().key_version, 2);
    assert!(f.keys.key("pg-1", 1, false, 256).await.is_err());
    // A rotation after that starts from version 2.
    assert_eq!(f.volumes.rotate_key("pg-1").await.unwrap(), VolumeOutcome::Rotated);
    assert_eq!(f.volumes.get("pg-1").await.unwrap().key_version, 3);
}

#[tokio::test]
async fn startup_opens_what_it_can() {
    let f = fixture();
    for id in ["pg-1", "pg-2"] {
        f.register(id, None).await;
        f.volumes.create(id, false).await.unwrap();
        f.volumes.close(id).await.unwrap();
    }
    f.register("pg-3", None).await; // no volume: nothing to open
    f.keys.forget("pg-2", None).await.unwrap();
    assert_eq!(f.volumes.open_all().await, crate::volume::StartupOpen { opened: 1, failed: 1, quarantined: 0 });
    assert!(f.volumes.get("pg-1").await.unwrap().mounted);
    let s = f.volumes.get("pg-2").await.unwrap();
    assert!(!s.active && s.last_error.unwrap().contains("no key"));
}

#[tokio::test]
async fn another_mount_on_the_data_dir_is_refused() {
    let f = fixture();
    f.register("pg-1", None).await;
    f.volumes.create("pg-1", false).await.unwrap();
    f.volumes.close("pg-1").await.unwrap();
    let dir = Path::new("/srv/db/pg-1");
    f.host.mount_other(Path::new("/dev/sdx1"), dir);
    let e = f.volumes.open("pg-1").await.unwrap_err();
    assert!(matches!(&e, VolumeError::DataDirOccupied { mounted, .. } if mounted == Path::new("/dev/sdx1")), "{e}");
    assert_eq!(code(&e), ErrorCode::FailedPrecondition);

    f.host.unmount_other(dir);
    assert_eq!(f.volumes.open("pg-1").await.unwrap(), VolumeOutcome::Opened);
    assert!(f.volumes.get("pg-1").await.unwrap().last_error.is_none(), "a later success clears the error");
}
