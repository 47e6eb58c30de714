//! Volume keys and where they come from. A key is the passphrase of the instance's LUKS2 keyslot:
//! whoever holds it can unlock the volume, so it lives only in zeroizing memory and never appears in
//! logs, errors, `Debug` output, state files or operation records.

use std::fmt;
use std::path::PathBuf;
use zeroize::Zeroizing;

use crate::error::{ErrorCode, HasErrorCode};

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
        getrandom::fill(&mut bytes).map_err(KeyError::Random)?;
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
    /// The host key-encryption key could not be loaded when the agent started; the reason is that
    /// load error's message.
    #[error("key-encryption key: {0}")]
    Kek(String),
    #[error(
        "key-encryption key {} does not exist; provide 32 random bytes there (mode 0600) or as the systemd credential {credential}",
        path.display()
    )]
    KekMissing { path: PathBuf, credential: &'static str },
    #[error(
        "key-encryption key {} has mode {mode:o}; it must be readable by root only: chmod 600 {}",
        path.display(),
        path.display()
    )]
    KekExposed { path: PathBuf, mode: u32 },
    #[error("key-encryption key {} must hold 32 raw bytes or 64 hex digits", path.display())]
    KekMalformed { path: PathBuf },
    #[error("a key-encryption key is 32 bytes, not {0}")]
    KekLength(usize),
    #[error("read random bytes: {0}")]
    Random(getrandom::Error),
    #[error("seal a key entry under the key-encryption key")]
    Seal,
    #[error("key entry {} is damaged or was not wrapped under this host's key-encryption key", .0.display())]
    Corrupt(PathBuf),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    /// The provider keeps no keys on this host (the remote KeyService owns them).
    #[error("the {0} key provider keeps no keys on this host: a recovered key cannot be stored")]
    NotStorable(&'static str),
    #[error("a keystore step on a blocking thread did not finish: {0}")]
    BlockingTask(#[from] tokio::task::JoinError),
    /// The remote provider's settings (`[keys.remote]`) do not make a channel.
    #[error("set up the KeyService channel to {endpoint}: {source}; check [keys.remote]")]
    Endpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// The KeyService could not be reached (`code` is then tonic's, e.g. Unknown for a failed TLS
    /// handshake) or answered with an error status; NOT_FOUND is [`KeyError::Missing`].
    #[error("KeyService GetInstanceKey: {code:?}: {message}")]
    Service { code: tonic::Code, message: String },
    #[error(
        "KeyService answered for instance {got_instance:?} version {got_version} with {got_bits} bits; asked for {instance} version {version} with {bits} bits"
    )]
    WrongAnswer { instance: String, version: u32, bits: u32, got_instance: String, got_version: u32, got_bits: u32 },
}

impl HasErrorCode for KeyError {
    fn code(&self) -> ErrorCode {
        match self {
            KeyError::Missing { .. }
            | KeyError::Kek(_)
            | KeyError::KekMissing { .. }
            | KeyError::KekExposed { .. }
            | KeyError::KekMalformed { .. }
            | KeyError::KekLength(_)
            | KeyError::NotStorable(_)
            | KeyError::Endpoint { .. } => ErrorCode::FailedPrecondition,
            KeyError::Service { .. } => ErrorCode::Unavailable,
            KeyError::Random(_)
            | KeyError::Seal
            | KeyError::Corrupt(_)
            | KeyError::Io { .. }
            | KeyError::BlockingTask(_)
            | KeyError::WrongAnswer { .. } => ErrorCode::Internal,
        }
    }
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

    /// Stores `key` as `instance`'s key at `version`, replacing whatever is stored there: the key
    /// was recovered from its escrow and proven to open the volume. Only a provider that keeps
    /// keys on the host can.
    async fn store(&self, _instance: &str, _version: u32, _key: &VolumeKey) -> Result<(), KeyError> {
        Err(KeyError::NotStorable(self.name()))
    }

    /// The key versions this host holds for `instance`, sorted. A provider that keeps no keys on
    /// the host (the remote KeyService owns them) has none to list.
    async fn versions(&self, _instance: &str) -> Result<Vec<u32>, KeyError> {
        Ok(Vec::new())
    }
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
