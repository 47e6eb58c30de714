//! Creating and destroying a volume. Create checks the backing before it touches anything (allowed
//! device prefix, not another instance's volume, not partitioned, held or mounted, no signature
//! unless forced), formats LUKS2, makes
//! the filesystem and mounts it; a failure undoes what was done and keeps both errors. Destroy erases
//! every keyslot, so the data cannot be read again by anyone.

use std::path::Path;
use std::time::SystemTime;

use super::host::DeviceUser;
use super::key::VolumeKey;
use super::service::{VolumeOutcome, Volumes, VolumesInner, mapper_path};
use super::store::{VolumeRecord, VolumeState};
use super::{VolumeError, mapper_name};
use crate::ids::{self, InvalidField};
use crate::instances::Instance;

impl Volumes {
    /// Formats the instance's device (or a new sparse file), makes the filesystem and mounts it at
    /// the instance's data_dir, owned by its OS user. A volume that exists is opened instead.
    pub async fn create(&self, id: &str, force: bool) -> Result<VolumeOutcome, VolumeError> {
        let instance = self.instance(id)?;
        let previous = self.inner.store.get(id);
        if previous.as_ref().is_some_and(|r| r.state == VolumeState::Ready) {
            self.open(id).await?;
            return Ok(VolumeOutcome::AlreadyExists);
        }
        let spec = instance.spec.volume.clone();
        let (backing, managed_file) = match &spec.device {
            Some(device) => (device.clone(), false),
            None => (self.inner.store.dir().join(format!("{id}.img")), true),
        };
        // A create that was interrupted on this same backing may redo its own work.
        let resuming = previous.is_some_and(|r| r.backing == backing);
        let (check_id, check_backing) = (id.to_owned(), backing.clone());
        let size_bytes = self
            .blocking(move |inner| inner.check_backing(&check_id, &check_backing, managed_file, force || resuming))
            .await?
            .unwrap_or(spec.size_bytes);
        let record = VolumeRecord {
            instance_id: id.to_owned(),
            backing,
            managed_file,
            key_version: 1,
            key_bits: self.inner.settings.format.key_bits,
            filesystem: spec.filesystem,
            size_bytes,
            state: VolumeState::Creating,
            created: SystemTime::now(),
        };
        self.put_record(record.clone()).await?;
        let key = self.key(id, 1, true, record.key_bits).await?;
        let (r, i) = (record.clone(), instance.clone());
        let result = self.blocking(move |inner| inner.format_and_mount(&i, &r, &key)).await;
        if let Err(error) = result {
            let r = record.clone();
            let rollback = self.blocking(move |inner| inner.teardown(&r).map(drop)).await;
            return Err(match rollback {
                Ok(()) => error,
                Err(e) => VolumeError::RolledBack { error: Box::new(error), rollback: Box::new(e) },
            });
        }
        self.put_record(VolumeRecord { state: VolumeState::Ready, ..record }).await?;
        self.set_last_error(id, None);
        tracing::info!(instance = id, "volume created and mounted at {}", instance.spec.data_dir.display());
        Ok(VolumeOutcome::Created)
    }

    /// Closes the volume, destroys every keyslot, forgets the keys and header backups and, for a
    /// managed file, deletes it. The data cannot be read afterwards by anyone. The API has the
    /// caller confirm the instance id before it gets here.
    pub async fn destroy(&self, id: &str) -> Result<VolumeOutcome, VolumeError> {
        ids::instance_id("instance_id", id)?;
        // Without its record, "no volume" would forget the keys of a volume that still holds data.
        self.check_not_quarantined(id)?;
        let Some(record) = self.inner.store.get(id) else {
            self.inner.keys.forget(id, None).await?;
            return Ok(VolumeOutcome::AlreadyDestroyed);
        };
        self.blocking(move |inner| {
            inner.teardown(&record)?;
            if inner.crypt.is_luks(&record.backing).unwrap_or(false) {
                inner.crypt.erase_keyslots(&record.backing)?;
            }
            if record.managed_file {
                inner.host.remove_file(&record.backing)?;
            }
            inner.remove_header_backups(&record.instance_id)
        })
        .await?;
        self.inner.keys.forget(id, None).await?;
        let owned = id.to_owned();
        self.blocking(move |inner| Ok(inner.store.remove(&owned)?)).await?;
        self.set_last_error(id, None);
        tracing::warn!(instance = id, "volume destroyed: keyslots erased, keys forgotten");
        Ok(VolumeOutcome::Destroyed)
    }
}

impl VolumesInner {
    /// Checks a backing before create. Returns the device size for a block device.
    fn check_backing(
        &self,
        id: &str,
        backing: &Path,
        managed_file: bool,
        overwrite: bool,
    ) -> Result<Option<u64>, VolumeError> {
        if !managed_file {
            let text = backing.to_string_lossy();
            let allowed = self.settings.device_prefixes.iter().any(|p| {
                let p = p.to_string_lossy();
                text.len() > p.len() && text.starts_with(p.as_ref())
            });
            if !allowed {
                return Err(InvalidField::new(
                    "spec.volume.device",
                    format!("{text} is outside the allowed instances.device_prefixes; nothing was touched"),
                )
                .into());
            }
        }
        let canonical = std::fs::canonicalize(backing).unwrap_or_else(|_| backing.to_path_buf());
        for other in self.store.list().into_iter().filter(|r| r.instance_id != id) {
            let theirs = std::fs::canonicalize(&other.backing).unwrap_or_else(|_| other.backing.clone());
            if other.backing == backing || theirs == canonical {
                return Err(VolumeError::BackingInUse { backing: backing.to_path_buf(), owner: other.instance_id });
            }
        }
        let size = match self.host.device_size(backing) {
            Ok(size) => size,
            Err(_) if managed_file => return Ok(None),
            Err(source) => return Err(VolumeError::DeviceUnavailable { device: backing.to_path_buf(), source }),
        };
        if !managed_file {
            // Our own mapping, left by an interrupted create on this device, is the one allowed
            // holder: format_and_mount replaces it.
            let own = mapper_name(id);
            let users: Vec<_> = self
                .host
                .device_users(backing)?
                .into_iter()
                .filter(|u| !matches!(u, DeviceUser::Holder { dm_name: Some(n), .. } if *n == own))
                .collect();
            if !users.is_empty() {
                return Err(VolumeError::DeviceInUse { device: backing.to_path_buf(), users });
            }
        }
        if !overwrite {
            let signature = if self.crypt.is_luks(backing).unwrap_or(false) {
                Some("crypto_LUKS".to_owned())
            } else {
                self.host.signature(backing)?
            };
            if let Some(signature) = signature {
                return Err(VolumeError::SignaturePresent { device: backing.to_path_buf(), signature });
            }
        }
        Ok((!managed_file).then_some(size))
    }

    fn format_and_mount(&self, instance: &Instance, record: &VolumeRecord, key: &VolumeKey) -> Result<(), VolumeError> {
        if record.managed_file {
            self.host.ensure_sparse_file(&record.backing, record.size_bytes)?;
        }
        let device = self.device(record)?;
        let mut params = self.settings.format.clone();
        params.label = mapper_name(&record.instance_id).chars().take(47).collect();
        params.key_bits = record.key_bits;
        self.crypt.format(&device, &params, key.as_bytes())?;
        self.escrow(&device, &record.instance_id, record.key_version, key)?;
        let name = mapper_name(&record.instance_id);
        if self.crypt.active(&name)?.is_some() {
            // Left by an interrupted create on this backing: its mapping has the old header's key.
            self.crypt.deactivate(&name)?;
        }
        self.crypt.activate(&device, &name, key.as_bytes(), self.settings.flags)?;
        self.host.mkfs(&mapper_path(&record.instance_id), record.filesystem, "dbagent")?;
        self.mount(instance, record.filesystem, Some(&instance.spec.os_user))?;
        Ok(())
    }
}

#[cfg(test)]
#[path = "provisioning_tests.rs"]
mod tests;
