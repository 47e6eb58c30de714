//! Crash-cleanup records of running backups, one JSON file per backup in
//! `<state_dir>/backups/inflight/<backup>.json`.
//!
//! Policy:
//! - A backup writes its record as soon as each destination's upload is open (the S3 upload id,
//!   the temporary file), before any data flows: whatever a crash can leave behind is named in a
//!   record first.
//! - A backup that ends, well or not, removes its record once its leftovers are gone; a backup
//!   only exists once its record is gone and a manifest is written.
//! - At start-up every record left is a backup that was cut short. Its manifests (a crash may come
//!   between writing them and removing the record; the operation never reported success) and its
//!   data objects are deleted, its uploads aborted, then the record is removed. A record whose
//!   cleaning failed on some destination is kept and retried at the next start.
//! - The records are a [`JsonStore`] with the `Drop` policy: an unreadable record is removed with a
//!   warning, since nothing can be done with it (what it named cannot be found again), and it must
//!   not stop the agent or the cleaning of the others.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use super::BackupError;
use super::destination::Destination;
use super::manifest::manifest_key;
use crate::json_store::{JsonRecord, JsonStore, OnCorrupt};

/// The uploads one running backup has open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InflightBackup {
    pub instance_id: String,
    pub backup_id: String,
    pub uploads: Vec<InflightUpload>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InflightUpload {
    pub destination: String,
    pub key: String,
    /// What `Destination::abort_leftover` needs (S3 upload id, temporary file name).
    pub handle: String,
}

impl JsonRecord for InflightBackup {
    const KIND: &'static str = "in-flight backup record";

    fn key(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.backup_id)
    }
}

impl InflightBackup {
    pub fn new(instance_id: &str, backup_id: &str) -> Self {
        Self { instance_id: instance_id.to_owned(), backup_id: backup_id.to_owned(), uploads: Vec::new() }
    }
}

/// The folder of in-flight records.
#[derive(Debug, Clone)]
pub struct InflightRecords {
    store: JsonStore<InflightBackup>,
}

impl InflightRecords {
    /// Opens (creating, private) `<state_dir>/backups/inflight`; unreadable records are dropped.
    pub fn open(state_dir: &Path) -> Result<Self, BackupError> {
        let (store, _) = JsonStore::open(state_dir.join("backups/inflight"), OnCorrupt::Drop)?;
        Ok(Self { store })
    }

    /// Writes (atomically replaces) the record of `backup`.
    pub fn save(&self, backup: &InflightBackup) -> Result<(), BackupError> {
        Ok(self.store.put(backup)?)
    }

    /// The backup ended and nothing of it is left to clean.
    pub fn remove(&self, backup_id: &str) {
        if let Err(e) = self.store.remove(backup_id) {
            tracing::warn!("remove in-flight record of backup {backup_id}: {e:#}");
        }
    }

    /// Cleans every backup a stop or crash cut short; returns the backup ids fully cleaned.
    pub async fn clean_all(&self, destinations: &[Arc<dyn Destination>]) -> Vec<String> {
        let records = match JsonStore::<InflightBackup>::open(self.store.dir().to_owned(), OnCorrupt::Drop) {
            Ok((_, loaded)) => loaded.records,
            Err(e) => {
                tracing::error!("read the in-flight backup records: {e:#}; their leftovers stay until the next start");
                return Vec::new();
            }
        };
        let mut cleaned = Vec::new();
        for record in records {
            if self.clean(destinations, &record).await {
                cleaned.push(record.backup_id);
            }
        }
        cleaned
    }

    /// Deletes the manifests and aborts the uploads of `backup`; true (and the record removed)
    /// when every step succeeded.
    pub async fn clean(&self, destinations: &[Arc<dyn Destination>], backup: &InflightBackup) -> bool {
        let mut ok = true;
        let mut warn = |e: BackupError| {
            tracing::warn!("clean interrupted backup {}: {e:#}", backup.backup_id);
            ok = false;
        };
        for dest in destinations {
            if let Err(e) = dest.delete(&manifest_key(&backup.instance_id, &backup.backup_id)).await {
                warn(e);
            }
        }
        for up in &backup.uploads {
            let Some(dest) = destinations.iter().find(|d| d.name() == up.destination) else { continue };
            for result in [dest.abort_leftover(&up.key, &up.handle).await, dest.delete(&up.key).await] {
                if let Err(e) = result {
                    warn(e);
                }
            }
        }
        if ok {
            self.remove(&backup.backup_id);
            tracing::info!(backup = %backup.backup_id, instance = %backup.instance_id, "cleaned up interrupted backup");
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::destination::dir::DirDestination;
    use crate::backup::manifest::data_key;
    use bytes::Bytes;
    use std::path::PathBuf;

    fn destinations(root: &Path) -> Vec<Arc<dyn Destination>> {
        ["az1", "az2"]
            .iter()
            .map(|az| Arc::new(DirDestination::new(az, &root.join(az))) as Arc<dyn Destination>)
            .collect()
    }

    /// Opens an upload on every destination, records it, writes a chunk, and "crashes": the
    /// uploads are dropped without finish or abort, one manifest was already written.
    async fn crash_mid_backup(records: &InflightRecords, dests: &[Arc<dyn Destination>], backup_id: &str) {
        let key = data_key("i1", backup_id);
        let mut record = InflightBackup::new("i1", backup_id);
        let mut uploads = Vec::new();
        for dest in dests {
            let up = dest.create(&key).await.unwrap();
            record.uploads.push(InflightUpload {
                destination: dest.name().into(),
                key: key.clone(),
                handle: up.handle(),
            });
            records.save(&record).unwrap();
            uploads.push(up);
        }
        for up in &mut uploads {
            up.write(Bytes::from_static(b"half a backup")).await.unwrap();
        }
        dests[0].put(&manifest_key("i1", backup_id), Bytes::from_static(b"{}")).await.unwrap();
        drop(uploads);
    }

    fn files_below(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if entry.file_type().unwrap().is_dir() { stack.push(entry.path()) } else { out.push(entry.path()) }
            }
        }
        out
    }

    #[tokio::test]
    async fn write_crash_clean_leaves_nothing_and_removes_the_record() {
        let state = tempfile::tempdir().unwrap();
        let dests = destinations(&state.path().join("dest"));
        let records = InflightRecords::open(state.path()).unwrap();
        crash_mid_backup(&records, &dests, "b00000000000000000001").await;
        assert!(!files_below(&state.path().join("dest")).is_empty(), "the crash left partial files");

        // The next start: a fresh view of the same folder.
        let restarted = InflightRecords::open(state.path()).unwrap();
        assert_eq!(restarted.clean_all(&dests).await, vec!["b00000000000000000001".to_owned()]);
        assert_eq!(files_below(&state.path().join("dest")), Vec::<PathBuf>::new());
        assert_eq!(files_below(&state.path().join("backups/inflight")), Vec::<PathBuf>::new());
        assert!(restarted.clean_all(&dests).await.is_empty(), "nothing is left to clean twice");
    }

    #[tokio::test]
    async fn a_record_whose_cleaning_fails_is_kept_for_the_next_start() {
        let state = tempfile::tempdir().unwrap();
        let dests = destinations(&state.path().join("dest"));
        let records = InflightRecords::open(state.path()).unwrap();
        crash_mid_backup(&records, &dests, "b00000000000000000002").await;
        // az2 cannot be cleaned: its temporary file became a folder that is not empty.
        let handle = files_below(&state.path().join("dest/az2")).pop().unwrap();
        std::fs::remove_file(&handle).unwrap();
        std::fs::create_dir_all(handle.join("stuck")).unwrap();
        assert!(records.clean_all(&dests).await.is_empty());
        assert!(records.store.file("b00000000000000000002").unwrap().exists(), "the record stays for the next start");
        // Once the destination is fixed, the next start cleans it.
        std::fs::remove_dir_all(&handle).unwrap();
        assert_eq!(records.clean_all(&dests).await, vec!["b00000000000000000002".to_owned()]);
        assert!(!records.store.file("b00000000000000000002").unwrap().exists());
    }

    #[tokio::test]
    async fn an_unreadable_record_is_removed_and_others_still_cleaned() {
        let state = tempfile::tempdir().unwrap();
        let dests = destinations(&state.path().join("dest"));
        let records = InflightRecords::open(state.path()).unwrap();
        std::fs::write(records.store.file("b0000000000000000000f").unwrap(), b"not json").unwrap();
        crash_mid_backup(&records, &dests, "b00000000000000000003").await;
        assert_eq!(records.clean_all(&dests).await, vec!["b00000000000000000003".to_owned()]);
        assert!(!records.store.file("b0000000000000000000f").unwrap().exists());
    }
}
