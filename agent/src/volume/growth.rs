//! Growing a volume online: the backing (a managed file; a block device must have been grown by the
//! platform already), then the dm-crypt mapping, then the mounted filesystem. Shrinking is refused.

use super::service::{VolumeOutcome, Volumes, mapper_path};
use super::store::VolumeRecord;
use super::{VolumeError, mapper_name};

impl Volumes {
    pub async fn grow(&self, id: &str, new_size: u64) -> Result<VolumeOutcome, VolumeError> {
        let instance = self.instance(id)?;
        let record = self.record(id)?;
        if new_size < record.size_bytes {
            return Err(VolumeError::ShrinkRefused {
                instance: id.to_owned(),
                current: record.size_bytes,
                requested: new_size,
            });
        }
        if new_size == record.size_bytes {
            return Ok(VolumeOutcome::Unchanged);
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
            return Err(VolumeError::NotOpen(id.to_owned()));
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
                    return Err(VolumeError::DeviceTooSmall { device, size, requested: new_size });
                }
            }
            inner.crypt.resize(&device, &mapper_name(&r.instance_id), key.as_bytes())?;
            inner.host.grow_fs(&mapper, &data_dir, r.filesystem)?;
            Ok(())
        })
        .await?;
        self.put_record(VolumeRecord { size_bytes: new_size, ..record }).await?;
        tracing::info!(instance = id, "volume grown to {new_size} bytes");
        Ok(VolumeOutcome::Grown)
    }
}

#[cfg(test)]
#[path = "growth_tests.rs"]
mod tests;
