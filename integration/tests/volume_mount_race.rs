//! The real host's mount through a directory handle (`dbagent::volume::host::SystemHost`), attacked
//! as a tenant would: the tenant owns the data root and exchanges the mount point with a link to a
//! root-owned sentinel folder in a tight loop (renameat2 RENAME_EXCHANGE) while root mounts an ext4
//! loop device there and gives its root to the instance's user. The sentinel folder is never
//! mounted over or chowned; each mount lands on the real folder (under whichever of the two names
//! it had at that instant) or is refused as a link. Needs root and loop devices (not device-mapper:
//! the same steps on dm-crypt run in the VM, `vm_volumes.rs`).

use dbagent::instances::Filesystem;
use dbagent::volume::host::{HostError, HostOps, MountPoint, SystemHost};
use dbagent_integration::tenant::{Exchange, Sentinels, TenantUser, plant_link};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A loop device with ext4 on a sparse file, detached on drop.
struct LoopFs {
    _dir: tempfile::TempDir,
    device: PathBuf,
}

impl LoopFs {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        let file = dir.path().join("fs.img");
        SystemHost.ensure_sparse_file(&file, 32 << 20).expect("sparse file");
        let device = SystemHost.attach_loop(&file).expect("losetup (this test needs root and loop devices)");
        SystemHost.mkfs(&device, Filesystem::Ext4, "racetest").expect("mkfs.ext4");
        Self { _dir: dir, device }
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = SystemHost.detach_loop(&self.device);
    }
}

/// Where `device` is mounted now, from /proc/self/mountinfo (mount points, escaped names undone).
fn mount_points_of(device: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let dev = std::fs::metadata(device).expect("stat the device").rdev();
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    text.lines()
        .filter(|l| l.split(' ').nth(2) == Some(&format!("{major}:{minor}")))
        .filter_map(|l| l.split(' ').nth(4).map(|p| PathBuf::from(p.replace("\\040", " "))))
        .collect()
}

fn at<'a>(root: &'a Path, dir: &'a Path) -> MountPoint<'a> {
    MountPoint { root, dir }
}

fn is_mount_point(path: &Path) -> bool {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    text.lines().any(|l| l.split(' ').nth(4).map(Path::new) == Some(path))
}

#[test]
fn the_mount_point_swapped_for_a_link_during_the_mount_never_mounts_or_chowns_the_sentinel() {
    let tenant = TenantUser::get();
    let sentinels = Sentinels::new();
    let fs = LoopFs::new();
    let root = tempfile::tempdir().expect("data root");
    let (dir, swap) = (root.path().join("pg-1"), root.path().join("pg-1-swap"));
    std::fs::create_dir(&dir).unwrap();
    plant_link(&tenant, &sentinels.folder, &swap);
    tenant.own(root.path());

    let (mut mounted, mut refused, mut exchanges) = (0, 0, 0);
    for _ in 0..24 {
        let attack = Exchange::start(&tenant, &dir, &swap);
        std::thread::sleep(Duration::from_millis(20));
        let result = SystemHost.mount(&fs.device, at(root.path(), &dir), Filesystem::Ext4, Some(&tenant.name));
        std::thread::sleep(Duration::from_millis(5));
        exchanges += attack.stop();
        assert!(!is_mount_point(&sentinels.folder), "the sentinel folder was mounted over");
        sentinels.assert_untouched();
        match result {
            Ok(()) => {
                mounted += 1;
                let places = mount_points_of(&fs.device);
                assert_eq!(places.len(), 1, "mounted once: {places:?}");
                let place = &places[0];
                assert!(place == &dir || place == &swap, "mounted at {} outside the two names", place.display());
                let meta = std::fs::metadata(place).unwrap();
                assert_eq!((meta.uid(), meta.mode() & 0o7777), (tenant.uid, 0o700), "the mounted root is the user's");
                assert!(SystemHost.unmount(&fs.device, at(root.path(), place)).expect("unmount through the handle"));
                assert!(mount_points_of(&fs.device).is_empty(), "unmounted");
            }
            Err(HostError::UnsafeMountPoint { reason, .. }) => {
                refused += 1;
                assert!(reason.contains("symbolic link"), "{reason}");
                assert!(mount_points_of(&fs.device).is_empty(), "a refusal mounts nothing");
            }
            Err(e) => panic!("neither mounted nor refused as a link: {e}"),
        }
        // The attack may have stopped with the names exchanged (a mounted folder cannot be renamed):
        // put them back as root for the next round.
        if std::fs::symlink_metadata(&dir).unwrap().file_type().is_symlink() {
            nix::fcntl::renameat2(
                nix::fcntl::AT_FDCWD,
                &dir,
                nix::fcntl::AT_FDCWD,
                &swap,
                nix::fcntl::RenameFlags::RENAME_EXCHANGE,
            )
            .unwrap();
        }
    }
    println!("{mounted} mounted, {refused} refused as a link, {exchanges} exchanges by the tenant");
    assert!(mounted > 0, "no round mounted: the race never let the real folder through");
    sentinels.assert_untouched();
}

#[test]
fn a_mount_point_that_is_a_link_or_already_a_mount_is_refused_and_the_real_folder_mounts() {
    let tenant = TenantUser::get();
    let sentinels = Sentinels::new();
    let fs = LoopFs::new();
    let root = tempfile::tempdir().expect("data root");

    let link = root.path().join("linked");
    plant_link(&tenant, &sentinels.folder, &link);
    let e = SystemHost.mount(&fs.device, at(root.path(), &link), Filesystem::Ext4, Some(&tenant.name)).unwrap_err();
    assert!(matches!(&e, HostError::UnsafeMountPoint { reason, .. } if reason.contains("symbolic link")), "{e}");
    assert!(!is_mount_point(&sentinels.folder));
    sentinels.assert_untouched();

    // Another filesystem already mounted on the folder: refused, and what is there stays.
    let busy = root.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    let other = LoopFs::new();
    SystemHost.mount(&other.device, at(root.path(), &busy), Filesystem::Ext4, None).expect("the first mount");
    let e = SystemHost.mount(&fs.device, at(root.path(), &busy), Filesystem::Ext4, Some(&tenant.name)).unwrap_err();
    assert!(matches!(&e, HostError::UnsafeMountPoint { reason, .. } if reason.contains("already mounted")), "{e}");
    assert_eq!(mount_points_of(&other.device), vec![busy.clone()]);
    assert!(mount_points_of(&fs.device).is_empty());
    assert!(
        !SystemHost.unmount(&fs.device, at(root.path(), &busy)).unwrap(),
        "unmount leaves another device's mount alone"
    );
    assert!(SystemHost.unmount(&other.device, at(root.path(), &busy)).unwrap());

    // The allowed path: a folder (made here, two levels deep) gets the mount and its root the owner.
    let fresh = root.path().join("new/pg-2");
    SystemHost.mount(&fs.device, at(root.path(), &fresh), Filesystem::Ext4, Some(&tenant.name)).expect("mount");
    assert_eq!(mount_points_of(&fs.device), vec![fresh.clone()]);
    let meta = std::fs::metadata(&fresh).unwrap();
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (tenant.uid, tenant.gid, 0o700));
    assert!(SystemHost.unmount(&fs.device, at(root.path(), &fresh)).unwrap());
    assert!(mount_points_of(&fs.device).is_empty());
}
