//! The persisted registry of instances: one `<dir>/<id>.json` per instance, mirrored in memory.
//!
//! Every mutation writes its file first and changes the map only after the write succeeded, so a failed
//! write leaves disk and memory as they were. Mutations of one instance are serialised by its entry in
//! the shared [`ResourceLocks`]; an operation that holds that lock makes them fail fast with `Busy`
//! instead of waiting behind a long job.
//!
//! tonic drops a handler's future when the client goes away. So that a drop cannot land between the
//! file write and the map change, both happen in one `spawn_blocking` task that also owns the locks:
//! once started, a commit runs to its end and nothing else touches the instance meanwhile.

use crate::fsutil;
use crate::ids::{self, InvalidField};
use crate::instances::model::{Engine, Instance, InstanceSpec, MaintenanceWindow, Plan};
use crate::instances::validate::{self, ValidationRules, validate_spec};
use crate::json_store::{CorruptRecord, JsonRecord, JsonStore, JsonStoreError, OnCorrupt};
use crate::locks::ResourceLocks;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// What `register` did, so a retried call can be told apart from a new registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Existing,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    #[error("instance {0} is not registered")]
    NotFound(String),
    #[error("instance {instance} is already registered with a different spec; use UpdateInstance to change it")]
    AlreadyRegistered { instance: String },
    #[error(
        "data_dir {} overlaps data_dir {} of instance {other}; every instance needs a folder of its own, \
         neither inside nor around another's",
        data_dir.display(),
        other_data_dir.display()
    )]
    DataDirOverlaps { data_dir: PathBuf, other: String, other_data_dir: PathBuf },
    #[error("volume.device {} is already used by instance {other}; every instance needs a device of its own", device.display())]
    DeviceInUse { device: PathBuf, other: String },
    /// Another client changed the instance since the caller read it.
    #[error("instance {instance} is at generation {actual}, not the expected {expected}; read it again and retry")]
    GenerationMismatch { instance: String, expected: u64, actual: u64 },
    /// The instance's lock is held by a running operation. Which one is not recorded with the lock:
    /// ListOperations with the instance as target shows it.
    #[error("instance {instance} has an operation running; retry when it has finished")]
    Busy { instance: String },
    #[error(
        "spec.engine of instance {instance} cannot change from {} to {} with UpdateInstance; engine changes are \
         upgrades: use StartUpgrade",
        from.as_str(),
        to.as_str()
    )]
    EngineChange { instance: String, from: Engine, to: Engine },
    #[error(
        "spec.data_dir of instance {instance} cannot change from {} to {}; register a new instance and move the \
         data there",
        from.display(),
        to.display()
    )]
    DataDirChange { instance: String, from: PathBuf, to: PathBuf },
    #[error(
        "spec.volume.device of instance {instance} cannot change from {} to {}; register a new instance on the \
         new device and move the data there",
        device_name(from),
        device_name(to)
    )]
    DeviceChange { instance: String, from: Option<PathBuf>, to: Option<PathBuf> },
    #[error(
        "target_data_dir {} overlaps data_dir {} of instance {other}; restore into a folder of its own",
        target.display(),
        other_data_dir.display()
    )]
    RestoreDirOverlaps { target: PathBuf, other: String, other_data_dir: PathBuf },
    #[error(
        "{field} {} leads out of the data roots ({}) through a symbolic link; use a path whose folders are \
         not links out of them",
        path.display(),
        data_roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    LeavesDataRoots { field: String, path: PathBuf, data_roots: Vec<PathBuf> },
    /// The instance's record could not be read at start-up: the instance is quarantined.
    #[error(
        "instance {instance} is quarantined: its record {} is unreadable ({reason}); repair or restore the file \
         and restart the agent. Nothing was changed",
        file.display()
    )]
    Quarantined { instance: String, file: PathBuf, reason: String },
    /// State of an earlier life of the id (a volume, keys, operations) still exists: removing the
    /// instance would orphan it, registering the id again would hand it to the new instance.
    #[error("instance {instance} cannot be {verb}: {} remain. Nothing was changed", remains.join("; "))]
    Remains { instance: String, verb: &'static str, remains: Vec<String> },
    #[error("{context}: {source}")]
    Storage { context: String, source: JsonStoreError },
}

impl crate::error::HasErrorCode for RegistryError {
    fn code(&self) -> crate::error::ErrorCode {
        use crate::error::ErrorCode as C;
        match self {
            RegistryError::Invalid(_) => C::InvalidArgument,
            RegistryError::NotFound(_) => C::NotFound,
            RegistryError::AlreadyRegistered { .. }
            | RegistryError::DataDirOverlaps { .. }
            | RegistryError::DeviceInUse { .. } => C::AlreadyExists,
            RegistryError::EngineChange { .. }
            | RegistryError::DataDirChange { .. }
            | RegistryError::DeviceChange { .. }
            | RegistryError::RestoreDirOverlaps { .. }
            | RegistryError::LeavesDataRoots { .. }
            | RegistryError::Quarantined { .. }
            | RegistryError::Remains { .. } => C::FailedPrecondition,
            RegistryError::GenerationMismatch { .. } | RegistryError::Busy { .. } => C::Aborted,
            RegistryError::Storage { .. } => C::Internal,
        }
    }
}

fn device_name(device: &Option<PathBuf>) -> String {
    match device {
        Some(device) => device.display().to_string(),
        None => "none (an agent-managed file)".to_owned(),
    }
}

/// An instance file is `<id>.json` and must hold a valid instance id.
impl JsonRecord for Instance {
    const KIND: &'static str = "instance";

    fn key(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.id)
    }

    fn check(&self) -> Result<(), String> {
        ids::instance_id("id", &self.id).map_err(|e| e.to_string())
    }
}

/// What else on the host belongs to an instance id: its volume and keys, its operations. The
/// registry asks before it forgets an instance and before it registers an id anew, holding the
/// instance's lock, so neither orphans that state nor hands it to a new instance of the same id.
#[tonic::async_trait]
pub trait InstanceLeftovers: Send + Sync {
    /// Everything that remains of `id`, each said with what to do about it; empty when nothing
    /// does. A check that fails is itself a remainder (the state cannot be shown to be gone).
    async fn remains(&self, id: &str) -> Vec<String>;
}

/// Resolves an OS user name to its (uid, gid) on this host; `None` if there is no such account.
pub type AccountLookup = fn(&str) -> Option<(u32, u32)>;

/// The host's passwd database.
fn system_account(name: &str) -> Option<(u32, u32)> {
    nix::unistd::User::from_name(name).ok().flatten().map(|u| (u.uid.as_raw(), u.gid.as_raw()))
}

pub struct Registry {
    store: JsonStore<Instance>,
    rules: ValidationRules,
    /// os_user is checked against the account it names, when it exists (a user created after the
    /// registration is checked again when the volume is mounted and chowned).
    accounts: AccountLookup,
    /// Instances whose record was unreadable at start-up, by id (the file's name): every call on
    /// them is refused until the file is repaired and the agent restarted.
    quarantined: BTreeMap<String, CorruptRecord>,
    /// Set once at start-up, when the volumes and the operations engine exist (they are built over
    /// the registry); until then nothing else can hold state of an instance.
    leftovers: std::sync::OnceLock<Arc<dyn InstanceLeftovers>>,
    locks: ResourceLocks,
    /// Held across the overlap check and the write of a registration: data_dir and device
    /// uniqueness spans instances, which per-instance locks cannot protect. Only `register` takes it
    /// (updates cannot change data_dir or device), and it is held for one file write.
    claims: Arc<AsyncMutex<()>>,
    instances: Arc<RwLock<InstanceMap>>,
    /// Counts committed changes, so followers (the log manager) wake on a change instead of polling.
    changes: tokio::sync::watch::Sender<u64>,
}

type InstanceMap = BTreeMap<String, Instance>;

/// One durable change: the file and the map entry of one instance.
enum Change {
    Put(Box<Instance>),
    Delete(String),
}

impl Registry {
    /// Creates `dir` (mode 0700) if needed and loads every instance file in it. Start-up is the only
    /// caller, so the reads are plain blocking I/O.
    pub fn open(dir: PathBuf, rules: ValidationRules, locks: ResourceLocks) -> Result<Self, RegistryError> {
        // A corrupt instance file quarantines that instance, not the agent: the file stays in place
        // (the registry is the only record that the instance exists), its id cannot be registered,
        // changed or removed, its volume is not opened, and Status and a metric report it, while
        // every other instance starts. The operator repairs or restores the file and restarts.
        let (store, loaded) = JsonStore::<Instance>::open(dir, OnCorrupt::Keep)
            .map_err(|source| RegistryError::Storage { context: "open the instance registry".into(), source })?;
        let quarantined = loaded.corrupt.into_iter().map(|c| (c.key(), c)).collect();
        let instances = loaded.records.into_iter().map(|i| (i.id.clone(), i)).collect();
        let changes = tokio::sync::watch::Sender::new(0);
        Ok(Self {
            store,
            rules,
            accounts: system_account,
            quarantined,
            leftovers: std::sync::OnceLock::new(),
            locks,
            claims: Arc::default(),
            instances: Arc::new(RwLock::new(instances)),
            changes,
        })
    }

    /// Where RemoveInstance and a new registration learn what else holds state of an id. Called
    /// once at start-up; a second call is ignored.
    pub fn set_leftovers(&self, leftovers: Arc<dyn InstanceLeftovers>) {
        let _ = self.leftovers.set(leftovers);
    }

    async fn remains(&self, id: &str) -> Vec<String> {
        match self.leftovers.get() {
            Some(l) => l.remains(id).await,
            None => Vec::new(),
        }
    }

    /// Another passwd database, for tests that need accounts this host does not have.
    #[cfg(test)]
    pub(crate) fn with_accounts(mut self, accounts: AccountLookup) -> Self {
        self.accounts = accounts;
        self
    }

    /// Registers `id`. The same id with the same spec again returns the stored instance with
    /// `Outcome::Existing`, so a client may retry after a lost reply.
    pub async fn register(&self, id: &str, spec: InstanceSpec) -> Result<(Instance, Outcome), RegistryError> {
        self.check(id, &spec)?;
        // A retry of a registration that already succeeded needs no lock: answering it while an
        // operation runs on the instance saves the client a pointless Busy.
        if let Some(existing) = self.read().get(id).filter(|e| e.spec == spec) {
            return Ok((existing.clone(), Outcome::Existing));
        }
        let guard = self.try_lock(id)?;
        let claims = Arc::clone(&self.claims).lock_owned().await;
        if let Some(existing) = self.read().get(id) {
            if existing.spec == spec {
                return Ok((existing.clone(), Outcome::Existing));
            }
            return Err(RegistryError::AlreadyRegistered { instance: id.to_owned() });
        }
        self.check_overlap(id, &spec)?;
        self.check_no_escape("spec.data_dir", &spec.data_dir)?;
        let remains = self.remains(id).await;
        if !remains.is_empty() {
            return Err(RegistryError::Remains { instance: id.to_owned(), verb: "registered again", remains });
        }
        let now = now();
        let instance = Instance { id: id.to_owned(), spec, created: now, updated: now, generation: 1 };
        self.put(instance.clone(), "register", (guard, claims)).await?;
        Ok((instance, Outcome::Created))
    }

    /// Replaces the spec of `id`. `expected_generation` guards against lost updates between clients.
    pub async fn update(
        &self,
        id: &str,
        spec: InstanceSpec,
        expected_generation: Option<u64>,
    ) -> Result<Instance, RegistryError> {
        self.check(id, &spec)?;
        let guard = self.try_lock(id)?;
        let current = self.get(id)?;
        if let Some(expected) = expected_generation.filter(|g| *g != current.generation) {
            return Err(RegistryError::GenerationMismatch {
                instance: id.to_owned(),
                expected,
                actual: current.generation,
            });
        }
        immutable_fields(id, &current.spec, &spec)?;
        let updated = Instance { spec, updated: now(), generation: current.generation + 1, ..current };
        self.put(updated.clone(), "update", guard).await?;
        Ok(updated)
    }

    /// Records a finished major upgrade (`upgrade::job`): the new version, unit and data folder.
    /// The only change of `data_dir` there is: UpdateInstance refuses one, because only the upgrade
    /// moves the data; engine and device must stay. The caller is the upgrade operation, which
    /// holds the instance's lock already (an exclusive operation).
    pub async fn record_major_upgrade(&self, id: &str, spec: InstanceSpec) -> Result<Instance, RegistryError> {
        self.check(id, &spec)?;
        let current = self.get(id)?;
        let mut same_dir = spec.clone();
        same_dir.data_dir.clone_from(&current.spec.data_dir);
        immutable_fields(id, &current.spec, &same_dir)?;
        let updated = Instance { spec, updated: now(), generation: current.generation + 1, ..current };
        self.put(updated.clone(), "upgrade", ()).await?;
        Ok(updated)
    }

    /// Sets the weekly maintenance window of `id`, keeping the rest of its spec: a new generation of
    /// the instance record, so the window is as durable as the instance and GetInstance shows it.
    pub async fn set_maintenance_window(&self, id: &str, window: MaintenanceWindow) -> Result<Instance, RegistryError> {
        validate::maintenance_window("window", &window)?;
        let current = self.get(id)?;
        if current.spec.maintenance_window.as_ref() == Some(&window) {
            return Ok(current);
        }
        let spec = InstanceSpec { maintenance_window: Some(window), ..current.spec };
        self.update(id, spec, Some(current.generation)).await
    }

    /// Stores a new plan of `id`, keeping the rest of its spec. Only for the plan-change
    /// operation, which runs exclusive and so already holds the instance's lock (taking it here
    /// would wait for itself); the spec is validated as any update is.
    pub async fn set_plan_in_operation(&self, id: &str, plan: Plan) -> Result<Instance, RegistryError> {
        let current = self.get(id)?;
        if current.spec.plan == plan {
            return Ok(current);
        }
        let spec = InstanceSpec { plan, ..current.spec.clone() };
        self.check(id, &spec)?;
        let updated = Instance { spec, updated: now(), generation: current.generation + 1, ..current };
        self.put(updated.clone(), "change the plan of", ()).await?;
        Ok(updated)
    }

    /// Forgets `id` and returns what it was. Refused while anything else holds state of it (its
    /// volume record, its keys, an operation on it): the instance must be emptied first, so that
    /// nothing is orphaned and a later instance of the same id starts from nothing.
    pub async fn remove(&self, id: &str) -> Result<Instance, RegistryError> {
        ids::instance_id("id", id)?;
        self.check_not_quarantined(id)?;
        let refuse = |remains| RegistryError::Remains { instance: id.to_owned(), verb: "removed", remains };
        let Some(guard) = self.locks.try_lock(id) else {
            // The running operation holds the lock: name it (and whatever else remains).
            let remains = self.remains(id).await;
            return Err(if remains.is_empty() {
                RegistryError::Busy { instance: id.to_owned() }
            } else {
                refuse(remains)
            });
        };
        let current = self.get(id)?;
        let remains = self.remains(id).await;
        if !remains.is_empty() {
            return Err(refuse(remains));
        }
        self.commit(Change::Delete(id.to_owned()), guard)
            .await
            .map_err(|source| RegistryError::Storage { context: format!("remove instance {id}"), source })?;
        Ok(current)
    }

    pub fn get(&self, id: &str) -> Result<Instance, RegistryError> {
        ids::instance_id("id", id)?;
        self.check_not_quarantined(id)?;
        self.read().get(id).cloned().ok_or_else(|| RegistryError::NotFound(id.to_owned()))
    }

    /// The per-instance locks operations hold; the start-up pass over the volumes takes them too.
    pub fn locks(&self) -> &ResourceLocks {
        &self.locks
    }

    /// The instances whose record was unreadable at start-up, sorted by id.
    pub fn quarantined(&self) -> Vec<CorruptRecord> {
        self.quarantined.values().cloned().collect()
    }

    fn check_not_quarantined(&self, id: &str) -> Result<(), RegistryError> {
        match self.quarantined.get(id) {
            None => Ok(()),
            Some(c) => Err(RegistryError::Quarantined {
                instance: id.to_owned(),
                file: c.file.clone(),
                reason: c.reason.clone(),
            }),
        }
    }

    /// All instances, sorted by id.
    pub fn list(&self) -> Vec<Instance> {
        self.read().values().cloned().collect()
    }

    pub fn count(&self) -> usize {
        self.read().len()
    }

    /// Changes each time an instance is registered, updated or removed (after the change is durable
    /// and visible to `list`).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn check(&self, id: &str, spec: &InstanceSpec) -> Result<(), RegistryError> {
        ids::instance_id("id", id)?;
        self.check_not_quarantined(id)?;
        validate_spec(spec, &self.rules)?;
        if let Some((uid, gid)) = (self.accounts)(&spec.os_user) {
            validate::os_user_account("spec.os_user", &spec.os_user, uid, gid)?;
        }
        Ok(())
    }

    fn try_lock(&self, id: &str) -> Result<OwnedMutexGuard<()>, RegistryError> {
        self.locks.try_lock(id).ok_or_else(|| RegistryError::Busy { instance: id.to_owned() })
    }

    /// Where a physical restore for instance `id` may write: its own data_dir (the caller checks
    /// that it is stopped), or a folder below a data root that overlaps no instance's data_dir and
    /// is not reached through a symbolic link leading out of the data roots. The agent writes
    /// there as root, so a request must not be able to aim it anywhere else on the host.
    pub fn check_restore_dir(&self, id: &str, dir: &Path) -> Result<(), RegistryError> {
        let instances = self.read();
        let own = instances.get(id).ok_or_else(|| RegistryError::NotFound(id.to_owned()))?;
        if dir == own.spec.data_dir {
            return Ok(());
        }
        validate::data_dir("target_data_dir", dir, &self.rules.data_roots)?;
        for other in instances.values() {
            let theirs = &other.spec.data_dir;
            if overlaps(dir, theirs) {
                return Err(RegistryError::RestoreDirOverlaps {
                    target: dir.to_path_buf(),
                    other: other.id.clone(),
                    other_data_dir: theirs.clone(),
                });
            }
        }
        self.check_no_escape("target_data_dir", dir)
    }

    /// The configured data roots.
    pub fn data_roots(&self) -> &[PathBuf] {
        &self.rules.data_roots
    }

    /// The data root `dir` lies strictly below (the innermost, if roots nest), by components.
    pub fn data_root_of(&self, dir: &Path) -> Option<PathBuf> {
        crate::beneath::split_below(&self.rules.data_roots, dir).map(|(root, _)| root.to_owned())
    }

    /// Folders log files may be read from: the log roots and the data roots.
    pub fn log_read_roots(&self) -> Vec<PathBuf> {
        self.rules.log_read_roots()
    }

    /// `dir` must not leave the data roots through a symbolic link. The data roots belong to the
    /// databases' users (`/var/lib/postgresql` is postgres's): a link planted there must not aim
    /// the agent's mount, chown or restore, all done as root, at another place on the host. Checked
    /// at registration and again right before each mount.
    pub fn check_no_escape(&self, field: &str, dir: &Path) -> Result<(), RegistryError> {
        if fsutil::resolves_below(dir, &self.rules.data_roots) {
            return Ok(());
        }
        Err(RegistryError::LeavesDataRoots {
            field: field.to_owned(),
            path: dir.to_path_buf(),
            data_roots: self.rules.data_roots.clone(),
        })
    }

    /// Two instances on one folder tree or one device would destroy each other's data.
    fn check_overlap(&self, id: &str, spec: &InstanceSpec) -> Result<(), RegistryError> {
        for other in self.read().values().filter(|o| o.id != id) {
            let (mine, theirs) = (&spec.data_dir, &other.spec.data_dir);
            if overlaps(mine, theirs) {
                return Err(RegistryError::DataDirOverlaps {
                    data_dir: mine.clone(),
                    other: other.id.clone(),
                    other_data_dir: theirs.clone(),
                });
            }
            if let (Some(mine), Some(theirs)) = (&spec.volume.device, &other.spec.volume.device)
                && mine == theirs
            {
                return Err(RegistryError::DeviceInUse { device: mine.clone(), other: other.id.clone() });
            }
        }
        Ok(())
    }

    async fn put(&self, instance: Instance, verb: &str, guards: impl Send + 'static) -> Result<(), RegistryError> {
        let context = format!("{verb} instance {}", instance.id);
        self.commit(Change::Put(Box::new(instance)), guards)
            .await
            .map_err(|source| RegistryError::Storage { context, source })
    }

    /// Writes `change` to disk, then to the map, in a blocking task: an fsync can take tens of
    /// milliseconds on a busy disk and must not stall the async workers. `guards` are released only
    /// when the task ends, even if the caller's future was dropped.
    async fn commit(&self, change: Change, guards: impl Send + 'static) -> Result<(), JsonStoreError> {
        let (store, instances) = (self.store.clone(), Arc::clone(&self.instances));
        let id = match &change {
            Change::Put(instance) => instance.id.clone(),
            Change::Delete(id) => id.clone(),
        };
        let task = tokio::task::spawn_blocking(move || {
            let _guards = guards;
            match change {
                Change::Put(instance) => {
                    store.put(&instance)?;
                    write_map(&instances).insert(instance.id.clone(), *instance);
                }
                Change::Delete(id) => {
                    store.remove(&id)?;
                    write_map(&instances).remove(&id);
                }
            }
            Ok(())
        });
        // Only a panic in the task ends up here: report it as the write it interrupted.
        let result = task.await.map_err(|e| {
            let path = self.store.file(&id).unwrap_or_default();
            self.store.io_error("write", path, std::io::Error::other(e))
        })?;
        self.changes.send_modify(|n| *n += 1);
        result
    }

    // The map is only ever changed by single inserts and removes, so a poisoned lock still holds a
    // consistent map and is used as is.
    fn read(&self) -> RwLockReadGuard<'_, InstanceMap> {
        self.instances.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// One folder tree holds the other (or they are the same): whole components, as `Path::starts_with`.
fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

fn write_map(instances: &RwLock<InstanceMap>) -> RwLockWriteGuard<'_, InstanceMap> {
    instances.write().unwrap_or_else(|p| p.into_inner())
}

/// Changing these would silently point the registry at other data; each needs its own operation.
fn immutable_fields(id: &str, current: &InstanceSpec, new: &InstanceSpec) -> Result<(), RegistryError> {
    let instance = id.to_owned();
    if current.engine != new.engine {
        return Err(RegistryError::EngineChange { instance, from: current.engine, to: new.engine });
    }
    if current.data_dir != new.data_dir {
        return Err(RegistryError::DataDirChange {
            instance,
            from: current.data_dir.clone(),
            to: new.data_dir.clone(),
        });
    }
    if current.volume.device != new.volume.device {
        return Err(RegistryError::DeviceChange {
            instance,
            from: current.volume.device.clone(),
            to: new.volume.device.clone(),
        });
    }
    Ok(())
}

/// The time of a change, cut to whole milliseconds: state files keep milliseconds, and an instance
/// must compare equal before and after a restart.
fn now() -> SystemTime {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let millis = u64::try_from(since.as_millis()).unwrap_or(u64::MAX);
    UNIX_EPOCH + Duration::from_millis(millis)
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
