//! Growth refusals (shrinking, a closed volume, a disk the platform has not grown) beside the growth
//! each of them allows.

use std::path::{Path, PathBuf};

use crate::error::ErrorCode;
use crate::instances::fixtures::GIB;
use crate::volume::test_fixture::{code, fixture};
use crate::volume::{VolumeError, VolumeOutcome};

#[tokio::test]
async fn shrinking_is_refused_and_the_same_size_is_unchanged() {
    let f = fixture();
    f.register("pg-1", None).await;
    f.volumes.create("pg-1", false).await.unwrap();
    let e = f.volumes.grow("pg-1", 5 * GIB).await.unwrap_err();
    assert!(
        matches!(e, VolumeError::ShrinkRefused { current, requested: r, .. } if current == 10 * GIB && r == 5 * GIB)
    );
    assert_eq!(code(&e), ErrorCode::FailedPrecondition);
    assert_eq!(f.volumes.grow("pg-1", 10 * GIB).await.unwrap(), VolumeOutcome::Unchanged);
    assert_eq!(f.volumes.grow("pg-1", 12 * GIB).await.unwrap(), VolumeOutcome::Grown);
    assert_eq!(f.volumes.get("pg-1").await.unwrap().size_bytes, 12 * GIB);
    assert_eq!(f.host.grown(), vec![PathBuf::from("/dev/mapper/dbagent-pg-1")], "the filesystem grew");
}

#[tokio::test]
async fn a_closed_volume_is_not_grown() {
    let f = fixture();
    f.register("pg-1", None).await;
    f.volumes.create("pg-1", false).await.unwrap();
    f.volumes.close("pg-1").await.unwrap();
    let e = f.volumes.grow("pg-1", 12 * GIB).await.unwrap_err();
    assert!(matches!(&e, VolumeError::NotOpen(id) if id == "pg-1"), "{e}");
    assert_eq!(code(&e), ErrorCode::FailedPrecondition);
    assert_eq!(f.volumes.get("pg-1").await.unwrap().size_bytes, 10 * GIB, "nothing grew");

    f.volumes.open("pg-1").await.unwrap();
    assert_eq!(f.volumes.grow("pg-1", 12 * GIB).await.unwrap(), VolumeOutcome::Grown);
}

#[tokio::test]
async fn a_block_device_is_grown_by_the_platform_first() {
    let f = fixture();
    let disk = Path::new("/dev/vdb");
    f.host.add_device(disk, 20 * GIB, None);
    f.register("pg-1", Some("/dev/vdb")).await;
    f.volumes.create("pg-1", false).await.unwrap();
    let e = f.volumes.grow("pg-1", 30 * GIB).await.unwrap_err();
    assert!(
        matches!(&e, VolumeError::DeviceTooSmall { device, size, requested }
            if device == disk && *size == 20 * GIB && *requested == 30 * GIB),
        "{e}"
    );
    assert_eq!(code(&e), ErrorCode::FailedPrecondition);
    assert!(f.host.grown().is_empty(), "the filesystem was not touched");

    f.host.add_device(disk, 30 * GIB, None); // the platform grows the disk
    assert_eq!(f.volumes.grow("pg-1", 30 * GIB).await.unwrap(), VolumeOutcome::Grown);
    assert_eq!(f.volumes.get("pg-1").await.unwrap().size_bytes, 30 * GIB);
}
