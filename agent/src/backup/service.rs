//! The Backups domain service: what the gRPC handlers and the scheduler call. Long work runs as
//! operations (`backup.start`, `backup.delete`, `backup.verify`, `backup.restore`, `backup.repair`).

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::BackupError;
use super::catalog::{self, BackupInfo};
use super::destination::{self, Destination};
use super::engine_commands::RestoreTarget;
use super::jobs;
use super::keywrap::KeyWrapper;
use super::manifest::{BackupKind, BackupMethod};
use super::restore_job;
use super::settings::{BackupConfig, EngineConnection};
use crate::ids;
use crate::instances::{Engine, Instance, PlanName};
use crate::ops::{self, NewOperation, OperationRecord};

pub const KIND_START: &str = "backup.start";
pub const KIND_DELETE: &str = "backup.delete";
pub const KIND_VERIFY: &str = "backup.verify";
pub const KIND_RESTORE: &str = "backup.restore";
pub const KIND_REPAIR: &str = "backup.repair";

/// Manual backups kept at most, per plan.
pub fn manual_quota(plan: PlanName) -> (&'static str, usize) {
    match plan {
        PlanName::Starter => ("starter", 10),
        PlanName::Business => ("business", 50),
    }
}

pub struct BackupService {
    pub(crate) config: BackupConfig,
    pub(crate) destinations: Vec<Arc<dyn Destination>>,
    pub(crate) keys: Arc<dyn KeyWrapper>,
    pub(crate) engine: ops::OperationEngine,
    pub(crate) inflight_dir: PathBuf,
}

impl BackupService {
    pub fn new(
        config: BackupConfig,
        state_dir: &Path,
        keys: Arc<dyn KeyWrapper>,
        engine: ops::OperationEngine,
    ) -> Result<Arc<Self>, BackupError> {
        let destinations = config
            .effective_destinations(state_dir)
            .iter()
            .map(|d| destination::open(d, config.part_size, config.max_retries))
            .collect::<Result<Vec<_>, _>>()?;
        let inflight_dir = state_dir.join("backups/inflight");
        crate::fsutil::ensure_private_dir(&inflight_dir)
            .map_err(|e| BackupError::io(format!("create {}", inflight_dir.display()), e))?;
        Ok(Arc::new(Self { config, destinations, keys, engine, inflight_dir }))
    }

    pub fn destination_names(&self) -> Vec<String> {
        self.destinations.iter().map(|d| d.name().to_owned()).collect()
    }

    /// The connection a backup of `instance` dumps from: its engine's `[backup.<engine>]`
    /// settings, and for PostgreSQL the port of the cluster running on the instance's data
    /// directory (`postmaster.pid`), so that several clusters on one host each dump their own.
    pub fn connection_for(&self, instance: &Instance) -> EngineConnection {
        let mut conn = self.connection(instance.spec.engine).clone();
        if instance.spec.engine == Engine::Postgresql
            && let Some(port) = postmaster_port(&instance.spec.data_dir)
        {
            conn.port = port;
        }
        conn
    }

    pub fn connection(&self, engine: Engine) -> &EngineConnection {
        match engine {
            Engine::Postgresql => &self.config.postgresql,
            Engine::Mariadb => &self.config.mariadb,
            Engine::Redis => &self.config.redis,
        }
    }

    /// Starts a backup. Manual backups beyond the plan's quota are refused before anything runs.
    pub async fn start(
        self: &Arc<Self>,
        instance: &Instance,
        method: BackupMethod,
        kind: BackupKind,
        request_id: &str,
    ) -> Result<OperationRecord, BackupError> {
        ids::request_id(request_id)?;
        self.keys.check()?;
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
        let params = serde_json::json!({ "backup_id": backup_id, "method": method, "kind": kind });
        let new = NewOperation {
            request_id: request_id.to_owned(),
            kind: KIND_START,
            target: instance.id.clone(),
            params,
            exclusive: true,
        };
        let (svc, instance) = (self.clone(), instance.clone());
        let job = Box::new(move |ctx| -> ops::engine::JobFuture {
            Box::pin(async move { jobs::backup(svc, instance, method, kind, backup_id, ctx).await })
        });
        Ok(self.engine.submit(new, job).await?.0)
    }

    pub async fn list(&self, instance_id: &str) -> Vec<BackupInfo> {
        catalog::list(&self.destinations, instance_id).await
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
        self: &Arc<Self>,
        instance_id: &str,
        backup_id: &str,
        request_id: &str,
    ) -> Result<OperationRecord, BackupError> {
        self.get(instance_id, backup_id).await?;
        let (svc, inst, bid) = (self.clone(), instance_id.to_owned(), backup_id.to_owned());
        self.submit(KIND_DELETE, instance_id, backup_id, request_id, serde_json::json!({}), false, move |ctx| {
            Box::pin(async move { jobs::delete(svc, inst, bid, ctx).await })
        })
        .await
    }

    pub async fn verify(
        self: &Arc<Self>,
        instance_id: &str,
        backup_id: &str,
        destination: Option<String>,
        request_id: &str,
    ) -> Result<OperationRecord, BackupError> {
        self.keys.check()?;
        let info = self.get(instance_id, backup_id).await?;
        let source = self.pick_source(&info, destination.as_deref())?;
        let svc = self.clone();
        let params = serde_json::json!({ "destination": source });
        self.submit(KIND_VERIFY, instance_id, backup_id, request_id, params, false, move |ctx| {
            Box::pin(async move { jobs::verify(svc, info, source, ctx).await })
        })
        .await
    }

    /// Restores into `target`. A physical restore into the instance's own data directory needs the
    /// instance stopped.
    pub async fn restore(
        self: &Arc<Self>,
        instance: &Instance,
        backup_id: &str,
        target: RestoreTarget,
        destination: Option<String>,
        request_id: &str,
    ) -> Result<OperationRecord, BackupError> {
        self.keys.check()?;
        let info = self.get(&instance.id, backup_id).await?;
        let source = self.pick_source(&info, destination.as_deref())?;
        if let RestoreTarget::DataDir(dir) = &target {
            restore_job::check_restore_dir(instance, dir)?;
        }
        let params = serde_json::json!({ "destination": source, "target": format!("{target:?}") });
        let (svc, instance) = (self.clone(), instance.clone());
        let exclusive_target = instance.id.clone();
        self.submit(KIND_RESTORE, &exclusive_target, backup_id, request_id, params, true, move |ctx| {
            Box::pin(async move { restore_job::restore(svc, instance, info, source, target, ctx).await })
        })
        .await
    }

    /// Copies a degraded backup from a healthy destination to the others, verifying checksums.
    pub async fn repair(
        self: &Arc<Self>,
        instance_id: &str,
        backup_id: &str,
        request_id: &str,
    ) -> Result<OperationRecord, BackupError> {
        let info = self.get(instance_id, backup_id).await?;
        let source = self.pick_source(&info, None)?;
        let svc = self.clone();
        self.submit(KIND_REPAIR, instance_id, backup_id, request_id, serde_json::json!({}), false, move |ctx| {
            Box::pin(async move { jobs::repair(svc, info, source, ctx).await })
        })
        .await
    }

    /// Deletes every backup of `instance_id` whose expiry is at or before `now`, manifest first on
    /// every destination. Returns the ids removed.
    pub async fn apply_retention(&self, instance_id: &str, now: SystemTime) -> Result<Vec<String>, BackupError> {
        let mut removed = Vec::new();
        for info in self.list(instance_id).await {
            if info.manifest.expires.is_some_and(|e| e <= now) {
                jobs::delete_everywhere(&self.destinations, instance_id, &info.manifest.backup_id).await?;
                tracing::info!(instance = instance_id, backup = %info.manifest.backup_id, "retention: deleted expired backup");
                removed.push(info.manifest.backup_id);
            }
        }
        Ok(removed)
    }

    /// At start-up: backups cut short by a stop or crash leave uploads and partial objects behind;
    /// abort and delete them (they never got a manifest). Returns the backup ids cleaned.
    pub async fn clean_interrupted(&self) -> Vec<String> {
        jobs::clean_inflight(self).await
    }

    fn pick_source(&self, info: &BackupInfo, wanted: Option<&str>) -> Result<String, BackupError> {
        let mut healthy = info.healthy_destinations();
        match wanted.filter(|w| !w.is_empty()) {
            Some(w) => healthy.find(|h| *h == w).map(str::to_owned).ok_or_else(|| {
                BackupError::FailedPrecondition(format!(
                    "backup {} is not complete on destination {w}",
                    info.manifest.backup_id
                ))
            }),
            None => healthy.next().map(str::to_owned).ok_or_else(|| {
                BackupError::FailedPrecondition(format!(
                    "no reachable destination holds backup {}",
                    info.manifest.backup_id
                ))
            }),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn submit(
        &self,
        kind: &'static str,
        instance_id: &str,
        backup_id: &str,
        request_id: &str,
        mut params: serde_json::Value,
        exclusive: bool,
        job: impl FnOnce(ops::JobContext) -> ops::engine::JobFuture + Send + 'static,
    ) -> Result<OperationRecord, BackupError> {
        params["backup_id"] = serde_json::Value::from(backup_id);
        let new =
            NewOperation { request_id: request_id.to_owned(), kind, target: instance_id.to_owned(), params, exclusive };
        Ok(self.engine.submit(new, Box::new(job)).await?.0)
    }

    pub(crate) fn destination(&self, name: &str) -> Option<&Arc<dyn Destination>> {
        self.destinations.iter().find(|d| d.name() == name)
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

/// The port line (the fourth) of a running PostgreSQL's `postmaster.pid`.
fn postmaster_port(data_dir: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    text.lines().nth(3)?.trim().parse().ok()
}
