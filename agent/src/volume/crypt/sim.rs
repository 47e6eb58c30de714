//! The crypt layer in memory: LUKS2 headers and mappings as plain state, so the volume service is
//! tested without root or device-mapper. It answers like libcryptsetup: the same errnos for a device
//! without a header, a mapping that exists or is missing, a header backup over an existing file.

use nix::errno::Errno;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::*;
use crate::volume::host::SimHost;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Keyslots hold a hash of their passphrase, never the passphrase.
fn slot_hash(passphrase: &[u8]) -> [u8; 32] {
    Sha256::digest(passphrase).into()
}

fn failed(op: &'static str, target: impl std::fmt::Display, errno: Errno) -> CryptError {
    CryptError::Failed { op, target: target.to_string(), source: std::io::Error::from(errno) }
}

#[derive(Debug, Clone)]
struct SimHeader {
    key_bits: u32,
    sector_size: u32,
    slots: BTreeMap<u32, [u8; 32]>,
    /// Tokens by type: the JSON text as stored.
    tokens: BTreeMap<String, String>,
}

#[derive(Default)]
struct CryptState {
    headers: HashMap<PathBuf, SimHeader>,
    active: HashMap<String, (PathBuf, ActivationFlags)>,
}

/// Headers are kept per underlying file: a loop device of its [`SimHost`] shows the header of its
/// file, as a real loop device does.
pub struct SimCrypt {
    state: Mutex<CryptState>,
    host: Arc<SimHost>,
}

impl SimCrypt {
    pub fn on(host: Arc<SimHost>) -> Self {
        Self { state: Mutex::default(), host }
    }

    fn resolve(&self, device: &Path) -> PathBuf {
        self.host.loop_backing(device).unwrap_or_else(|| device.to_path_buf())
    }

    fn header(&self, device: &Path) -> Result<SimHeader, CryptError> {
        lock(&self.state)
            .headers
            .get(device)
            .cloned()
            .ok_or_else(|| failed("read the LUKS2 header of", device.display(), Errno::EINVAL))
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

    /// Test helper: stores a token as a writer of the header (anyone with the disk) could, without
    /// the checks of [`CryptBackend::write_token`].
    pub fn plant_token(&self, device: &Path, token_type: &str, json: &str) {
        let device = &self.resolve(device);
        if let Some(h) = lock(&self.state).headers.get_mut(device) {
            h.tokens.insert(token_type.to_owned(), json.to_owned());
        }
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
            tokens: BTreeMap::new(),
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
            return Err(failed("activate", name, Errno::EEXIST));
        }
        s.active.insert(name.to_owned(), (device.to_path_buf(), flags));
        Ok(())
    }

    fn deactivate(&self, name: &str) -> Result<(), CryptError> {
        lock(&self.state).active.remove(name).map(drop).ok_or_else(|| failed("deactivate", name, Errno::ENODEV))
    }

    fn active(&self, name: &str) -> Result<Option<ActivationFlags>, CryptError> {
        Ok(lock(&self.state).active.get(name).map(|(_, flags)| *flags))
    }

    fn resize(&self, device: &Path, name: &str, passphrase: &[u8]) -> Result<(), CryptError> {
        let device = &self.resolve(device);
        self.slot_of(device, passphrase)?;
        if !lock(&self.state).active.contains_key(name) {
            return Err(failed("resize mapping of", name, Errno::ENODEV));
        }
        Ok(())
    }

    fn add_keyslot(&self, device: &Path, old: &[u8], new: &[u8], _pbkdf: &PbkdfParams) -> Result<u32, CryptError> {
        let device = &self.resolve(device);
        self.slot_of(device, old)?;
        let mut s = lock(&self.state);
        let h = s.headers.get_mut(device).ok_or_else(|| failed("add a keyslot to", device.display(), Errno::EINVAL))?;
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
        Ok(HeaderInfo { cipher: format!("{CIPHER}-{CIPHER_MODE}"), key_bits: h.key_bits, sector_size: h.sector_size })
    }

    /// Writes a real file, as libcryptsetup does, so the service's handling of backup files (the
    /// rotation's own backup, removal at destroy) is tested too. It names the device, nothing more.
    fn header_backup(&self, device: &Path, file: &Path) -> Result<(), CryptError> {
        let device = &self.resolve(device);
        self.header(device)?;
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(file)
            .and_then(|mut f| writeln!(f, "simulated LUKS2 header backup of {}", device.display()));
        written.map_err(|source| CryptError::Failed {
            op: "back up the header of",
            target: device.display().to_string(),
            source,
        })
    }

    fn read_token(&self, device: &Path, token_type: &str) -> Result<Option<String>, CryptError> {
        let device = &self.resolve(device);
        Ok(self.header(device)?.tokens.get(token_type).cloned())
    }

    /// Checks what libcryptsetup checks of a token: a JSON object with its `type` and a
    /// `keyslots` array.
    fn write_token(&self, device: &Path, token_type: &str, json: &str) -> Result<(), CryptError> {
        let device = &self.resolve(device);
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|_| failed("write a token to", device.display(), Errno::EINVAL))?;
        if value["type"] != token_type || !value["keyslots"].is_array() {
            return Err(failed("write a token to", device.display(), Errno::EINVAL));
        }
        let mut s = lock(&self.state);
        let h = s.headers.get_mut(device).ok_or_else(|| failed("write a token to", device.display(), Errno::EINVAL))?;
        h.tokens.insert(token_type.to_owned(), json.to_owned());
        Ok(())
    }
}
