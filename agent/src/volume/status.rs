//! What GetVolume and ListVolumes report: the record, the LUKS2 header, the mapping and the mount
//! as they are now, and why the volume is not open if opening it failed.

use std::path::{Path, PathBuf};

use super::crypt::ActivationFlags;
use super::host::FsUsage;
use super::service::{Volumes, VolumesInner, mapper_path};
use super::store::{VolumeRecord, VolumeState};
use super::{VolumeError, mapper_name};
use crate::instances::Filesystem;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeStatus {
    pub instance_id: String,
    pub backing: PathBuf,
    pub mapper_path: PathBuf,
    pub active: bool,
    pub mounted: bool,
    pub cipher: String,
    pub key_bits: u32,
    pub sector_size: u32,
    pub size_bytes: u64,
    pub fs: Option<FsUsage>,
    pub filesystem: Filesystem,
    pub flags: Vec<String>,
    pub key_version: u32,
    /// Why the volume is not open, when opening it (at start-up or later) failed.
    pub last_error: Option<String>,
    /// The escrow in the LUKS2 header: the key version it holds and the recipients it is sealed
    /// to. `None`: no (well-formed) escrow token.
    pub escrow: Option<VolumeEscrow>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeEscrow {
    pub key_version: u32,
    pub recipients: Vec<String>,
}

impl Volumes {
    pub async fn get(&self, id: &str) -> Result<VolumeStatus, VolumeError> {
        let record = self.record(id)?;
        let last = self.inner.last_errors.lock().unwrap_or_else(|p| p.into_inner()).get(id).cloned();
        let data_dir = self.inner.registry.get(id).ok().map(|i| i.spec.data_dir);
        self.blocking(move |inner| inner.status(&record, data_dir.as_deref(), last)).await
    }

    pub async fn list(&self) -> Result<Vec<VolumeStatus>, VolumeError> {
        let mut out = Vec::new();
        for record in self.inner.store.list().into_iter().filter(|r| r.state == VolumeState::Ready) {
            out.push(self.get(&record.instance_id).await?);
        }
        Ok(out)
    }
}

impl VolumesInner {
    fn status(
        &self,
        record: &VolumeRecord,
        data_dir: Option<&Path>,
        last_error: Option<String>,
    ) -> Result<VolumeStatus, VolumeError> {
        let id = &record.instance_id;
        let active = self.crypt.active(&mapper_name(id))?;
        let mounted = match data_dir {
            Some(dir) => self.host.mounted_device(dir)?.as_deref() == Some(mapper_path(id).as_path()),
            None => false,
        };
        let header_device = self.header_device(record)?;
        let header = self.crypt.header_info(&header_device)?;
        let escrow = self
            .escrow_token(&header_device, id)?
            .filter(|t| t.instance_id == *id)
            .map(|t| VolumeEscrow { key_version: t.key_version, recipients: t.recipients });
        let fs = match (mounted, data_dir) {
            (true, Some(dir)) => Some(self.host.fs_usage(dir)?),
            _ => None,
        };
        let size_bytes = self.host.device_size(&header_device).unwrap_or(record.size_bytes);
        Ok(VolumeStatus {
            instance_id: id.clone(),
            backing: record.backing.clone(),
            mapper_path: mapper_path(id),
            active: active.is_some(),
            mounted,
            cipher: header.cipher,
            key_bits: header.key_bits,
            sector_size: header.sector_size,
            size_bytes,
            fs,
            filesystem: record.filesystem,
            flags: active.map(ActivationFlags::names).unwrap_or_default(),
            key_version: record.key_version,
            last_error,
            escrow,
        })
    }
}
