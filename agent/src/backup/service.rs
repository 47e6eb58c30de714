//! The Backups domain service: what the gRPC handlers and the scheduler call. Requests are checked
//! here (ids, quota, key, source copy, restore target); long work runs as an operation whose body
//! is a [`BackupAction`] run with the service's [`BackupResources`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::BackupError;
use super::action::{BackupAction, RequestRecoveryKey};
use super::backup_id::{check_backup_id, new_backup_id};
use super::catalog::{self, BackupInfo, BackupState, DestinationState, read_authentic};
use super::deletion;
use super::discovery;
use super::drill::DrillError;
use super::drill_scratch;
use super::drill_store::DrillRecord;
use super::engine_commands::RestoreTarget;
use super::health::{BackupHealth, InstanceHealth};
use super::keys::BackupKeys;
use super::manifest::{BackupKind, BackupMethod, Manifest};
use super::manifest_mac::authenticate;
use super::resources::BackupResources;
use super::restore_job::check_restore_dir;
use super::retention::{self, Candidate, Gfs, KeepRule};
use super::settings::{BackupConfig, EngineConnection};
use super::zones::{self, Placement};
use crate::ids;
use crate::instances::{Instance, PlanName};
use crate::ops::{self, OperationRecord};

pub use super::retention::{DEFAULT_MANUAL_KEEP_DAYS, MAX_MANUAL_KEEP_DAYS};

/// What one retention pass did for an instance.
#[derive(Debug, Default)]
pub struct RetentionOutcome {
    pub removed: Vec<String>,
    /// Kept ids with the rule that keeps each.
    pub kept: Vec<(String, KeepRule)>,
}

/// Manual backups kept at most, per plan.
pub fn manual_quota(plan: PlanName) -> (&'static str, usize) {
    match plan {
        PlanName::Starter => ("starter", 10),
        PlanName::Business => ("business", 50),
    }
}

pub struct BackupService {
    resources: Arc<BackupResources>,
    engine: ops::OperationEngine,
    /// What the scheduler's last pass found (metrics and GetStatus read it).
    health: Arc<BackupHealth>,
    /// Where the default destinations live.
    state_dir: PathBuf,
}

impl BackupService {
    /// `data_roots`: the configured `[instances] data_roots`; a physical restore writes only beneath them.
    pub fn new(
        config: BackupConfig,
        state_dir: &Path,
        keys: BackupKeys,
        data_roots: Vec<PathBuf>,
        engine: ops::OperationEngine,
    ) -> Result<Arc<Self>, BackupError> {
        let resources = Arc::new(BackupResources::open(config, state_dir, keys, data_roots)?);
        let health = Arc::new(BackupHealth::default());
        Ok(Arc::new(Self { resources, engine, health, state_dir: state_dir.to_path_buf() }))
    }

    pub fn health(&self) -> Arc<BackupHealth> {
        self.health.clone()
    }

    /// Whether backups may be taken although fewer than two destinations are off the host.
    pub fn accepts_on_host_destinations(&self) -> bool {
        self.resources.settings.accept_on_host_destinations
    }

    /// Where each configured destination keeps its data (statfs, and S3 host names resolved:
    /// done on a blocking thread).
    pub async fn placements(&self) -> Vec<Placement> {
        let (config, state_dir) = (self.resources.settings.clone(), self.state_dir.clone());
        tokio::task::spawn_blocking(move || zones::placements(&config, &state_dir)).await.unwrap_or_default()
    }

    /// The connection a backup of `instance` dumps from (see [`BackupConfig::connection_for`]).
    pub async fn connection_for(&self, instance: &Instance) -> EngineConnection {
        self.resources.settings.connection_for(instance, &self.resources.data_roots).await
    }

    /// Starts a backup; a manual one is kept [`DEFAULT_MANUAL_KEEP_DAYS`].
    pub async fn start(
        &self,
        instance: &Instance,
        method: BackupMethod,
        kind: BackupKind,
        request_id: &str,
    ) -> Result<OperationRecord, BackupError> {
        self.start_with(instance, method, kind, request_id, None).await
    }

    /// Starts a backup. Refused before anything runs: with too few destinations off the host
    /// (unless accepted in the config), and a manual one beyond the plan's quota. A manual backup
    /// expires `keep_days` (default [`DEFAULT_MANUAL_KEEP_DAYS`]) after it starts.
    pub async fn start_with(
        &self,
        instance: &Instance,
        method: BackupMethod,
        kind: BackupKind,
        request_id: &str,
        keep_days: Option<u32>,
    ) -> Result<OperationRecord, BackupError> {
        ids::request_id(request_id)?;
        let keep_days = match (kind, keep_days) {
            (BackupKind::Scheduled, _) => None,
            (BackupKind::Manual, None | Some(0)) => None,
            (BackupKind::Manual, Some(d)) if d <= MAX_MANUAL_KEEP_DAYS => Some(d),
            (BackupKind::Manual, Some(d)) => {
                return Err(ids::InvalidField::new(
                    "manual_keep_days",
                    format!(
                        "is {d}; it must be from 1 to {MAX_MANUAL_KEEP_DAYS} days, or 0 for {DEFAULT_MANUAL_KEEP_DAYS}"
                    ),
                )
                .into());
            }
        };
        self.resources.keys.check_can_wrap()?;
        // A retried request answers with its operation whatever changed since; a new one needs the
        // destinations off the host.
        if self.engine.by_request(request_id).is_none()
            && let Some(shortfall) = zones::shortfall(&self.placements().await, self.accepts_on_host_destinations())
        {
            return Err(BackupError::NotOffHost { instance: instance.id.clone(), shortfall });
        }
        let backup_id = self.backup_id_for(instance, request_id)?;
        if kind == BackupKind::Manual {
            let existing = self.list(&instance.id).await;
            let manual: Vec<_> = existing
                .iter()
                .filter(|b| b.manifest.kind == BackupKind::Manual && b.manifest.backup_id != backup_id)
                .collect();
            let (plan, limit) = manual_quota(instance.spec.plan.name);
            if manual.len() >= limit {
                // The listing is oldest first.
                let oldest = manual.first().map(|b| b.manifest.backup_id.clone()).unwrap_or_default();
                return Err(BackupError::QuotaExhausted { instance: instance.id.clone(), plan, limit, oldest });
            }
        }
        let action = BackupAction::Start { instance: Box::new(instance.clone()), method, kind, backup_id, keep_days };
        match self.submit(request_id, action).await {
            // The same request submitted concurrently got its (fresh) id recorded first: ask again
            // with the recorded id, which matches it if it is the same request.
            Err(BackupError::Ops(ops::OpsError::RequestIdReused { .. })) => {
                let backup_id = self.backup_id_for(instance, request_id)?;
                let action =
                    BackupAction::Start { instance: Box::new(instance.clone()), method, kind, backup_id, keep_days };
                self.submit(request_id, action).await
            }
            other => other,
        }
    }

    pub async fn list(&self, instance_id: &str) -> Vec<BackupInfo> {
        self.resources.list(instance_id).await
    }

    /// Every backup of `instance_id` on the destinations, known to this agent or not, each copy
    /// authenticated with the keys this agent can use now (see [`discovery`]).
    pub async fn list_from_destinations(&self, instance_id: &str) -> Result<discovery::BackupsFound, BackupError> {
        discovery::backups(&self.resources.destinations, self.resources.keys.as_ref(), instance_id).await
    }

    /// The instance ids the destinations hold backups of.
    pub async fn instances_on_destinations(&self) -> Result<discovery::InstancesFound, BackupError> {
        discovery::instances(&self.resources.destinations).await
    }

    /// A retried request (its operation record still kept) names the backup it started; any other
    /// request gets a fresh id, never one used before (`backup_id`).
    fn backup_id_for(&self, instance: &Instance, request_id: &str) -> Result<String, BackupError> {
        let recorded =
            self.engine.by_request(request_id).filter(|op| op.kind == "backup.start" && op.target == instance.id);
        match recorded.as_ref().and_then(|op| op.params["backup_id"].as_str()) {
            Some(id) => Ok(id.to_owned()),
            None => new_backup_id(SystemTime::now()),
        }
    }

    /// Backup `backup_id` of `instance_id`, from its manifests named by these two ids; refused
    /// when none of them names this instance and backup with a sane shape.
    pub async fn get(&self, instance_id: &str, backup_id: &str) -> Result<BackupInfo, BackupError> {
        ids::instance_id("instance_id", instance_id)?;
        check_backup_id(backup_id)?;
        catalog::find(&self.resources.destinations, instance_id, backup_id).await
    }

    /// Deletes a backup everywhere. The instance's newest complete backup (its last good copy) goes
    /// only with `last_good_copy` set: the orchestrator is trusted, but says so in so many words.
    pub async fn delete(
        &self,
        instance_id: &str,
        backup_id: &str,
        request_id: &str,
        last_good_copy: bool,
    ) -> Result<OperationRecord, BackupError> {
        // The orchestrator is trusted: what lies under these two ids goes, even when its manifests
        // are refused (names another instance, not authenticated), so such leftovers can be removed.
        match self.get(instance_id, backup_id).await {
            Ok(info) if !last_good_copy && info.state == BackupState::Complete => {
                let newest_good =
                    self.list(instance_id).await.into_iter().rev().find(|b| b.state == BackupState::Complete);
                if newest_good.is_some_and(|b| b.manifest.backup_id == backup_id) {
                    return Err(BackupError::LastGoodCopy {
                        instance: instance_id.to_owned(),
                        backup: backup_id.to_owned(),
                    });
                }
            }
            Ok(_) | Err(BackupError::ManifestForeign { .. } | BackupError::ManifestNotAuthenticated { .. }) => {}
            Err(e) => return Err(e),
        }
        let action = BackupAction::Delete { instance_id: instance_id.to_owned(), backup_id: backup_id.to_owned() };
        self.submit(request_id, action).await
    }

    /// `recovery`: the recovery identity the request carried, tried after the host KEK and the
    /// KeyService; kept for this operation only.
    pub async fn verify(
        &self,
        instance_id: &str,
        backup_id: &str,
        destination: Option<String>,
        recovery: RequestRecoveryKey,
        request_id: &str,
    ) -> Result<OperationRecord, BackupError> {
        self.resources.keys.with_identity(recovery.clone()).check_can_unwrap()?;
        let info = self.get(instance_id, backup_id).await?;
        let source = pick_source(&info, destination.as_deref())?;
        let action =
            BackupAction::Verify { instance_id: instance_id.to_owned(), info: Box::new(info), source, recovery };
        self.submit(request_id, action).await
    }

    /// Restores into `target`. A physical restore into the instance's own data directory needs the
    /// instance stopped. `recovery` as for [`Self::verify`].
    pub async fn restore(
        &self,
        instance: &Instance,
        backup_id: &str,
        target: RestoreTarget,
        destination: Option<String>,
        recovery: RequestRecoveryKey,
        request_id: &str,
    ) -> Result<OperationRecord, BackupError> {
        self.resources.keys.with_identity(recovery.clone()).check_can_unwrap()?;
        let info = self.get(&instance.id, backup_id).await?;
        let source = pick_source(&info, destination.as_deref())?;
        if let RestoreTarget::DataDir(dir) = &target {
            check_restore_dir(instance, dir, &self.resources.data_roots).await?;
        }
        let action = BackupAction::Restore {
            instance: Box::new(instance.clone()),
            info: Box::new(info),
            source,
            target,
            recovery,
        };
        self.submit(request_id, action).await
    }

    /// Starts a restore drill of backup `backup_id` of `instance`; empty: its newest complete
    /// backup. A retried request (its operation record kept) returns that operation, even when a
    /// newer backup appeared since.
    pub async fn drill(
        &self,
        instance: &Instance,
        backup_id: &str,
        request_id: &str,
    ) -> Result<OperationRecord, BackupError> {
        ids::request_id(request_id)?;
        if !backup_id.is_empty() {
            check_backup_id(backup_id)?;
        }
        // The same request again: its operation. Another backup under the same request id goes
        // on to `submit`, which refuses the reused id.
        let same = |op: &OperationRecord| {
            op.kind == "backup.drill"
                && op.target == instance.id
                && (backup_id.is_empty() || op.params["backup_id"].as_str() == Some(backup_id))
        };
        if let Some(op) = self.engine.by_request(request_id).filter(same) {
            return Ok(op);
        }
        self.resources.keys.check_can_unwrap()?;
        let info = if backup_id.is_empty() {
            self.list(&instance.id)
                .await
                .into_iter()
                .filter(|b| b.state == catalog::BackupState::Complete)
                .max_by(|a, b| a.manifest.backup_id.cmp(&b.manifest.backup_id))
                .ok_or_else(|| DrillError::NoCompleteBackup { instance: instance.id.clone() })?
        } else {
            self.get(&instance.id, backup_id).await?
        };
        let source = pick_source(&info, None)?;
        let action = BackupAction::Drill { instance: Box::new(instance.clone()), info: Box::new(info), source };
        self.submit(request_id, action).await
    }

    /// Whether a restore drill runs on this host now (the scheduler starts one at a time).
    pub fn drill_running(&self) -> bool {
        self.engine.list(None, true, usize::MAX).iter().any(|op| op.kind == "backup.drill")
    }

    /// The instance's last drill, if it had one.
    pub fn last_drill(&self, instance_id: &str) -> Option<DrillRecord> {
        self.resources.drills.get(instance_id)
    }

    /// The drill metrics in the Prometheus text format.
    pub fn drill_metrics_text(&self) -> String {
        self.resources.drills.prometheus_text()
    }

    /// How long after an instance's last drill the scheduler starts the next; `None` = never.
    pub fn drill_interval(&self) -> Option<std::time::Duration> {
        self.resources.settings.drill_interval()
    }

    /// At start-up: stops the servers of drills cut short by a crash and removes their scratch
    /// folders. Returns the folders removed.
    pub async fn clean_drills(&self) -> Vec<String> {
        let dir = self.resources.settings.drill_dir.clone();
        tokio::task::spawn_blocking(move || drill_scratch::clean_leftovers(&dir)).await.unwrap_or_default()
    }

    /// Copies a degraded backup from a healthy destination to the others, verifying checksums.
    pub async fn repair(
        &self,
        instance_id: &str,
        backup_id: &str,
        request_id: &str,
    ) -> Result<OperationRecord, BackupError> {
        self.resources.keys.check_can_unwrap()?;
        let info = self.get(instance_id, backup_id).await?;
        let source = pick_source(&info, None)?;
        let action = BackupAction::Repair { instance_id: instance_id.to_owned(), info: Box::new(info), source };
        self.submit(request_id, action).await
    }

    /// One retention pass over `instance`'s backups at `now` (`retention::decide`: GFS for the
    /// scheduled ones, the manual ones until their expiry, never the last good copy), deleting the
    /// rest everywhere, manifest first. Only backups whose manifest authenticates take part: a
    /// rewritten manifest neither makes retention delete good copies nor takes a slot from one.
    /// The listing also records the instance's health and each destination's reachability.
    pub async fn apply_retention(&self, instance: &Instance, now: SystemTime) -> Result<RetentionOutcome, BackupError> {
        let (listed, checks) = catalog::list_checked(&self.resources.destinations, &instance.id).await;
        for (name, result) in checks {
            self.health.record_check(&name, result);
        }
        let mut candidates: Vec<Candidate> = Vec::new();
        for info in &listed {
            match self.authentic_manifest(&instance.id, info).await {
                Ok(m) => candidates.push(Candidate {
                    id: m.backup_id.clone(),
                    started: m.started,
                    kind: m.kind,
                    good: info.state == BackupState::Complete,
                    expires: m.expires,
                }),
                Err(e) => {
                    tracing::warn!(instance = %instance.id, backup = %info.manifest.backup_id, "retention: left alone: {e:#}");
                }
            }
        }
        let authentic = |id: &str| candidates.iter().any(|c| c.id == id);
        self.health.record_instance(&instance.id, InstanceHealth::from_listing(&listed, &authentic, now));
        let gfs = Gfs::of(instance.spec.backup_policy.as_ref(), instance.spec.plan.name);
        let decision = retention::decide(&candidates, now, gfs);
        let mut outcome = RetentionOutcome { removed: Vec::new(), kept: decision.keep };
        for backup_id in decision.delete {
            deletion::delete_everywhere(&self.resources.destinations, &instance.id, &backup_id).await?;
            tracing::info!(instance = %instance.id, backup = %backup_id, "retention: deleted");
            outcome.removed.push(backup_id);
        }
        Ok(outcome)
    }

    /// The listed manifest if it authenticates (no request), else the first complete copy's
    /// manifest, read again, that does; the last refusal if none does.
    async fn authentic_manifest(&self, instance_id: &str, info: &BackupInfo) -> Result<Manifest, BackupError> {
        let backup_id = &info.manifest.backup_id;
        let keys = self.resources.keys.as_ref();
        let mut last = BackupError::NoCompleteCopy { backup: backup_id.clone(), reasons: Vec::new() };
        if let Some(first) = info.healthy_destinations().next() {
            match authenticate(keys, info.manifest.clone(), instance_id, backup_id, first).await {
                Ok(a) => return Ok(a.manifest),
                Err(e) => last = e,
            }
        }
        for name in info.healthy_destinations().skip(1) {
            let dest = self.resources.destination(name)?;
            match read_authentic(keys, dest.as_ref(), instance_id, backup_id).await {
                Ok(a) => return Ok(a.manifest),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// At start-up: backups cut short by a stop or crash leave uploads and partial objects behind;
    /// abort and delete them (they never got a manifest). Returns the backup ids cleaned.
    pub async fn clean_interrupted(&self) -> Vec<String> {
        self.resources.inflight.clean_all(&self.resources.destinations).await
    }

    /// Runs `action` as given, for tests that need what the service never builds (a reused id).
    #[cfg(test)]
    pub(crate) async fn submit_for_tests(
        &self,
        request_id: &str,
        action: BackupAction,
    ) -> Result<OperationRecord, BackupError> {
        self.submit(request_id, action).await
    }

    async fn submit(&self, request_id: &str, action: BackupAction) -> Result<OperationRecord, BackupError> {
        let new = action.new_operation(request_id);
        Ok(self.engine.submit(new, action.job(self.resources.clone())).await?.0)
    }
}

/// The destination to read `info` from: `wanted` if given (it must hold a complete copy), else the
/// first that does. A copy that cannot be used says why (its manifest refused, unreachable).
fn pick_source(info: &BackupInfo, wanted: Option<&str>) -> Result<String, BackupError> {
    let mut healthy = info.healthy_destinations();
    let backup = || info.manifest.backup_id.clone();
    let failed = info.destinations.iter().filter_map(|d| match &d.state {
        DestinationState::Failed(reason) => Some((d.name.as_str(), reason.as_str())),
        _ => None,
    });
    match wanted.filter(|w| !w.is_empty()) {
        Some(w) => healthy.find(|h| *h == w).map(str::to_owned).ok_or_else(|| {
            match failed.clone().find(|(name, _)| *name == w) {
                Some((_, reason)) => {
                    BackupError::CopyUnusable { backup: backup(), destination: w.to_owned(), reason: reason.to_owned() }
                }
                None => BackupError::NotOnDestination { backup: backup(), destination: w.to_owned() },
            }
        }),
        None => healthy.next().map(str::to_owned).ok_or_else(|| BackupError::NoCompleteCopy {
            backup: backup(),
            reasons: failed.map(|(name, reason)| format!("{name}: {reason}")).collect(),
        }),
    }
}
