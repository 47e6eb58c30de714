//! The Backups domain service: what the gRPC handlers and the scheduler call. Requests are checked
//! here (ids, quota, key, source copy, restore target); long work runs as an operation whose body
//! is a [`BackupAction`] run with the service's [`BackupResources`].

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::BackupError;
use super::action::BackupAction;
use super::catalog::BackupInfo;
use super::deletion;
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
        let backup_id = backup_id_for(&instance.id, request_id);
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
        self.submit(request_id, action).await
    }

    pub async fn list(&self, instance_id: &str) -> Vec<BackupInfo> {
        self.resources.list(instance_id).await
    }

    pub async fn get(&self, instance_id: &str, backup_id: &str) -> Result<BackupInfo, BackupError> {
        ids::instance_id("instance_id", instance_id)?;
        check_backup_id(backup_id)?;
        self.list(instance_id)
            .await
            .into_iter()
            .find(|b| b.manifest.backup_id == backup_id)
            .ok_or_else(|| BackupError::NotFound { instance: instance_id.to_owned(), backup: backup_id.to_owned() })
    }

    pub async fn delete(
        &self,
        instance_id: &str,
        backup_id: &str,
        request_id: &str,
    ) -> Result<OperationRecord, BackupError> {
        self.get(instance_id, backup_id).await?;
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
        let info = self.get(instance_id, backup_id).await?;
        let source = pick_source(&info, None)?;
        let action = BackupAction::Repair { instance_id: instance_id.to_owned(), info: Box::new(info), source };
        self.submit(request_id, action).await
    }

    /// Deletes every backup of `instance_id` whose expiry is at or before `now`, manifest first on
    /// every destination. Returns the ids removed.
    pub async fn apply_retention(&self, instance_id: &str, now: SystemTime) -> Result<Vec<String>, BackupError> {
        let mut removed = Vec::new();
        for info in self.list(instance_id).await {
            if info.manifest.expires.is_some_and(|e| e <= now) {
                deletion::delete_everywhere(&self.resources.destinations, instance_id, &info.manifest.backup_id)
                    .await?;
                tracing::info!(instance = instance_id, backup = %info.manifest.backup_id, "retention: deleted expired backup");
                removed.push(info.manifest.backup_id);
            }
        }
        Ok(removed)
    }

    /// At start-up: backups cut short by a stop or crash leave uploads and partial objects behind;
    /// abort and delete them (they never got a manifest). Returns the backup ids cleaned.
    pub async fn clean_interrupted(&self) -> Vec<String> {
        self.resources.inflight.clean_all(&self.resources.destinations).await
    }

    async fn submit(&self, request_id: &str, action: BackupAction) -> Result<OperationRecord, BackupError> {
        let new = action.new_operation(request_id);
        Ok(self.engine.submit(new, action.job(self.resources.clone())).await?.0)
    }
}

/// The destination to read `info` from: `wanted` if given (it must hold a complete copy), else the
/// first that does.
fn pick_source(info: &BackupInfo, wanted: Option<&str>) -> Result<String, BackupError> {
    let mut healthy = info.healthy_destinations();
    let backup = || info.manifest.backup_id.clone();
    match wanted.filter(|w| !w.is_empty()) {
        Some(w) => healthy
            .find(|h| *h == w)
            .map(str::to_owned)
            .ok_or_else(|| BackupError::NotOnDestination { backup: backup(), destination: w.to_owned() }),
        None => healthy.next().map(str::to_owned).ok_or_else(|| BackupError::NoCompleteCopy { backup: backup() }),
    }
}

/// Backup ids derive from the instance and the request id, so a retried request names the same
/// backup (and the same operation). `b` + 20 hex digits.
pub fn backup_id_for(instance_id: &str, request_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(instance_id.as_bytes());
    h.update([0]);
    h.update(request_id.as_bytes());
    format!("b{}", &crate::hex::encode(&h.finalize())[..20])
}

pub fn check_backup_id(id: &str) -> Result<(), ids::InvalidField> {
    let ok = id.len() == 21 && id.starts_with('b') && id[1..].bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(())
    } else {
        Err(ids::InvalidField::new("backup_id", format!("{id:?} is not a backup id (b and 20 hex digits)")))
    }
}
