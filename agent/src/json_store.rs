//! A folder of JSON records, one `<key>.json` per record: the one way the agent keeps state that is a
//! set of named records (the instance registry, the volume store, the operations journal, the request
//! ledger, the backups' crash-cleanup records). A drain's buffer state (`logs/buffer.rs`) is one file
//! per drain, not a set of records: it uses the same atomic write ([`fsutil::atomic_write`]).
//!
//! Writes: a record goes to `.<key>.json.tmp` in the same folder (mode 0600), which is fsynced,
//! renamed over `<key>.json`, and the folder is fsynced ([`fsutil::atomic_write`]); a removal unlinks
//! the file and fsyncs the folder. A crash leaves the old record or the new one, never a torn file. A
//! leftover temporary file is deleted at open and never read as a record. The folder is created with
//! mode 0700.
//!
//! Keys become file names, so every key is checked ([`check_key`]): 1 to 128 of `A-Z a-z 0-9 . _ -`,
//! starting with a letter or a digit, without `..`. No key names a file outside the folder, a hidden
//! file or a temporary one.
//!
//! A record that cannot be loaded (not JSON, not the record's shape, stored under another name than
//! its own key, or refused by the record's own [`JsonRecord::check`]) is handled by the policy its
//! store chooses at open ([`OnCorrupt`]), stated with the reason where each store is opened:
//! - `RefuseToStart`: the open fails with an error naming the file. For a store where going on
//!   without one record would lose or resurrect data and nothing narrower can be stopped instead.
//! - `Keep`: the file stays where it is, untouched, logged and returned by `open`; the store opens with
//!   the rest. For stores that are the source of truth of one resource per record: the instance
//!   registry and the volume store quarantine that one instance (every change to it is refused, so
//!   nothing is created or destroyed over its data) while every other instance starts, and every
//!   start reports it again until an operator repairs or restores the file.
//! - `Quarantine`: the file is renamed to `<key>.json.corrupt-<UTC time>`, logged, returned by `open`,
//!   and the store opens with the rest. For records whose loss costs a repeated piece of work or some
//!   history, but whose content an operator may still need: the operations journal and the request
//!   ledger.
//! - `Drop`: the file is deleted and logged. For records nothing can be done with once unreadable:
//!   the backups' crash-cleanup records (what one named cannot be found again).
//!
//! A read that fails (EIO, EACCES) is not a corrupt record: it fails the open under every policy,
//! since the disk, not the record, needs the operator's attention.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::borrow::Cow;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::fsutil;
use crate::ids::truncate_for_message;

/// Longer keys are refused: a file name must stay below 255 bytes with the suffixes added to it.
pub const MAX_KEY_LEN: usize = 128;

/// What `open` does with a record it cannot load. See the module documentation for which store
/// uses which, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnCorrupt {
    /// Fail the open with an error that names the file.
    RefuseToStart,
    /// Leave the file in place, log and return it, open with the rest; the owner quarantines its key.
    Keep,
    /// Rename the file to `<key>.json.corrupt-<UTC time>`, log and return it, open with the rest.
    Quarantine,
    /// Delete the file, log and return it, open with the rest.
    Drop,
}

/// A record type kept in a [`JsonStore`].
pub trait JsonRecord: Serialize + DeserializeOwned {
    /// What one record is, in messages: "instance", "volume record".
    const KIND: &'static str;

    /// The key the record is stored under: its file is `<key>.json`.
    fn key(&self) -> Cow<'_, str>;

    /// Why a record read from disk is unusable although it has the right shape, if it is.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A record that `open` set aside under the `Quarantine` or `Drop` policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptRecord {
    pub file: PathBuf,
    pub reason: String,
    /// Where the file is now (its own place under `Keep`); `None` when it was dropped.
    pub moved_to: Option<PathBuf>,
}

/// What `open` found in the folder.
#[derive(Debug)]
pub struct Loaded<T> {
    /// Every loadable record, sorted by file name.
    pub records: Vec<T>,
    /// The files the policy set aside; empty under `RefuseToStart`.
    pub corrupt: Vec<CorruptRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum JsonStoreError {
    #[error("{kind} key {:?} cannot name a file: {reason}", truncate_for_message(key))]
    InvalidKey { kind: &'static str, key: String, reason: &'static str },
    #[error(
        "{kind} file {} is unreadable: {reason}; repair it or restore it from a backup (move it out of its \
         folder only if the {kind} no longer exists)",
        path.display()
    )]
    Corrupt { kind: &'static str, path: PathBuf, reason: String },
    #[error("{action} {}: {source}", path.display())]
    Io { action: String, path: PathBuf, source: io::Error },
    #[error("encode {kind} {key}: {source}")]
    Encode { kind: &'static str, key: String, source: serde_json::Error },
}

impl crate::error::HasErrorCode for JsonStoreError {
    fn code(&self) -> crate::error::ErrorCode {
        // Keys come from validated ids and hashes, so every case is the agent's own trouble.
        crate::error::ErrorCode::Internal
    }
}

/// The records of one folder. Holds no records itself: each store keeps the map it needs, written
/// here first and changed in memory only after the write succeeded.
pub struct JsonStore<T> {
    dir: PathBuf,
    record: PhantomData<fn() -> T>,
}

impl CorruptRecord {
    /// The key the file was stored under: its name without `.json`.
    pub fn key(&self) -> String {
        self.file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
    }
}

impl<T> Clone for JsonStore<T> {
    fn clone(&self) -> Self {
        Self { dir: self.dir.clone(), record: PhantomData }
    }
}

impl<T> fmt::Debug for JsonStore<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonStore").field("dir", &self.dir).finish()
    }
}

impl<T: JsonRecord> JsonStore<T> {
    /// Creates `dir` (mode 0700) if needed, removes leftover temporary files and loads every record,
    /// handling the ones that cannot be loaded by `on_corrupt`. Blocking: start-up I/O.
    pub fn open(dir: PathBuf, on_corrupt: OnCorrupt) -> Result<(Self, Loaded<T>), JsonStoreError> {
        let io = |action: &str, path: &Path| {
            let (action, path) = (format!("{action} {} folder", T::KIND), path.to_path_buf());
            move |source| JsonStoreError::Io { action, path, source }
        };
        fsutil::ensure_private_dir(&dir).map_err(io("create", &dir))?;
        let files = fsutil::json_files(&dir).map_err(io("list", &dir))?;
        let store = Self { dir, record: PhantomData };
        let mut loaded = Loaded { records: Vec::with_capacity(files.len()), corrupt: Vec::new() };
        for path in files {
            match store.read(&path)? {
                Ok(record) => loaded.records.push(record),
                Err(reason) => loaded.corrupt.push(store.set_aside(path, reason, on_corrupt)?),
            }
        }
        Ok((store, loaded))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The record stored under `key`, read from disk; a corrupt one is an error whatever the policy.
    pub fn get(&self, key: &str) -> Result<Option<T>, JsonStoreError> {
        let path = self.file(key)?;
        if !path.exists() {
            return Ok(None);
        }
        match self.read(&path)? {
            Ok(record) => Ok(Some(record)),
            Err(reason) => Err(JsonStoreError::Corrupt { kind: T::KIND, path, reason }),
        }
    }

    /// Writes `record` under its key, durably (see the module documentation).
    pub fn put(&self, record: &T) -> Result<(), JsonStoreError> {
        let key = record.key();
        let path = self.file(&key)?;
        let bytes = serde_json::to_vec_pretty(record).map_err(|source| JsonStoreError::Encode {
            kind: T::KIND,
            key: key.clone().into_owned(),
            source,
        })?;
        fsutil::atomic_write(&path, &bytes).map_err(|source| self.io_error("write", path, source))
    }

    /// Removes the record stored under `key`, durably; a missing record is not an error.
    pub fn remove(&self, key: &str) -> Result<(), JsonStoreError> {
        let path = self.file(key)?;
        fsutil::remove_durable(&path).map_err(|source| self.io_error("remove", path, source))
    }

    /// The error of a failed write of this store's file `path`, for callers that run the write on
    /// another thread and lose it there.
    pub fn io_error(&self, verb: &str, path: PathBuf, source: io::Error) -> JsonStoreError {
        JsonStoreError::Io { action: format!("{verb} {} file", T::KIND), path, source }
    }

    /// `<dir>/<key>.json`, once `key` is known to be a safe file name.
    pub fn file(&self, key: &str) -> Result<PathBuf, JsonStoreError> {
        check_key(key).map_err(|reason| JsonStoreError::InvalidKey { kind: T::KIND, key: key.to_owned(), reason })?;
        Ok(self.dir.join(format!("{key}.json")))
    }

    /// Reads one file: an I/O error is the outer error, a record that cannot be used the inner one.
    fn read(&self, path: &Path) -> Result<Result<T, String>, JsonStoreError> {
        let bytes = std::fs::read(path).map_err(|source| self.io_error("read", path.to_path_buf(), source))?;
        let record: T = match serde_json::from_slice(&bytes) {
            Ok(record) => record,
            Err(e) => return Ok(Err(format!("not a valid {} file: {e}", T::KIND))),
        };
        let stem = path.file_stem().map(|s| s.to_string_lossy()).unwrap_or_default();
        let key = record.key();
        if stem != key {
            return Ok(Err(format!(
                "it holds the {} {:?}, whose file must be named after it",
                T::KIND,
                truncate_for_message(&key)
            )));
        }
        if let Err(reason) = check_key(&key) {
            return Ok(Err(format!("its key cannot name a file: {reason}")));
        }
        Ok(record.check().map(|()| record))
    }

    fn set_aside(&self, file: PathBuf, reason: String, on_corrupt: OnCorrupt) -> Result<CorruptRecord, JsonStoreError> {
        match on_corrupt {
            OnCorrupt::RefuseToStart => Err(JsonStoreError::Corrupt { kind: T::KIND, path: file, reason }),
            OnCorrupt::Quarantine => {
                let aside = quarantine_path(&file, SystemTime::now());
                std::fs::rename(&file, &aside)
                    .and_then(|()| fsutil::sync_dir(&self.dir))
                    .map_err(|source| self.io_error("quarantine", file.clone(), source))?;
                tracing::error!(
                    file = %file.display(),
                    moved_to = %aside.display(),
                    "{} file is unreadable ({reason}); moved aside for inspection, the agent goes on without it",
                    T::KIND
                );
                Ok(CorruptRecord { file, reason, moved_to: Some(aside) })
            }
            OnCorrupt::Keep => {
                tracing::error!(
                    file = %file.display(),
                    "{} file is unreadable ({reason}); left in place and its {} quarantined until the file is \
                     repaired or restored; the agent goes on with the others",
                    T::KIND,
                    T::KIND
                );
                Ok(CorruptRecord { moved_to: Some(file.clone()), file, reason })
            }
            OnCorrupt::Drop => {
                fsutil::remove_durable(&file).map_err(|source| self.io_error("drop", file.clone(), source))?;
                tracing::warn!(file = %file.display(), "{} file is unreadable ({reason}); dropped it", T::KIND);
                Ok(CorruptRecord { file, reason, moved_to: None })
            }
        }
    }
}

/// Why `key` cannot be a record's file name, if it cannot.
pub fn check_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() {
        return Err("it is empty");
    }
    if key.len() > MAX_KEY_LEN {
        return Err("it is longer than 128 characters");
    }
    if !key.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        return Err("only letters, digits and . _ - are allowed");
    }
    if !key.as_bytes()[0].is_ascii_alphanumeric() {
        return Err("it must start with a letter or a digit");
    }
    if key.contains("..") {
        return Err("it must not contain ..");
    }
    Ok(())
}

/// `<file name>.corrupt-<UTC time>`, beside `file`; a name already taken gets a counter, so a
/// quarantined file is never replaced. The suffix keeps it out of the `*.json` records.
fn quarantine_path(file: &Path, now: SystemTime) -> PathBuf {
    let stamp: String =
        humantime::format_rfc3339_seconds(now).to_string().chars().filter(|c| *c != '-' && *c != ':').collect();
    let mut base = OsString::from(file.file_name().unwrap_or_default());
    base.push(format!(".corrupt-{stamp}"));
    let mut candidate = file.with_file_name(&base);
    let mut n = 1;
    while candidate.exists() {
        n += 1;
        let mut name = base.clone();
        name.push(format!("-{n}"));
        candidate = file.with_file_name(name);
    }
    candidate
}

#[cfg(test)]
#[path = "json_store_tests.rs"]
mod tests;
