//! Wrapping of the per-backup data key under the host key-encryption key (KEK) of the local key
//! provider (docs/backups.md). The KEK is read through the
//! same [`KekSource`] as the volume keystore: the systemd credential `dbagent-kek`, else
//! `keys.kek_file` (dev mode generates `<state_dir>/kek`).

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use zeroize::Zeroizing;

use super::BackupError;
use super::manifest::KeyWrap;
use crate::config::Config;
use crate::volume::keystore::KekSource;

/// The `key_wrapper` a manifest names for [`KekWrapper`]. v2 binds the instance id as well as the
/// backup id (v1 bound the backup id only; its manifests are format 1, refused as unauthenticated).
pub const KEK_WRAPPER: &str = "kek-aes-256-gcm-v2";
/// The retired wrapper (a separate `<state_dir>/backups/host.key`); its backups are not readable.
pub const RETIRED_HOST_KEY_WRAPPER: &str = "host-aes-256-gcm";

/// Wraps and unwraps data keys. `key_id` names the wrapping key so a refusal can say which key a
/// backup needs. The instance and backup ids are bound into the wrapping (associated data), so a
/// wrapped key copied into another backup's or another instance's manifest does not open.
pub trait KeyWrapper: Send + Sync {
    /// The manifest's `key_wrapper` value.
    fn scheme(&self) -> &'static str;
    fn key_id(&self) -> String;
    /// `Err(KekUnavailable)` when no key is available at all, so callers refuse up front.
    fn check(&self) -> Result<(), BackupError> {
        Ok(())
    }
    fn wrap(&self, instance_id: &str, backup_id: &str, data_key: &[u8]) -> Result<Vec<u8>, BackupError>;
    fn unwrap(&self, instance_id: &str, backup_id: &str, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, BackupError>;
}

/// The wrapper for a running agent: the host KEK, or [`NoKek`] when it cannot be loaded (the agent
/// still starts; backups answer FAILED_PRECONDITION naming the missing KEK).
pub fn from_config(config: &Config, dev: bool) -> Arc<dyn KeyWrapper> {
    match KekSource::from_env(config.keys.kek_file.clone(), dev).load() {
        Ok(kek) => match KekWrapper::from_kek(&kek) {
            Ok(w) => Arc::new(w),
            Err(e) => Arc::new(NoKek::logged(e.to_string())),
        },
        Err(e) => Arc::new(NoKek::logged(e.to_string())),
    }
}

/// Instance ids never hold a NUL, so the separator keeps ("a", "b1") and ("a\0b", "1") apart.
fn aad(instance_id: &str, backup_id: &str) -> Vec<u8> {
    let mut aad = b"dbagent-backup-data-key-v3\0".to_vec();
    aad.extend_from_slice(instance_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(backup_id.as_bytes());
    aad
}

/// AES-256-GCM under the host KEK. Wrapped form: 12-byte random nonce || ciphertext || tag.
pub struct KekWrapper {
    key: LessSafeKey,
    id: String,
}

impl KekWrapper {
    pub fn from_kek(kek: &[u8]) -> Result<Self, BackupError> {
        let unbound = UnboundKey::new(&AES_256_GCM, kek).map_err(|_| BackupError::KekLength { found: kek.len() })?;
        // A domain-separated digest: the id names the KEK without being usable to test guesses
        // against other digests of it.
        let mut h = Sha256::new();
        h.update(b"dbagent-kek-id\0");
        h.update(kek);
        let id = crate::hex::encode(&h.finalize()[..8]);
        Ok(Self { key: LessSafeKey::new(unbound), id })
    }
}

impl KeyWrapper for KekWrapper {
    fn scheme(&self) -> &'static str {
        KEK_WRAPPER
    }

    fn key_id(&self) -> String {
        self.id.clone()
    }

    fn wrap(&self, instance_id: &str, backup_id: &str, data_key: &[u8]) -> Result<Vec<u8>, BackupError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(BackupError::Random)?;
        let mut sealed = data_key.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(instance_id, backup_id)),
                &mut sealed,
            )
            .map_err(|_| BackupError::WrapFailed)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn unwrap(&self, instance_id: &str, backup_id: &str, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, BackupError> {
        let refuse = || BackupError::KeyUnwrap { backup: backup_id.to_owned(), host_key: self.id.clone() };
        if wrapped.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(refuse());
        }
        let (nonce, sealed) = wrapped.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| refuse())?;
        // Opened in place, so the buffer holds the plain key: wiped on drop like the copy returned.
        let mut buf = Zeroizing::new(sealed.to_vec());
        let plain =
            self.key.open_in_place(nonce, Aad::from(aad(instance_id, backup_id)), &mut buf).map_err(|_| refuse())?;
        Ok(Zeroizing::new(plain.to_vec()))
    }
}

/// The host KEK could not be loaded: every backup, verify and restore is refused with the reason.
pub struct NoKek(String);

impl NoKek {
    fn logged(reason: String) -> Self {
        tracing::error!("{reason}; backups cannot be taken, verified or restored until it is provided");
        Self(reason)
    }

    fn refusal(&self) -> BackupError {
        BackupError::KekUnavailable { reason: self.0.clone() }
    }
}

impl KeyWrapper for NoKek {
    fn scheme(&self) -> &'static str {
        KEK_WRAPPER
    }

    fn key_id(&self) -> String {
        String::new()
    }

    fn check(&self) -> Result<(), BackupError> {
        Err(self.refusal())
    }

    fn wrap(&self, _: &str, _: &str, _: &[u8]) -> Result<Vec<u8>, BackupError> {
        Err(self.refusal())
    }

    fn unwrap(&self, _: &str, _: &str, _: &[u8]) -> Result<Zeroizing<Vec<u8>>, BackupError> {
        Err(self.refusal())
    }
}

/// Opens a `kek-aes-256-gcm-v2` wrap of backup `backup_id` of `instance_id`, refused with the
/// reason when this host cannot: another host's KEK (told apart by key id before trying, so the
/// refusal names both keys), or a wrapped key that does not open (altered or copied).
pub fn unwrap_kek_wrap(
    keys: &dyn KeyWrapper,
    instance_id: &str,
    backup_id: &str,
    wrap: &KeyWrap,
) -> Result<Zeroizing<Vec<u8>>, BackupError> {
    let backup = || backup_id.to_owned();
    keys.check()?;
    if wrap.key_id != keys.key_id() {
        return Err(BackupError::WrongKek {
            backup: backup(),
            backup_key: wrap.key_id.clone(),
            host_key: keys.key_id(),
        });
    }
    let wrapped =
        crate::hex::decode(&wrap.wrapped).ok_or_else(|| BackupError::WrappedKeyInvalid { backup: backup() })?;
    keys.unwrap(instance_id, backup_id, &wrapped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_and_refuses_other_keys_and_other_backups() {
        let a = KekWrapper::from_kek(&[7u8; 32]).unwrap();
        let again = KekWrapper::from_kek(&[7u8; 32]).unwrap();
        assert_eq!(a.key_id(), again.key_id());
        assert_eq!(a.scheme(), KEK_WRAPPER);
        let wrapped = a.wrap("i1", "b1", &[9u8; 32]).unwrap();
        assert_eq!(again.unwrap("i1", "b1", &wrapped).unwrap().as_slice(), [9u8; 32]);
        // The backup id is bound: the same wrapped key under another backup's name does not open.
        let e = a.unwrap("i1", "b2", &wrapped).unwrap_err();
        assert!(matches!(&e, BackupError::KeyUnwrap { backup, .. } if backup == "b2"), "{e:?}");
        // So is the instance id: the same backup id under another instance does not open either.
        assert!(matches!(a.unwrap("i2", "b1", &wrapped), Err(BackupError::KeyUnwrap { .. })));
        let b = KekWrapper::from_kek(&[1u8; 32]).unwrap();
        assert_ne!(a.key_id(), b.key_id());
        let e = b.unwrap("i1", "b1", &wrapped).unwrap_err();
        assert!(matches!(&e, BackupError::KeyUnwrap { host_key, .. } if *host_key == b.key_id()), "{e:?}");
        assert!(matches!(a.unwrap("i1", "b1", &wrapped[..20]), Err(BackupError::KeyUnwrap { .. })));
    }

    fn wrap_by(keys: &dyn KeyWrapper, backup_id: &str, data_key: &[u8]) -> KeyWrap {
        KeyWrap {
            wrapper: keys.scheme().into(),
            key_id: keys.key_id(),
            wrapped: crate::hex::encode(&keys.wrap("i1", backup_id, data_key).unwrap()),
        }
    }

    #[test]
    fn a_kek_wrap_opens_on_its_host_and_each_refusal_names_its_reason() {
        let host = KekWrapper::from_kek(&[7u8; 32]).unwrap();
        let w = wrap_by(&host, "b1", &[9u8; 32]);
        assert_eq!(unwrap_kek_wrap(&host, "i1", "b1", &w).unwrap().as_slice(), [9u8; 32]);

        let other = KekWrapper::from_kek(&[8u8; 32]).unwrap();
        let e = unwrap_kek_wrap(&other, "i1", "b1", &w).unwrap_err();
        assert!(
            matches!(&e, BackupError::WrongKek { backup_key, host_key, .. }
                if *backup_key == host.key_id() && *host_key == other.key_id()),
            "{e:?}"
        );
        // Same KEK, but the wrapped key belongs to another backup or instance: the binding refuses it.
        let copied = wrap_by(&host, "b2", &[9u8; 32]);
        assert!(matches!(unwrap_kek_wrap(&host, "i1", "b1", &copied), Err(BackupError::KeyUnwrap { .. })));
        assert!(matches!(unwrap_kek_wrap(&host, "i2", "b1", &w), Err(BackupError::KeyUnwrap { .. })));
        let garbled = KeyWrap { wrapped: "not hex".into(), ..w };
        assert!(matches!(unwrap_kek_wrap(&host, "i1", "b1", &garbled), Err(BackupError::WrappedKeyInvalid { .. })));
    }

    #[test]
    fn kek_of_the_wrong_length_is_refused() {
        let e = KekWrapper::from_kek(&[1u8; 16]).err().unwrap();
        assert!(matches!(e, BackupError::KekLength { found: 16 }), "{e:?}");
        assert!(KekWrapper::from_kek(&[1u8; 32]).is_ok());
    }

    fn config_with_kek(dir: &std::path::Path) -> Config {
        let mut config = Config::default();
        config.keys.kek_file = dir.join("kek");
        config
    }

    #[test]
    fn uses_the_same_kek_file_as_the_keystore() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let config = config_with_kek(dir.path());
        // Dev mode generates the KEK file, exactly as the volume keystore would.
        let dev = from_config(&config, true);
        dev.check().unwrap();
        let kek = std::fs::read(dir.path().join("kek")).unwrap();
        assert_eq!(std::fs::metadata(dir.path().join("kek")).unwrap().permissions().mode() & 0o077, 0);
        assert_eq!(dev.key_id(), KekWrapper::from_kek(&kek).unwrap().key_id());
        // Production mode reads the existing file.
        let prod = from_config(&config, false);
        let wrapped = dev.wrap("i1", "b1", &[3u8; 32]).unwrap();
        assert_eq!(prod.unwrap("i1", "b1", &wrapped).unwrap().as_slice(), [3u8; 32]);
    }

    #[test]
    fn a_missing_kek_is_a_failed_precondition_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let w = from_config(&config_with_kek(dir.path()), false);
        for e in [
            w.check().unwrap_err(),
            w.wrap("i1", "b1", &[0u8; 32]).unwrap_err(),
            w.unwrap("i1", "b1", &[0u8; 60]).unwrap_err(),
        ] {
            assert!(matches!(e, BackupError::KekUnavailable { .. }), "{e:?}");
            let msg = e.to_string();
            assert!(
                msg.contains("key-encryption key") && msg.contains(&dir.path().join("kek").display().to_string()),
                "{msg}"
            );
            assert_eq!(crate::error::HasErrorCode::code(&e), crate::error::ErrorCode::FailedPrecondition);
        }
    }
}
