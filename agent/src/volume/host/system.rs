//! [`HostOps`] on the real host. Loop devices are handled with `losetup` (util-linux) rather than
//! the loop ioctls: the workspace forbids `unsafe`, which every ioctl wrapper needs, and losetup
//! already retries the LOOP_CTL_GET_FREE / LOOP_SET_FD race between concurrent attachers.
//! mkfs, filesystem growth and the blkid probe are commands too, run through [`ToolCommand`] on the
//! caller's blocking thread; mounts go through the new mount API onto a directory handle
//! (`mount_point.rs`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{DeviceUser, FsUsage, HostError, HostOps, MountPoint, block_device, mount_point};
use crate::command::{CommandError, ToolCommand};
use crate::instances::Filesystem;

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemHost;

/// Signatures we refuse to overwrite without `force`, by (offset, magic).
const SIGNATURES: &[(&str, u64, &[u8])] = &[
    ("crypto_LUKS", 0, b"LUKS\xba\xbe"),
    ("crypto_LUKS", 0, b"SKUL\xba\xbe"),
    ("xfs", 0, b"XFSB"),
    ("ext4", 1080, &[0x53, 0xEF]),
    ("swap", 4086, b"SWAPSPACE2"),
    ("swap", 4086, b"SWAP-SPACE"),
    ("btrfs", 65600, b"_BHRfS_M"),
];

/// Reads `/proc/self/mountinfo` and returns the source of the mount at `target`.
fn mountinfo_source(target: &Path) -> Result<Option<PathBuf>, HostError> {
    let text =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| HostError::io("read /proc/self/mountinfo", e))?;
    let target = target.to_string_lossy();
    let mut found = None;
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else { continue };
        if fields.len() > 4 && block_device::unescape(fields[4]) == target && fields.len() > dash + 2 {
            // The last mount on a path is the visible one.
            found = Some(PathBuf::from(block_device::unescape(fields[dash + 2])));
        }
    }
    Ok(found)
}

impl HostOps for SystemHost {
    fn ensure_sparse_file(&self, path: &Path, size: u64) -> Result<(), HostError> {
        if let Some(dir) = path.parent() {
            crate::fsutil::ensure_private_dir(dir)
                .map_err(|e| HostError::io(format!("create {}", dir.display()), e))?;
        }
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| HostError::io(format!("create {}", path.display()), e))?;
        let current = f.metadata().map_err(|e| HostError::io(format!("stat {}", path.display()), e))?.len();
        if size > current {
            f.set_len(size).map_err(|e| HostError::io(format!("grow {} to {size} bytes", path.display()), e))?;
        }
        f.sync_all().map_err(|e| HostError::io(format!("sync {}", path.display()), e))
    }

    fn remove_file(&self, path: &Path) -> Result<(), HostError> {
        crate::fsutil::remove_durable(path).map_err(|e| HostError::io(format!("remove {}", path.display()), e))
    }

    fn attach_loop(&self, file: &Path) -> Result<PathBuf, HostError> {
        if let Some(dev) = self.find_loop(file)? {
            return Ok(dev);
        }
        let shown =
            ToolCommand::new("losetup").args(["--find", "--show", "--nooverlap"]).arg(file).output_blocking()?;
        Ok(PathBuf::from(String::from_utf8_lossy(&shown).trim()))
    }

    fn find_loop(&self, file: &Path) -> Result<Option<PathBuf>, HostError> {
        let file = std::fs::canonicalize(file).map_err(|e| HostError::io(format!("resolve {}", file.display()), e))?;
        let Ok(entries) = std::fs::read_dir("/sys/block") else { return Ok(None) };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("loop") {
                continue;
            }
            let Ok(backing) = std::fs::read_to_string(entry.path().join("loop/backing_file")) else { continue };
            if Path::new(backing.trim_end()) == file {
                return Ok(Some(PathBuf::from("/dev").join(name)));
            }
        }
        Ok(None)
    }

    fn detach_loop(&self, device: &Path) -> Result<(), HostError> {
        ToolCommand::new("losetup").arg("--detach").arg(device).output_blocking()?;
        Ok(())
    }

    fn refresh_loop(&self, device: &Path) -> Result<(), HostError> {
        ToolCommand::new("losetup").arg("--set-capacity").arg(device).output_blocking()?;
        Ok(())
    }

    fn device_size(&self, device: &Path) -> Result<u64, HostError> {
        let mut f = File::open(device).map_err(|e| HostError::io(format!("open {}", device.display()), e))?;
        f.seek(SeekFrom::End(0)).map_err(|e| HostError::io(format!("size of {}", device.display()), e))
    }

    fn device_users(&self, device: &Path) -> Result<Vec<DeviceUser>, HostError> {
        let Some(kernel) = block_device::kernel_device(device)? else { return Ok(Vec::new()) };
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| HostError::io("read /proc/self/mountinfo", e))?;
        let mut users = block_device::users(Path::new("/sys/class/block"), &mountinfo, &kernel.name, kernel.dev);
        if !users.iter().any(|u| matches!(u, DeviceUser::Partition(_))) {
            // A table the kernel has not read (written by another host, or never re-read).
            match ToolCommand::new("blkid").args(["-p", "-o", "value", "-s", "PTTYPE"]).arg(device).output_blocking() {
                Ok(out) => {
                    let table = String::from_utf8_lossy(&out).trim().to_owned();
                    if !table.is_empty() {
                        users.push(DeviceUser::PartitionTable(table));
                    }
                }
                Err(CommandError::Failed { status, .. }) if status.code() == Some(2) => {}
                Err(source) => return Err(HostError::SignatureProbe { device: device.to_path_buf(), source }),
            }
        }
        Ok(users)
    }

    fn signature(&self, device: &Path) -> Result<Option<String>, HostError> {
        let mut head = Vec::with_capacity(65_608);
        File::open(device)
            .and_then(|f| f.take(65_608).read_to_end(&mut head))
            .map_err(|e| HostError::io(format!("read {}", device.display()), e))?;
        for (name, offset, magic) in SIGNATURES {
            let at = *offset as usize;
            if head.get(at..at + magic.len()) == Some(*magic) {
                return Ok(Some((*name).to_owned()));
            }
        }
        // blkid knows many more (LVM, RAID members, partition tables).
        match ToolCommand::new("blkid").args(["-p", "-o", "value", "-s", "TYPE"]).arg(device).output_blocking() {
            Ok(out) => {
                let kind = String::from_utf8_lossy(&out).trim().to_owned();
                Ok((!kind.is_empty()).then_some(kind))
            }
            // Exit 2 is blkid's "no signature found": an answer, not an error.
            Err(CommandError::Failed { status, .. }) if status.code() == Some(2) => Ok(None),
            Err(source) => Err(HostError::SignatureProbe { device: device.to_path_buf(), source }),
        }
    }

    fn mkfs(&self, device: &Path, fs: Filesystem, label: &str) -> Result<(), HostError> {
        let command = match fs {
            Filesystem::Ext4 => ToolCommand::new("mkfs.ext4").args(["-q", "-F", "-L", label]),
            Filesystem::Xfs => ToolCommand::new("mkfs.xfs").args(["-q", "-f", "-L", label]),
        };
        command.arg(device).output_blocking()?;
        Ok(())
    }

    fn grow_fs(&self, device: &Path, mountpoint: &Path, fs: Filesystem) -> Result<(), HostError> {
        let command = match fs {
            Filesystem::Ext4 => ToolCommand::new("resize2fs").arg(device),
            Filesystem::Xfs => ToolCommand::new("xfs_growfs").arg(mountpoint),
        };
        command.output_blocking()?;
        Ok(())
    }

    fn mount(&self, device: &Path, at: MountPoint<'_>, fs: Filesystem, owner: Option<&str>) -> Result<(), HostError> {
        let fstype = match fs {
            Filesystem::Ext4 => "ext4",
            Filesystem::Xfs => "xfs",
        };
        mount_point::mount_beneath(device, fstype, at, owner)
    }

    fn unmount(&self, device: &Path, at: MountPoint<'_>) -> Result<bool, HostError> {
        mount_point::unmount_beneath(device, at)
    }

    fn mounted_device(&self, target: &Path) -> Result<Option<PathBuf>, HostError> {
        mountinfo_source(target)
    }

    fn fs_usage(&self, mountpoint: &Path) -> Result<FsUsage, HostError> {
        let st = nix::sys::statvfs::statvfs(mountpoint)
            .map_err(|e| HostError::io(format!("statvfs {}", mountpoint.display()), e.into()))?;
        let frag = st.fragment_size();
        Ok(FsUsage { size_bytes: st.blocks() * frag, used_bytes: (st.blocks() - st.blocks_free()) * frag })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_signatures_and_sparse_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("d.img");
        SystemHost.ensure_sparse_file(&f, 1 << 20).unwrap();
        assert_eq!(SystemHost.device_size(&f).unwrap(), 1 << 20);
        assert_eq!(SystemHost.signature(&f).unwrap(), None);
        let mut bytes = std::fs::read(&f).unwrap();
        bytes[1080] = 0x53;
        bytes[1081] = 0xEF;
        std::fs::write(&f, &bytes).unwrap();
        assert_eq!(SystemHost.signature(&f).unwrap().as_deref(), Some("ext4"));
        SystemHost.ensure_sparse_file(&f, 1 << 10).unwrap();
        assert_eq!(SystemHost.device_size(&f).unwrap(), 1 << 20, "never shrinks");
    }

    #[test]
    fn blkid_answers_for_signatures_outside_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("d.img");
        SystemHost.ensure_sparse_file(&f, 1 << 20).unwrap();
        // All zeroes: blkid exits 2, which is "nothing found".
        assert_eq!(SystemHost.signature(&f).unwrap(), None);
        // A device-mapper snapshot store is not in SIGNATURES; blkid names it.
        let mut bytes = std::fs::read(&f).unwrap();
        bytes[..4].copy_from_slice(b"SnAp");
        std::fs::write(&f, &bytes).unwrap();
        assert_eq!(SystemHost.signature(&f).unwrap().as_deref(), Some("DM_snapshot_cow"));
    }

    #[test]
    fn a_failing_tool_reports_its_command_and_stderr() {
        let e = SystemHost.detach_loop(Path::new("/dev/loop-dbagent-none")).unwrap_err();
        let HostError::Command(CommandError::Failed { command, stderr, .. }) = &e else { panic!("{e:?}") };
        assert!(command.starts_with("losetup --detach"), "{command}");
        assert!(!stderr.is_empty(), "{e}");
    }

    #[test]
    fn mountinfo_finds_root() {
        assert!(mountinfo_source(Path::new("/")).unwrap().is_some());
        assert!(mountinfo_source(Path::new("/no/such/mount")).unwrap().is_none());
    }
}
