//! In-memory doubles of the crypt layer and the host, so the daemon logic is tested without root,
//! device-mapper or loop devices. They keep just enough state to answer like the real ones.

use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::crypt::*;
use super::host::{FsUsage, HostError, HostOps};
use crate::instances::Filesystem;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Keyslots hold a hash of their passphrase, never the passphrase.
fn slot_hash(passphrase: &[u8]) -> [u8; 32] {
    Sha256::digest(passphrase).into()
}

#[derive(Debug, Clone)]
struct SimHeader {
    key_bits: u32,
    sector_size: u32,
    slots: BTreeMap<u32, [u8; 32]>,
}

#[derive(Default)]
struct CryptState {
    headers: HashMap<PathBuf, SimHeader>,
    active: HashMap<String, (PathBuf, ActivationFlags)>,
    backups: HashMap<PathBuf, SimHeader>,
}

/// Headers are kept per underlying file: with [`SimCrypt::on`], a loop device of a [`SimHost`]
/// shows the header of its file, as a real loop device does.
#[derive(Default)]
pub struct SimCrypt {
    state: Mutex<CryptState>,
    host: Option<std::sync::Arc<SimHost>>,
}

impl SimCrypt {
    pub fn on(host: std::sync::Arc<SimHost>) -> Self {
        Self { state: Mutex::default(), host: Some(host) }
    }

    fn resolve(&self, device: &Path) -> PathBuf {
        match &self.host {
            Some(h) => lock(&h.state).loops.get(device).cloned().unwrap_or_else(|| device.to_path_buf()),
            None => device.to_path_buf(),
        }
    }

    fn header(&self, device: &Path) -> Result<SimHeader, CryptError> {
        lock(&self.state).headers.get(device).cloned().ok_or_else(|| CryptError::Failed {
            op: "read the LUKS2 header of",
            target: device.display().to_string(),
            message: "not a LUKS device".into(),
        })
    }

    fn slot_of(&self, device: &Path, passphrase: &[u8]) -> Result<u32, CryptError> {
        let h = self.header(device)?;
        let want = slot_hash(passphrase);
        h.slots
            .iter()
            .find(|(_, v)| **v == want)
            .map(|(k, _)| *k)
            .ok_or_else(|| CryptError::WrongKey(device.display().to_string()))
    }

    /// Test helper: the device currently mapped as `name`.
    pub fn mapped_device(&self, name: &str) -> Option<PathBuf> {
        lock(&self.state).active.get(name).map(|(d, _)| d.clone())
    }
}

impl CryptBackend for SimCrypt {
    fn is_luks(&self, device: &Path) -> Result<bool, CryptError> {
        let device = &self.resolve(device);
        Ok(lock(&self.state).headers.contains_key(device))
    }

    fn format(&self, device: &Path, params: &FormatParams, passphrase: &[u8]) -> Result<u32, CryptError> {
        let device = &self.resolve(device);
        let header = SimHeader {
            key_bits: params.key_bits,
            sector_size: if params.sector_size == 0 { 4096 } else { params.sector_size },
            slots: BTreeMap::from([(0, slot_hash(passphrase))]),
        };
        lock(&self.state).headers.insert(device.to_path_buf(), header);
        Ok(0)
    }

    fn verify(&self, device: &Path, passphrase: &[u8]) -> Result<u32, CryptError> {
        let device = &self.resolve(device);
        self.slot_of(device, passphrase)
    }

    fn activate(&self, device: &Path, name: &str, passphrase: &[u8], flags: ActivationFlags) -> Result<(), CryptError> {
        let device = &self.resolve(device);
        self.slot_of(device, passphrase)?;
        let mut s = lock(&self.state);
        if s.active.contains_key(name) {
            return Err(CryptError::Failed {
                op: "activate",
                target: name.into(),
                message: "device already exists".into(),
            });
        }
        s.active.insert(name.to_owned(), (device.to_path_buf(), flags));
        Ok(())
    }

    fn deactivate(&self, name: &str) -> Result<(), CryptError> {
        lock(&self.state).active.remove(name).map(drop).ok_or_else(|| CryptError::Failed {
            op: "deactivate",
            target: name.into(),
            message: "no such mapping".into(),
        })
    }

    fn active(&self, name: &str) -> Result<Option<ActiveInfo>, CryptError> {
        Ok(lock(&self.state).active.get(name).map(|(_, flags)| ActiveInfo { size_bytes: 0, flags: *flags }))
    }

    fn resize(&self, device: &Path, name: &str, passphrase: &[u8]) -> Result<(), CryptError> {
        let device = &self.resolve(device);
        self.slot_of(device, passphrase)?;
        if !lock(&self.state).active.contains_key(name) {
            return Err(CryptError::Failed { op: "resize", target: name.into(), message: "not active".into() });
        }
        Ok(())
    }

    fn add_keyslot(&self, device: &Path, old: &[u8], new: &[u8], _pbkdf: &PbkdfParams) -> Result<u32, CryptError> {
        let device = &self.resolve(device);
        self.slot_of(device, old)?;
        let mut s = lock(&self.state);
        let h = s.headers.get_mut(device).ok_or_else(|| CryptError::WrongKey(device.display().to_string()))?;
        let slot = (0..32).find(|i| !h.slots.contains_key(i)).unwrap_or(31);
        h.slots.insert(slot, slot_hash(new));
        Ok(slot)
    }

    fn destroy_keyslot(&self, device: &Path, slot: u32) -> Result<(), CryptError> {
        let device = &self.resolve(device);
        if let Some(h) = lock(&self.state).headers.get_mut(device) {
            h.slots.remove(&slot);
        }
        Ok(())
    }

    fn erase_keyslots(&self, device: &Path) -> Result<(), CryptError> {
        let device = &self.resolve(device);
        if let Some(h) = lock(&self.state).headers.get_mut(device) {
            h.slots.clear();
        }
        Ok(())
    }

    fn header_info(&self, device: &Path) -> Result<HeaderInfo, CryptError> {
        let device = &self.resolve(device);
        let h = self.header(device)?;
        Ok(HeaderInfo {
            cipher: format!("{CIPHER}-{CIPHER_MODE}"),
            key_bits: h.key_bits,
            sector_size: h.sector_size,
            data_offset_bytes: 16 << 20,
            active_keyslots: h.slots.keys().copied().collect(),
        })
    }

    fn header_backup(&self, device: &Path, file: &Path) -> Result<(), CryptError> {
        let device = &self.resolve(device);
        let h = self.header(device)?;
        let mut s = lock(&self.state);
        if s.backups.contains_key(file) {
            return Err(CryptError::Failed {
                op: "back up the header of",
                target: device.display().to_string(),
                message: "file exists".into(),
            });
        }
        s.backups.insert(file.to_path_buf(), h);
        Ok(())
    }

    fn header_restore(&self, device: &Path, file: &Path) -> Result<(), CryptError> {
        let device = &self.resolve(device);
        let mut s = lock(&self.state);
        let h = s.backups.get(file).cloned().ok_or_else(|| CryptError::Failed {
            op: "restore the header of",
            target: device.display().to_string(),
            message: "no such backup".into(),
        })?;
        s.headers.insert(device.to_path_buf(), h);
        Ok(())
    }
}

#[derive(Default)]
struct HostState {
    /// Files and block devices with their sizes.
    sizes: HashMap<PathBuf, u64>,
    loops: BTreeMap<PathBuf, PathBuf>,
    next_loop: u32,
    signatures: HashMap<PathBuf, String>,
    mounts: HashMap<PathBuf, PathBuf>,
    dirs: HashSet<PathBuf>,
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

    pub fn set_size(&self, path: &Path, size: u64) {
        lock(&self.state).sizes.insert(path.to_path_buf(), size);
    }

    pub fn loop_count(&self) -> usize {
        lock(&self.state).loops.len()
    }

    pub fn owner(&self, path: &Path) -> Option<String> {
        lock(&self.state).owners.get(path).cloned()
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

    fn mount(&self, device: &Path, target: &Path, _fs: Filesystem) -> Result<(), HostError> {
        let mut s = lock(&self.state);
        if !s.dirs.contains(target) {
            return Err(missing("mount on", target));
        }
        s.mounts.insert(target.to_path_buf(), device.to_path_buf());
        Ok(())
    }

    fn unmount(&self, target: &Path) -> Result<(), HostError> {
        lock(&self.state).mounts.remove(target).map(drop).ok_or_else(|| missing("unmount", target))
    }

    fn mounted_device(&self, target: &Path) -> Result<Option<PathBuf>, HostError> {
        Ok(lock(&self.state).mounts.get(target).cloned())
    }

    fn ensure_dir(&self, dir: &Path) -> Result<(), HostError> {
        lock(&self.state).dirs.insert(dir.to_path_buf());
        Ok(())
    }

    fn chown(&self, path: &Path, user: &str) -> Result<(), HostError> {
        if !["postgres", "mysql", "redis"].contains(&user) {
            return Err(HostError::NoUser(user.to_owned()));
        }
        lock(&self.state).owners.insert(path.to_path_buf(), user.to_owned());
        Ok(())
    }

    fn fs_usage(&self, _mountpoint: &Path) -> Result<FsUsage, HostError> {
        Ok(FsUsage { size_bytes: 1 << 30, used_bytes: 1 << 20 })
    }
}
