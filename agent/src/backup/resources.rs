//! What the backup operations work with, owned by the service and handed to each job: the
//! destinations, the key wrapper, the settings and the in-flight records. A job gets this, never
//! the service, so no job module imports the service.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::BackupError;
use super::catalog::{self, BackupInfo};
use super::destination::{self, Destination};
use super::drill_store::DrillStore;
use super::inflight::InflightRecords;
use super::keys::BackupKeys;
use super::pipeline::EncodeSettings;
use super::settings::BackupConfig;

pub struct BackupResources {
    pub settings: BackupConfig,
    pub destinations: Vec<Arc<dyn Destination>>,
    pub keys: Arc<BackupKeys>,
    pub inflight: InflightRecords,
    /// The configured data roots: a restore opens its folder beneath one of them, inside the job.
    pub data_roots: Vec<PathBuf>,
    /// The restore drills' results.
    pub drills: DrillStore,
}

impl BackupResources {
    /// Opens the configured destinations (defaults below `state_dir`) and the in-flight records.
    pub fn open(
        settings: BackupConfig,
        state_dir: &Path,
        keys: BackupKeys,
        data_roots: Vec<PathBuf>,
    ) -> Result<Self, BackupError> {
        let destinations = settings
            .effective_destinations(state_dir)
            .iter()
            .map(|d| destination::open(d, settings.part_size, settings.max_retries))
            .collect::<Result<Vec<_>, _>>()?;
        let inflight = InflightRecords::open(state_dir)?;
        let drills = DrillStore::open(state_dir)?;
        Ok(Self { settings, destinations, keys: Arc::new(keys), inflight, data_roots, drills })
    }

    pub fn destination_names(&self) -> Vec<String> {
        self.destinations.iter().map(|d| d.name().to_owned()).collect()
    }

    /// The destination called `name`; a name taken from a manifest may no longer be configured.
    pub fn destination(&self, name: &str) -> Result<&Arc<dyn Destination>, BackupError> {
        self.destinations.iter().find(|d| d.name() == name).ok_or_else(|| BackupError::dest(name, "not configured"))
    }

    pub async fn list(&self, instance_id: &str) -> Vec<BackupInfo> {
        catalog::list(&self.destinations, instance_id).await
    }

    pub fn encode_settings(&self) -> EncodeSettings {
        EncodeSettings {
            zstd_level: self.settings.zstd_level,
            zstd_workers: self.settings.zstd_workers,
            chunk_size: self.settings.chunk_size,
            rate_limit: self.settings.rate_limit_bytes_per_sec,
        }
    }
}
