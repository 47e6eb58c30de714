//! The volume lifecycle: create, open, close, destroy, status. Grow, key rotation and header backups
//! are in `manager_maintain.rs`. Every method is idempotent and reports what it did ([`Done`]); the
//! operations engine holds the instance's lock around each call, so one instance's volume sees one
//! change at a time while other instances proceed.

use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::crypt::{ActivationFlags, CryptBackend, FormatParams, PbkdfParams};
use super::host::{FsUsage, HostOps};
use super::key::{KeyError, KeyProvider, VolumeKey};
use super::store::{VolumeRecord, VolumeState, VolumeStore};
use super::{VolumeError, mapper_name};
use crate::config::Config;
use crate::ids::{self, InvalidField};
use crate::instances::{Instance, Registry};

/// What an operation did, reported in its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Done {
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
        }
    }
}

/// What GetVolume reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeStatus {
    pub instance_id: String,
    pub backing: PathBuf,
    pub mapper_path: PathBuf,
    pub active: bool,
    pub mounted: bool,
    pub cipher: String,
    pub key_bits: u32,
    pub sector_size: u32,
    pub size_bytes: u64,
    pub fs: Option<FsUsage>,
    pub filesystem: crate::instances::Filesystem,
    pub flags: Vec<String>,
    pub key_version: u32,
    /// Why the volume is not open, when opening it (at start-up or later) failed.
    pub last_error: Option<String>,
}

pub(super) struct Inner {
    pub(super) settings: VolumeSettings,
    pub(super) crypt: Arc<dyn CryptBackend>,
    pub(super) host: Arc<dyn HostOps>,
    pub(super) keys: Arc<dyn KeyProvider>,
    pub(super) registry: Arc<Registry>,
    pub(super) store: VolumeStore,
    pub(super) headers_dir: PathBuf,
    pub(super) last_errors: Mutex<HashMap<String, String>>,
}

#[derive(Clone)]
pub struct Volumes {
    pub(super) inner: Arc<Inner>,
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
            .map_err(|e| super::host::HostError::io(format!("create {}", headers_dir.display()), e))?;
        let inner = Inner { settings, crypt, host, keys, registry, store, headers_dir, last_errors: Mutex::default() };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Runs `f` on a blocking thread: libcryptsetup, mkfs and fsync all block.
    pub(super) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, VolumeError> + Send + 'static,
    ) -> Result<T, VolumeError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner)).await.map_err(|e| VolumeError::Task(e.to_string()))?
    }

    pub(super) fn instance(&self, id: &str) -> Result<Instance, VolumeError> {
        ids::instance_id("instance_id", id)?;
        self.inner.registry.get(id).map_err(|_| VolumeError::InstanceNotFound(id.to_owned()))
    }

    pub(super) fn record(&self, id: &str) -> Result<VolumeRecord, VolumeError> {
        ids::instance_id("instance_id", id)?;
        match self.inner.store.get(id) {
            Some(r) if r.state == VolumeState::Ready => Ok(r),
            _ => Err(VolumeError::NoVolume(id.to_owned())),
        }
    }

    pub(super) async fn key(&self, id: &str, version: u32, create: bool, bits: u32) -> Result<VolumeKey, VolumeError> {
        Ok(self.inner.keys.key(id, version, create, bits).await?)
    }

    fn note(&self, id: &str, error: Option<String>) {
        let mut map = self.inner.last_errors.lock().unwrap_or_else(|p| p.into_inner());
        match error {
            Some(e) => map.insert(id.to_owned(), e),
            None => map.remove(id),
        };
    }

    /// Formats the instance's device (or a new sparse file), makes the filesystem and mounts it at
    /// the instance's data_dir, owned by its OS user. A volume that exists is opened instead.
    pub async fn create(&self, id: &str, force: bool) -> Result<Done, VolumeError> {
        let instance = self.instance(id)?;
        let previous = self.inner.store.get(id);
        if previous.as_ref().is_some_and(|r| r.state == VolumeState::Ready) {
            self.open(id).await?;
            return Ok(Done::AlreadyExists);
        }
        let spec = instance.spec.volume.clone();
        let (backing, managed_file) = match &spec.device {
            Some(device) => (device.clone(), false),
            None => (self.inner.store.dir().join(format!("{id}.img")), true),
        };
        // A create that was interrupted on this same backing may redo its own work.
        let resuming = previous.is_some_and(|r| r.backing == backing);
        let (check_id, check_backing) = (id.to_owned(), backing.clone());
        let size_bytes = self
            .blocking(move |inner| inner.check_backing(&check_id, &check_backing, managed_file, force || resuming))
            .await?
            .unwrap_or(spec.size_bytes);
        let record = VolumeRecord {
            instance_id: id.to_owned(),
            backing,
            managed_file,
            key_version: 1,
            key_bits: self.inner.settings.format.key_bits,
            filesystem: spec.filesystem,
            size_bytes,
            state: VolumeState::Creating,
            created: SystemTime::now(),
        };
        let r = record.clone();
        self.blocking(move |inner| Ok(inner.store.put(&r)?)).await?;
        let key = self.key(id, 1, true, record.key_bits).await?;
        let (r, i) = (record.clone(), instance.clone());
        let result = self.blocking(move |inner| inner.create_steps(&i, &r, &key)).await;
        if let Err(error) = result {
            let r = record.clone();
            let rollback = self.blocking(move |inner| inner.teardown(&r).map(drop)).await;
            return Err(match rollback {
                Ok(()) => error,
                Err(e) => VolumeError::RolledBack { error: Box::new(error), rollback: e.to_string() },
            });
        }
        let ready = VolumeRecord { state: VolumeState::Ready, ..record };
        self.blocking(move |inner| Ok(inner.store.put(&ready)?)).await?;
        self.note(id, None);
        tracing::info!(instance = id, "volume created and mounted at {}", instance.spec.data_dir.display());
        Ok(Done::Created)
    }

    /// Activates `/dev/mapper/dbagent-<id>` and mounts it. Idempotent.
    pub async fn open(&self, id: &str) -> Result<Done, VolumeError> {
        let result = self.open_inner(id).await;
        self.note(id, result.as_ref().err().map(ToString::to_string));
        result
    }

    async fn open_inner(&self, id: &str) -> Result<Done, VolumeError> {
        let instance = self.instance(id)?;
        let record = self.record(id)?;
        let name = mapper_name(id);
        let n = name.clone();
        let active = self.blocking(move |inner| Ok(inner.crypt.active(&n)?.is_some())).await?;
        if !active {
            let r = record.clone();
            let device = self.blocking(move |inner| inner.device(&r)).await?;
            let key = self.key(id, record.key_version, false, record.key_bits).await?;
            let (d, n) = (device.clone(), name.clone());
            match self
                .blocking(move |inner| Ok(inner.crypt.activate(&d, &n, key.as_bytes(), inner.settings.flags)?))
                .await
            {
                Ok(()) => {}
                Err(VolumeError::Crypt(super::crypt::CryptError::WrongKey(_))) => {
                    self.open_with_next_key(id, &record, &device).await?;
                }
                Err(e) => return Err(e),
            }
        }
        let i = instance.clone();
        let fs = record.filesystem;
        let mounted_now = self.blocking(move |inner| inner.mount(&i, fs)).await?;
        Ok(if active && !mounted_now { Done::AlreadyOpen } else { Done::Opened })
    }

    /// A rotation that stopped between the header change and its record update leaves the volume
    /// under the next key version: finish the rotation's bookkeeping.
    async fn open_with_next_key(&self, id: &str, record: &VolumeRecord, device: &Path) -> Result<(), VolumeError> {
        let wrong = || VolumeError::WrongKey { provider: self.inner.keys.name(), instance: id.to_owned() };
        let next = match self.key(id, record.key_version + 1, false, record.key_bits).await {
            Ok(k) => k,
            Err(VolumeError::Key(KeyError::Missing { .. })) => return Err(wrong()),
            Err(e) => return Err(e),
        };
        let (d, n) = (device.to_path_buf(), mapper_name(id));
        match self.blocking(move |inner| Ok(inner.crypt.activate(&d, &n, next.as_bytes(), inner.settings.flags)?)).await
        {
            Ok(()) => {}
            Err(VolumeError::Crypt(super::crypt::CryptError::WrongKey(_))) => return Err(wrong()),
            Err(e) => return Err(e),
        }
        tracing::warn!(
            instance = id,
            "volume opened with key version {}: completing an interrupted rotation",
            record.key_version + 1
        );
        let updated = VolumeRecord { key_version: record.key_version + 1, ..record.clone() };
        self.blocking(move |inner| Ok(inner.store.put(&updated)?)).await?;
        self.inner.keys.forget(id, Some(record.key_version + 1)).await?;
        Ok(())
    }

    /// Unmounts, deactivates and (for a managed file) detaches the loop device. Idempotent.
    pub async fn close(&self, id: &str) -> Result<Done, VolumeError> {
        let record = self.record(id)?;
        let did = self.blocking(move |inner| inner.teardown(&record)).await?;
        self.note(id, None);
        Ok(if did { Done::Closed } else { Done::AlreadyClosed })
    }

    /// Closes the volume, destroys every keyslot, forgets the keys and header backups and, for a
    /// managed file, deletes it. The data cannot be read afterwards by anyone.
    pub async fn destroy(&self, id: &str, confirm: &str) -> Result<Done, VolumeError> {
        ids::instance_id("instance_id", id)?;
        if confirm != id {
            return Err(InvalidField::new(
                "confirm_instance_id",
                "must equal instance_id: destroying erases the keyslots and the data is gone for good",
            )
            .into());
        }
        let Some(record) = self.inner.store.get(id) else {
            self.inner.keys.forget(id, None).await?;
            return Ok(Done::AlreadyDestroyed);
        };
        self.blocking(move |inner| {
            inner.teardown(&record)?;
            if inner.crypt.is_luks(&record.backing).unwrap_or(false) {
                inner.crypt.erase_keyslots(&record.backing)?;
            }
            if record.managed_file {
                inner.host.remove_file(&record.backing)?;
            }
            inner.remove_header_backups(&record.instance_id)
        })
        .await?;
        self.inner.keys.forget(id, None).await?;
        let owned = id.to_owned();
        self.blocking(move |inner| Ok(inner.store.remove(&owned)?)).await?;
        self.note(id, None);
        tracing::warn!(instance = id, "volume destroyed: keyslots erased, keys forgotten");
        Ok(Done::Destroyed)
    }

    pub async fn get(&self, id: &str) -> Result<VolumeStatus, VolumeError> {
        let record = self.record(id)?;
        let last = self.inner.last_errors.lock().unwrap_or_else(|p| p.into_inner()).get(id).cloned();
        let data_dir = self.inner.registry.get(id).ok().map(|i| i.spec.data_dir);
        self.blocking(move |inner| inner.status(&record, data_dir.as_deref(), last)).await
    }

    pub async fn list(&self) -> Result<Vec<VolumeStatus>, VolumeError> {
        let mut out = Vec::new();
        for record in self.inner.store.list().into_iter().filter(|r| r.state == VolumeState::Ready) {
            out.push(self.get(&record.instance_id).await?);
        }
        Ok(out)
    }

    /// At start-up, before READY: opens the volume of every registered instance that has one. A
    /// failure is logged and reported by GetVolume; it does not stop the agent. Returns the number
    /// of volumes opened and failed.
    pub async fn open_all(&self) -> (usize, usize) {
        let (mut opened, mut failed) = (0, 0);
        for record in self.inner.store.list() {
            let id = record.instance_id;
            if record.state != VolumeState::Ready || self.inner.registry.get(&id).is_err() {
                continue;
            }
            match self.open(&id).await {
                Ok(_) => opened += 1,
                Err(e) => {
                    failed += 1;
                    tracing::error!(instance = %id, "open volume at start-up: {e:#}");
                }
            }
        }
        (opened, failed)
    }
}

impl Inner {
    /// Checks a backing before create. Returns the device size for a block device.
    fn check_backing(
        &self,
        id: &str,
        backing: &Path,
        managed_file: bool,
        overwrite: bool,
    ) -> Result<Option<u64>, VolumeError> {
        if !managed_file {
            let text = backing.to_string_lossy();
            let allowed = self.settings.device_prefixes.iter().any(|p| {
                let p = p.to_string_lossy();
                text.len() > p.len() && text.starts_with(p.as_ref())
            });
            if !allowed {
                return Err(InvalidField::new(
                    "spec.volume.device",
                    format!("{text} is outside the allowed instances.device_prefixes; nothing was touched"),
                )
                .into());
            }
        }
        let canonical = std::fs::canonicalize(backing).unwrap_or_else(|_| backing.to_path_buf());
        for other in self.store.list().into_iter().filter(|r| r.instance_id != id) {
            let theirs = std::fs::canonicalize(&other.backing).unwrap_or_else(|_| other.backing.clone());
            if other.backing == backing || theirs == canonical {
                return Err(VolumeError::FailedPrecondition(format!(
                    "{} holds the volume of instance {}; destroy that volume first. Nothing was touched",
                    backing.display(),
                    other.instance_id
                )));
            }
        }
        let size = match self.host.device_size(backing) {
            Ok(size) => size,
            Err(_) if managed_file => return Ok(None),
            Err(e) => {
                return Err(VolumeError::FailedPrecondition(format!(
                    "device {} cannot be opened: {e}",
                    backing.display()
                )));
            }
        };
        if !overwrite {
            let signature = if self.crypt.is_luks(backing).unwrap_or(false) {
                Some("crypto_LUKS".to_owned())
            } else {
                self.host.signature(backing)?
            };
            if let Some(kind) = signature {
                return Err(VolumeError::FailedPrecondition(format!(
                    "{} already carries a {kind} signature and may hold data; pass force=true to overwrite it. Nothing was touched",
                    backing.display()
                )));
            }
        }
        Ok((!managed_file).then_some(size))
    }

    fn create_steps(&self, instance: &Instance, record: &VolumeRecord, key: &VolumeKey) -> Result<(), VolumeError> {
        if record.managed_file {
            self.host.ensure_sparse_file(&record.backing, record.size_bytes)?;
        }
        let device = self.device(record)?;
        let mut params = self.settings.format.clone();
        params.label = mapper_name(&record.instance_id).chars().take(47).collect();
        params.key_bits = record.key_bits;
        self.crypt.format(&device, &params, key.as_bytes())?;
        let name = mapper_name(&record.instance_id);
        if self.crypt.active(&name)?.is_some() {
            // Left by an interrupted create on this backing: its mapping has the old header's key.
            self.crypt.deactivate(&name)?;
        }
        self.crypt.activate(&device, &name, key.as_bytes(), self.settings.flags)?;
        self.host.mkfs(&mapper_path(&record.instance_id), record.filesystem, "dbagent")?;
        self.mount(instance, record.filesystem)?;
        self.host.chown(&instance.spec.data_dir, &instance.spec.os_user)?;
        Ok(())
    }

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

    /// Mounts the mapper device at data_dir unless it is mounted there. Returns true if it mounted now.
    fn mount(&self, instance: &Instance, fs: crate::instances::Filesystem) -> Result<bool, VolumeError> {
        let mapper = mapper_path(&instance.id);
        let dir = &instance.spec.data_dir;
        match self.host.mounted_device(dir)? {
            Some(dev) if dev == mapper => return Ok(false),
            Some(other) => {
                return Err(VolumeError::FailedPrecondition(format!(
                    "{} is already mounted at {}; unmount it so the volume can be mounted there",
                    other.display(),
                    dir.display()
                )));
            }
            None => {}
        }
        self.registry.check_no_escape("data_dir", dir).map_err(|e| VolumeError::FailedPrecondition(e.to_string()))?;
        self.host.ensure_dir(dir)?;
        self.host.mount(&mapper, dir, fs)?;
        Ok(true)
    }

    /// Unmount, deactivate, detach: whatever of it is in place. Returns true if anything was.
    pub(super) fn teardown(&self, record: &VolumeRecord) -> Result<bool, VolumeError> {
        let id = &record.instance_id;
        let mapper = mapper_path(id);
        let mut did = false;
        if let Ok(instance) = self.registry.get(id)
            && self.host.mounted_device(&instance.spec.data_dir)?.as_deref() == Some(mapper.as_path())
        {
            self.host.unmount(&instance.spec.data_dir)?;
            did = true;
        }
        if self.crypt.active(&mapper_name(id))?.is_some() {
            self.crypt.deactivate(&mapper_name(id))?;
            did = true;
        }
        if record.managed_file
            && let Some(dev) = self.host.find_loop(&record.backing)?
        {
            self.host.detach_loop(&dev)?;
            did = true;
        }
        Ok(did)
    }

    pub(super) fn remove_header_backups(&self, id: &str) -> Result<(), VolumeError> {
        let Ok(entries) = std::fs::read_dir(&self.headers_dir) else { return Ok(()) };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.strip_prefix(id).is_some_and(|rest| rest.starts_with('.')) {
                crate::fsutil::remove_durable(&entry.path())
                    .map_err(|e| super::host::HostError::io(format!("remove {}", entry.path().display()), e))?;
            }
        }
        Ok(())
    }

    fn status(
        &self,
        record: &VolumeRecord,
        data_dir: Option<&Path>,
        last_error: Option<String>,
    ) -> Result<VolumeStatus, VolumeError> {
        let id = &record.instance_id;
        let active = self.crypt.active(&mapper_name(id))?;
        let mounted = match data_dir {
            Some(dir) => self.host.mounted_device(dir)?.as_deref() == Some(mapper_path(id).as_path()),
            None => false,
        };
        let header = self.crypt.header_info(&self.header_device(record)?)?;
        let fs = match (mounted, data_dir) {
            (true, Some(dir)) => Some(self.host.fs_usage(dir)?),
            _ => None,
        };
        let size_bytes = self.host.device_size(&self.header_device(record)?).unwrap_or(record.size_bytes);
        Ok(VolumeStatus {
            instance_id: id.clone(),
            backing: record.backing.clone(),
            mapper_path: mapper_path(id),
            active: active.is_some(),
            mounted,
            cipher: header.cipher,
            key_bits: header.key_bits,
            sector_size: header.sector_size,
            size_bytes,
            fs,
            filesystem: record.filesystem,
            flags: active.map(|a| a.flags.names()).unwrap_or_default(),
            key_version: record.key_version,
            last_error,
        })
    }
}

#[cfg(test)]
#[path = "manager_tests.rs"]
pub(crate) mod tests;
