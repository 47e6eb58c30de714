//! The request ledger: makes the mutating calls that return a plain resource (not an `Operation`)
//! idempotent by `request_id`, as the operations engine does for long work; docs/api.md lists which calls replay.
//! A successful call's encoded response is kept under (RPC, request_id) with a digest of its request,
//! so a client retrying after a lost reply gets the same answer, also after an agent restart, instead
//! of the work being done twice (a second RemoveInstance would say NOT_FOUND).

mod entry;
#[cfg(test)]
mod tests;

use prost::Message;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use thiserror::Error;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::ids::{self, InvalidField};
use crate::json_store::{JsonStore, JsonStoreError, OnCorrupt};
use entry::Entry;

/// Enough for every retry window we expect while bounding memory and start-up time.
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, Copy)]
pub struct LedgerSettings {
    /// How long a response is replayed; the daemon uses `operations.retention_hours`.
    pub retention: Duration,
    /// Beyond this many entries the oldest are dropped first.
    pub max_entries: usize,
}

#[derive(Debug, Error)]
pub enum LedgerError {
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    #[error("request_id {request_id:?} was already used for a different {rpc} request; choose a new request_id")]
    RequestIdReused { rpc: String, request_id: String },
    #[error("the stored {rpc} response for request_id {request_id:?} is unreadable: {reason}")]
    Corrupt { rpc: String, request_id: String, reason: String },
    #[error(transparent)]
    Store(#[from] JsonStoreError),
}

/// Cheap to clone; clones share one ledger.
#[derive(Clone)]
pub struct RequestLedger {
    inner: Arc<Inner>,
}

struct Inner {
    /// Blocking: used at start-up and from `spawn_blocking`.
    store: JsonStore<Entry>,
    settings: LedgerSettings,
    entries: Mutex<HashMap<String, Entry>>,
    /// One lock per key while a call runs, so simultaneous identical calls do the work once.
    /// Removed when released, unlike `ResourceLocks`: request ids are unbounded.
    running: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

impl RequestLedger {
    /// Loads the entries under `dir` (created if missing) and prunes the expired ones.
    pub fn open(dir: PathBuf, settings: LedgerSettings) -> Result<Self, LedgerError> {
        // A corrupt entry is quarantined (moved aside, logged) and the ledger opens with the rest:
        // without the entry a retried call runs again, as it would without a ledger, which is better
        // than refusing to start; the moved file keeps the answer for an operator who needs it.
        let (store, loaded) = JsonStore::<Entry>::open(dir, OnCorrupt::Quarantine)?;
        let entries = loaded.records.into_iter().map(|e| (entry_key(&e.rpc, &e.request_id), e)).collect();
        let inner = Inner { store, settings, entries: Mutex::new(entries), running: Mutex::default() };
        let ledger = Self { inner: Arc::new(inner) };
        ledger.prune(SystemTime::now())?;
        Ok(ledger)
    }

    /// Runs `work` once per (`rpc`, `request_id`): a repeat of the same request gets the stored
    /// response, the same id with another request `RequestIdReused`. A failed `work` is not
    /// recorded, so a retry may succeed.
    pub async fn once<Req, Resp, E, F, Fut>(
        &self,
        rpc: &str,
        request_id: &str,
        request: &Req,
        work: F,
    ) -> Result<Resp, E>
    where
        Req: Message,
        Resp: Message + Default,
        E: From<LedgerError>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Resp, E>>,
    {
        ids::request_id(request_id).map_err(LedgerError::from)?;
        let key = entry_key(rpc, request_id);
        // prost encodes these requests deterministically: none of them has a map field.
        let digest = crate::hex::encode(&Sha256::digest(request.encode_to_vec()));
        let serial = self.lock_key(&key).await;
        if let Some(found) = self.entries().get(&key) {
            return found.replay(&digest).map_err(E::from);
        }
        let response = work().await?;
        let entry = Entry::new(rpc, request_id, digest, &response, SystemTime::now());
        self.record(key, entry, serial).await;
        Ok(response)
    }

    /// Drops entries older than the retention, then the oldest beyond `max_entries`.
    pub fn prune(&self, now: SystemTime) -> Result<usize, LedgerError> {
        self.inner.prune(now)
    }

    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.entries()
    }

    async fn lock_key(&self, key: &str) -> KeyGuard {
        let lock = self.inner.running_locks().entry(key.to_owned()).or_default().clone();
        let guard = lock.lock_owned().await;
        KeyGuard { inner: self.inner.clone(), key: key.to_owned(), guard: Some(guard) }
    }

    /// The work is done: the entry is kept in memory at once and written in a blocking task that
    /// holds the key's lock until the file is durable. A failed write is logged, not returned: the
    /// work succeeded, and an error would make the client retry into a different answer.
    async fn record(&self, key: String, entry: Entry, serial: KeyGuard) {
        let what = format!("{} request_id {:?}", entry.rpc, entry.request_id);
        self.entries().insert(key, entry.clone());
        let inner = self.inner.clone();
        let task = tokio::task::spawn_blocking(move || {
            let _serial = serial;
            inner.store.put(&entry)?;
            if inner.entries().len() > inner.settings.max_entries {
                inner.prune(SystemTime::now())?;
            }
            Ok::<_, LedgerError>(())
        });
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("record {what}: {e:#}; a retry after a restart would do the work again"),
            Err(e) => tracing::error!("record {what}: {e:#}"),
        }
    }
}

impl Inner {
    // Every change to the map is a single insert or remove, so a poisoned lock still holds a
    // consistent map.
    fn entries(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn running_locks(&self) -> MutexGuard<'_, HashMap<String, Arc<AsyncMutex<()>>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn prune(&self, now: SystemTime) -> Result<usize, LedgerError> {
        let mut by_age: Vec<(SystemTime, String)> =
            self.entries().iter().map(|(k, e)| (e.created, k.clone())).collect();
        by_age.sort();
        let excess = by_age.len().saturating_sub(self.settings.max_entries);
        let cutoff = now.checked_sub(self.settings.retention).unwrap_or(SystemTime::UNIX_EPOCH);
        let doomed: Vec<String> = by_age
            .into_iter()
            .enumerate()
            .filter(|(i, (t, _))| *i < excess || *t < cutoff)
            .map(|(_, (_, k))| k)
            .collect();
        for key in &doomed {
            self.store.remove(key)?;
            self.entries().remove(key);
        }
        Ok(doomed.len())
    }
}

/// Holds a key's lock; on release drops the lock itself when nobody else waits for it.
struct KeyGuard {
    inner: Arc<Inner>,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        self.guard.take();
        let mut running = self.inner.running_locks();
        // Waiters hold a clone of the Arc, taken under this same map lock.
        if running.get(&self.key).is_some_and(|lock| Arc::strong_count(lock) == 1) {
            running.remove(&self.key);
        }
    }
}

/// The entry's name: a hash, so a request_id never becomes part of a path.
fn entry_key(rpc: &str, request_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(rpc.as_bytes());
    h.update([0]);
    h.update(request_id.as_bytes());
    crate::hex::encode(&h.finalize())
}

impl crate::error::HasErrorCode for LedgerError {
    fn code(&self) -> crate::error::ErrorCode {
        use crate::error::ErrorCode as C;
        match self {
            LedgerError::Invalid(_) => C::InvalidArgument,
            LedgerError::RequestIdReused { .. } => C::AlreadyExists,
            LedgerError::Corrupt { .. } | LedgerError::Store(_) => C::Internal,
        }
    }
}
