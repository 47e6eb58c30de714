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
use crate::instances::model::{Instance, InstanceSpec};
use crate::instances::validate::{self, ValidationRules, validate_spec};
use crate::locks::ResourceLocks;
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
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// The expected generation does not match: maps to ABORTED.
    #[error("{0}")]
    Conflict(String),
    /// The per-instance lock is held by a running operation: maps to ABORTED.
    #[error("{0}")]
    Busy(String),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("{context}: {source}")]
    Corrupt { context: String, source: serde_json::Error },
}

impl crate::error::HasErrorCode for RegistryError {
    fn code(&self) -> crate::error::ErrorCode {
        use crate::error::ErrorCode as C;
        match self {
            RegistryError::Invalid(_) => C::InvalidArgument,
            RegistryError::NotFound(_) => C::NotFound,
            RegistryError::AlreadyExists(_) => C::AlreadyExists,
            RegistryError::FailedPrecondition(_) => C::FailedPrecondition,
            RegistryError::Conflict(_) | RegistryError::Busy(_) => C::Aborted,
            RegistryError::Io { .. } | RegistryError::Corrupt { .. } => C::Internal,
        }
    }
}

pub struct Registry {
    dir: PathBuf,
    rules: ValidationRules,
    locks: ResourceLocks,
    /// Held across the overlap check and the write of a registration: data_dir and device
    /// uniqueness spans instances, which per-instance locks cannot protect. Only `register` takes it
    /// (updates cannot change data_dir or device), and it is held for one file write.
    claims: Arc<AsyncMutex<()>>,
    instances: Arc<RwLock<InstanceMap>>,
}

type InstanceMap = BTreeMap<String, Instance>;

/// One durable change: the file and the map entry of one instance.
enum Change {
    Put(Box<Instance>, Vec<u8>),
    Delete(String),
}

impl Registry {
    /// Creates `dir` (mode 0700) if needed and loads every instance file in it. Start-up is the only
    /// caller, so the reads are plain blocking I/O. A file that cannot be read or parsed fails the
    /// whole open: silently dropping an instance would orphan its volume and data.
    pub fn open(dir: PathBuf, rules: ValidationRules, locks: ResourceLocks) -> Result<Self, RegistryError> {
        fsutil::ensure_private_dir(&dir)
            .map_err(|source| io(format!("create registry folder {}", dir.display()), source))?;
        let files =
            fsutil::json_files(&dir).map_err(|source| io(format!("list registry folder {}", dir.display()), source))?;
        let mut instances = BTreeMap::new();
        for path in files {
            let instance = load(&path)?;
            instances.insert(instance.id.clone(), instance);
        }
        Ok(Self { dir, rules, locks, claims: Arc::default(), instances: Arc::new(RwLock::new(instances)) })
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
            return Err(RegistryError::AlreadyExists(format!(
                "instance {id} is already registered with a different spec; use UpdateInstance to change it"
            )));
        }
        self.check_overlap(id, &spec)?;
        self.check_no_escape("spec.data_dir", &spec.data_dir)?;
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
            return Err(RegistryError::Conflict(format!(
                "instance {id} is at generation {}, not the expected {expected}; read it again and retry",
                current.generation
            )));
        }
        immutable_fields(&current.spec, &spec)?;
        let updated = Instance { spec, updated: now(), generation: current.generation + 1, ..current };
        self.put(updated.clone(), "update", guard).await?;
        Ok(updated)
    }

    /// Forgets `id` and returns what it was. Only the registry entry goes: the volume and the
    /// database are other modules' business.
    pub async fn remove(&self, id: &str) -> Result<Instance, RegistryError> {
        ids::instance_id("id", id)?;
        let guard = self.try_lock(id)?;
        let current = self.get(id)?;
        self.commit(Change::Delete(id.to_owned()), guard)
            .await
            .map_err(|source| io(format!("remove instance {id}: delete {}", self.file(id).display()), source))?;
        Ok(current)
    }

    pub fn get(&self, id: &str) -> Result<Instance, RegistryError> {
        ids::instance_id("id", id)?;
        self.read().get(id).cloned().ok_or_else(|| RegistryError::NotFound(id.to_owned()))
    }

    /// All instances, sorted by id.
    pub fn list(&self) -> Vec<Instance> {
        self.read().values().cloned().collect()
    }

    pub fn count(&self) -> usize {
        self.read().len()
    }

    fn check(&self, id: &str, spec: &InstanceSpec) -> Result<(), RegistryError> {
        ids::instance_id("id", id)?;
        validate_spec(spec, &self.rules)?;
        Ok(())
    }

    fn try_lock(&self, id: &str) -> Result<OwnedMutexGuard<()>, RegistryError> {
        self.locks.try_lock(id).ok_or_else(|| {
            RegistryError::Busy(format!("instance {id} has an operation running; retry when it has finished"))
        })
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
                return Err(RegistryError::FailedPrecondition(format!(
                    "target_data_dir {} overlaps data_dir {} of instance {}; restore into a folder of its own",
                    dir.display(),
                    theirs.display(),
                    other.id
                )));
            }
        }
        self.check_no_escape("target_data_dir", dir)
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
        Err(RegistryError::FailedPrecondition(format!(
            "{field} {} leads out of the data roots ({}) through a symbolic link",
            dir.display(),
            self.rules.data_roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ")
        )))
    }

    /// Two instances on one folder tree or one device would destroy each other's data.
    fn check_overlap(&self, id: &str, spec: &InstanceSpec) -> Result<(), RegistryError> {
        for other in self.read().values().filter(|o| o.id != id) {
            let (mine, theirs) = (&spec.data_dir, &other.spec.data_dir);
            if overlaps(mine, theirs) {
                return Err(RegistryError::AlreadyExists(format!(
                    "data_dir {} overlaps data_dir {} of instance {}; every instance needs its own folder",
                    mine.display(),
                    theirs.display(),
                    other.id
                )));
            }
            if let (Some(mine), Some(theirs)) = (&spec.volume.device, &other.spec.volume.device)
                && mine == theirs
            {
                return Err(RegistryError::AlreadyExists(format!(
                    "volume.device {} is already used by instance {}",
                    mine.display(),
                    other.id
                )));
            }
        }
        Ok(())
    }

    async fn put(&self, instance: Instance, verb: &str, guards: impl Send + 'static) -> Result<(), RegistryError> {
        let context = format!("{verb} instance {}: write {}", instance.id, self.file(&instance.id).display());
        let bytes = serde_json::to_vec_pretty(&instance)
            .map_err(|source| RegistryError::Corrupt { context: context.clone(), source })?;
        self.commit(Change::Put(Box::new(instance), bytes), guards).await.map_err(|source| io(context, source))
    }

    /// Writes `change` to disk, then to the map, in a blocking task: an fsync can take tens of
    /// milliseconds on a busy disk and must not stall the async workers. `guards` are released only
    /// when the task ends, even if the caller's future was dropped.
    async fn commit(&self, change: Change, guards: impl Send + 'static) -> std::io::Result<()> {
        let (dir, instances) = (self.dir.clone(), Arc::clone(&self.instances));
        let task = tokio::task::spawn_blocking(move || {
            let _guards = guards;
            match change {
                Change::Put(instance, bytes) => {
                    fsutil::atomic_write(&instance_file(&dir, &instance.id), &bytes)?;
                    write_map(&instances).insert(instance.id.clone(), *instance);
                }
                Change::Delete(id) => {
                    fsutil::remove_durable(&instance_file(&dir, &id))?;
                    write_map(&instances).remove(&id);
                }
            }
            Ok(())
        });
        task.await.map_err(std::io::Error::other)?
    }

    fn file(&self, id: &str) -> PathBuf {
        instance_file(&self.dir, id)
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

/// Ids are validated before use, so the id is a safe file name.
fn instance_file(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

fn write_map(instances: &RwLock<InstanceMap>) -> RwLockWriteGuard<'_, InstanceMap> {
    instances.write().unwrap_or_else(|p| p.into_inner())
}

/// Reads one instance file and checks that it belongs under its name.
fn load(path: &Path) -> Result<Instance, RegistryError> {
    let context = format!("load registry file {}", path.display());
    let bytes = std::fs::read(path).map_err(|source| io(context.clone(), source))?;
    let instance: Instance =
        serde_json::from_slice(&bytes).map_err(|source| RegistryError::Corrupt { context: context.clone(), source })?;
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    if stem != instance.id || ids::instance_id("id", &instance.id).is_err() {
        let source = <serde_json::Error as serde::de::Error>::custom(format!(
            "the file holds instance {:?}; a registry file must be named <id>.json after a valid instance id",
            ids::truncate_for_message(&instance.id)
        ));
        return Err(RegistryError::Corrupt { context, source });
    }
    Ok(instance)
}

/// Changing these would silently point the registry at other data; each needs its own operation.
fn immutable_fields(current: &InstanceSpec, new: &InstanceSpec) -> Result<(), RegistryError> {
    if current.engine != new.engine {
        return Err(RegistryError::FailedPrecondition(format!(
            "spec.engine cannot change from {:?} to {:?} with UpdateInstance; engine changes are upgrades: use StartUpgrade",
            current.engine, new.engine
        )));
    }
    if current.data_dir != new.data_dir {
        return Err(RegistryError::FailedPrecondition(format!(
            "spec.data_dir cannot change from {} to {}; register a new instance and move the data there",
            current.data_dir.display(),
            new.data_dir.display()
        )));
    }
    if current.volume.device != new.volume.device {
        return Err(RegistryError::FailedPrecondition(
            "spec.volume.device cannot change; register a new instance on the new device and move the data there"
                .to_owned(),
        ));
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

fn io(context: String, source: std::io::Error) -> RegistryError {
    RegistryError::Io { context, source }
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
