//! The [`Volumes`] service: one handle over the crypt layer, the host, the key provider and the
//! volume records, with the settings and the steps every operation shares. The operations live in
//! the files named for them (provisioning, unlocking, growth, key rotation, header backups, status).
//! Every operation is idempotent and reports what it did ([`VolumeOutcome`]); the operations engine
//! holds the instance's lock around each call, so one instance's volume sees one change at a time
//! while other instances proceed.

use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::crypt::{ActivationFlags, CryptBackend, FormatParams, PbkdfParams};
use super::host::{HostError, HostOps};
use super::key::{KeyProvider, VolumeKey};
use super::store::{VolumeRecord, VolumeState, VolumeStore};
use super::{VolumeError, mapper_name};
use crate::config::{Config, KeyProviderKind};
use crate::ids;
use crate::instances::{Instance, Registry, RegistryError};
use crate::recovery_key::RecoveryRecipients;

/// What an operation did, reported as `outcome` in its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VolumeOutcome {
    Created,
    AlreadyExists,
    Opened,
    AlreadyOpen,
    Closed,
    AlreadyClosed,
    Grown,
    Unchanged,
    Rotated,
    BackedUp,
    Destroyed,
    AlreadyDestroyed,
}

#[derive(Debug, Clone)]
pub struct VolumeSettings {
    pub format: FormatParams,
    pub flags: ActivationFlags,
    pub device_prefixes: Vec<PathBuf>,
    /// Whom volume keys are escrowed to (in each volume's LUKS2 header); empty: no escrow. Only
    /// with the `local` key provider: the remote KeyService holds the keys off the host already.
    pub recovery_recipients: RecoveryRecipients,
}

impl VolumeSettings {
    pub fn from_config(config: &Config) -> Self {
        let v = &config.volumes;
        Self {
            format: FormatParams {
                key_bits: v.key_bits,
                sector_size: v.sector_size,
                pbkdf: PbkdfParams {
                    kind: v.pbkdf,
                    time_ms: v.pbkdf_time_ms,
                    iterations: v.pbkdf_iterations,
                    memory_kib: v.pbkdf_memory_kib,
                    parallel: v.pbkdf_parallel,
                },
                label: String::new(),
            },
            flags: ActivationFlags { no_read_workqueue: v.no_workqueue, no_write_workqueue: v.no_workqueue },
            device_prefixes: config.instances.device_prefixes.clone(),
            // Config::validate parsed them already; an empty list means no escrow.
            recovery_recipients: match config.keys.provider {
                KeyProviderKind::Local => {
                    RecoveryRecipients::parse(&config.keys.recovery_recipients).unwrap_or_default()
                }
                KeyProviderKind::Remote => RecoveryRecipients::default(),
            },
        }
    }
}

/// What a [`Volumes`] handle and its clones share. The steps that block (libcryptsetup, mkfs,
/// fsync) are methods on it, so they run inside [`Volumes::blocking`].
pub(super) struct VolumesInner {
    pub(super) settings: VolumeSettings,
    pub(super) crypt: Arc<dyn CryptBackend>,
    pub(super) host: Arc<dyn HostOps>,
    pub(super) keys: Arc<dyn KeyProvider>,
    pub(super) registry: Arc<Registry>,
    pub(super) store: VolumeStore,
    pub(super) headers_dir: PathBuf,
    /// Why each volume that failed to open is not open, for GetVolume.
    pub(super) last_errors: Mutex<HashMap<String, String>>,
}

#[derive(Clone)]
pub struct Volumes {
    pub(super) inner: Arc<VolumesInner>,
}

pub(super) fn mapper_path(id: &str) -> PathBuf {
    Path::new("/dev/mapper").join(mapper_name(id))
}

impl Volumes {
    /// `state_dir/volumes` holds the records and managed files, `state_dir/volumes/headers` the
    /// LUKS2 header backups.
    pub fn new(
        state_dir: &Path,
        settings: VolumeSettings,
        crypt: Arc<dyn CryptBackend>,
        host: Arc<dyn HostOps>,
        keys: Arc<dyn KeyProvider>,
        registry: Arc<Registry>,
    ) -> Result<Self, VolumeError> {
        let store = VolumeStore::open(state_dir.join("volumes"))?;
        let headers_dir = state_dir.join("volumes").join("headers");
        crate::fsutil::ensure_private_dir(&headers_dir)
            .map_err(|e| HostError::io(format!("create {}", headers_dir.display()), e))?;
        let inner =
            VolumesInner { settings, crypt, host, keys, registry, store, headers_dir, last_errors: Mutex::default() };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Runs `f` on a blocking thread: libcryptsetup, mkfs and fsync all block.
    pub(super) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&VolumesInner) -> Result<T, VolumeError> + Send + 'static,
    ) -> Result<T, VolumeError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner)).await?
    }

    pub(super) fn instance(&self, id: &str) -> Result<Instance, VolumeError> {
        ids::instance_id("instance_id", id)?;
        self.check_not_quarantined(id)?;
        self.inner.registry.get(id).map_err(|e| match e {
            RegistryError::Quarantined { instance, file, reason } => {
                VolumeError::Quarantined { instance, file, reason }
            }
            _ => VolumeError::InstanceNotFound(id.to_owned()),
        })
    }

    /// Refuses an instance whose volume record was unreadable at start-up.
    pub(super) fn check_not_quarantined(&self, id: &str) -> Result<(), VolumeError> {
        match self.inner.store.quarantined(id) {
            None => Ok(()),
            Some(c) => Err(VolumeError::Quarantined {
                instance: id.to_owned(),
                file: c.file.clone(),
                reason: c.reason.clone(),
            }),
        }
    }

    /// What remains of an instance id in the volume store, the key provider and `operations`, for
    /// the registry's RemoveInstance and re-registration checks.
    pub fn leftovers(&self, operations: crate::ops::OperationEngine) -> super::VolumeLeftovers {
        super::VolumeLeftovers { store: self.inner.store.clone(), keys: self.inner.keys.clone(), operations }
    }

    /// Every volume record that was unreadable at start-up.
    pub fn quarantined(&self) -> Vec<crate::json_store::CorruptRecord> {
        self.inner.store.all_quarantined()
    }

    /// The record of the instance's finished volume.
    pub(super) fn record(&self, id: &str) -> Result<VolumeRecord, VolumeError> {
        ids::instance_id("instance_id", id)?;
        self.check_not_quarantined(id)?;
        match self.inner.store.get(id) {
            Some(r) if r.state == VolumeState::Ready => Ok(r),
            _ => Err(VolumeError::NoVolume(id.to_owned())),
        }
    }

    pub(super) async fn key(&self, id: &str, version: u32, create: bool, bits: u32) -> Result<VolumeKey, VolumeError> {
        Ok(self.inner.keys.key(id, version, create, bits).await?)
    }

    pub(super) async fn put_record(&self, record: VolumeRecord) -> Result<(), VolumeError> {
        self.blocking(move |inner| Ok(inner.store.put(&record)?)).await
    }

    /// Remembers (or clears) why the instance's volume is not open.
    pub(super) fn set_last_error(&self, id: &str, error: Option<String>) {
        let mut map = self.inner.last_errors.lock().unwrap_or_else(|p| p.into_inner());
        match error {
            Some(e) => map.insert(id.to_owned(), e),
            None => map.remove(id),
        };
    }
}

impl VolumesInner {
    /// The block device under a record: the device itself, or the managed file's loop device.
    pub(super) fn device(&self, record: &VolumeRecord) -> Result<PathBuf, VolumeError> {
        if record.managed_file { Ok(self.host.attach_loop(&record.backing)?) } else { Ok(record.backing.clone()) }
    }

    /// Where to do header work: the loop device if attached, else the backing itself.
    pub(super) fn header_device(&self, record: &VolumeRecord) -> Result<PathBuf, VolumeError> {
        if record.managed_file {
            Ok(self.host.find_loop(&record.backing)?.unwrap_or_else(|| record.backing.clone()))
        } else {
            Ok(record.backing.clone())
        }
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
