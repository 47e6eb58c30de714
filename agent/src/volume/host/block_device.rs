//! What already uses a block device, read from sysfs (`/sys/class/block/<name>/`: its partitions
//! and `holders/`), `/proc/self/mountinfo` (mounts of it or of its partitions) and blkid (a
//! partition table the kernel has not read). Create refuses such a device whatever `force` says:
//! formatting it would destroy a mounted filesystem, a device-mapper or RAID member, or partitions.

use std::path::{Path, PathBuf};

use super::{DeviceUser, HostError};

/// A block device as the kernel names it: `vdb` and its (major, minor).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct KernelDevice {
    pub name: String,
    pub dev: (u64, u64),
}

/// The block device behind `device`, following the by-id link; `None` for a path that is not a
/// block device (a file given to a test).
pub(super) fn kernel_device(device: &Path) -> Result<Option<KernelDevice>, HostError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let real = std::fs::canonicalize(device).map_err(|e| HostError::io(format!("resolve {}", device.display()), e))?;
    let meta = std::fs::metadata(&real).map_err(|e| HostError::io(format!("stat {}", real.display()), e))?;
    if !meta.file_type().is_block_device() {
        return Ok(None);
    }
    let name = real.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let rdev = meta.rdev();
    Ok(Some(KernelDevice { name, dev: (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev)) }))
}

/// Partitions, holders and mounts of the device `name` (`dev` its major:minor), given the sysfs
/// block class folder and the text of a mountinfo file.
pub(super) fn users(sys_class_block: &Path, mountinfo: &str, name: &str, dev: (u64, u64)) -> Vec<DeviceUser> {
    let dir = sys_class_block.join(name);
    let mut found = Vec::new();
    let mut devs = vec![dev];
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.join("partition").is_file() {
            let part = entry.file_name().to_string_lossy().into_owned();
            if let Some(d) = read_dev(&path) {
                devs.push(d);
            }
            found.push(DeviceUser::Partition(part));
        }
    }
    for entry in std::fs::read_dir(dir.join("holders")).into_iter().flatten().flatten() {
        let holder = entry.file_name().to_string_lossy().into_owned();
        // A device-mapper holder has a name worth showing (and a caller may recognise its own).
        let dm_name = std::fs::read_to_string(sys_class_block.join(&holder).join("dm/name"))
            .map(|n| n.trim().to_owned())
            .ok()
            .filter(|n| !n.is_empty());
        found.push(DeviceUser::Holder { kernel: holder, dm_name });
    }
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(majmin), Some(point)) = (fields.get(2), fields.get(4)) else { continue };
        if devs.iter().any(|(ma, mi)| *majmin == format!("{ma}:{mi}")) {
            found.push(DeviceUser::MountedAt(PathBuf::from(unescape(point))));
        }
    }
    found
}

/// A mountinfo field with its octal escapes (space, tab, newline, backslash) undone.
pub(super) fn unescape(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

/// A sysfs device folder's `dev` file ("major:minor").
fn read_dev(dir: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(dir.join("dev")).ok()?;
    let (ma, mi) = text.trim().split_once(':')?;
    Some((ma.parse().ok()?, mi.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sysfs block class folder with `vdb` (partitions and holders as given).
    fn sysfs(partitions: &[(&str, &str)], holders: &[(&str, Option<&str>)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let vdb = root.path().join("vdb");
        std::fs::create_dir_all(vdb.join("holders")).unwrap();
        std::fs::write(vdb.join("dev"), "254:16\n").unwrap();
        std::fs::create_dir_all(vdb.join("queue")).unwrap();
        for (part, dev) in partitions {
            std::fs::create_dir_all(vdb.join(part)).unwrap();
            std::fs::write(vdb.join(part).join("partition"), "1\n").unwrap();
            std::fs::write(vdb.join(part).join("dev"), format!("{dev}\n")).unwrap();
        }
        for (holder, dm_name) in holders {
            std::fs::create_dir_all(vdb.join("holders").join(holder)).unwrap();
            if let Some(n) = dm_name {
                std::fs::create_dir_all(root.path().join(holder).join("dm")).unwrap();
                std::fs::write(root.path().join(holder).join("dm/name"), format!("{n}\n")).unwrap();
            }
        }
        root
    }

    const MOUNTINFO: &str = "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n\
                             40 22 254:17 / /mnt/old\\040data rw,relatime shared:9 - ext4 /dev/vdb1 rw\n";

    #[test]
    fn an_unused_disk_has_no_users() {
        let sys = sysfs(&[], &[]);
        assert_eq!(users(sys.path(), MOUNTINFO, "vdb", (254, 16)), vec![]);
    }

    #[test]
    fn partitions_their_mounts_and_holders_are_found() {
        let sys = sysfs(&[("vdb1", "254:17"), ("vdb2", "254:18")], &[("dm-3", Some("vg-data")), ("md0", None)]);
        let mut found = users(sys.path(), MOUNTINFO, "vdb", (254, 16));
        found.sort_by_key(|u| format!("{u}"));
        let shown: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "held by device-mapper vg-data (dm-3)",
                "held by md0",
                "mounted at /mnt/old data",
                "partition vdb1",
                "partition vdb2"
            ]
        );
    }

    #[test]
    fn a_whole_disk_mount_is_found() {
        let sys = sysfs(&[], &[]);
        let mountinfo = "50 22 254:16 / /srv/x rw - xfs /dev/vdb rw\n";
        assert_eq!(users(sys.path(), mountinfo, "vdb", (254, 16)), vec![DeviceUser::MountedAt("/srv/x".into())]);
    }

    #[test]
    fn a_file_is_not_a_block_device() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("disk.img");
        std::fs::write(&f, b"").unwrap();
        assert_eq!(kernel_device(&f).unwrap(), None);
    }
}
