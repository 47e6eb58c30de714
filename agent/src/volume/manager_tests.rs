//! The daemon logic on the in-memory backends: lifecycle, idempotency, bad input, recovery.

use super::*;
use crate::config::PbkdfKind;
use crate::error::ErrorCode;
use crate::instances::fixtures::{self, GIB};
use crate::locks::ResourceLocks;
use crate::volume::keystore::LocalKeystore;
use crate::volume::sim::{SimCrypt, SimHost};

pub(crate) struct Fixture {
    pub dir: tempfile::TempDir,
    pub registry: Arc<Registry>,
    pub crypt: Arc<SimCrypt>,
    pub host: Arc<SimHost>,
    pub keys: Arc<LocalKeystore>,
    pub volumes: Volumes,
}

pub(crate) fn settings(prefixes: &[&str]) -> VolumeSettings {
    VolumeSettings {
        format: FormatParams {
            key_bits: 256,
            sector_size: 0,
            pbkdf: PbkdfParams { kind: PbkdfKind::Pbkdf2, time_ms: 100, iterations: 1000, memory_kib: 32, parallel: 1 },
            label: String::new(),
        },
        flags: ActivationFlags { no_read_workqueue: true, no_write_workqueue: true },
        device_prefixes: prefixes.iter().map(PathBuf::from).collect(),
    }
}

pub(crate) fn fixture_with(prefixes: &[&str]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let registry =
        Arc::new(Registry::open(dir.path().join("instances"), fixtures::rules(), ResourceLocks::default()).unwrap());
    let host = Arc::new(SimHost::default());
    let crypt = Arc::new(SimCrypt::on(host.clone()));
    let keys = Arc::new(LocalKeystore::open(dir.path().join("keystore"), &[9u8; 32]).unwrap());
    let volumes = Volumes::new(
        dir.path(),
        settings(prefixes),
        crypt.clone(),
        host.clone(),
        Arc::new(keys.clone()),
        registry.clone(),
    )
    .unwrap();
    Fixture { dir, registry, crypt, host, keys, volumes }
}

pub(crate) fn fixture() -> Fixture {
    fixture_with(&["/dev/disk/by-id/", "/dev/vd"])
}

impl Fixture {
    pub async fn register(&self, id: &str, device: Option<&str>) {
        let mut spec = fixtures::spec(id);
        spec.volume.device = device.map(PathBuf::from);
        self.registry.register(id, spec).await.unwrap();
    }
}

fn code(e: &VolumeError) -> ErrorCode {
    crate::error::HasErrorCode::code(e)
}

#[tokio::test]
async fn lifecycle_on_a_managed_file() {
    let f = fixture();
    f.register("pg-1", None).await;
    let v = &f.volumes;
    assert_eq!(v.create("pg-1", false).await.unwrap(), Done::Created);
    let s = v.get("pg-1").await.unwrap();
    assert!(s.active && s.mounted, "{s:?}");
    assert_eq!(s.cipher, "aes-xts-plain64");
    assert_eq!((s.key_bits, s.key_version), (256, 1));
    assert_eq!(s.flags, vec!["no_read_workqueue", "no_write_workqueue"]);
    assert_eq!(s.backing, f.dir.path().join("volumes/pg-1.img"));
    assert_eq!(s.mapper_path, PathBuf::from("/dev/mapper/dbagent-pg-1"));
    assert_eq!(f.host.owner(Path::new("/srv/db/pg-1")).as_deref(), Some("postgres"));
    assert_eq!(v.create("pg-1", false).await.unwrap(), Done::AlreadyExists);

    assert_eq!(v.close("pg-1").await.unwrap(), Done::Closed);
    assert_eq!(v.close("pg-1").await.unwrap(), Done::AlreadyClosed);
    assert_eq!(f.host.loop_count(), 0);
    assert!(!v.get("pg-1").await.unwrap().active);
    assert_eq!(v.open("pg-1").await.unwrap(), Done::Opened);
    assert_eq!(v.open("pg-1").await.unwrap(), Done::AlreadyOpen);

    let e = v.grow("pg-1", 5 * GIB).await.unwrap_err();
    assert_eq!(code(&e), ErrorCode::FailedPrecondition);
    assert!(e.to_string().contains("shrinking"), "{e}");
    assert_eq!(v.grow("pg-1", 10 * GIB).await.unwrap(), Done::Unchanged);
    assert_eq!(v.grow("pg-1", 12 * GIB).await.unwrap(), Done::Grown);
    assert_eq!(v.get("pg-1").await.unwrap().size_bytes, 12 * GIB);
    assert_eq!(f.host.grown(), vec![PathBuf::from("/dev/mapper/dbagent-pg-1")]);

    let old = f.keys.key("pg-1", 1, false, 256).await.unwrap();
    assert_eq!(v.rotate_key("pg-1").await.unwrap(), Done::Rotated);
    assert!(f.keys.key("pg-1", 1, false, 256).await.is_err(), "the old key version is forgotten");
    let new = f.keys.key("pg-1", 2, false, 256).await.unwrap();
    let device = f.crypt.mapped_device("dbagent-pg-1").unwrap();
    assert!(matches!(f.crypt.verify(&device, old.as_bytes()), Err(CryptError::WrongKey(_))));
    assert!(f.crypt.verify(&device, new.as_bytes()).is_ok());
    assert_eq!(v.get("pg-1").await.unwrap().key_version, 2);
    v.close("pg-1").await.unwrap();
    assert_eq!(v.open("pg-1").await.unwrap(), Done::Opened, "reopens with the rotated key");

    let path = v.backup_header("pg-1").await.unwrap();
    assert!(path.starts_with(f.dir.path().join("volumes/headers")));

    let e = v.destroy("pg-1", "pg-2").await.unwrap_err();
    assert_eq!(code(&e), ErrorCode::InvalidArgument);
    assert_eq!(v.destroy("pg-1", "pg-1").await.unwrap(), Done::Destroyed);
    assert!(matches!(f.crypt.verify(&device, new.as_bytes()), Err(CryptError::WrongKey(_))), "keyslots erased");
    assert!(f.keys.key("pg-1", 2, false, 256).await.is_err(), "keys forgotten");
    assert_eq!(v.destroy("pg-1", "pg-1").await.unwrap(), Done::AlreadyDestroyed);
    assert_eq!(code(&v.get("pg-1").await.unwrap_err()), ErrorCode::FailedPrecondition);
    assert_eq!(f.host.loop_count(), 0);
}

use super::super::crypt::CryptError;

#[tokio::test]
async fn device_outside_prefixes_is_refused_untouched() {
    // The registry accepted /dev/vd*, but the volume settings no longer allow it.
    let f = fixture_with(&["/dev/disk/by-id/"]);
    f.register("pg-1", Some("/dev/vdb")).await;
    f.host.add_device(Path::new("/dev/vdb"), 20 * GIB, None);
    let e = f.volumes.create("pg-1", false).await.unwrap_err();
    assert_eq!(code(&e), ErrorCode::InvalidArgument);
    assert!(e.to_string().contains("device_prefixes"), "{e}");
    assert!(!f.crypt.is_luks(Path::new("/dev/vdb")).unwrap());
    assert!(f.keys.key("pg-1", 1, false, 256).await.is_err(), "no key was made");
}

#[tokio::test]
async fn device_of_another_instance_is_refused() {
    let f = fixture();
    f.host.add_device(Path::new("/dev/vdb"), 20 * GIB, None);
    f.register("pg-1", Some("/dev/vdb")).await;
    f.volumes.create("pg-1", false).await.unwrap();
    f.volumes.close("pg-1").await.unwrap();
    // pg-1 leaves the registry but its volume was never destroyed.
    f.registry.remove("pg-1").await.unwrap();
    f.register("pg-2", Some("/dev/vdb")).await;
    let e = f.volumes.create("pg-2", true).await.unwrap_err();
    assert_eq!(code(&e), ErrorCode::FailedPrecondition);
    assert!(e.to_string().contains("pg-1"), "{e}");
}

#[tokio::test]
async fn existing_filesystem_needs_force() {
    let f = fixture();
    f.host.add_device(Path::new("/dev/vdb"), 20 * GIB, Some("ext4"));
    f.register("pg-1", Some("/dev/vdb")).await;
    let e = f.volumes.create("pg-1", false).await.unwrap_err();
    assert_eq!(code(&e), ErrorCode::FailedPrecondition);
    assert!(e.to_string().contains("ext4") && e.to_string().contains("force"), "{e}");
    assert!(!f.crypt.is_luks(Path::new("/dev/vdb")).unwrap(), "nothing touched");
    assert_eq!(f.volumes.create("pg-1", true).await.unwrap(), Done::Created);
    assert_eq!(f.volumes.get("pg-1").await.unwrap().size_bytes, 20 * GIB);

    // A LUKS header counts as a signature too.
    f.host.add_device(Path::new("/dev/vdc"), 20 * GIB, None);
    f.crypt.format(Path::new("/dev/vdc"), &settings(&[]).format, b"someone else's").unwrap();
    f.register("pg-2", Some("/dev/vdc")).await;
    let e = f.volumes.create("pg-2", false).await.unwrap_err();
    assert!(e.to_string().contains("crypto_LUKS"), "{e}");
}

#[tokio::test]
async fn missing_device_and_unknown_instance() {
    let f = fixture();
    f.register("pg-1", Some("/dev/vdz")).await;
    let e = f.volumes.create("pg-1", false).await.unwrap_err();
    assert_eq!(code(&e), ErrorCode::FailedPrecondition);
    let e = f.volumes.create("nope", false).await.unwrap_err();
    assert_eq!(code(&e), ErrorCode::NotFound);
    let e = f.volumes.open("Bad_Id").await.unwrap_err();
    assert_eq!(code(&e), ErrorCode::InvalidArgument);
}

#[tokio::test]
async fn missing_or_wrong_key_is_refused() {
    let f = fixture();
    f.register("pg-1", None).await;
    f.volumes.create("pg-1", false).await.unwrap();
    f.volumes.close("pg-1").await.unwrap();
    f.keys.forget("pg-1", None).await.unwrap();
    let e = f.volumes.open("pg-1").await.unwrap_err();
    assert_eq!(code(&e), ErrorCode::FailedPrecondition);
    assert!(e.to_string().contains("no key version 1"), "{e}");
    assert_eq!(f.volumes.get("pg-1").await.unwrap().last_error.as_deref(), Some(e.to_string().as_str()));

    // A different key under the same version: refused, nothing activated.
    f.keys.key("pg-1", 1, true, 256).await.unwrap();
    let e = f.volumes.open("pg-1").await.unwrap_err();
    assert!(matches!(e, VolumeError::WrongKey { .. }), "{e}");
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

    assert_eq!(f.volumes.open("pg-1").await.unwrap(), Done::Opened);
    assert_eq!(f.volumes.get("pg-1").await.unwrap().key_version, 2);
    assert!(f.keys.key("pg-1", 1, false, 256).await.is_err());
    // A rotation after that starts from version 2.
    assert_eq!(f.volumes.rotate_key("pg-1").await.unwrap(), Done::Rotated);
    assert_eq!(f.volumes.get("pg-1").await.unwrap().key_version, 3);
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
    assert_eq!(f.volumes.list().await.unwrap().len(), 2);
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
    assert_eq!(f.volumes.open_all().await, (1, 1));
    assert!(f.volumes.get("pg-1").await.unwrap().mounted);
    let s = f.volumes.get("pg-2").await.unwrap();
    assert!(!s.active && s.last_error.unwrap().contains("no key"));
}

#[tokio::test]
async fn interrupted_create_can_be_retried() {
    let f = fixture();
    f.register("pg-1", None).await;
    // A create that stopped after formatting: record Creating, header written, nothing mounted.
    f.volumes.create("pg-1", false).await.unwrap();
    let mut rec = f.volumes.inner.store.get("pg-1").unwrap();
    f.volumes.close("pg-1").await.unwrap();
    rec.state = crate::volume::store::VolumeState::Creating;
    f.volumes.inner.store.put(&rec).unwrap();
    assert_eq!(f.volumes.create("pg-1", false).await.unwrap(), Done::Created, "no force needed for its own leftovers");
}
