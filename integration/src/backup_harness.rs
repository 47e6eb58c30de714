//! The library-level BackupService against real servers: an operations engine in a temp folder,
//! destinations as given, and helpers to wait for operations.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

use dbagent::backup::settings::DestinationConfig;
use dbagent::backup::{BackupConfig, BackupKeys, BackupService, KekWrapper};
use dbagent::instances::{Engine, Filesystem, Instance, InstanceSpec, Plan, PlanName, VolumeSpec};
use dbagent::locks::ResourceLocks;
use dbagent::ops::{self, OpState, OperationRecord, OpsSettings};
use dbagent::volume::keystore::KekSource;

/// The data root of the harness's service: `servers::OwnedDir` folders, where the tests' servers
/// keep their data and restores go, are made below it.
pub const DATA_ROOT: &str = "/tmp";

pub struct Harness {
    _guard: Option<tempfile::TempDir>,
    pub state: PathBuf,
    pub engine: ops::OperationEngine,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    pub fn new() -> Self {
        let guard = tempfile::tempdir().expect("state dir");
        let (mut h, _) = Self::open(guard.path());
        h._guard = Some(guard);
        h
    }

    pub fn at(state: &Path) -> Self {
        Self::open(state).0
    }

    /// On an existing state folder (not removed on drop); also returns the operations the last
    /// run left unfinished, now `interrupted`.
    pub fn open(state: &Path) -> (Self, Vec<OperationRecord>) {
        let (engine, interrupted) = ops::OperationEngine::open(
            &state.join("operations"),
            OpsSettings { max_concurrent: 4, retention: Duration::from_secs(3600), max_finished: 1000 },
            ResourceLocks::default(),
            CancellationToken::new(),
        )
        .expect("open operations engine");
        (Self { _guard: None, state: state.to_path_buf(), engine }, interrupted)
    }

    /// Three `dir` destinations under the state folder.
    pub fn dir_destinations(&self) -> Vec<DestinationConfig> {
        ["az1", "az2", "az3"]
            .iter()
            .map(|az| DestinationConfig::Dir { name: (*az).into(), path: self.state.as_path().join("dest").join(az) })
            .collect()
    }

    /// The service with [`DATA_ROOT`] as its only data root: restores go into folders below it.
    pub fn service(&self, mut config: BackupConfig) -> Arc<BackupService> {
        // `dir` folders and a Garage on loopback are on this host: accepted in so many words, as a
        // production config would have to.
        config.accept_on_host_destinations = true;
        // A KEK in the state folder, generated once, as dev mode does: a reopened harness reads it.
        let kek = KekSource { credentials_dir: None, file: self.state.as_path().join("kek"), generate: true }
            .load()
            .expect("host KEK");
        // Host-only keys: the library-level service runs no production check; the agent tests
        // (backup_keys) cover the off-host keys.
        let keys = BackupKeys::host_only(Arc::new(KekWrapper::from_kek(&kek).expect("host KEK")));
        BackupService::new(config, self.state.as_path(), keys, vec![PathBuf::from(DATA_ROOT)], self.engine.clone())
            .expect("backup service")
    }

    pub async fn wait(&self, op: &OperationRecord) -> OperationRecord {
        let mut rx = self.engine.watch(&op.id).expect("watch");
        loop {
            let r = rx.borrow_and_update().clone();
            if r.state.is_finished() {
                return r;
            }
            tokio::time::timeout(Duration::from_secs(300), rx.changed())
                .await
                .expect("operation timed out")
                .expect("watch");
        }
    }

    /// Waits and asserts success; returns the result's backup id (if any).
    pub async fn succeed(&self, op: &OperationRecord) -> OperationRecord {
        let done = self.wait(op).await;
        assert_eq!(done.state, OpState::Succeeded, "{} failed: {:?}", done.kind, done.error);
        done
    }
}

pub fn backup_id(op: &OperationRecord) -> String {
    op.result.as_ref().and_then(|r| r["backup_id"].as_str()).expect("backup_id in result").to_owned()
}

pub fn instance(id: &str, engine: Engine, os_user: &str, data_dir: &Path) -> Instance {
    let spec = InstanceSpec {
        engine,
        engine_version: String::new(),
        systemd_unit: format!("dbagent-test-{id}.service"),
        data_dir: PathBuf::from(data_dir),
        os_user: os_user.into(),
        volume: VolumeSpec { device: None, size_bytes: 1 << 30, filesystem: Filesystem::Ext4 },
        log_sources: Vec::new(),
        plan: Plan {
            name: PlanName::Starter,
            cpu_millis: 1000,
            memory_bytes: 1 << 30,
            io_read_iops: 1000,
            io_write_iops: 1000,
            io_read_bps: 1 << 20,
            io_write_bps: 1 << 20,
            disk_bytes: 1 << 30,
        },
        maintenance_window: None,
        backup_policy: None,
    };
    Instance { id: id.into(), spec, created: SystemTime::now(), updated: SystemTime::now(), generation: 1 }
}
