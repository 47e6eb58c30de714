//! StartUpgrade: the request checked (engine, target major, binaries installed, a recent backup),
//! then the upgrade submitted as a disruptive operation that waits for the instance's maintenance
//! window unless forced. Idempotent per request_id through the operations engine.

use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::cluster::Layout;
use super::health::UpgradeHealth;
use super::job::UpgradeJob;
use super::minor::{MinorRequest, MinorUpgrades};
use super::plan::{self, Cluster};
use super::{KIND, UpgradeConfig, UpgradeError};
use crate::backup::BackupService;
use crate::backup::catalog::BackupState;
use crate::instances::{Engine, Instance, Registry};
use crate::ops::{Disruptive, NewOperation, OperationEngine, OperationRecord};

/// What the upgrade needs from the backup domain: the newest complete backup, and where the
/// instance's server listens (the connection backups use).
#[tonic::async_trait]
pub trait BackupFacts: Send + Sync {
    async fn newest_complete_backup(&self, instance: &str) -> Option<SystemTime>;
    /// The socket folder and port of the instance's server.
    async fn server_address(&self, instance: &Instance) -> (String, u16);
}

#[tonic::async_trait]
impl BackupFacts for BackupService {
    async fn newest_complete_backup(&self, instance: &str) -> Option<SystemTime> {
        self.list(instance).await.iter().filter(|b| b.state == BackupState::Complete).map(|b| b.created()).max()
    }

    async fn server_address(&self, instance: &Instance) -> (String, u16) {
        let conn = self.connection_for(instance).await;
        (conn.host, conn.port)
    }
}

pub struct UpgradeRequest {
    pub request_id: String,
    pub instance_id: String,
    pub target_version: String,
    pub force: bool,
    /// Minor upgrades only: the flat apt repository and the packages installed from it.
    pub package_repository: String,
    pub packages: Vec<String>,
}

pub struct UpgradeService {
    pub registry: Arc<Registry>,
    pub operations: OperationEngine,
    pub backups: Arc<dyn BackupFacts>,
    /// The health check after every step that starts a server (the shared probe).
    pub health: UpgradeHealth,
    pub config: UpgradeConfig,
    /// Minor upgrades (`super::minor`): requests within the instance's major go there.
    pub minor: MinorUpgrades,
}

impl UpgradeService {
    pub(super) fn layout(&self) -> Layout {
        Layout { lib_dir: self.config.postgresql_lib_dir.clone(), conf_dir: self.config.postgresql_conf_dir.clone() }
    }

    /// Checks the request and submits the upgrade (or returns the operation its request_id started).
    pub async fn start(&self, req: UpgradeRequest) -> Result<OperationRecord, UpgradeError> {
        crate::ids::request_id(&req.request_id).map_err(|e| UpgradeError::InvalidRequest {
            field: "request_id",
            message: e.to_string().trim_start_matches("request_id: ").to_owned(),
        })?;
        crate::ids::instance_id("instance_id", &req.instance_id).map_err(|e| UpgradeError::InvalidRequest {
            field: "instance_id",
            message: e.to_string().trim_start_matches("instance_id: ").to_owned(),
        })?;
        let minor = MinorRequest {
            request_id: req.request_id.clone(),
            instance_id: req.instance_id.clone(),
            target_version: req.target_version.clone(),
            force: req.force,
            package_repository: req.package_repository,
            packages: req.packages,
        };
        if self.minor.takes(&minor)? {
            return Ok(self.minor.start(minor).await?);
        }
        let target = plan::target_major(&req.target_version)?;
        let params = json!({ "target_version": target.to_string(), "force": req.force });
        // A retry of a submitted upgrade gets its operation, whatever changed since (the instance
        // record says 17 once it succeeded).
        if let Some(record) = self.operations.replay(&req.request_id, KIND, &req.instance_id, &params) {
            return Ok(record);
        }
        let instance = self.registry.get(&req.instance_id)?;
        let job = self.check(&instance, target).await?;
        let gate = Disruptive {
            window: instance.spec.maintenance_window.as_ref().map(Into::into),
            expected: Duration::from_secs(self.config.expected_minutes * 60),
            force: req.force,
        };
        let new =
            NewOperation { request_id: req.request_id, kind: KIND, target: req.instance_id, params, exclusive: true };
        let (record, _) =
            self.operations.submit_disruptive(new, gate, Box::new(move |ctx| Box::pin(job.run(ctx)))).await?;
        Ok(record)
    }

    /// Everything that can be said before the window: engine, versions, binaries, backup age.
    pub(super) async fn check(&self, instance: &Instance, target: u32) -> Result<UpgradeJob, UpgradeError> {
        let spec = &instance.spec;
        if spec.engine != Engine::Postgresql {
            return Err(UpgradeError::EngineNotSupported { engine: spec.engine.as_str() });
        }
        let current = plan::current_major(&instance.id, &spec.engine_version)?;
        if target <= current {
            return Err(UpgradeError::NotNewer { instance: instance.id.clone(), current, target });
        }
        Cluster::from_unit(&instance.id, &spec.systemd_unit)?;
        let layout = self.layout();
        layout.check_installed(current, false)?;
        layout.check_installed(target, true)?;
        let data_root = self.registry.data_root_of(&spec.data_dir).ok_or_else(|| UpgradeError::Unsupported {
            instance: instance.id.clone(),
            message: format!("its data_dir {} is below no data root", spec.data_dir.display()),
        })?;
        let max_age = Duration::from_secs(self.config.max_backup_age_hours * 3600);
        let newest = self.backups.newest_complete_backup(&instance.id).await;
        let age = newest.map(|t| SystemTime::now().duration_since(t).unwrap_or_default());
        if age.is_none_or(|a| a > max_age) {
            return Err(UpgradeError::NoRecentBackup {
                instance: instance.id.clone(),
                max_age_hours: self.config.max_backup_age_hours,
                newest: match newest {
                    Some(t) => format!(" (the newest complete one is from {})", crate::timefmt::format(t)),
                    None => " (it has none)".into(),
                },
            });
        }
        let (socket_dir, port) = self.backups.server_address(instance).await;
        Ok(UpgradeJob {
            instance: instance.clone(),
            target,
            layout,
            share_dir: self.config.postgresql_share_dir.clone(),
            data_root,
            registry: self.registry.clone(),
            health: self.health.clone(),
            socket_dir,
            port,
        })
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
pub(super) mod tests;
