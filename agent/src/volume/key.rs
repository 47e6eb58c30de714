//! Volume keys and where they come from. A key is the passphrase of the instance's LUKS2 keyslot:
//! whoever holds it can unlock the volume, so it lives only in zeroizing memory and never appears in
//! logs, errors, `Debug` output, state files or operation records.

use std::fmt;
use zeroize::Zeroizing;

/// One instance's key at one version. `Debug` and `Display` show only its length.
#[derive(Clone)]
pub struct VolumeKey(Zeroizing<Vec<u8>>);

impl VolumeKey {
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> Self {
        Self(bytes)
    }

    /// A fresh random key of `bits` bits.
    pub fn random(bits: u32) -> Result<Self, KeyError> {
        let mut bytes = Zeroizing::new(vec![0u8; (bits / 8) as usize]);
        getrandom::fill(&mut bytes)
            .map_err(|e| KeyError::Unavailable(format!("read random bytes for a new key: {e}")))?;
        Ok(Self(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for VolumeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VolumeKey(<{} bytes, redacted>)", self.0.len())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "no key version {version} for instance {instance} in the {provider} key provider; the volume cannot be opened without it"
    )]
    Missing { provider: &'static str, instance: String, version: u32 },
    #[error("key-encryption key: {0}")]
    Kek(String),
    #[error("key provider unavailable: {0}")]
    Unavailable(String),
    #[error("key entry {0} is damaged or was not wrapped under this host's key-encryption key")]
    Corrupt(String),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
}

/// A source of per-instance keys. Versions start at 1; a key rotation asks for the next version.
#[tonic::async_trait]
pub trait KeyProvider: Send + Sync {
    fn name(&self) -> &'static str;

    /// The key of `instance` at `version`. With `create`, a missing key is made (`bits` long);
    /// without, a missing key is [`KeyError::Missing`].
    async fn key(&self, instance: &str, version: u32, create: bool, bits: u32) -> Result<VolumeKey, KeyError>;

    /// Forgets every version of `instance`'s key except `keep` (all of them with `None`).
    async fn forget(&self, instance: &str, keep: Option<u32>) -> Result<(), KeyError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_key_bytes() {
        let key = VolumeKey::new(Zeroizing::new(vec![0xAB; 32]));
        let shown = format!("{key:?}");
        assert!(!shown.contains("ab") && !shown.contains("171"), "{shown}");
        assert!(shown.contains("32 bytes"));
        assert_eq!(VolumeKey::random(512).unwrap().as_bytes().len(), 64);
    }
}
