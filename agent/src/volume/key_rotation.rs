//! Key rotation: the keyslot of the current key version is replaced by one of the next version. The
//! header is backed up first; that backup still opens with the old key, so it is deleted once the new
//! key is proven and the old one refused. The data is not re-encrypted and the volume stays open.
//! With recovery recipients configured, the escrow in the header is replaced by the new key's
//! before the old keyslot is destroyed.

use super::VolumeError;
use super::crypt::CryptError;
use super::header_backups::remove_backup;
use super::service::{VolumeOutcome, Volumes};
use super::store::VolumeRecord;

impl Volumes {
    pub async fn rotate_key(&self, id: &str) -> Result<VolumeOutcome, VolumeError> {
        let record = self.record(id)?;
        let (v, bits) = (record.key_version, record.key_bits);
        let provider = self.inner.keys.name();
        let old = self.key(id, v, false, bits).await?;
        let new = self.key(id, v + 1, true, bits).await?;
        // Both keys would open the one keyslot, and destroying "the old one" would lock the volume.
        if old.as_bytes() == new.as_bytes() {
            return Err(VolumeError::RotationKeyUnchanged { provider, instance: id.to_owned(), from: v, to: v + 1 });
        }
        let backup = self.inner.rotation_backup_path(id, v);
        let (r, b) = (record.clone(), backup.clone());
        self.blocking(move |inner| {
            let device = inner.header_device(&r)?;
            // A backup left by an earlier attempt holds the same or an older header: replace it.
            remove_backup(&b)?;
            inner.crypt.header_backup(&device, &b)?;
            let new_slot = match inner.crypt.verify(&device, new.as_bytes()) {
                Ok(slot) => Some(slot),
                Err(CryptError::WrongKey(_)) => None,
                Err(e) => return Err(e.into()),
            };
            match inner.crypt.verify(&device, old.as_bytes()) {
                Ok(old_slot) => {
                    if new_slot.is_none() {
                        inner.crypt.add_keyslot(
                            &device,
                            old.as_bytes(),
                            new.as_bytes(),
                            &inner.settings.format.pbkdf,
                        )?;
                    }
                    // Before the old keyslot goes: the escrowed key opens a keyslot at every step.
                    inner.escrow(&device, &r.instance_id, v + 1, &new)?;
                    inner.crypt.destroy_keyslot(&device, old_slot)?;
                }
                // Only the new key opens it: an earlier rotation got this far and stopped.
                Err(CryptError::WrongKey(_)) if new_slot.is_some() => {
                    inner.escrow(&device, &r.instance_id, v + 1, &new)?;
                }
                Err(CryptError::WrongKey(_)) => {
                    return Err(VolumeError::WrongKey { provider, instance: r.instance_id.clone() });
                }
                Err(e) => return Err(e.into()),
            }
            inner.crypt.verify(&device, new.as_bytes())?;
            if inner.crypt.verify(&device, old.as_bytes()).is_ok() {
                return Err(VolumeError::OldKeyStillOpens { device, backup: b });
            }
            Ok(())
        })
        .await?;
        self.put_record(VolumeRecord { key_version: v + 1, ..record }).await?;
        self.inner.keys.forget(id, Some(v + 1)).await?;
        remove_backup(&backup)?;
        tracing::info!(instance = id, "volume key rotated to version {}", v + 1);
        Ok(VolumeOutcome::Rotated)
    }
}

#[cfg(test)]
#[path = "key_rotation_tests.rs"]
mod tests;
