//! The escrow side of the volume service: every volume's key is kept escrowed to the recovery
//! recipients in its LUKS2 header (`escrow_token.rs`), and a volume whose host lost its keystore or
//! KEK is opened on purpose with the operator's recovery key.
//!
//! The escrow is written at create, replaced at rotation before the old keyslot goes (so at every
//! point the escrowed key opens a keyslot), and brought up to date at every open: a volume made
//! before recipients were configured, or under other recipients, gets the current escrow then.

use std::path::Path;

use super::VolumeError;
use super::crypt::CryptError;
use super::escrow_token::{EscrowError, EscrowToken, TOKEN_TYPE};
use super::key::VolumeKey;
use super::service::{VolumeOutcome, Volumes, VolumesInner};
use crate::recovery_key::RecoveryIdentity;

impl VolumesInner {
    /// Escrows `key` (of `key_version`) in the header of `device` unless the header already holds
    /// that escrow for the configured recipients. Returns true if it wrote the token. Nothing is
    /// escrowed without recipients.
    pub(super) fn escrow(
        &self,
        device: &Path,
        instance: &str,
        key_version: u32,
        key: &VolumeKey,
    ) -> Result<bool, VolumeError> {
        let recipients = &self.settings.recovery_recipients;
        if recipients.is_empty() || self.escrow_is_current(device, instance, key_version)? {
            return Ok(false);
        }
        let token = EscrowToken::seal(recipients, instance, key_version, key)?;
        self.crypt.write_token(device, TOKEN_TYPE, &token.to_json())?;
        Ok(true)
    }

    fn escrow_is_current(&self, device: &Path, instance: &str, key_version: u32) -> Result<bool, VolumeError> {
        Ok(self
            .escrow_token(device, instance)?
            .is_some_and(|t| t.is_current(instance, key_version, &self.settings.recovery_recipients)))
    }

    /// The escrow token in the header, if there is a well-formed one (for status; a malformed
    /// token counts as none and is replaced at the next open).
    pub(super) fn escrow_token(&self, device: &Path, instance: &str) -> Result<Option<EscrowToken>, VolumeError> {
        Ok(self.crypt.read_token(device, TOKEN_TYPE)?.and_then(|json| EscrowToken::parse(instance, &json).ok()))
    }
}

impl Volumes {
    /// After an open: escrows the current key if the header lacks that escrow. A failure leaves
    /// the open volume open and is logged; the next open tries again.
    pub(super) async fn keep_escrow_current(&self, id: &str) {
        if self.inner.settings.recovery_recipients.is_empty() {
            return;
        }
        match self.bring_escrow_up_to_date(id).await {
            Ok(false) => {}
            Ok(true) => tracing::info!(instance = id, "volume key escrowed to the recovery recipients in its header"),
            Err(e) => tracing::warn!(instance = id, "escrow the volume key in its header: {e:#}"),
        }
    }

    async fn bring_escrow_up_to_date(&self, id: &str) -> Result<bool, VolumeError> {
        let record = self.record(id)?;
        let (r, i) = (record.clone(), id.to_owned());
        let current =
            self.blocking(move |inner| inner.escrow_is_current(&inner.header_device(&r)?, &i, r.key_version)).await?;
        if current {
            return Ok(false);
        }
        let key = self.key(id, record.key_version, false, record.key_bits).await?;
        self.blocking(move |inner| {
            let device = inner.header_device(&record)?;
            // Only a key that opens a keyslot is worth escrowing.
            inner.crypt.verify(&device, key.as_bytes())?;
            inner.escrow(&device, &record.instance_id, record.key_version, &key)
        })
        .await
    }

    /// Opens the volume with the key escrowed in its header, unsealed with the operator's
    /// `identity`, after the host lost the key (keystore or KEK gone). The key is checked against
    /// the keyslots, stored in the keystore under the current KEK (so the next start opens the
    /// volume as usual), and the volume is opened and mounted. A wrong identity, or a token that
    /// belongs elsewhere, changes nothing.
    pub async fn open_with_recovery_key(
        &self,
        id: &str,
        identity: RecoveryIdentity,
    ) -> Result<VolumeOutcome, VolumeError> {
        self.instance(id)?;
        let record = self.record(id)?;
        let version = record.key_version;
        let key = self
            .blocking(move |inner| {
                let instance = record.instance_id.as_str();
                let device = inner.header_device(&record)?;
                let json = inner
                    .crypt
                    .read_token(&device, TOKEN_TYPE)?
                    .ok_or_else(|| EscrowError::Missing { instance: instance.to_owned() })?;
                let key = EscrowToken::parse(instance, &json)?.open(&identity, instance, version)?;
                match inner.crypt.verify(&device, key.as_bytes()) {
                    Ok(_) => Ok(key),
                    Err(CryptError::WrongKey(_)) => {
                        Err(EscrowError::KeyRefusedByHeader { instance: instance.to_owned() }.into())
                    }
                    Err(e) => Err(e.into()),
                }
            })
            .await?;
        self.inner.keys.store(id, version, &key).await?;
        tracing::warn!(
            instance = id,
            "volume key version {version} recovered from its escrow with the operator's recovery key and stored under this host's key-encryption key"
        );
        self.open(id).await
    }
}

#[cfg(test)]
#[path = "recovery_open_tests.rs"]
mod tests;
