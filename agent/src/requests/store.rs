//! The ledger on disk: one small JSON file per entry, named by the entry's key (a hash).
//! Blocking: called at start-up and from `spawn_blocking`.

use prost::Message;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{LedgerError, entry_key};
use crate::fsutil;

/// One successful call: what was asked (as a digest) and what was answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Entry {
    pub rpc: String,
    pub request_id: String,
    /// SHA-256 of the encoded request, hex.
    pub request_digest: String,
    #[serde(with = "crate::timefmt")]
    pub created: SystemTime,
    /// The encoded response, hex.
    pub response: String,
}

impl Entry {
    pub fn new(
        rpc: &str,
        request_id: &str,
        request_digest: String,
        response: &impl Message,
        created: SystemTime,
    ) -> Self {
        let response = crate::hex::encode(&response.encode_to_vec());
        Self { rpc: rpc.to_owned(), request_id: request_id.to_owned(), request_digest, created, response }
    }

    /// The stored response for a repeat of the request whose digest is `digest`.
    pub fn replay<Resp: Message + Default>(&self, digest: &str) -> Result<Resp, LedgerError> {
        if self.request_digest != digest {
            return Err(LedgerError::RequestIdReused { rpc: self.rpc.clone(), request_id: self.request_id.clone() });
        }
        let corrupt = |reason: String| LedgerError::Corrupt {
            rpc: self.rpc.clone(),
            request_id: self.request_id.clone(),
            reason,
        };
        let bytes = crate::hex::decode(&self.response).ok_or_else(|| corrupt("not hex".into()))?;
        Resp::decode(bytes.as_slice()).map_err(|e| corrupt(e.to_string()))
    }
}

pub(super) struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    pub fn load(&self) -> Result<HashMap<String, Entry>, LedgerError> {
        let io = |context: String| move |source| LedgerError::Io { context, source };
        fsutil::ensure_private_dir(&self.dir).map_err(io(format!("create {}", self.dir.display())))?;
        let mut entries = HashMap::new();
        for path in fsutil::json_files(&self.dir).map_err(io(format!("list {}", self.dir.display())))? {
            match read_entry(&path) {
                Ok(entry) => {
                    entries.insert(entry_key(&entry.rpc, &entry.request_id), entry);
                }
                // Losing one replay record is better than refusing to start: the retried call
                // then runs again, as it would without the ledger.
                Err(reason) => {
                    tracing::warn!("drop unreadable request record {}: {reason}", path.display());
                    fsutil::remove_durable(&path).map_err(io(format!("remove {}", path.display())))?;
                }
            }
        }
        Ok(entries)
    }

    pub fn save(&self, key: &str, entry: &Entry) -> Result<(), LedgerError> {
        let path = self.path(key);
        let bytes = serde_json::to_vec(entry)
            .map_err(|e| LedgerError::Io { context: format!("encode {}", path.display()), source: e.into() })?;
        fsutil::atomic_write(&path, &bytes)
            .map_err(|source| LedgerError::Io { context: format!("write {}", path.display()), source })
    }

    pub fn remove(&self, key: &str) -> Result<(), LedgerError> {
        let path = self.path(key);
        fsutil::remove_durable(&path)
            .map_err(|source| LedgerError::Io { context: format!("remove {}", path.display()), source })
    }
}

/// An entry whose file name is not its key would never be found or pruned: refused like a torn one.
fn read_entry(path: &Path) -> Result<Entry, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let entry: Entry = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    if stem != entry_key(&entry.rpc, &entry.request_id) {
        return Err("its name is not the hash of its RPC and request_id".into());
    }
    Ok(entry)
}
