//! What the agent remembers about each volume, one `<state_dir>/volumes/<id>.json` per instance.
//! Never secrets: the key version is a number, the key lives with the key provider.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::fsutil;
use crate::instances::Filesystem;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VolumeState {
    /// Create started but did not finish: a retry may overwrite this backing.
    Creating,
    Ready,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub instance_id: String,
    /// The block device, or the agent-managed file.
    pub backing: PathBuf,
    /// True when `backing` is a file under `<state_dir>/volumes` that the agent attaches as a loop device.
    pub managed_file: bool,
    pub key_version: u32,
    pub key_bits: u32,
    pub filesystem: Filesystem,
    pub size_bytes: u64,
    pub state: VolumeState,
    #[serde(with = "crate::timefmt")]
    pub created: SystemTime,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("{context}: {source}")]
    Corrupt { context: String, source: serde_json::Error },
}

#[derive(Clone)]
pub struct VolumeStore {
    dir: PathBuf,
    records: Arc<Mutex<BTreeMap<String, VolumeRecord>>>,
}

impl VolumeStore {
    pub fn open(dir: PathBuf) -> Result<Self, StoreError> {
        fsutil::ensure_private_dir(&dir)
            .map_err(|source| StoreError::Io { context: format!("create {}", dir.display()), source })?;
        let mut records = BTreeMap::new();
        for path in fsutil::json_files(&dir)
            .map_err(|source| StoreError::Io { context: format!("list {}", dir.display()), source })?
        {
            let context = format!("load volume record {}", path.display());
            let bytes = std::fs::read(&path).map_err(|source| StoreError::Io { context: context.clone(), source })?;
            let record: VolumeRecord =
                serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt { context, source })?;
            records.insert(record.instance_id.clone(), record);
        }
        Ok(Self { dir, records: Arc::new(Mutex::new(records)) })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, VolumeRecord>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, id: &str) -> Option<VolumeRecord> {
        self.map().get(id).cloned()
    }

    pub fn list(&self) -> Vec<VolumeRecord> {
        self.map().values().cloned().collect()
    }

    /// Durable write first, then memory.
    pub fn put(&self, record: &VolumeRecord) -> Result<(), StoreError> {
        let path = self.dir.join(format!("{}.json", record.instance_id));
        let context = format!("write volume record {}", path.display());
        let bytes = serde_json::to_vec_pretty(record)
            .map_err(|source| StoreError::Corrupt { context: context.clone(), source })?;
        fsutil::atomic_write(&path, &bytes).map_err(|source| StoreError::Io { context, source })?;
        self.map().insert(record.instance_id.clone(), record.clone());
        Ok(())
    }

    pub fn remove(&self, id: &str) -> Result<(), StoreError> {
        let path = self.dir.join(format!("{id}.json"));
        fsutil::remove_durable(&path)
            .map_err(|source| StoreError::Io { context: format!("remove {}", path.display()), source })?;
        self.map().remove(id);
        Ok(())
    }
}
