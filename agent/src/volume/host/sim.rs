//! The host in memory: files, loop devices, signatures, mounts and owners as plain state, so the
//! volume service is tested without root or loop devices.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::{DeviceUser, FsUsage, HostError, HostOps, MountPoint};
use crate::instances::Filesystem;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Default)]
struct HostState {
    /// Files and block devices with their sizes.
    sizes: HashMap<PathBuf, u64>,
    loops: BTreeMap<PathBuf, PathBuf>,
    next_loop: u32,
    signatures: HashMap<PathBuf, String>,
    users: HashMap<PathBuf, Vec<DeviceUser>>,
    mounts: HashMap<PathBuf, PathBuf>,
    owners: HashMap<PathBuf, String>,
    grown: Vec<PathBuf>,
}

/// Users `postgres`, `mysql` and `redis` exist; others do not.
#[derive(Default)]
pub struct SimHost {
    state: Mutex<HostState>,
}

fn missing(what: &str, path: &Path) -> HostError {
    HostError::io(format!("{what} {}", path.display()), std::io::Error::from(std::io::ErrorKind::NotFound))
}

impl SimHost {
    /// Test helper: a block device of `size` bytes, optionally carrying a signature.
    pub fn add_device(&self, path: &Path, size: u64, signature: Option<&str>) {
        let mut s = lock(&self.state);
        s.sizes.insert(path.to_path_buf(), size);
        if let Some(sig) = signature {
            s.signatures.insert(path.to_path_buf(), sig.to_owned());
        }
    }

    /// The file behind a loop device, for [`crate::volume::crypt::SimCrypt`]: a header written
    /// through the loop device lands in the file.
    pub fn loop_backing(&self, device: &Path) -> Option<PathBuf> {
        lock(&self.state).loops.get(device).cloned()
    }

    pub fn loop_count(&self) -> usize {
        lock(&self.state).loops.len()
    }

    pub fn owner(&self, path: &Path) -> Option<String> {
        lock(&self.state).owners.get(path).cloned()
    }

    /// Test helper: what uses a block device (partitions, holders, mounts).
    pub fn set_device_users(&self, device: &Path, users: Vec<DeviceUser>) {
        lock(&self.state).users.insert(device.to_path_buf(), users);
    }

    /// Test helper: another device mounted on `dir`, as an operator or another tool would.
    pub fn mount_other(&self, device: &Path, dir: &Path) {
        let mut s = lock(&self.state);
        s.mounts.insert(dir.to_path_buf(), device.to_path_buf());
    }

    /// Test helper: unmounts whatever is on `dir`.
    pub fn unmount_other(&self, dir: &Path) {
        lock(&self.state).mounts.remove(dir);
    }

    pub fn grown(&self) -> Vec<PathBuf> {
        lock(&self.state).grown.clone()
    }
}

impl HostOps for SimHost {
    fn ensure_sparse_file(&self, path: &Path, size: u64) -> Result<(), HostError> {
        let mut s = lock(&self.state);
        let current = s.sizes.entry(path.to_path_buf()).or_insert(0);
        *current = (*current).max(size);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> Result<(), HostError> {
        let mut s = lock(&self.state);
        s.sizes.remove(path);
        s.signatures.remove(path);
        Ok(())
    }

    fn attach_loop(&self, file: &Path) -> Result<PathBuf, HostError> {
        if let Some(dev) = self.find_loop(file)? {
            return Ok(dev);
        }
        let mut s = lock(&self.state);
        let size = *s.sizes.get(file).ok_or_else(|| missing("attach", file))?;
        let dev = PathBuf::from(format!("/dev/loop{}", s.next_loop));
        s.next_loop += 1;
        s.loops.insert(dev.clone(), file.to_path_buf());
        s.sizes.insert(dev.clone(), size);
        Ok(dev)
    }

    fn find_loop(&self, file: &Path) -> Result<Option<PathBuf>, HostError> {
        Ok(lock(&self.state).loops.iter().find(|(_, f)| *f == file).map(|(d, _)| d.clone()))
    }

    fn detach_loop(&self, device: &Path) -> Result<(), HostError> {
        let mut s = lock(&self.state);
        s.loops.remove(device).ok_or_else(|| missing("detach", device))?;
        s.sizes.remove(device);
        Ok(())
    }

    fn refresh_loop(&self, device: &Path) -> Result<(), HostError> {
        let mut s = lock(&self.state);
        let file = s.loops.get(device).cloned().ok_or_else(|| missing("refresh", device))?;
        let size = s.sizes.get(&file).copied().unwrap_or(0);
        s.sizes.insert(device.to_path_buf(), size);
        Ok(())
    }

    fn device_size(&self, device: &Path) -> Result<u64, HostError> {
        lock(&self.state).sizes.get(device).copied().ok_or_else(|| missing("open", device))
    }

    fn device_users(&self, device: &Path) -> Result<Vec<DeviceUser>, HostError> {
        Ok(lock(&self.state).users.get(device).cloned().unwrap_or_default())
    }

    fn signature(&self, device: &Path) -> Result<Option<String>, HostError> {
        Ok(lock(&self.state).signatures.get(device).cloned())
    }

    fn mkfs(&self, device: &Path, fs: Filesystem, _label: &str) -> Result<(), HostError> {
        let name = match fs {
            Filesystem::Ext4 => "ext4",
            Filesystem::Xfs => "xfs",
        };
        lock(&self.state).signatures.insert(device.to_path_buf(), name.to_owned());
        Ok(())
    }

    fn grow_fs(&self, device: &Path, _mountpoint: &Path, _fs: Filesystem) -> Result<(), HostError> {
        lock(&self.state).grown.push(device.to_path_buf());
        Ok(())
    }

    fn mount(&self, device: &Path, at: MountPoint<'_>, _fs: Filesystem, owner: Option<&str>) -> Result<(), HostError> {
        if !at.dir.strip_prefix(at.root).is_ok_and(|rest| !rest.as_os_str().is_empty()) {
            return Err(HostError::UnsafeMountPoint {
                dir: at.dir.to_path_buf(),
                reason: "it is not below its data root".to_owned(),
            });
        }
        if let Some(user) = owner
            && !["postgres", "mysql", "redis"].contains(&user)
        {
            return Err(HostError::NoUser(user.to_owned()));
        }
        let mut s = lock(&self.state);
        if s.mounts.contains_key(at.dir) {
            return Err(HostError::UnsafeMountPoint {
                dir: at.dir.to_path_buf(),
                reason: "something else is already mounted there".to_owned(),
            });
        }
        s.mounts.insert(at.dir.to_path_buf(), device.to_path_buf());
        if let Some(user) = owner {
            s.owners.insert(at.dir.to_path_buf(), user.to_owned());
        }
        Ok(())
    }

    fn unmount(&self, device: &Path, at: MountPoint<'_>) -> Result<bool, HostError> {
        let mut s = lock(&self.state);
        if s.mounts.get(at.dir).map(PathBuf::as_path) != Some(device) {
            return Ok(false);
        }
        s.mounts.remove(at.dir);
        Ok(true)
    }

    fn mounted_device(&self, target: &Path) -> Result<Option<PathBuf>, HostError> {
        Ok(lock(&self.state).mounts.get(target).cloned())
    }

    fn fs_usage(&self, _mountpoint: &Path) -> Result<FsUsage, HostError> {
        Ok(FsUsage { size_bytes: 1 << 30, used_bytes: 1 << 20 })
    }
}
