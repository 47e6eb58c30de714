//! The minor upgrade as an operation: the running version read from the server (the health
//! probe), the packages installed from the request's repository (checked again right before apt,
//! their versions before and after from dpkg), the unit restarted through systemd, the health
//! check until its deadline, `mariadb-upgrade` for MariaDB, the version after compared with an
//! exact target. A server that does not come back fails the operation with the unit's state, the
//! prober's error and the unit's last journal lines; it is never left down silently.
//!
//! Downtime is measured from the restart's start to the first successful probe after it.

use std::time::{Duration, Instant};

use serde_json::json;

use super::MinorError;
use super::context::{Checked, MinorUpgrades};
use super::packages;
use super::version::{Version, major_len};
use crate::health::Healthy;
use crate::instances::{Engine, Instance};
use crate::ops::{JobContext, JobResult, OpError, Progress};

const STEPS: u64 = 4;
/// Between two probes while the server starts.
const PROBE_PAUSE: Duration = Duration::from_millis(250);
/// Journal lines quoted when a server does not come back.
const JOURNAL_LINES: usize = 20;

pub struct MinorJob {
    pub(super) upgrades: MinorUpgrades,
    pub(super) instance_id: String,
    pub(super) checked: Checked,
}

fn progress(ctx: &JobContext, done: u64, message: String) {
    ctx.progress(Progress { done, total: STEPS, unit: "steps".into(), message });
}

impl MinorJob {
    pub async fn run(self, ctx: JobContext) -> JobResult {
        match self.upgrade(&ctx).await {
            Ok(result) => Ok(Some(result)),
            Err(e) => {
                tracing::warn!(instance = %self.instance_id, "minor upgrade failed: {e}");
                Err(OpError::from_error(&e))
            }
        }
    }

    fn version_of(&self, instance: &Instance, h: &Healthy) -> Result<Version, String> {
        Version::from_server(&h.server_version).ok_or_else(|| {
            format!("{} reports the version {:?}, which has no number", instance.spec.engine.as_str(), h.server_version)
        })
    }

    async fn upgrade(&self, ctx: &JobContext) -> Result<serde_json::Value, MinorError> {
        let u = &self.upgrades;
        let instance = u.registry.get(&self.instance_id)?;
        let engine = instance.spec.engine;
        let unit = instance.spec.systemd_unit.clone();
        let id = instance.id.clone();

        progress(ctx, 0, "reading the running version from the server".into());
        let before = u
            .prober
            .check(&instance, u.settings.probe_deadline)
            .await
            .map_err(|e| MinorError::NotHealthyBefore { instance: id.clone(), reason: e.to_string() })?;
        let version_before = self
            .version_of(&instance, &before)
            .map_err(|reason| MinorError::NotHealthyBefore { instance: id.clone(), reason })?;
        if version_before.prefix(major_len(engine)) != self.checked.major {
            return Err(MinorError::OtherMajorRunning {
                instance: id,
                engine: engine.as_str(),
                major: self.checked.major.to_string(),
                version: before.server_version,
            });
        }
        if let Some(exact) = &self.checked.exact
            && exact.compare(&version_before).is_lt()
        {
            return Err(MinorError::Downgrade {
                instance: id,
                running: version_before.to_string(),
                target: exact.to_string(),
            });
        }
        if ctx.cancel.is_cancelled() {
            return Err(MinorError::Cancelled);
        }
        let pid_before = u.services.main_pid(&unit).await?;

        let mut packages_report = None;
        let mut restarted_by_packages = false;
        let mut install_report = serde_json::Value::Null;
        if let Some((dir, rel)) = &self.checked.repository {
            progress(ctx, 1, format!("installing {} from {}", self.checked.packages.join(" "), dir.display()));
            let _one_install = u.install_lock.lock().await;
            packages::check_repository(&u.settings.repository_root, rel, u.settings.owner)?;
            let names = &self.checked.packages;
            let versions_before = u.host.installed_versions(names).await;
            let installed = u.host.install(dir, names).await;
            let versions_after = u.host.installed_versions(names).await;
            let installed = match installed {
                Ok(i) => i,
                Err(apt) => return Err(MinorError::Install { apt, running: self.state_now(&instance).await }),
            };
            // A maintainer script that restarted the server anyway (the host's own policy-rc.d
            // allowed it): said in the result, the agent's restart follows regardless.
            restarted_by_packages = u.services.main_pid(&unit).await? != pid_before;
            packages_report = Some(
                names
                    .iter()
                    .map(|n| json!({ "name": n, "before": versions_before.get(n), "after": versions_after.get(n) }))
                    .collect::<Vec<_>>(),
            );
            install_report = json!({ "apt_output": installed.output_tail, "policy_rc_d": installed.policy_rc_d });
        }

        progress(ctx, 2, format!("restarting {unit}"));
        let restart_started = Instant::now();
        let back = match u.services.restart_unit(&unit, u.settings.restart_timeout).await {
            Ok(()) => self.healthy(&instance).await,
            Err(e) => Err(e.to_string()),
        };
        let after = match back {
            Ok(h) => h,
            Err(reason) => return Err(self.not_back(&instance, reason, packages_report.as_deref()).await),
        };
        let downtime_ms = restart_started.elapsed().as_millis() as u64;
        let pid_after = u.services.main_pid(&unit).await?;
        let version_after = self
            .version_of(&instance, &after)
            .map_err(|reason| MinorError::NotBack { instance: id.clone(), message: format!("{unit}: {reason}") })?;
        tracing::info!(instance = %id, downtime_ms, "minor upgrade: {version_before} -> {version_after}");

        let mut mariadb_upgrade = json!({ "ran": false });
        if engine == Engine::Mariadb {
            progress(ctx, 3, "mariadb-upgrade".into());
            let output = u.host.mariadb_upgrade(&instance).await.map_err(|message| MinorError::MariadbUpgrade {
                instance: id.clone(),
                running: version_after.to_string(),
                message,
            })?;
            mariadb_upgrade = json!({ "ran": true, "output": output });
        }
        if let Some(exact) = &self.checked.exact
            && *exact != version_after
        {
            return Err(MinorError::VersionMismatch {
                instance: id,
                wanted: exact.to_string(),
                reported: version_after.to_string(),
            });
        }
        progress(ctx, STEPS, "done".into());
        Ok(json!({
            "engine": engine.as_str(),
            "unit": unit,
            "version_before": version_before.to_string(),
            "version_after": version_after.to_string(),
            "server_version_before": before.server_version,
            "server_version_after": after.server_version,
            "package_repository": self.checked.repository.as_ref().map(|(d, _)| d.display().to_string()),
            "packages": packages_report,
            "install": install_report,
            "restarted_by_packages": restarted_by_packages,
            "main_pid_before": pid_before,
            "main_pid_after": pid_after,
            "downtime_ms": downtime_ms,
            "health": format!("{} answered the health check in {} ms", after.server_version, after.latency.as_millis()),
            "mariadb_upgrade": mariadb_upgrade,
        }))
    }

    /// Probes until one succeeds or the health deadline passes; the last error says why not.
    async fn healthy(&self, instance: &Instance) -> Result<Healthy, String> {
        let s = &self.upgrades.settings;
        let until = Instant::now() + s.health_deadline;
        loop {
            match self.upgrades.prober.check(instance, s.probe_deadline).await {
                Ok(h) => return Ok(h),
                Err(e) if Instant::now() >= until => {
                    return Err(format!("no healthy answer within {:?}: {e}", s.health_deadline));
                }
                Err(_) => tokio::time::sleep(PROBE_PAUSE).await,
            }
        }
    }

    /// The server as it is now, in words, for an error.
    async fn state_now(&self, instance: &Instance) -> String {
        match self.upgrades.prober.check(instance, self.upgrades.settings.probe_deadline).await {
            Ok(h) => format!("{} and is healthy", h.server_version),
            Err(e) => format!("nothing healthy ({e})"),
        }
    }

    async fn not_back(
        &self,
        instance: &Instance,
        reason: String,
        packages: Option<&[serde_json::Value]>,
    ) -> MinorError {
        let unit = &instance.spec.systemd_unit;
        let state = match self.upgrades.services.active_state(unit).await {
            Ok(s) => s,
            Err(e) => format!("state unknown: {e}"),
        };
        let journal = self.upgrades.host.journal_tail(unit, JOURNAL_LINES).await;
        let packages = match packages {
            Some(list) => format!(
                "The packages were installed ({}): fix the cause above, or install the previous versions from a \
                 repository that holds them (another minor upgrade), and start the unit",
                list.iter()
                    .map(|p| format!("{} {} -> {}", p["name"].as_str().unwrap_or("?"), p["before"], p["after"]))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => "No package was installed, so the agent can do nothing else: the server fails on the binaries \
                     and configuration it already had; fix the cause above and start the unit"
                .into(),
        };
        MinorError::NotBack {
            instance: instance.id.clone(),
            message: format!("{unit} (unit {state}; {reason}); last journal lines: {journal}. {packages}"),
        }
    }
}
