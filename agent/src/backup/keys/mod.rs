//! Which keys wrap a backup's data key, and opening it again (docs/backups.md, "Key hierarchy").
//!
//! Every backup's random data key is wrapped once per key that may open it, all listed in the
//! manifest (`key_wraps`, format 3):
//! - `kek-aes-256-gcm-v2` under the host KEK ([`super::keywrap`]): the host restores, verifies and
//!   applies retention on its own;
//! - `age-x25519-v1` to the operator's recovery recipients ([`recovery`]), when configured;
//! - `keyservice-v1` through the orchestrator's KeyService ([`keyservice`]), with the remote provider.
//!
//! The last two are held off the host: a new host restores with either. Opening tries the KEK, then
//! the KeyService, then the recovery identity the request carried; a refusal names every wrap and
//! why each failed, so an operator knows which key to bring. Each wrap is bound to the instance and
//! backup ids (AAD, age payload, KeyService purpose): a wrap copied from another backup never opens.

pub mod keyservice;
pub mod recovery;

use std::sync::Arc;
use zeroize::Zeroizing;

use super::BackupError;
use super::keywrap::{self, KEK_WRAPPER, KeyWrapper, RETIRED_HOST_KEY_WRAPPER};
use super::manifest::{KeyWrap, Manifest};
use crate::config::{Config, KeyProviderKind};
use crate::recovery_key::{RecoveryIdentity, RecoveryRecipients};
use keyservice::{KEYSERVICE_WRAPPER, KeyServiceWrapper};
use recovery::RECOVERY_WRAPPER;

/// The most wraps a manifest may list (one per scheme today); more is refused unread.
pub const MAX_KEY_WRAPS: usize = 8;

/// The keys of this agent that wrap and open backup data keys, plus, for one operation, the
/// recovery identity its request carried. Cheap to clone.
#[derive(Clone)]
pub struct BackupKeys {
    kek: Arc<dyn KeyWrapper>,
    recipients: RecoveryRecipients,
    keyservice: Option<Arc<KeyServiceWrapper>>,
    identity: Option<Arc<RecoveryIdentity>>,
    /// Production without `backup.allow_host_only_keys`: a backup needs an off-host wrap.
    require_off_host: bool,
}

impl BackupKeys {
    /// The keys the configuration names. In production (not `dev`), backups need an off-host key
    /// unless `backup.allow_host_only_keys` says otherwise.
    pub fn from_config(config: &Config, dev: bool) -> Result<Self, BackupError> {
        let recipients = RecoveryRecipients::parse(&config.keys.recovery_recipients)?;
        let keyservice = match config.keys.provider {
            KeyProviderKind::Remote => {
                Some(Arc::new(KeyServiceWrapper::connect(&config.keys.remote, crate::keyservice_client::host_name())?))
            }
            KeyProviderKind::Local => None,
        };
        Ok(Self {
            kek: keywrap::from_config(config, dev),
            recipients,
            keyservice,
            identity: None,
            require_off_host: !dev && !config.backup.allow_host_only_keys,
        })
    }

    /// Only the host KEK, no off-host key required: for library users and tests that decided so.
    pub fn host_only(kek: Arc<dyn KeyWrapper>) -> Self {
        Self {
            kek,
            recipients: RecoveryRecipients::default(),
            keyservice: None,
            identity: None,
            require_off_host: false,
        }
    }

    pub fn with_recipients(mut self, recipients: RecoveryRecipients) -> Self {
        self.recipients = recipients;
        self
    }

    pub fn with_keyservice(mut self, keyservice: KeyServiceWrapper) -> Self {
        self.keyservice = Some(Arc::new(keyservice));
        self
    }

    pub fn requiring_off_host(mut self, required: bool) -> Self {
        self.require_off_host = required;
        self
    }

    /// These keys plus the recovery identity of one request (kept for that operation only).
    pub fn with_identity(&self, identity: Option<Arc<RecoveryIdentity>>) -> Self {
        Self { identity, ..self.clone() }
    }

    /// A new backup can be wrapped: the host KEK is loaded, and in production an off-host key is
    /// configured.
    pub fn check_can_wrap(&self) -> Result<(), BackupError> {
        self.kek.check()?;
        if self.require_off_host && self.recipients.is_empty() && self.keyservice.is_none() {
            return Err(BackupError::HostOnlyKeys);
        }
        Ok(())
    }

    /// Some key could open a backup: the host KEK, the KeyService or the request's recovery key.
    pub fn check_can_unwrap(&self) -> Result<(), BackupError> {
        match self.kek.check() {
            Err(_) if self.keyservice.is_some() || self.identity.is_some() => Ok(()),
            other => other,
        }
    }

    /// Every wrap of `data_key` a new backup gets. A wrap that fails fails the backup: an
    /// off-host key silently left out would be found missing only on the day it is needed.
    pub async fn wrap_all(
        &self,
        instance_id: &str,
        backup_id: &str,
        data_key: &[u8],
    ) -> Result<Vec<KeyWrap>, BackupError> {
        let mut wraps = vec![KeyWrap {
            wrapper: KEK_WRAPPER.into(),
            key_id: self.kek.key_id(),
            wrapped: crate::hex::encode(&self.kek.wrap(instance_id, backup_id, data_key)?),
        }];
        if let Some(ks) = &self.keyservice {
            wraps.push(ks.wrap(instance_id, backup_id, data_key).await?);
        }
        if !self.recipients.is_empty() {
            wraps.push(recovery::wrap(&self.recipients, instance_id, backup_id, data_key)?);
        }
        Ok(wraps)
    }

    /// The data key of `m` (already shape-checked), from the first wrap that opens: host KEK,
    /// KeyService, recovery key. With one wrap its own refusal is returned; with several, one
    /// that names each wrap and why it did not open.
    pub async fn unwrap(&self, m: &Manifest) -> Result<Zeroizing<Vec<u8>>, BackupError> {
        let mut wraps = m.wraps();
        let order = |w: &KeyWrap| match w.wrapper.as_str() {
            KEK_WRAPPER => 0,
            KEYSERVICE_WRAPPER => 1,
            RECOVERY_WRAPPER => 2,
            _ => 3,
        };
        wraps.sort_by_key(order);
        let mut failures = Vec::with_capacity(wraps.len());
        for wrap in &wraps {
            match self.unwrap_one(m, wrap).await {
                Ok(key) if key.len() == 32 => return Ok(key),
                Ok(key) => failures.push((wrap, BackupError::DataKeyLength { found: key.len() })),
                Err(e) => failures.push((wrap, e)),
            }
        }
        if failures.len() == 1 {
            return Err(failures.pop().map(|(_, e)| e).expect("one failure"));
        }
        let denied = failures
            .iter()
            .any(|(_, e)| crate::error::HasErrorCode::code(e) == crate::error::ErrorCode::PermissionDenied);
        Err(BackupError::NoKeyOpens {
            backup: m.backup_id.clone(),
            denied,
            attempts: failures
                .iter()
                .map(|(w, e)| format!("{} key {}: {e}", w.wrapper, crate::ids::truncate_for_message(&w.key_id)))
                .collect(),
        })
    }

    async fn unwrap_one(&self, m: &Manifest, wrap: &KeyWrap) -> Result<Zeroizing<Vec<u8>>, BackupError> {
        let (instance, backup) = (m.instance_id.as_str(), m.backup_id.as_str());
        match wrap.wrapper.as_str() {
            KEK_WRAPPER => keywrap::unwrap_kek_wrap(self.kek.as_ref(), instance, backup, wrap),
            KEYSERVICE_WRAPPER => match &self.keyservice {
                Some(ks) => ks.unwrap(instance, backup, wrap).await,
                None => Err(BackupError::KeyServiceNotConfigured),
            },
            RECOVERY_WRAPPER => recovery::unwrap(self.identity.as_deref(), instance, backup, wrap),
            RETIRED_HOST_KEY_WRAPPER => {
                Err(BackupError::RetiredHostKey { backup: backup.to_owned(), key_id: wrap.key_id.clone() })
            }
            other => Err(BackupError::UnknownKeyWrapper { backup: backup.to_owned(), wrapper: other.to_owned() }),
        }
    }
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
