//! `[volumes]` and `[keys]`: LUKS2 parameters and where volume keys come from.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// LUKS2 volumes (docs/volumes.md). The cipher is always aes-xts-plain64 with hash sha256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VolumesConfig {
    /// Size of the LUKS2 volume key: 256 (AES-128-XTS) or 512 (AES-256-XTS).
    pub key_bits: u32,
    /// Key derivation of the keyslots: "pbkdf2" (the default) or "argon2id". The agent's keyslot
    /// secrets are 256 random bits, so a slow or memory-hard KDF adds no strength, only delay and
    /// memory at every open (argon2id at 1 GiB and 2 s made a host with 50 volumes reach READY
    /// 100 s after boot); argon2id is for a human passphrase, should a slot ever hold one.
    pub pbkdf: PbkdfKind,
    /// Target unlock time when the cost is benchmarked (pbkdf_iterations = 0).
    pub pbkdf_time_ms: u32,
    /// Fixed iteration count (argon2id: time cost); 0 = benchmark to pbkdf_time_ms.
    pub pbkdf_iterations: u32,
    /// argon2id memory cost in KiB (ignored by pbkdf2).
    pub pbkdf_memory_kib: u32,
    /// argon2id parallel threads (ignored by pbkdf2).
    pub pbkdf_parallel: u32,
    /// Activate with no_read_workqueue and no_write_workqueue.
    pub no_workqueue: bool,
    /// dm-crypt sector size in bytes; 0 lets libcryptsetup choose (4096 where the device allows).
    pub sector_size: u32,
}

/// The fewest PBKDF2 iterations libcryptsetup accepts for a LUKS2 keyslot.
pub const MIN_PBKDF2_ITERATIONS: u32 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PbkdfKind {
    Argon2id,
    Pbkdf2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyProviderKind {
    Local,
    Remote,
}

/// Where volume keys come from (docs/volumes.md, "Keys").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeysConfig {
    pub provider: KeyProviderKind,
    /// Host key-encryption key of the local keystore (32 bytes, raw or 64 hex digits), mode 0600 or
    /// stricter. A systemd credential `dbagent-kek` ($CREDENTIALS_DIRECTORY) takes precedence.
    pub kek_file: PathBuf,
    pub remote: RemoteKeysConfig,
    /// Operator-held recovery keys, as age X25519 recipients (`age1...`, from `age-keygen` or
    /// `dbagentctl recovery-key generate`). Backup data keys and volume keys are also sealed to
    /// each of them, so a new host can restore and open them with the private half, which the
    /// host never holds (docs/backups.md, "Keys").
    pub recovery_recipients: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RemoteKeysConfig {
    /// KeyService endpoint, e.g. "https://keys.example:7444".
    pub endpoint: String,
    /// CA bundle the KeyService's certificate must chain to.
    pub ca: PathBuf,
    /// The agent's client certificate and key for mTLS.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// TLS server name to verify; empty = the endpoint's host.
    pub server_name: String,
    pub timeout_secs: u64,
}

impl Default for VolumesConfig {
    fn default() -> Self {
        Self {
            key_bits: 256,
            pbkdf: PbkdfKind::Pbkdf2,
            pbkdf_time_ms: 2000,
            // The least libcryptsetup accepts, fixed: no benchmark runs, so a busy host cannot have
            // the benchmark pick a weaker cost (systemd-cryptenroll does the same for token keys).
            pbkdf_iterations: MIN_PBKDF2_ITERATIONS,
            pbkdf_memory_kib: 1024 * 1024,
            pbkdf_parallel: 4,
            no_workqueue: true,
            sector_size: 0,
        }
    }
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            provider: KeyProviderKind::Local,
            kek_file: PathBuf::from("/etc/dbagent/kek"),
            remote: RemoteKeysConfig::default(),
            recovery_recipients: Vec::new(),
        }
    }
}

impl Default for RemoteKeysConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            ca: PathBuf::from("/etc/dbagent/keys/ca.crt"),
            cert: PathBuf::from("/etc/dbagent/keys/client.crt"),
            key: PathBuf::from("/etc/dbagent/keys/client.key"),
            server_name: String::new(),
            timeout_secs: 10,
        }
    }
}
