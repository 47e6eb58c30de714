//! The start-up pass: each volume opened under its instance's lock, and one unreadable record (the
//! volume's or the instance's) quarantining that one instance while the others open.

use std::sync::Arc;
use std::time::Duration;

use crate::error::ErrorCode;
use crate::instances::{Registry, fixtures};
use crate::locks::ResourceLocks;
use crate::volume::crypt::CryptBackend;
use crate::volume::test_fixture::{Fixture, code, fixture, settings};
use crate::volume::{KeyProvider, StartupOpen, VolumeError, Volumes};

/// Three instances with closed volumes.
async fn three_closed() -> Fixture {
    let f = fixture();
    for id in ["pg-1", "pg-2", "pg-3"] {
        f.register(id, None).await;
        f.volumes.create(id, false).await.unwrap();
        f.volumes.close(id).await.unwrap();
    }
    f
}

/// The agent started again over the same state folder and host.
fn restart(f: &Fixture) -> (Arc<Registry>, Volumes) {
    let registry =
        Arc::new(Registry::open(f.dir.path().join("instances"), fixtures::rules(), ResourceLocks::default()).unwrap());
    let volumes = Volumes::new(
        f.dir.path(),
        settings(&["/dev/disk/by-id/", "/dev/vd"]),
        f.crypt.clone(),
        f.host.clone(),
        Arc::new(f.keys.clone()),
        registry.clone(),
    )
    .unwrap();
    (registry, volumes)
}

fn corrupt(path: &std::path::Path) -> Vec<u8> {
    let text = std::fs::read(path).unwrap();
    let half = text[..text.len() / 2].to_vec();
    std::fs::write(path, &half).unwrap();
    half
}

#[tokio::test]
async fn one_corrupt_volume_record_quarantines_that_volume_and_the_others_open() {
    let f = three_closed().await;
    let file = f.dir.path().join("volumes/pg-2.json");
    let left = corrupt(&file);
    let (_, volumes) = restart(&f);
    assert_eq!(volumes.open_all().await, StartupOpen { opened: 2, failed: 0, quarantined: 1 });
    for id in ["pg-1", "pg-3"] {
        assert!(volumes.get(id).await.unwrap().mounted, "{id} opened");
    }
    let backing = f.dir.path().join("volumes/pg-2.img");
    for e in [
        volumes.get("pg-2").await.unwrap_err(),
        volumes.open("pg-2").await.unwrap_err(),
        volumes.create("pg-2", true).await.unwrap_err(),
        volumes.destroy("pg-2").await.unwrap_err(),
    ] {
        assert!(matches!(&e, VolumeError::Quarantined { instance, .. } if instance == "pg-2"), "{e}");
        assert!(e.to_string().contains("not a valid volume record file"), "{e}");
        assert_eq!(code(&e), ErrorCode::FailedPrecondition);
    }
    // Nothing was formatted over the data or forgotten: the old key still opens the old header.
    let key = f.keys.key("pg-2", 1, false, 256).await.expect("pg-2's key is kept");
    assert!(f.crypt.verify(&backing, key.as_bytes()).is_ok());
    assert_eq!(std::fs::read(&file).unwrap(), left, "the record is left for the operator");
    assert_eq!(volumes.quarantined().len(), 1);
}

#[tokio::test]
async fn one_corrupt_instance_record_quarantines_that_instance_and_the_others_open() {
    let f = three_closed().await;
    corrupt(&f.dir.path().join("instances/pg-2.json"));
    let (registry, volumes) = restart(&f);
    assert_eq!(registry.list().len(), 2);
    assert_eq!(volumes.open_all().await, StartupOpen { opened: 2, failed: 0, quarantined: 1 });
    assert!(volumes.get("pg-3").await.unwrap().mounted);
    let e = volumes.open("pg-2").await.unwrap_err();
    assert!(matches!(&e, VolumeError::Quarantined { instance, .. } if instance == "pg-2"), "{e}");
    assert!(e.to_string().contains("not a valid instance file"), "{e}");
    assert!(!volumes.get("pg-2").await.unwrap().mounted, "its volume stays closed");
}

#[tokio::test]
async fn startup_opens_each_volume_under_its_instance_lock() {
    let f = fixture();
    f.register("pg-1", None).await;
    f.volumes.create("pg-1", false).await.unwrap();
    f.volumes.close("pg-1").await.unwrap();
    let held = f.registry.locks().lock("pg-1").await;
    let volumes = f.volumes.clone();
    let pass = tokio::spawn(async move { volumes.open_all().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pass.is_finished(), "the pass waits for the operation holding pg-1's lock");
    assert!(!f.volumes.get("pg-1").await.unwrap().mounted);
    drop(held);
    assert_eq!(pass.await.unwrap(), StartupOpen { opened: 1, failed: 0, quarantined: 0 });
    assert!(f.volumes.get("pg-1").await.unwrap().mounted);
}

/// Volumes open side by side: one whose instance is busy (its lock held by an operation) does not
/// hold back the others. Records are listed in id order, so one after the other pg-1 would block
/// pg-2 and pg-3 until its lock is released.
#[tokio::test]
async fn startup_opens_the_other_volumes_while_one_waits_for_its_lock() {
    let f = three_closed().await;
    let held = f.registry.locks().lock("pg-1").await;
    let volumes = f.volumes.clone();
    let pass = tokio::spawn(async move { volumes.open_all().await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mounted = [f.volumes.get("pg-2").await.unwrap().mounted, f.volumes.get("pg-3").await.unwrap().mounted];
        if mounted == [true, true] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "pg-2 and pg-3 were not opened while pg-1 waited: {mounted:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!f.volumes.get("pg-1").await.unwrap().mounted, "pg-1 waits for its lock");
    assert!(!pass.is_finished());
    drop(held);
    assert_eq!(pass.await.unwrap(), StartupOpen { opened: 3, failed: 0, quarantined: 0 });
    assert!(f.volumes.get("pg-1").await.unwrap().mounted);
}
