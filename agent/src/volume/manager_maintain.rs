//! Changes to a volume that exists: online growth, key rotation, header backups.

use std::path::PathBuf;
use std::time::SystemTime;

use super::crypt::CryptError;
use super::manager::{Done, Volumes, mapper_path};
use super::store::VolumeRecord;
use super::{VolumeError, mapper_name};

impl Volumes {
    /// Grows the backing (a managed file; a block device must have been grown already), then the
    /// dm-crypt mapping, then the mounted filesystem, all online. Shrinking is refused.
    pub async fn grow(&self, id: &str, new_size: u64) -> Result<Done, VolumeError> {
        let instance = self.instance(id)?;
        let record = self.record(id)?;
        if new_size < record.size_bytes {
            return Err(VolumeError::FailedPrecondition(format!(
                "the volume of {id} is {} bytes; shrinking to {new_size} is not supported (filesystems and data would be cut)",
                record.size_bytes
            )));
        }
        if new_size == record.size_bytes {
            return Ok(Done::Unchanged);
        }
        let mapper = mapper_path(id);
        let (m, dir) = (mapper.clone(), instance.spec.data_dir.clone());
        let open = self
            .blocking(move |inner| {
                Ok(inner.crypt.active(&mapper_name(&instance.id))?.is_some()
                    && inner.host.mounted_device(&dir)?.as_deref() == Some(m.as_path()))
            })
            .await?;
        if !open {
            return Err(VolumeError::FailedPrecondition(format!(
                "the volume of {id} is not open; growing is online: open it first"
            )));
        }
        let key = self.key(id, record.key_version, false, record.key_bits).await?;
        let r = record.clone();
        let data_dir = self.instance(id)?.spec.data_dir;
        self.blocking(move |inner| {
            let device = inner.device(&r)?;
            if r.managed_file {
                inner.host.ensure_sparse_file(&r.backing, new_size)?;
                inner.host.refresh_loop(&device)?;
            } else {
                let size = inner.host.device_size(&device)?;
                if size < new_size {
                    return Err(VolumeError::FailedPrecondition(format!(
                        "device {} is {size} bytes, less than the requested {new_size}; grow the disk first",
                        device.display()
                    )));
                }
            }
            inner.crypt.resize(&device, &mapper_name(&r.instance_id), key.as_bytes())?;
            inner.host.grow_fs(&mapper, &data_dir, r.filesystem)?;
            Ok(())
        })
        .await?;
        let grown = VolumeRecord { size_bytes: new_size, ..record };
        self.blocking(move |inner| Ok(inner.store.put(&grown)?)).await?;
        tracing::info!(instance = id, "volume grown to {new_size} bytes");
        Ok(Done::Grown)
    }

    /// Replaces the keyslot of the current key with one of a new key version. The header is backed
    /// up first; that backup still opens with the old key, so it is deleted once the new key is
    /// proven and the old one refused. The volume stays open throughout.
    pub async fn rotate_key(&self, id: &str) -> Result<Done, VolumeError> {
        let record = self.record(id)?;
        let (v, bits) = (record.key_version, record.key_bits);
        let old = self.key(id, v, false, bits).await?;
        let new = self.key(id, v + 1, true, bits).await?;
        let backup = self.inner.headers_dir.join(format!("{id}.rotate-v{v}.luks"));
        let (r, b) = (record.clone(), backup.clone());
        let provider = self.inner.keys.name();
        self.blocking(move |inner| {
            let device = inner.header_device(&r)?;
            let _ = std::fs::remove_file(&b);
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
                    inner.crypt.destroy_keyslot(&device, old_slot)?;
                }
                // Only the new key opens it: an earlier rotation got this far and stopped.
                Err(CryptError::WrongKey(_)) if new_slot.is_some() => {}
                Err(CryptError::WrongKey(_)) => {
                    return Err(VolumeError::WrongKey { provider, instance: r.instance_id.clone() });
                }
                Err(e) => return Err(e.into()),
            }
            inner.crypt.verify(&device, new.as_bytes())?;
            if inner.crypt.verify(&device, old.as_bytes()).is_ok() {
                return Err(VolumeError::FailedPrecondition(format!(
                    "after rotation the old key still opens {}; the header backup is at {}",
                    device.display(),
                    b.display()
                )));
            }
            Ok(())
        })
        .await?;
        let rotated = VolumeRecord { key_version: v + 1, ..record };
        self.blocking(move |inner| Ok(inner.store.put(&rotated)?)).await?;
        self.inner.keys.forget(id, Some(v + 1)).await?;
        crate::fsutil::remove_durable(&backup)
            .map_err(|e| super::host::HostError::io(format!("remove {}", backup.display()), e))?;
        tracing::info!(instance = id, "volume key rotated to version {}", v + 1);
        Ok(Done::Rotated)
    }

    /// Writes a LUKS2 header backup under `<state_dir>/volumes/headers`. The file opens with the
    /// key of the time it was taken: treat it like the key.
    pub async fn backup_header(&self, id: &str) -> Result<PathBuf, VolumeError> {
        let record = self.record(id)?;
        let stamp = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        let path = self.inner.headers_dir.join(format!("{id}.{stamp}.luks"));
        let p = path.clone();
        self.blocking(move |inner| Ok(inner.crypt.header_backup(&inner.header_device(&record)?, &p)?)).await?;
        Ok(path)
    }
}
