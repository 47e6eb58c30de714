//! Rotation swaps the keyslot and deletes its own header backup; a provider that hands out the same
//! key again is refused before anything changes.

use std::path::Path;
use std::sync::Arc;

use crate::error::ErrorCode;
use crate::volume::crypt::{CryptBackend, CryptError};
use crate::volume::keystore::LocalKeystore;
use crate::volume::test_fixture::{code, fixture, settings};
use crate::volume::{KeyError, KeyProvider, VolumeError, VolumeKey, VolumeOutcome, Volumes};

fn header_backups(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("volumes/headers")).unwrap().count()
}

#[tokio::test]
async fn rotation_replaces_the_keyslot_and_deletes_its_backup() {
    let f = fixture();
    f.register("pg-1", None).await;
    f.volumes.create("pg-1", false).await.unwrap();
    let old = f.keys.key("pg-1", 1, false, 256).await.unwrap();
    assert_eq!(f.volumes.rotate_key("pg-1").await.unwrap(), VolumeOutcome::Rotated);
    let new = f.keys.key("pg-1", 2, false, 256).await.unwrap();
    let device = f.crypt.mapped_device("dbagent-pg-1").unwrap();
    assert!(matches!(f.crypt.verify(&device, old.as_bytes()), Err(CryptError::WrongKey(_))));
    assert!(f.crypt.verify(&device, new.as_bytes()).is_ok());
    assert!(f.keys.key("pg-1", 1, false, 256).await.is_err(), "the old key version is forgotten");
    assert_eq!(header_backups(f.dir.path()), 0, "the pre-rotation backup still opens with the old key");
    let s = f.volumes.get("pg-1").await.unwrap();
    assert!(s.active && s.mounted && s.key_version == 2, "the volume stayed open: {s:?}");
}

/// Hands out version 1's key for every version, like a KeyService that ignores the version.
struct RepeatingKeys(Arc<LocalKeystore>);

#[tonic::async_trait]
impl KeyProvider for RepeatingKeys {
    fn name(&self) -> &'static str {
        "repeating"
    }

    async fn key(&self, instance: &str, _version: u32, create: bool, bits: u32) -> Result<VolumeKey, KeyError> {
        self.0.key(instance, 1, create, bits).await
    }

    async fn forget(&self, instance: &str, keep: Option<u32>) -> Result<(), KeyError> {
        self.0.forget(instance, keep).await
    }
}

#[tokio::test]
async fn the_same_key_again_is_refused() {
    let f = fixture();
    f.register("pg-1", None).await;
    let volumes = Volumes::new(
        f.dir.path(),
        settings(&[]),
        f.crypt.clone(),
        f.host.clone(),
        Arc::new(RepeatingKeys(f.keys.clone())),
        f.registry.clone(),
    )
    .unwrap();
    volumes.create("pg-1", false).await.unwrap();
    let e = volumes.rotate_key("pg-1").await.unwrap_err();
    assert!(matches!(e, VolumeError::RotationKeyUnchanged { from: 1, to: 2, .. }), "{e}");
    assert_eq!(code(&e), ErrorCode::FailedPrecondition);
    assert_eq!(header_backups(f.dir.path()), 0);

    // The volume still opens with its key, and a provider that does rotate keys may rotate it.
    volumes.close("pg-1").await.unwrap();
    assert_eq!(volumes.open("pg-1").await.unwrap(), VolumeOutcome::Opened);
    assert_eq!(volumes.get("pg-1").await.unwrap().key_version, 1);
    let rotating = Volumes::new(
        f.dir.path(),
        settings(&[]),
        f.crypt.clone(),
        f.host.clone(),
        Arc::new(f.keys.clone()),
        f.registry.clone(),
    )
    .unwrap();
    assert_eq!(rotating.rotate_key("pg-1").await.unwrap(), VolumeOutcome::Rotated);
}
