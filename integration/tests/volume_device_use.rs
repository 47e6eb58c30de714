//! The real host's answer to "what uses this block device" (`SystemHost::device_users`), on loop
//! devices: an unused one has no users; mounted, it is reported with its mount point; carrying a
//! partition table the kernel has not read (a loop device is not scanned for partitions), blkid
//! names the table. CreateVolume refuses any such device, even with force (unit tests of the
//! service: `volume::provisioning::tests`). Needs root and loop devices.

use dbagent::instances::Filesystem;
use dbagent::volume::host::{DeviceUser, HostOps, MountPoint, SystemHost};
use std::path::PathBuf;

/// A loop device on a file of `bytes`, detached on drop.
struct Loop {
    _dir: tempfile::TempDir,
    device: PathBuf,
}

impl Loop {
    fn new(bytes: Vec<u8>) -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        let file = dir.path().join("disk.img");
        std::fs::write(&file, bytes).expect("write the disk image");
        let device = SystemHost.attach_loop(&file).expect("losetup (this test needs root and loop devices)");
        Self { _dir: dir, device }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = SystemHost.detach_loop(&self.device);
    }
}

#[test]
fn a_mounted_or_partitioned_loop_device_is_in_use_and_an_unused_one_is_not() {
    let disk = Loop::new(vec![0; 32 << 20]);
    assert_eq!(SystemHost.device_users(&disk.device).unwrap(), vec![], "an unused disk");

    SystemHost.mkfs(&disk.device, Filesystem::Ext4, "usetest").unwrap();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pg-1");
    let at = MountPoint { root: root.path(), dir: &dir };
    SystemHost.mount(&disk.device, at, Filesystem::Ext4, None).unwrap();
    let users = SystemHost.device_users(&disk.device).unwrap();
    SystemHost.unmount(&disk.device, at).unwrap();
    assert_eq!(users, vec![DeviceUser::MountedAt(dir.clone())]);
    assert_eq!(SystemHost.device_users(&disk.device).unwrap(), vec![], "unmounted, it is free again");

    // An MBR with one Linux partition at sector 2048.
    let mut image = vec![0u8; 8 << 20];
    image[450] = 0x83;
    image[454..458].copy_from_slice(&2048u32.to_le_bytes());
    image[458..462].copy_from_slice(&4096u32.to_le_bytes());
    image[510..512].copy_from_slice(&[0x55, 0xaa]);
    let partitioned = Loop::new(image);
    assert_eq!(SystemHost.device_users(&partitioned.device).unwrap(), vec![DeviceUser::PartitionTable("dos".into())]);
}
