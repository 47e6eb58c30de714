//! The Backups domain service: what the gRPC handlers and the scheduler call. Requests are checked
//! here (ids, quota, key, source copy, restore target); long work runs as an operation whose body
//! is a [`BackupAction`] run with the service's [`BackupResources`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::BackupError;
use super::action::BackupAction;
use super::backup_id::{check_backup_id, new_backup_id};
use super::catalog::{self, BackupInfo, DestinationState, read_authentic};
use super::deletion;
use super::discovery;
use super::engine_commands::RestoreTarget;
use super::keywrap::KeyWrapper;
use super::manifest::{BackupKind, BackupMethod};
use super::resources::BackupResources;
use super::restore_job::check_restore_dir;
use super::settings::{BackupConfig, EngineConnection};
use crate::ids;
use crate::instances::{Instance, PlanName};
use crate::ops::{self, OperationRecord};

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
}

impl BackupService {
    /// `data_roots`: the configured `[instances] data_roots`; a physical restore writes only beneath them.
    pub fn new(
        config: BackupConfig,
        state_dir: &Path,
        keys: Arc<dyn KeyWrapper>,
        data_roots: Vec<PathBuf>,
        engine: ops::OperationEngine,
    ) -> Result<Arc<Self>, BackupError> {
        let resources = Arc::new(BackupResources::open(config, state_dir, keys, data_roots)?);
        Ok(Arc::new(Self { resources, engine }))
    }

    /// The connection a backup of `instance` dumps from (see [`BackupConfig::connection_for`]).
    pub async fn connection_for(&self, instance: &Instance) -> EngineConnection {
        self.resources.settings.connection_for(instance, &self.resources.data_roots).await
    }

    /// Starts a backup. Manual backups beyond the plan's quota are refused before anything runs.
    pub async fn start(
        &self,
        instance: &Instance,
        method: BackupMethod,
        kind: BackupKind,
        request_id: &str,
    ) -> Result<OperationRecord, BackupError> {
        ids::request_id(request_id)?;
        self.resources.keys.check()?;
        let backup_id = self.backup_id_for(instance, request_id)?;
        if kind == BackupKind::Manual {
            let existing = self.list(&instance.id).await;
            let manual = existing
                .iter()
                .filter(|b| b.manifest.kind == BackupKind::Manual && b.manifest.backup_id != backup_id)
                .count();
            let (plan, limit) = manual_quota(instance.spec.plan.name);
            if manual >= limit {
                return Err(BackupError::QuotaExhausted { instance: instance.id.clone(), plan, limit });
            }
        }
        let action = BackupAction::Start { instance: Box::new(instance.clone()), method, kind, backup_id };
        match self.submit(request_id, action).await {
            // The same request submitted concurrently got its (fresh) id recorded first: ask again
            // with the recorded id, which matches it if it is the same request.
            Err(BackupError::Ops(ops::OpsError::RequestIdReused { .. })) => {
                let backup_id = self.backup_id_for(instance, request_id)?;
                let action = BackupAction::Start { instance: Box::new(instance.clone()), method, kind, backup_id };
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

    pub async fn delete(
        &self,
        instance_id: &str,
        backup_id: &str,
        request_id: &str,
    ) -> Result<OperationRecord, BackupError> {
        // The orchestrator is trusted: what lies under these two ids goes, even when its manifests
        // are refused (names another instance, not authenticated), so such leftovers can be removed.
        match self.get(instance_id, backup_id).await {
            Ok(_) | Err(BackupError::ManifestForeign { .. } | BackupError::ManifestNotAuthenticated { .. }) => {}
            Err(e) => return Err(e),
        }
        let action = BackupAction::Delete { instance_id: instance_id.to_owned(), backup_id: backup_id.to_owned() };
        self.submit(request_id, action).await
    }

    pub async fn verify(
        &self,
        instance_id: &str,
        backup_id: &str,
        destination: Option<String>,
        request_id: &str,
    ) -> Result<OperationRecord, BackupError> {
        self.resources.keys.check()?;
        let info = self.get(instance_id, backup_id).await?;
        let source = pick_source(&info, destination.as_deref())?;
        let action = BackupAction::Verify { instance_id: instance_id.to_owned(), info: Box::new(info), source };
        self.submit(request_id, action).await
    }

    /// Restores into `target`. A physical restore into the instance's own data directory needs the
    /// instance stopped.
    pub async fn restore(
        &self,
        instance: &Instance,
        backup_id: &str,
        target: RestoreTarget,
        destination: Option<String>,
        request_id: &str,
    ) -> Result<OperationRecord, BackupError> {
        self.resources.keys.check()?;
        let info = self.get(&instance.id, backup_id).await?;
        let source = pick_source(&info, destination.as_deref())?;
        if let RestoreTarget::DataDir(dir) = &target {
            check_restore_dir(instance, dir, &self.resources.data_roots).await?;
        }
        let action =
            BackupAction::Restore { instance: Box::new(instance.clone()), info: Box::new(info), source, target };
        self.submit(request_id, action).await
    }

    /// Copies a degraded backup from a healthy destination to the others, verifying checksums.
    pub async fn repair(
        &self,
        instance_id: &str,
        backup_id: &str,
        request_id: &str,
    ) -> Result<OperationRecord, BackupError> {
        self.resources.keys.check()?;
        let info = self.get(instance_id, backup_id).await?;
        let source = pick_source(&info, None)?;
        let action = BackupAction::Repair { instance_id: instance_id.to_owned(), info: Box::new(info), source };
        self.submit(request_id, action).await
    }

    /// Deletes every backup of `instance_id` whose expiry is at or before `now`, manifest first on
    /// every destination. Returns the ids removed. The expiry is taken only from a manifest that
    /// authenticates: a rewritten one must not make retention delete the good copies everywhere.
    pub async fn apply_retention(&self, instance_id: &str, now: SystemTime) -> Result<Vec<String>, BackupError> {
        let mut removed = Vec::new();
        for info in self.list(instance_id).await {
            if info.manifest.expires.is_none_or(|e| e > now) {
                continue;
            }
            let backup_id = info.manifest.backup_id.clone();
            match self.authentic_expiry(instance_id, &info).await {
                Ok(Some(e)) if e <= now => {}
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(instance = instance_id, backup = %backup_id, "retention: not deleted: {e:#}");
                    continue;
                }
            }
            deletion::delete_everywhere(&self.resources.destinations, instance_id, &backup_id).await?;
            tracing::info!(instance = instance_id, backup = %backup_id, "retention: deleted expired backup");
            removed.push(backup_id);
        }
        Ok(removed)
    }

    /// The expiry of the first complete copy whose manifest authenticates; the last refusal if none does.
    async fn authentic_expiry(&self, instance_id: &str, info: &BackupInfo) -> Result<Option<SystemTime>, BackupError> {
        let backup_id = &info.manifest.backup_id;
        let mut last = BackupError::NoCompleteCopy { backup: backup_id.clone(), reasons: Vec::new() };
        for name in info.healthy_destinations() {
            let dest = self.resources.destination(name)?;
            match read_authentic(self.resources.keys.as_ref(), dest.as_ref(), instance_id, backup_id).await {
                Ok(a) => return Ok(a.manifest.expires),
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
