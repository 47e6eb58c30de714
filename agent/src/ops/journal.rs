//! The durable operation journal: one JSON file per operation, written atomically with fsync.
//! A record on disk is the truth after a crash.

use std::path::{Path, PathBuf};

use super::OpsError;
use super::model::OperationRecord;
use crate::fsutil;

#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    /// Opens (creating) the journal folder and loads every record in it. A file that cannot be read
    /// as a record is moved aside as `*.corrupt` and reported, never dropped silently.
    pub fn open(dir: &Path) -> Result<(Self, Vec<OperationRecord>), OpsError> {
        fsutil::ensure_private_dir(dir)
            .map_err(|e| OpsError::journal(format!("create journal folder {}", dir.display()), e))?;
        let files = fsutil::json_files(dir)
            .map_err(|e| OpsError::journal(format!("list journal folder {}", dir.display()), e))?;
        let mut records = Vec::with_capacity(files.len());
        for path in files {
            let bytes = std::fs::read(&path).map_err(|e| OpsError::journal(format!("read {}", path.display()), e))?;
            match serde_json::from_slice::<OperationRecord>(&bytes) {
                Ok(r) => records.push(r),
                Err(e) => {
                    let aside = path.with_extension("corrupt");
                    tracing::error!(
                        "journal record {} is unreadable ({e}); moved to {}",
                        path.display(),
                        aside.display()
                    );
                    std::fs::rename(&path, &aside)
                        .map_err(|e| OpsError::journal(format!("move aside {}", path.display()), e))?;
                }
            }
        }
        Ok((Self { dir: dir.to_path_buf() }, records))
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Blocking: call from `spawn_blocking` or at start-up.
    pub fn save(&self, record: &OperationRecord) -> Result<(), OpsError> {
        let bytes = serde_json::to_vec_pretty(record)
            .map_err(|e| OpsError::journal(format!("encode {}", record.id), e.into()))?;
        fsutil::atomic_write(&self.path(&record.id), &bytes)
            .map_err(|e| OpsError::journal(format!("write journal record {}", record.id), e))
    }

    pub fn remove(&self, id: &str) -> Result<(), OpsError> {
        fsutil::remove_durable(&self.path(id)).map_err(|e| OpsError::journal(format!("remove journal record {id}"), e))
    }
}
