//! The manifest: everything needed to verify and restore a backup, written last on each
//! destination. A backup without a manifest does not exist.

use serde::{Deserialize, Serialize};
use std::time::SystemTime;

use crate::instances::Engine;

/// 3: the data key is wrapped several times (`key_wraps`: the host KEK and the off-host keys).
/// 2 (still read): one KEK wrap in `wrapped_key`/`key_wrapper`/`key_id`. Both carry a MAC
/// (`manifest_mac`); format 1 manifests are refused as unauthenticated.
pub const FORMAT_VERSION: u32 = 3;
/// The format of manifests with a single KEK wrap, written by the previous build; still restorable.
pub const FORMAT_SINGLE_WRAP: u32 = 2;
pub const MANIFEST: &str = "manifest.json";
pub const DATA: &str = "data";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    Scheduled,
    Manual,
}

impl BackupKind {
    /// The name serde writes.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Scheduled => "scheduled",
            BackupKind::Manual => "manual",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupMethod {
    Physical,
    Logical,
}

impl BackupMethod {
    /// The name serde writes.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupMethod::Physical => "physical",
            BackupMethod::Logical => "logical",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub backup_id: String,
    pub instance_id: String,
    pub engine: Engine,
    pub engine_version: String,
    /// `--version` of the dump tool that wrote the stream.
    pub tool: String,
    pub tool_version: String,
    pub agent_version: String,
    pub method: BackupMethod,
    pub kind: BackupKind,
    #[serde(with = "crate::timefmt")]
    pub started: SystemTime,
    #[serde(with = "crate::timefmt")]
    pub finished: SystemTime,
    /// Scheduled backups expire `keep_daily` days after they start; manual ones never do.
    #[serde(with = "crate::timefmt::option", default)]
    pub expires: Option<SystemTime>,
    /// Bytes the dump command wrote.
    pub raw_bytes: u64,
    /// Bytes of the stored `data` object (compressed, encrypted).
    pub stored_bytes: u64,
    /// SHA-256 (hex) of the stored `data` object.
    pub sha256: String,
    pub compression: String,
    pub zstd_level: i32,
    pub cipher: String,
    pub chunk_size: usize,
    pub chunk_count: u64,
    /// Format 3: the data key, wrapped once per key that can open it (docs/backups.md, "Key
    /// hierarchy"). Any one of them opens the backup.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_wraps: Vec<KeyWrap>,
    /// Format 2 only: the data key, wrapped by `key_wrapper` under key `key_id` (hex).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub wrapped_key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_wrapper: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_id: String,
    /// Every destination the backup was written to; all of them hold it unless `degraded`.
    pub destinations: Vec<String>,
    /// Destinations that failed while it was written (repair copies it there).
    #[serde(default)]
    pub failed_destinations: Vec<String>,
    /// HMAC-SHA256 (hex) of the other fields but the two destination lists (`manifest_mac`);
    /// empty in manifests written before format 2.
    #[serde(default)]
    pub mac: String,
}

/// One wrapping of a backup's data key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyWrap {
    /// The scheme: `kek-aes-256-gcm-v2`, `age-x25519-v1` or `keyservice-v1`.
    pub wrapper: String,
    /// Names the key that opens it (a KEK digest, the age recipients, the KeyService's key id):
    /// what a refusal tells the operator to bring.
    pub key_id: String,
    /// The wrapped key, hex.
    pub wrapped: String,
}

impl Manifest {
    /// The wraps of the data key: the list of a format 3 manifest, the one wrap of a format 2 one.
    pub fn wraps(&self) -> Vec<KeyWrap> {
        if self.format == FORMAT_SINGLE_WRAP {
            return vec![KeyWrap {
                wrapper: self.key_wrapper.clone(),
                key_id: self.key_id.clone(),
                wrapped: self.wrapped_key.clone(),
            }];
        }
        self.key_wraps.clone()
    }
}

pub fn data_key(instance: &str, backup: &str) -> String {
    format!("{instance}/{backup}/{DATA}")
}

pub fn manifest_key(instance: &str, backup: &str) -> String {
    format!("{instance}/{backup}/{MANIFEST}")
}

#[cfg(test)]
impl Manifest {
    /// A manifest of an empty Redis backup, for tests that only look at ids and keys.
    pub(crate) fn for_tests(instance_id: &str, backup_id: &str) -> Self {
        Manifest {
            format: FORMAT_VERSION,
            backup_id: backup_id.into(),
            instance_id: instance_id.into(),
            engine: Engine::Redis,
            engine_version: String::new(),
            tool: "redis-cli".into(),
            tool_version: String::new(),
            agent_version: String::new(),
            method: BackupMethod::Physical,
            kind: BackupKind::Manual,
            started: SystemTime::UNIX_EPOCH,
            finished: SystemTime::UNIX_EPOCH,
            expires: None,
            raw_bytes: 0,
            stored_bytes: 16,
            sha256: String::new(),
            compression: "zstd".into(),
            zstd_level: 1,
            cipher: "AES-256-GCM".into(),
            chunk_size: 65536,
            chunk_count: 1,
            key_wraps: Vec::new(),
            wrapped_key: String::new(),
            key_wrapper: String::new(),
            key_id: String::new(),
            destinations: Vec::new(),
            failed_destinations: Vec::new(),
            mac: String::new(),
        }
    }
}
