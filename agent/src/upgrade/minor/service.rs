//! A minor upgrade request checked (target, packages, repository folder) and submitted as the
//! disruptive `upgrade.minor` operation; the same rebuilt from its record after an agent restart.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::context::Checked;
pub use super::context::{MinorSettings, MinorUpgrades};
use super::job::MinorJob;
use super::packages::{self, Owner};
use super::version::{self, Target};
use super::{KIND, MinorError};
use crate::instances::{Engine, Instance, Registry};
use crate::maintenance::WeeklyWindow;
use crate::ops::engine::JobFn;
use crate::ops::{Disruptive, NewOperation, OperationEngine, OperationRecord};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MinorRequest {
    pub request_id: String,
    pub instance_id: String,
    pub target_version: String,
    pub force: bool,
    /// Empty: no package installed, the server restarted onto what is installed.
    pub package_repository: String,
    pub packages: Vec<String>,
}

impl MinorUpgrades {
    /// As the daemon runs them: the real prober, systemd over D-Bus, apt and dpkg.
    pub fn from_config(
        config: &crate::config::Config,
        state_dir: &std::path::Path,
        registry: &Arc<Registry>,
        operations: &OperationEngine,
    ) -> Self {
        let u = &config.upgrade;
        let data_roots = config.instances.data_roots.clone();
        let prober =
            crate::health::engines::EngineProber::new(config.health.clone(), config.backup.clone(), data_roots.clone());
        Self {
            registry: registry.clone(),
            operations: operations.clone(),
            prober: Arc::new(prober),
            // Connects to the system bus on first use.
            services: Arc::new(crate::systemd::DbusServiceManager::new()),
            host: Arc::new(super::host::ToolMinorHost {
                backup: config.backup.clone(),
                data_roots,
                apt_dir: state_dir.join("apt"),
                policy_rc_d: "/usr/sbin/policy-rc.d".into(),
            }),
            settings: MinorSettings {
                repository_root: u.package_repository_root.clone(),
                expected: Duration::from_secs(u.minor_expected_minutes * 60),
                restart_timeout: Duration::from_secs(config.plans.restart_timeout_secs),
                health_deadline: Duration::from_secs(u.minor_health_deadline_secs),
                probe_deadline: config.health.deadline(),
                owner: Owner::agent(),
            },
            install_lock: Arc::default(),
        }
    }

    /// Whether StartUpgrade's request is a minor upgrade: its request_id started one, or the
    /// instance is MariaDB or Redis, or the target is the PostgreSQL instance's own major, or it
    /// names packages. A newer PostgreSQL major without packages is the major upgrade's.
    pub fn takes(&self, req: &MinorRequest) -> Result<bool, MinorError> {
        if let Some(record) = self.operations.by_request(&req.request_id) {
            return Ok(record.kind == KIND);
        }
        let instance = self.registry.get(&req.instance_id)?;
        if instance.spec.engine != Engine::Postgresql {
            return Ok(true);
        }
        let current = version::current_major(&instance.id, Engine::Postgresql, &instance.spec.engine_version)?;
        let minor = match version::classify(&instance.id, Engine::Postgresql, &current, &req.target_version) {
            Ok(Target::PostgresqlMajor) => false,
            Ok(Target::Minor { .. }) | Err(MinorError::Downgrade { .. }) => true,
            // "17.2", "": the major upgrade's own words for its target.
            Err(_) => false,
        };
        if !minor && (!req.packages.is_empty() || !req.package_repository.is_empty()) {
            return Err(MinorError::InvalidRequest {
                field: "packages",
                message: "packages are installed by minor upgrades only; install the new major's packages \
                          before a major upgrade"
                    .into(),
            });
        }
        Ok(minor)
    }

    /// Checks the request and submits the upgrade (or returns the operation its request_id started).
    pub async fn start(&self, req: MinorRequest) -> Result<OperationRecord, MinorError> {
        let params = json!({
            "target_version": req.target_version,
            "force": req.force,
            "package_repository": req.package_repository,
            "packages": req.packages,
        });
        if let Some(record) = self.operations.replay(&req.request_id, KIND, &req.instance_id, &params) {
            return Ok(record);
        }
        let instance = self.registry.get(&req.instance_id)?;
        let checked = self.check(&instance, &req)?;
        // The folder as it is now: a refusal answers the call; the job checks again right before apt.
        if let Some((_, rel)) = &checked.repository {
            packages::check_repository(&self.settings.repository_root, rel, self.settings.owner)?;
        }
        let new =
            NewOperation { request_id: req.request_id, kind: KIND, target: req.instance_id, params, exclusive: true };
        let gate = self.gate(&instance, req.force);
        let (record, _) = self.operations.submit_disruptive(new, gate, self.job(instance.id.clone(), checked)).await?;
        Ok(record)
    }

    /// Everything said from the request and the instance record alone.
    pub(super) fn check(&self, instance: &Instance, req: &MinorRequest) -> Result<Checked, MinorError> {
        let engine = instance.spec.engine;
        let current = version::current_major(&instance.id, engine, &instance.spec.engine_version)?;
        let (major, exact) = match version::classify(&instance.id, engine, &current, &req.target_version)? {
            Target::Minor { major, exact } => (major, exact),
            Target::PostgresqlMajor => {
                return Err(MinorError::InvalidRequest {
                    field: "target_version",
                    message: format!("{} is a newer major: the major upgrade's", req.target_version),
                });
            }
        };
        let packages = packages::check_packages(engine, &major.to_string(), &req.packages)?;
        let repository = match (req.package_repository.is_empty(), packages.is_empty()) {
            (true, true) => None,
            (false, false) => {
                let rel = packages::check_repository_path(&self.settings.repository_root, &req.package_repository)?;
                Some((PathBuf::from(&req.package_repository), rel))
            }
            (true, false) => {
                return Err(MinorError::InvalidRequest {
                    field: "package_repository",
                    message: "is required with packages: the folder they are installed from".into(),
                });
            }
            (false, true) => {
                return Err(MinorError::InvalidRequest {
                    field: "packages",
                    message: "name the packages to install from package_repository".into(),
                });
            }
        };
        Ok(Checked { major, exact, repository, packages })
    }

    fn gate(&self, instance: &Instance, force: bool) -> Disruptive {
        let window = instance.spec.maintenance_window.as_ref().map(WeeklyWindow::from);
        Disruptive { window, expected: self.settings.expected, force }
    }

    fn job(&self, instance_id: String, checked: Checked) -> JobFn {
        let job = MinorJob { upgrades: self.clone(), instance_id, checked };
        Box::new(move |ctx| Box::pin(job.run(ctx)))
    }

    /// Re-arms an `upgrade.minor` the last stop left waiting for its window, from its stored
    /// parameters (checked again) and the instance's window as registered now.
    pub fn rearm(&self, record: &OperationRecord) -> Result<(), MinorError> {
        let p = &record.params;
        let text = |k: &str| p[k].as_str().unwrap_or_default().to_owned();
        let req = MinorRequest {
            request_id: record.request_id.clone(),
            instance_id: record.target.clone(),
            target_version: text("target_version"),
            force: p["force"].as_bool().unwrap_or(false),
            package_repository: text("package_repository"),
            packages: serde_json::from_value(p["packages"].clone()).unwrap_or_default(),
        };
        let instance = self.registry.get(&record.target)?;
        let checked = self.check(&instance, &req)?;
        let gate = self.gate(&instance, req.force);
        Ok(self.operations.resume_waiting(&record.id, true, gate, self.job(instance.id.clone(), checked))?)
    }
}
