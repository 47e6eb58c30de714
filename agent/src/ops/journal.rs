//! The durable operation journal: one `<operation id>.json` per operation in a [`JsonStore`].
//! A record on disk is the truth after a crash.

use std::borrow::Cow;
use std::path::Path;

use super::OpsError;
use super::model::OperationRecord;
use crate::json_store::{JsonRecord, JsonStore, JsonStoreError, Loaded, OnCorrupt};

/// An operation file is `<id>.json` and must hold an operation id as the agent makes them.
impl JsonRecord for OperationRecord {
    const KIND: &'static str = "operation record";

    fn key(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.id)
    }

    fn check(&self) -> Result<(), String> {
        crate::ids::operation_id(&self.id).map_err(|e| e.to_string())
    }
}

#[derive(Debug, Clone)]
pub struct Journal {
    records: JsonStore<OperationRecord>,
}

impl Journal {
    /// Opens (creating) the journal folder and loads every record in it; also returns the files
    /// that were quarantined.
    pub fn open(dir: &Path) -> Result<(Self, Loaded<OperationRecord>), OpsError> {
        // A corrupt operation record is quarantined (moved aside, logged) and the agent starts with
        // the rest: a record is history and the answer to a retried request_id, so losing one means
        // at worst that a retry starts the work again, and an interrupted job's leftovers wait for
        // the operator, who has the moved file. Refusing to start would take every instance's API
        // down for one record.
        let (records, loaded) = JsonStore::open(dir.to_path_buf(), OnCorrupt::Quarantine).map_err(journal_error)?;
        Ok((Self { records }, loaded))
    }

    /// Blocking: call from `spawn_blocking` or at start-up.
    pub fn save(&self, record: &OperationRecord) -> Result<(), OpsError> {
        self.records.put(record).map_err(journal_error)
    }

    pub fn remove(&self, id: &str) -> Result<(), OpsError> {
        self.records.remove(id).map_err(journal_error)
    }
}

fn journal_error(e: JsonStoreError) -> OpsError {
    OpsError::journal("operations journal".into(), std::io::Error::other(e))
}
