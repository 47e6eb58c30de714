//! Backup work as operations. Each action names its operation kind and the parameters stored in
//! the operations journal; one `run` runs any of them with the service's [`BackupResources`].
//!
//! The kinds and the parameter shapes are a stored format: an agent upgraded in place reads the
//! records of the one before, and a retried request is matched by the digest of kind, target and
//! parameters. Change them only with a migration.

use serde_json::json;
use std::sync::Arc;

use super::BackupError;
use super::catalog::BackupInfo;
use super::engine_commands::RestoreTarget;
use super::manifest::{BackupKind, BackupMethod};
use super::resources::BackupResources;
use super::{backup_job, deletion, drill, restore_job, verify_repair};
use crate::instances::Instance;
use crate::ops::engine::JobFn;
use crate::ops::{JobContext, NewOperation, OpError};
use crate::recovery_key::RecoveryIdentity;

/// The recovery identity a verify or restore request carried: held in memory for that one
/// operation, never in its stored parameters (they say only that one was given).
pub type RequestRecoveryKey = Option<Arc<RecoveryIdentity>>;

/// One backup operation with what its body needs. `source` is the destination read from.
#[derive(Debug, Clone)]
pub enum BackupAction {
    /// `keep_days`: a manual backup's life when the request gave one (else the default).
    Start {
        instance: Box<Instance>,
        method: BackupMethod,
        kind: BackupKind,
        backup_id: String,
        keep_days: Option<u32>,
    },
    Delete {
        instance_id: String,
        backup_id: String,
    },
    Verify {
        instance_id: String,
        info: Box<BackupInfo>,
        source: String,
        recovery: RequestRecoveryKey,
    },
    Restore {
        instance: Box<Instance>,
        info: Box<BackupInfo>,
        source: String,
        target: RestoreTarget,
        recovery: RequestRecoveryKey,
    },
    Repair {
        instance_id: String,
        info: Box<BackupInfo>,
        source: String,
    },
    /// A restore drill of `info` read from `source` into a scratch folder (`drill.rs`).
    Drill {
        instance: Box<Instance>,
        info: Box<BackupInfo>,
        source: String,
    },
}

impl BackupAction {
    pub fn kind(&self) -> &'static str {
        match self {
            BackupAction::Start { .. } => "backup.start",
            BackupAction::Delete { .. } => "backup.delete",
            BackupAction::Verify { .. } => "backup.verify",
            BackupAction::Restore { .. } => "backup.restore",
            BackupAction::Repair { .. } => "backup.repair",
            BackupAction::Drill { .. } => "backup.drill",
        }
    }

    /// The instance the operation is about (the operation's target).
    pub fn instance_id(&self) -> &str {
        match self {
            BackupAction::Start { instance, .. }
            | BackupAction::Restore { instance, .. }
            | BackupAction::Drill { instance, .. } => &instance.id,
            BackupAction::Delete { instance_id, .. }
            | BackupAction::Verify { instance_id, .. }
            | BackupAction::Repair { instance_id, .. } => instance_id,
        }
    }

    pub fn backup_id(&self) -> &str {
        match self {
            BackupAction::Start { backup_id, .. } | BackupAction::Delete { backup_id, .. } => backup_id,
            BackupAction::Verify { info, .. }
            | BackupAction::Restore { info, .. }
            | BackupAction::Repair { info, .. }
            | BackupAction::Drill { info, .. } => &info.manifest.backup_id,
        }
    }

    /// Taking a backup and restoring hold the instance's lock; reading or removing stored copies
    /// does not, nor does a drill (it restores into its own scratch folder).
    fn exclusive(&self) -> bool {
        matches!(self, BackupAction::Start { .. } | BackupAction::Restore { .. })
    }

    /// The journal's parameters. Never secrets: a recovery key is recorded only as given
    /// ([`crate::ops::IN_MEMORY_ONLY`]), and only then, so the parameters of requests without one
    /// stay as earlier agents stored them. The restore target is stored in its `Debug` form, as it
    /// always was.
    pub fn params(&self) -> serde_json::Value {
        let mut params = self.stored_params();
        if let BackupAction::Verify { recovery: Some(_), .. } | BackupAction::Restore { recovery: Some(_), .. } = self {
            params["recovery_key"] = json!(crate::ops::IN_MEMORY_ONLY);
        }
        params
    }

    fn stored_params(&self) -> serde_json::Value {
        let backup_id = self.backup_id();
        match self {
            // `keep_days` only when given, so a retry of a request recorded by an earlier agent matches.
            BackupAction::Start { method, kind, keep_days: None, .. } => {
                json!({ "backup_id": backup_id, "method": method, "kind": kind })
            }
            BackupAction::Start { method, kind, keep_days: Some(days), .. } => {
                json!({ "backup_id": backup_id, "method": method, "kind": kind, "keep_days": days })
            }
            BackupAction::Delete { .. } | BackupAction::Repair { .. } => json!({ "backup_id": backup_id }),
            BackupAction::Verify { source, .. } | BackupAction::Drill { source, .. } => {
                json!({ "backup_id": backup_id, "destination": source })
            }
            BackupAction::Restore { source, target, .. } => {
                json!({ "backup_id": backup_id, "destination": source, "target": format!("{target:?}") })
            }
        }
    }

    pub fn new_operation(&self, request_id: &str) -> NewOperation {
        NewOperation {
            request_id: request_id.to_owned(),
            kind: self.kind(),
            target: self.instance_id().to_owned(),
            params: self.params(),
            exclusive: self.exclusive(),
        }
    }

    /// The operation's body.
    pub fn job(self, resources: Arc<BackupResources>) -> JobFn {
        Box::new(move |ctx| {
            Box::pin(async move { run(&resources, self, &ctx).await.map(Some).map_err(|e| OpError::from_error(&e)) })
        })
    }
}

async fn run(res: &BackupResources, action: BackupAction, ctx: &JobContext) -> Result<serde_json::Value, BackupError> {
    match action {
        BackupAction::Start { instance, method, kind, backup_id, keep_days } => {
            backup_job::run(res, &instance, method, kind, &backup_id, keep_days, ctx).await
        }
        BackupAction::Delete { instance_id, backup_id } => {
            deletion::delete_everywhere(&res.destinations, &instance_id, &backup_id).await?;
            Ok(json!({ "backup_id": backup_id, "deleted": true }))
        }
        BackupAction::Verify { instance_id, info, source, recovery } => {
            let keys = res.keys.with_identity(recovery);
            verify_repair::verify(res, &keys, &instance_id, &info.manifest.backup_id, &source, ctx).await
        }
        BackupAction::Restore { instance, info, source, target, recovery } => {
            let keys = res.keys.with_identity(recovery);
            restore_job::run(res, &keys, &instance, &info, &source, &target, ctx).await
        }
        BackupAction::Repair { instance_id, info, source } => {
            verify_repair::repair(res, &instance_id, &info, &source, ctx).await
        }
        BackupAction::Drill { instance, info, source } => drill::run(res, &instance, &info, &source, ctx).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::catalog::BackupState;
    use crate::backup::manifest::Manifest;
    use crate::backup::settings::EngineConnection;
    use crate::instances::fixtures;
    use std::time::SystemTime;

    fn instance() -> Box<Instance> {
        let now = SystemTime::UNIX_EPOCH;
        Box::new(Instance { id: "pg1".into(), spec: fixtures::spec("pg1"), created: now, updated: now, generation: 1 })
    }

    fn info() -> Box<BackupInfo> {
        let manifest = Manifest::for_tests("pg1", "b0123456789abcdef0123");
        Box::new(BackupInfo { manifest, state: BackupState::Complete, destinations: Vec::new() })
    }

    /// What earlier agents wrote into the journal, byte for byte: a record written before an
    /// upgrade must still match a retried request (the digest covers kind, target and params).
    #[test]
    fn kinds_targets_and_params_match_the_journal_of_earlier_agents() {
        let b = "b0123456789abcdef0123";
        let connection = EngineConnection {
            host: "/var/run/postgresql".into(),
            port: 5432,
            user: "postgres".into(),
            database: "postgres".into(),
            bin_dir: "/usr/lib/postgresql/15/bin".into(),
        };
        let cases = [
            (
                BackupAction::Start {
                    instance: instance(),
                    method: BackupMethod::Logical,
                    kind: BackupKind::Manual,
                    backup_id: b.into(),
                    keep_days: None,
                },
                "backup.start",
                true,
                r#"{"backup_id":"b0123456789abcdef0123","kind":"manual","method":"logical"}"#,
            ),
            (
                BackupAction::Delete { instance_id: "pg1".into(), backup_id: b.into() },
                "backup.delete",
                false,
                r#"{"backup_id":"b0123456789abcdef0123"}"#,
            ),
            (
                BackupAction::Verify { instance_id: "pg1".into(), info: info(), source: "az2".into(), recovery: None },
                "backup.verify",
                false,
                r#"{"backup_id":"b0123456789abcdef0123","destination":"az2"}"#,
            ),
            (
                BackupAction::Restore {
                    instance: instance(),
                    info: info(),
                    source: "az1".into(),
                    target: RestoreTarget::DataDir("/srv/db/new".into()),
                    recovery: None,
                },
                "backup.restore",
                true,
                r#"{"backup_id":"b0123456789abcdef0123","destination":"az1","target":"DataDir(\"/srv/db/new\")"}"#,
            ),
            (
                BackupAction::Restore {
                    instance: instance(),
                    info: info(),
                    source: "az1".into(),
                    target: RestoreTarget::Server { connection, database: Some("shop".into()), instance_server: true },
                    recovery: None,
                },
                "backup.restore",
                true,
                r#"{"backup_id":"b0123456789abcdef0123","destination":"az1","target":"Server { connection: EngineConnection { host: \"/var/run/postgresql\", port: 5432, user: \"postgres\", database: \"postgres\", bin_dir: \"/usr/lib/postgresql/15/bin\" }, database: Some(\"shop\"), instance_server: true }"}"#,
            ),
            (
                BackupAction::Repair { instance_id: "pg1".into(), info: info(), source: "az1".into() },
                "backup.repair",
                false,
                r#"{"backup_id":"b0123456789abcdef0123"}"#,
            ),
            (
                BackupAction::Drill { instance: instance(), info: info(), source: "az3".into() },
                "backup.drill",
                false,
                r#"{"backup_id":"b0123456789abcdef0123","destination":"az3"}"#,
            ),
        ];
        for (action, kind, exclusive, params) in cases {
            let new = action.new_operation("req-1");
            assert_eq!(new.kind, kind);
            assert_eq!(new.target, "pg1", "{kind}");
            assert_eq!(new.exclusive, exclusive, "{kind}");
            assert_eq!(new.params.to_string(), params, "{kind}");
            assert_eq!(new.request_id, "req-1");
        }
    }
}
