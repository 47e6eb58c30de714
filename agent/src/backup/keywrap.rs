//! Wrapping of the per-backup data key. The lead routes this to the key provider later; until then a
//! host key file (32 random bytes, 0600) wraps data keys with AES-256-GCM.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::BackupError;

const WRAP_AAD: &[u8] = b"dbagent-backup-data-key-v1";

/// Wraps and unwraps data keys. `key_id` names the wrapping key so a refusal can say which key a
/// backup needs.
pub trait KeyWrapper: Send + Sync {
    fn key_id(&self) -> String;
    fn wrap(&self, data_key: &[u8]) -> Result<Vec<u8>, BackupError>;
    fn unwrap(&self, wrapped: &[u8]) -> Result<Vec<u8>, BackupError>;
}

pub struct HostKeyWrapper {
    key: LessSafeKey,
    id: String,
}

impl HostKeyWrapper {
    /// Reads the host key file, creating it (0600, random) if it does not exist.
    pub fn open_or_create(path: &Path) -> Result<Self, BackupError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|e| BackupError::Key(format!("generate backup host key: {e}")))?;
                if let Some(dir) = path.parent() {
                    crate::fsutil::ensure_private_dir(dir).map_err(|e| BackupError::io(format!("create {}", dir.display()), e))?;
                }
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| BackupError::io(format!("create backup host key {}", path.display()), e))?;
                f.write_all(&key).and_then(|()| f.sync_all()).map_err(|e| BackupError::io(format!("write {}", path.display()), e))?;
                key.to_vec()
            }
            Err(e) => return Err(BackupError::io(format!("read backup host key {}", path.display()), e)),
        };
        Self::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BackupError> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| BackupError::Key(format!("backup host key must be 32 bytes, found {}", bytes.len())))?;
        let id = Sha256::digest(bytes).iter().take(8).map(|b| format!("{b:02x}")).collect();
        Ok(Self { key: LessSafeKey::new(unbound), id })
    }
}

impl KeyWrapper for HostKeyWrapper {
    fn key_id(&self) -> String {
        self.id.clone()
    }

    fn wrap(&self, data_key: &[u8]) -> Result<Vec<u8>, BackupError> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| BackupError::Key(format!("generate nonce: {e}")))?;
        let mut sealed = data_key.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(WRAP_AAD), &mut sealed)
            .map_err(|_| BackupError::Key("wrap the backup data key".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn unwrap(&self, wrapped: &[u8]) -> Result<Vec<u8>, BackupError> {
        let refuse = || {
            BackupError::Key(format!(
                "the backup's data key cannot be unwrapped with this agent's backup key {}; restore it on an agent holding the key that wrote it",
                self.id
            ))
        };
        if wrapped.len() < 12 + 16 {
            return Err(refuse());
        }
        let (nonce, sealed) = wrapped.split_at(12);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| refuse())?;
        let mut buf = sealed.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(WRAP_AAD), &mut buf).map_err(|_| refuse())?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_and_refuses_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let a = HostKeyWrapper::open_or_create(&dir.path().join("k/host.key")).unwrap();
        let again = HostKeyWrapper::open_or_create(&dir.path().join("k/host.key")).unwrap();
        assert_eq!(a.key_id(), again.key_id());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("k/host.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let wrapped = a.wrap(&[7u8; 32]).unwrap();
        assert_eq!(again.unwrap(&wrapped).unwrap(), vec![7u8; 32]);
        let b = HostKeyWrapper::from_bytes(&[1u8; 32]).unwrap();
        let e = b.unwrap(&wrapped).unwrap_err().to_string();
        assert!(e.contains("cannot be unwrapped"), "{e}");
    }
}
