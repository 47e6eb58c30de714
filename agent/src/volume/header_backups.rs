//! LUKS2 header backups under `<state_dir>/volumes/headers`, named `<id>.<what>.luks`. A backup
//! opens with the key of the time it was taken, so it is key material: the rotation deletes its own
//! once the new key is proven, and destroy deletes every backup of the instance.

use std::path::PathBuf;
use std::time::SystemTime;

use super::VolumeError;
use super::host::HostError;
use super::service::{Volumes, VolumesInner};

impl Volumes {
    /// Writes a header backup (BackupVolumeHeader) and returns its path. Treat the file like the key.
    pub async fn backup_header(&self, id: &str) -> Result<PathBuf, VolumeError> {
        let record = self.record(id)?;
        let stamp = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        let path = self.inner.headers_dir.join(format!("{id}.{stamp}.luks"));
        let p = path.clone();
        self.blocking(move |inner| Ok(inner.crypt.header_backup(&inner.header_device(&record)?, &p)?)).await?;
        Ok(path)
    }
}

impl VolumesInner {
    /// The backup a key rotation away from `version` takes before it touches the header.
    pub(super) fn rotation_backup_path(&self, id: &str, version: u32) -> PathBuf {
        self.headers_dir.join(format!("{id}.rotate-v{version}.luks"))
    }

    pub(super) fn remove_header_backups(&self, id: &str) -> Result<(), VolumeError> {
        let Ok(entries) = std::fs::read_dir(&self.headers_dir) else { return Ok(()) };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.strip_prefix(id).is_some_and(|rest| rest.starts_with('.')) {
                remove_backup(&entry.path())?;
            }
        }
        Ok(())
    }
}

pub(super) fn remove_backup(path: &std::path::Path) -> Result<(), VolumeError> {
    crate::fsutil::remove_durable(path).map_err(|e| HostError::io(format!("remove {}", path.display()), e))?;
    Ok(())
}
