//! The LUKS2 layer behind a small trait: libcryptsetup for real ([`LibCryptsetup`]) and an in-memory
//! double that answers like it ([`SimCrypt`]), so the volume service is tested without root.
//!
//! The instance key is the passphrase of one keyslot; the LUKS2 volume key is random, made by
//! libcryptsetup at format time and never leaves it. Rotating the instance key replaces the keyslot,
//! so the old key stops opening the volume without re-encrypting the data.
//!
//! Calls block (key derivation takes seconds by design): callers run them in `spawn_blocking`.

use std::path::Path;

use crate::config::PbkdfKind;

mod libcryptsetup;
mod sim;

pub use libcryptsetup::LibCryptsetup;
pub use sim::SimCrypt;

pub const CIPHER: &str = "aes";
pub const CIPHER_MODE: &str = "xts-plain64";
pub const HASH: &str = "sha256";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbkdfParams {
    pub kind: PbkdfKind,
    pub time_ms: u32,
    /// 0 = benchmark to `time_ms`.
    pub iterations: u32,
    pub memory_kib: u32,
    pub parallel: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatParams {
    pub key_bits: u32,
    pub sector_size: u32,
    pub pbkdf: PbkdfParams,
    pub label: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ActivationFlags {
    pub no_read_workqueue: bool,
    pub no_write_workqueue: bool,
}

impl ActivationFlags {
    pub fn names(self) -> Vec<String> {
        let mut out = Vec::new();
        if self.no_read_workqueue {
            out.push("no_read_workqueue".to_owned());
        }
        if self.no_write_workqueue {
            out.push("no_write_workqueue".to_owned());
        }
        out
    }
}

/// What the LUKS2 header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderInfo {
    pub cipher: String,
    pub key_bits: u32,
    pub sector_size: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    /// No keyslot accepts the key. Kept apart so callers can tell it from a broken device.
    #[error("the key does not open any keyslot of {0}")]
    WrongKey(String),
    /// libcryptsetup refused `op` on `target` (a device, a header file or a mapping name); `source`
    /// carries its errno.
    #[error("{op} {target}: {source}")]
    Failed {
        op: &'static str,
        target: String,
        #[source]
        source: std::io::Error,
    },
}

impl crate::error::HasErrorCode for CryptError {
    fn code(&self) -> crate::error::ErrorCode {
        use crate::error::ErrorCode as C;
        match self {
            CryptError::WrongKey(_) => C::FailedPrecondition,
            CryptError::Failed { .. } => C::Internal,
        }
    }
}

pub trait CryptBackend: Send + Sync + 'static {
    fn is_luks(&self, device: &Path) -> Result<bool, CryptError>;
    /// Formats LUKS2 with a random volume key and one keyslot for `passphrase`; returns the keyslot.
    fn format(&self, device: &Path, params: &FormatParams, passphrase: &[u8]) -> Result<u32, CryptError>;
    /// Checks `passphrase` without activating; returns the keyslot it opens.
    fn verify(&self, device: &Path, passphrase: &[u8]) -> Result<u32, CryptError>;
    fn activate(&self, device: &Path, name: &str, passphrase: &[u8], flags: ActivationFlags) -> Result<(), CryptError>;
    fn deactivate(&self, name: &str) -> Result<(), CryptError>;
    /// The flags of the active mapping `/dev/mapper/<name>`; `None` when it is not active.
    fn active(&self, name: &str) -> Result<Option<ActivationFlags>, CryptError>;
    /// Grows the active mapping to the whole (grown) device.
    fn resize(&self, device: &Path, name: &str, passphrase: &[u8]) -> Result<(), CryptError>;
    /// Adds a keyslot for `new` (unlocked by `old`) with `pbkdf`; returns its number.
    fn add_keyslot(&self, device: &Path, old: &[u8], new: &[u8], pbkdf: &PbkdfParams) -> Result<u32, CryptError>;
    fn destroy_keyslot(&self, device: &Path, slot: u32) -> Result<(), CryptError>;
    /// Destroys every keyslot: nothing opens the volume afterwards.
    fn erase_keyslots(&self, device: &Path) -> Result<(), CryptError>;
    fn header_info(&self, device: &Path) -> Result<HeaderInfo, CryptError>;
    /// Writes the header to `file`, which must not exist.
    fn header_backup(&self, device: &Path, file: &Path) -> Result<(), CryptError>;
    /// The JSON text of the header's token of type `token_type` (the first one, if several), or
    /// `None`. The text comes from the device: callers treat it as untrusted input.
    fn read_token(&self, device: &Path, token_type: &str) -> Result<Option<String>, CryptError>;
    /// Stores `json` (a LUKS2 token object whose `type` is `token_type`) in the header, replacing
    /// the token of that type if there is one, so the header holds at most one.
    fn write_token(&self, device: &Path, token_type: &str, json: &str) -> Result<(), CryptError>;
}
