//! Create's checks before it touches a backing, its rollback, and a retry of an interrupted create.

use std::path::Path;

use crate::error::ErrorCode;
use crate::instances::fixtures::GIB;
use crate::volume::crypt::CryptBackend;
use crate::volume::host::HostError;
use crate::volume::store::VolumeState;
use crate::volume::test_fixture::{code, fixture, fixture_with, settings};
use crate::volume::{KeyProvider, VolumeError, VolumeOutcome};

#[tokio::test]
async fn device_outside_prefixes_is_refused_untouched() {
    // The registry accepted /dev/vd*, but the volume settings no longer allow it.
    let f = fixture_with(&["/dev/disk/by-id/"]);
    f.register("pg-1", Some("/dev/vdb")).await;
    f.host.add_device(Path::new("/dev/vdb"), 20 * GIB, None);
    let e = f.volumes.create("pg-1", false).await.unwrap_err();
    assert!(matches!(&e, VolumeError::Invalid(i) if i.to_string().contains("device_prefixes")), "{e}");
    assert_eq!(code(&e), ErrorCode::InvalidArgument);
    assert!(!f.crypt.is_luks(Path::new("/dev/vdb")).unwrap());
    assert!(f.keys.key("pg-1", 1, false, 256).await.is_err(), "no key was made");

    let allowed = fixture_with(&["/dev/vd"]);
    allowed.register("pg-1", Some("/dev/vdb")).await;
    allowed.host.add_device(Path::new("/dev/vdb"), 20 * GIB, None);
    assert_eq!(allowed.volumes.create("pg-1", false).await.unwrap(), VolumeOutcome::Created);
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
    assert!(matches!(&e, VolumeError::BackingInUse { owner, .. } if owner == "pg-1"), "{e}");
    assert_eq!(code(&e), ErrorCode::FailedPrecondition);

    // Once pg-1's volume is destroyed the device is free (its erased LUKS header still needs force).
    f.volumes.destroy("pg-1").await.unwrap();
    assert_eq!(f.volumes.create("pg-2", true).await.unwrap(), VolumeOutcome::Created);
}

#[tokio::test]
async fn existing_filesystem_needs_force() {
    let f = fixture();
    f.host.add_device(Path::new("/dev/vdb"), 20 * GIB, Some("ext4"));
    f.register("pg-1", Some("/dev/vdb")).await;
    let e = f.volumes.create("pg-1", false).await.unwrap_err();
    assert!(matches!(&e, VolumeError::SignaturePresent { signature, .. } if signature == "ext4"), "{e}");
    assert_eq!(code(&e), ErrorCode::FailedPrecondition);
    assert!(e.to_string().contains("force=true"), "the message says what to do: {e}");
    assert!(!f.crypt.is_luks(Path::new("/dev/vdb")).unwrap(), "nothing touched");
    assert_eq!(f.volumes.create("pg-1", true).await.unwrap(), VolumeOutcome::Created);
    assert_eq!(f.volumes.get("pg-1").await.unwrap().size_bytes, 20 * GIB);

    // A LUKS header counts as a signature too.
    f.host.add_device(Path::new("/dev/vdc"), 20 * GIB, None);
    f.crypt.format(Path::new("/dev/vdc"), &settings(&[]).format, b"someone else's").unwrap();
    f.register("pg-2", Some("/dev/vdc")).await;
    let e = f.volumes.create("pg-2", false).await.unwrap_err();
    assert!(matches!(&e, VolumeError::SignaturePresent { signature, .. } if signature == "crypto_LUKS"), "{e}");
}

#[tokio::test]
async fn missing_device_and_unknown_instance() {
    let f = fixture();
    f.register("pg-1", Some("/dev/vdz")).await;
    let e = f.volumes.create("pg-1", false).await.unwrap_err();
    assert!(matches!(&e, VolumeError::DeviceUnavailable { device, .. } if device == Path::new("/dev/vdz")), "{e}");
    assert_eq!(code(&e), ErrorCode::FailedPrecondition);
    f.host.add_device(Path::new("/dev/vdz"), 20 * GIB, None);
    assert_eq!(f.volumes.create("pg-1", false).await.unwrap(), VolumeOutcome::Created, "once attached");

    let e = f.volumes.create("nope", false).await.unwrap_err();
    assert!(matches!(e, VolumeError::InstanceNotFound(_)), "{e}");
    assert_eq!(code(&e), ErrorCode::NotFound);
    let e = f.volumes.open("Bad_Id").await.unwrap_err();
    assert!(matches!(e, VolumeError::Invalid(_)), "{e}");
    assert_eq!(code(&e), ErrorCode::InvalidArgument);
}

#[tokio::test]
async fn failed_create_is_undone() {
    let f = fixture();
    let mut spec = crate::instances::fixtures::spec("pg-1");
    spec.os_user = "ghost".into();
    f.registry.register("pg-1", spec).await.unwrap();
    let e = f.volumes.create("pg-1", false).await.unwrap_err();
    // The last step (chown) failed; the mount, the mapping and the loop device are gone again.
    assert!(matches!(&e, VolumeError::Host(HostError::NoUser(u)) if u == "ghost"), "{e}");
    assert_eq!(code(&e), ErrorCode::FailedPrecondition);
    assert!(f.crypt.mapped_device("dbagent-pg-1").is_none());
    assert_eq!(f.host.loop_count(), 0);
    assert!(matches!(f.volumes.get("pg-1").await.unwrap_err(), VolumeError::NoVolume(_)));
}

#[tokio::test]
async fn interrupted_create_can_be_retried() {
    let f = fixture();
    f.register("pg-1", None).await;
    // A create that stopped after formatting: record Creating, header written, nothing mounted.
    f.volumes.create("pg-1", false).await.unwrap();
    let mut rec = f.volumes.inner.store.get("pg-1").unwrap();
    f.volumes.close("pg-1").await.unwrap();
    rec.state = VolumeState::Creating;
    f.volumes.inner.store.put(&rec).unwrap();
    assert_eq!(
        f.volumes.create("pg-1", false).await.unwrap(),
        VolumeOutcome::Created,
        "no force needed for its own leftovers"
    );
}

#[tokio::test]
async fn a_partitioned_held_or_mounted_disk_is_refused_even_with_force() {
    use crate::volume::host::DeviceUser;
    let disk = Path::new("/dev/disk/by-id/virtio-pg1");
    for (users, shown) in [
        (vec![DeviceUser::Partition("vdb1".into())], "partition vdb1"),
        (vec![DeviceUser::PartitionTable("gpt".into())], "a gpt partition table"),
        (
            vec![DeviceUser::Holder { kernel: "dm-3".into(), dm_name: Some("vg-data".into()) }],
            "held by device-mapper vg-data (dm-3)",
        ),
        (vec![DeviceUser::MountedAt("/mnt/old".into())], "mounted at /mnt/old"),
    ] {
        let f = fixture();
        f.register("pg-1", Some(disk.to_str().unwrap())).await;
        f.host.add_device(disk, 20 * GIB, None);
        f.host.set_device_users(disk, users);
        let e = f.volumes.create("pg-1", true).await.unwrap_err();
        assert!(matches!(&e, VolumeError::DeviceInUse { .. }), "{e}");
        assert!(e.to_string().contains(shown), "{e}");
        assert_eq!(code(&e), ErrorCode::FailedPrecondition);
        assert!(!f.crypt.is_luks(disk).unwrap(), "nothing was formatted");
        assert!(f.keys.key("pg-1", 1, false, 256).await.is_err(), "no key was made");

        // Freed, the same disk is taken.
        f.host.set_device_users(disk, vec![]);
        assert_eq!(f.volumes.create("pg-1", false).await.unwrap(), VolumeOutcome::Created);
    }
}

#[tokio::test]
async fn its_own_mapping_left_by_an_interrupted_create_does_not_block_the_retry() {
    use crate::volume::host::DeviceUser;
    let disk = Path::new("/dev/disk/by-id/virtio-pg1");
    let f = fixture();
    f.register("pg-1", Some(disk.to_str().unwrap())).await;
    f.host.add_device(disk, 20 * GIB, None);
    let own = DeviceUser::Holder { kernel: "dm-0".into(), dm_name: Some("dbagent-pg-1".into()) };
    let other = DeviceUser::Holder { kernel: "dm-1".into(), dm_name: Some("dbagent-pg-2".into()) };
    f.host.set_device_users(disk, vec![own.clone(), other]);
    let e = f.volumes.create("pg-1", false).await.unwrap_err();
    assert!(e.to_string().contains("dbagent-pg-2") && !e.to_string().contains("dbagent-pg-1 "), "{e}");
    f.host.set_device_users(disk, vec![own]);
    assert_eq!(f.volumes.create("pg-1", false).await.unwrap(), VolumeOutcome::Created);
}
