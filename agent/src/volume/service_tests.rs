//! A whole lifecycle on the in-memory backends, and two instances side by side.

use std::path::{Path, PathBuf};

use crate::error::ErrorCode;
use crate::instances::fixtures::GIB;
use crate::volume::KeyProvider;
use crate::volume::crypt::{CryptBackend, CryptError};
use crate::volume::test_fixture::{code, fixture};
use crate::volume::{VolumeError, VolumeOutcome};

fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect()
}

#[tokio::test]
async fn lifecycle_on_a_managed_file() {
    let f = fixture();
    f.register("pg-1", None).await;
    let v = &f.volumes;
    assert_eq!(v.create("pg-1", false).await.unwrap(), VolumeOutcome::Created);
    let s = v.get("pg-1").await.unwrap();
    assert!(s.active && s.mounted, "{s:?}");
    assert_eq!(s.cipher, "aes-xts-plain64");
    assert_eq!((s.key_bits, s.key_version), (256, 1));
    assert_eq!(s.flags, vec!["no_read_workqueue", "no_write_workqueue"]);
    assert_eq!(s.backing, f.dir.path().join("volumes/pg-1.img"));
    assert_eq!(s.mapper_path, PathBuf::from("/dev/mapper/dbagent-pg-1"));
    assert_eq!(f.host.owner(Path::new("/srv/db/pg-1")).as_deref(), Some("postgres"));
    assert_eq!(v.create("pg-1", false).await.unwrap(), VolumeOutcome::AlreadyExists);

    assert_eq!(v.close("pg-1").await.unwrap(), VolumeOutcome::Closed);
    assert_eq!(v.close("pg-1").await.unwrap(), VolumeOutcome::AlreadyClosed);
    assert_eq!(f.host.loop_count(), 0);
    assert!(!v.get("pg-1").await.unwrap().active);
    assert_eq!(v.open("pg-1").await.unwrap(), VolumeOutcome::Opened);
    assert_eq!(v.open("pg-1").await.unwrap(), VolumeOutcome::AlreadyOpen);

    assert_eq!(v.grow("pg-1", 12 * GIB).await.unwrap(), VolumeOutcome::Grown);
    assert_eq!(v.get("pg-1").await.unwrap().size_bytes, 12 * GIB);

    assert_eq!(v.rotate_key("pg-1").await.unwrap(), VolumeOutcome::Rotated);
    assert_eq!(v.get("pg-1").await.unwrap().key_version, 2);
    v.close("pg-1").await.unwrap();
    assert_eq!(v.open("pg-1").await.unwrap(), VolumeOutcome::Opened, "reopens with the rotated key");

    let headers = f.dir.path().join("volumes/headers");
    let backup = v.backup_header("pg-1").await.unwrap();
    assert_eq!(files_in(&headers), vec![backup]);

    let key = f.keys.key("pg-1", 2, false, 256).await.unwrap();
    let device = f.crypt.mapped_device("dbagent-pg-1").unwrap();
    assert_eq!(v.destroy("pg-1").await.unwrap(), VolumeOutcome::Destroyed);
    assert!(matches!(f.crypt.verify(&device, key.as_bytes()), Err(CryptError::WrongKey(_))), "keyslots erased");
    assert!(f.keys.key("pg-1", 2, false, 256).await.is_err(), "keys forgotten");
    assert!(files_in(&headers).is_empty(), "header backups are key material: destroy deletes them");
    assert_eq!(v.destroy("pg-1").await.unwrap(), VolumeOutcome::AlreadyDestroyed);
    let e = v.get("pg-1").await.unwrap_err();
    assert!(matches!(e, VolumeError::NoVolume(_)), "{e}");
    assert_eq!(code(&e), ErrorCode::FailedPrecondition);
    assert_eq!(f.host.loop_count(), 0);
}

#[tokio::test]
async fn two_instances_have_their_own_keys() {
    let f = fixture();
    f.register("pg-1", None).await;
    f.register("pg-2", None).await;
    f.volumes.create("pg-1", false).await.unwrap();
    f.volumes.create("pg-2", false).await.unwrap();
    let k1 = f.keys.key("pg-1", 1, false, 256).await.unwrap();
    let k2 = f.keys.key("pg-2", 1, false, 256).await.unwrap();
    assert_ne!(k1.as_bytes(), k2.as_bytes());
    let d2 = f.crypt.mapped_device("dbagent-pg-2").unwrap();
    assert!(matches!(f.crypt.verify(&d2, k1.as_bytes()), Err(CryptError::WrongKey(_))));
    assert!(f.crypt.verify(&d2, k2.as_bytes()).is_ok());
    assert_eq!(f.volumes.list().await.unwrap().len(), 2);
}
