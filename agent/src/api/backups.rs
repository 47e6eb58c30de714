use dbagent_proto::v1 as pb;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tonic::{Request, Response, Status};

use super::convert::backup::method_from_proto;
use super::convert::instance::spec_from_proto;
use super::error::ApiResult;
use crate::backup::action::RequestRecoveryKey;
use crate::backup::engine_commands::RestoreTarget;
use crate::backup::{BackupError, BackupKind, BackupMethod, BackupService};
use crate::ids::{self, InvalidField};
use crate::instances::registry::Registry;
use crate::recovery_key::RecoveryIdentity;
use crate::requests::RequestLedger;

/// The Backups service: backups of registered instances, with SetBackupPolicy replayed by
/// request_id.
pub struct BackupsApi {
    pub backups: Arc<BackupService>,
    /// The instance a backup is of; the backup policy is part of its spec.
    pub registry: Arc<Registry>,
    pub requests: RequestLedger,
}

#[tonic::async_trait]
impl pb::backups_server::Backups for BackupsApi {
    async fn start_backup(&self, req: Request<pb::StartBackupRequest>) -> ApiResult<pb::Operation> {
        let req = req.into_inner();
        let instance = self.registry.get(&req.instance_id)?;
        let method = method_from_proto(req.method)?;
        let keep_days = Some(req.manual_keep_days).filter(|d| *d != 0);
        let op = self.backups.start_with(&instance, method, BackupKind::Manual, &req.request_id, keep_days).await?;
        Ok(Response::new((&op).into()))
    }

    async fn list_backups(&self, req: Request<pb::ListBackupsRequest>) -> ApiResult<pb::ListBackupsResponse> {
        let req = req.into_inner();
        if req.from_destinations && req.instance_id.is_empty() {
            return Ok(Response::new((&self.backups.instances_on_destinations().await?).into()));
        }
        ids::instance_id("instance_id", &req.instance_id)?;
        if req.from_destinations {
            return Ok(Response::new((&self.backups.list_from_destinations(&req.instance_id).await?).into()));
        }
        let backups = self.backups.list(&req.instance_id).await.iter().map(Into::into).collect();
        let last_drill = self.backups.last_drill(&req.instance_id).as_ref().map(Into::into);
        Ok(Response::new(pb::ListBackupsResponse { backups, last_drill, ..Default::default() }))
    }

    async fn get_backup(&self, req: Request<pb::GetBackupRequest>) -> ApiResult<pb::Backup> {
        let req = req.into_inner();
        let info = self.backups.get(&req.instance_id, &req.backup_id).await?;
        Ok(Response::new((&info).into()))
    }

    async fn delete_backup(&self, req: Request<pb::DeleteBackupRequest>) -> ApiResult<pb::Operation> {
        let req = req.into_inner();
        let op =
            self.backups.delete(&req.instance_id, &req.backup_id, &req.request_id, req.delete_last_good_copy).await?;
        Ok(Response::new((&op).into()))
    }

    async fn verify_backup(&self, req: Request<pb::VerifyBackupRequest>) -> ApiResult<pb::Operation> {
        let mut req = req.into_inner();
        let recovery = recovery_key(std::mem::take(&mut req.recovery_key))?;
        let dest = (!req.destination.is_empty()).then_some(req.destination);
        let op = self.backups.verify(&req.instance_id, &req.backup_id, dest, recovery, &req.request_id).await?;
        Ok(Response::new((&op).into()))
    }

    async fn restore_backup(&self, req: Request<pb::RestoreBackupRequest>) -> ApiResult<pb::Operation> {
        let mut req = req.into_inner();
        let recovery = recovery_key(std::mem::take(&mut req.recovery_key))?;
        let instance = self.registry.get(&req.instance_id)?;
        // The path is checked before anything else is looked up: it is where root will write.
        if !req.target_data_dir.is_empty() {
            self.registry.check_restore_dir(&instance.id, Path::new(&req.target_data_dir))?;
        }
        let info = self.backups.get(&req.instance_id, &req.backup_id).await?;
        let database = target_database(&req.target_database, instance.spec.engine)?;
        let target = match (info.manifest.method, req.target_data_dir.is_empty()) {
            (BackupMethod::Physical, _) if database.is_some() => {
                return Err(InvalidField::new(
                    "target_database",
                    "only a logical backup restores into a database; use target_data_dir",
                )
                .into());
            }
            (BackupMethod::Physical, false) => RestoreTarget::DataDir(PathBuf::from(&req.target_data_dir)),
            (BackupMethod::Physical, true) => RestoreTarget::DataDir(instance.spec.data_dir.clone()),
            (BackupMethod::Logical, true) => RestoreTarget::Server {
                connection: self.backups.connection_for(&instance).await,
                database,
                instance_server: true,
            },
            (BackupMethod::Logical, false) => {
                return Err(InvalidField::new(
                    "target_data_dir",
                    "a logical backup restores into the instance's server; leave it empty",
                )
                .into());
            }
        };
        let dest = (!req.destination.is_empty()).then_some(req.destination);
        let op = self.backups.restore(&instance, &req.backup_id, target, dest, recovery, &req.request_id).await?;
        Ok(Response::new((&op).into()))
    }

    async fn repair_backup(&self, req: Request<pb::RepairBackupRequest>) -> ApiResult<pb::Operation> {
        let req = req.into_inner();
        let op = self.backups.repair(&req.instance_id, &req.backup_id, &req.request_id).await?;
        Ok(Response::new((&op).into()))
    }

    async fn drill_backup(&self, req: Request<pb::DrillBackupRequest>) -> ApiResult<pb::Operation> {
        let req = req.into_inner();
        let instance = self.registry.get(&req.instance_id)?;
        let op = self.backups.drill(&instance, &req.backup_id, &req.request_id).await?;
        Ok(Response::new((&op).into()))
    }

    async fn set_backup_policy(&self, req: Request<pb::SetBackupPolicyRequest>) -> ApiResult<pb::BackupPolicy> {
        let req = req.into_inner();
        let policy = self.requests.once("SetBackupPolicy", &req.request_id, &req, || self.replace_policy(&req));
        Ok(Response::new(policy.await?))
    }
}

impl BackupsApi {
    async fn replace_policy(&self, req: &pb::SetBackupPolicyRequest) -> Result<pb::BackupPolicy, Status> {
        let policy = req.policy.ok_or_else(|| InvalidField::new("policy", "is required"))?;
        let current = self.registry.get(&req.instance_id)?;
        // Reuse the instance spec's validation of the policy by converting a full spec.
        let mut proto_spec = pb::Instance::from(&current).spec.unwrap_or_default();
        proto_spec.backup_policy = Some(policy);
        let spec = spec_from_proto(Some(proto_spec))?;
        let updated = self.registry.update(&req.instance_id, spec, None).await?;
        Ok(updated.spec.backup_policy.as_ref().map(crate::api::convert::instance::policy_to_proto).unwrap_or_default())
    }
}

/// The largest recovery key text accepted: an age identity file is one line and a few comments.
const MAX_RECOVERY_KEY_BYTES: usize = 4096;

/// The optional `recovery_key` of a verify or restore request: the text of an age identity file,
/// parsed here and wiped; the key is kept only in memory for the one operation it is given for.
fn recovery_key(text: Vec<u8>) -> Result<RequestRecoveryKey, BackupError> {
    let text = zeroize::Zeroizing::new(text);
    if text.is_empty() {
        return Ok(None);
    }
    if text.len() > MAX_RECOVERY_KEY_BYTES {
        return Err(InvalidField::new("recovery_key", format!("at most {MAX_RECOVERY_KEY_BYTES} bytes")).into());
    }
    Ok(Some(Arc::new(RecoveryIdentity::parse(&text)?)))
}

/// A new database name for a logical restore. Passed to `createdb` and `pg_restore` as an argument,
/// so only plain lowercase identifiers are accepted (never something that reads as an option).
fn target_database(name: &str, engine: crate::instances::Engine) -> Result<Option<String>, InvalidField> {
    if name.is_empty() {
        return Ok(None);
    }
    if engine != crate::instances::Engine::Postgresql {
        return Err(InvalidField::new(
            "target_database",
            "only PostgreSQL logical backups restore into a new database",
        ));
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if !first_ok || name.len() > 63 || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return Err(InvalidField::new(
            "target_database",
            "must be 1 to 63 of a-z, 0-9 and _, not starting with a digit",
        ));
    }
    Ok(Some(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::target_database;
    use crate::instances::Engine;

    #[test]
    fn target_database_names_are_plain_identifiers() {
        assert_eq!(target_database("", Engine::Postgresql).unwrap(), None);
        assert_eq!(target_database("shop_2", Engine::Postgresql).unwrap().as_deref(), Some("shop_2"));
        for bad in ["-Ufoo", "Shop", "2shop", "a b", "a;b", &"a".repeat(64)] {
            assert!(target_database(bad, Engine::Postgresql).is_err(), "{bad:?} must be refused");
        }
        assert!(target_database("shop", Engine::Mariadb).is_err());
    }
}
