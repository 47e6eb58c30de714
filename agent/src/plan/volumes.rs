//! What a plan change needs of the instance's volume, behind a narrow trait: its size, what is
//! used on it, its dm-crypt mapping while open, and growth, which is the Volumes service's own
//! (`Volumes::grow`, the code GrowVolume runs), never a copy.

use std::path::PathBuf;

use super::PlanError;
use crate::volume::{VolumeError, VolumeOutcome, Volumes};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeView {
    pub size_bytes: u64,
    /// Bytes in use on the mounted filesystem; `None` when it is not mounted.
    pub used_bytes: Option<u64>,
    /// The dm-crypt mapping while the volume is open.
    pub mapping: Option<PathBuf>,
}

#[async_trait::async_trait]
pub trait PlanVolumes: Send + Sync {
    /// `None`: the instance has no volume.
    async fn view(&self, id: &str) -> Result<Option<VolumeView>, PlanError>;
    async fn grow(&self, id: &str, size_bytes: u64) -> Result<VolumeOutcome, PlanError>;
}

#[async_trait::async_trait]
impl PlanVolumes for Volumes {
    async fn view(&self, id: &str) -> Result<Option<VolumeView>, PlanError> {
        match self.get(id).await {
            Ok(s) => Ok(Some(VolumeView {
                size_bytes: s.size_bytes,
                used_bytes: s.fs.filter(|_| s.mounted).map(|fs| fs.used_bytes),
                mapping: s.active.then_some(s.mapper_path),
            })),
            Err(VolumeError::NoVolume(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn grow(&self, id: &str, size_bytes: u64) -> Result<VolumeOutcome, PlanError> {
        Ok(Volumes::grow(self, id, size_bytes).await?)
    }
}
