//! `dbagentctl backups ...`: encrypted backups replicated to several availability zones.

use super::args::{OperationArgs, RequestIdArg};
use super::error::CliError;
use super::operations::finish;
use super::{Ctx, parse};
use clap::{Subcommand, ValueEnum};
use dbagent_proto::v1 as pb;
use pb::backups_client::BackupsClient;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    Physical,
    Logical,
}

#[derive(Debug, Subcommand)]
pub enum BackupsCommand {
    /// Take a manual backup now (orchestrator identity).
    Start {
        instance_id: String,
        /// Physical (file-level) or logical (dump); the agent picks when omitted.
        #[arg(long, value_enum)]
        method: Option<MethodArg>,
        /// Days the backup is kept (1..3650); 30 when omitted. It counts against the plan's
        /// manual quota until then.
        #[arg(long, value_name = "DAYS")]
        keep_days: Option<u32>,
        #[command(flatten)]
        op: OperationArgs,
    },
    /// List an instance's backups.
    List {
        /// Optional with --from-destinations: without it, list the instance ids found there.
        #[arg(required_unless_present = "from_destinations")]
        instance_id: Option<String>,
        /// Read the destinations' manifests, whether or not this agent knows the instance (a new
        /// host after the old one was lost), and say for each backup whether this agent can
        /// authenticate it now and which keys can open it.
        #[arg(long)]
        from_destinations: bool,
    },
    /// Show one backup and the state of each copy.
    Get { instance_id: String, backup_id: String },
    /// Check a backup's checksum at one or all destinations (orchestrator identity).
    Verify {
        instance_id: String,
        backup_id: String,
        /// Only this destination (availability zone).
        #[arg(long)]
        destination: Option<String>,
        /// The recovery key (age identity file, mode 0600) to open the backup with when this host's
        /// KEK and the KeyService cannot; sent for this one operation, never stored by the agent.
        #[arg(long, value_name = "FILE")]
        recovery_key: Option<PathBuf>,
        #[command(flatten)]
        op: OperationArgs,
    },
    /// Restore a backup, in place (the instance must be stopped) or into another folder (orchestrator identity).
    Restore {
        instance_id: String,
        backup_id: String,
        /// Restore into this folder instead of in place.
        #[arg(long, value_name = "PATH")]
        target_data_dir: Option<String>,
        /// Logical PostgreSQL backups: restore into this database (created if missing) instead of the dumped one.
        #[arg(long, value_name = "NAME")]
        target_database: Option<String>,
        /// Restore from this destination; any healthy one when omitted.
        #[arg(long)]
        destination: Option<String>,
        /// The recovery key (age identity file, mode 0600) to open the backup with on a host that
        /// did not make it (disaster recovery); sent for this one operation, never stored by the agent.
        #[arg(long, value_name = "FILE")]
        recovery_key: Option<PathBuf>,
        #[command(flatten)]
        op: OperationArgs,
    },
    /// Copy a degraded backup to the destinations that miss it (orchestrator identity).
    Repair {
        instance_id: String,
        backup_id: String,
        #[command(flatten)]
        op: OperationArgs,
    },
    /// Run a restore drill: restore a backup into a scratch folder, start the engine on it, count a table (orchestrator identity).
    Drill {
        instance_id: String,
        /// The backup to drill; the newest complete one when omitted.
        #[arg(long = "backup", value_name = "ID")]
        backup_id: Option<String>,
        #[command(flatten)]
        op: OperationArgs,
    },
    /// Delete a backup at every destination (orchestrator identity).
    Delete {
        instance_id: String,
        backup_id: String,
        /// Also when it is the instance's newest complete backup, its last good copy.
        #[arg(long)]
        last_good_copy: bool,
        #[command(flatten)]
        op: OperationArgs,
    },
    /// Set the daily backup schedule and retention (orchestrator identity).
    Policy {
        instance_id: String,
        /// Daily backup time in UTC.
        #[arg(long, value_name = "HH:MM", value_parser = parse::time_of_day)]
        at: u32,
        /// Keep the newest backup of each of the last N UTC days (1..365); the plan's default when omitted.
        #[arg(long, value_name = "N")]
        keep_daily: Option<u32>,
        /// Keep the newest backup of each of the last N ISO weeks (0..260); the plan's default when omitted.
        #[arg(long, value_name = "N")]
        keep_weekly: Option<u32>,
        /// Keep the newest backup of each of the last N calendar months (0..120); the plan's default when omitted.
        #[arg(long, value_name = "N")]
        keep_monthly: Option<u32>,
        /// Keep the policy but take no scheduled backups.
        #[arg(long)]
        disabled: bool,
        #[command(flatten)]
        request: RequestIdArg,
    },
}

/// The text of `--recovery-key FILE`, or nothing. The request's copy lives until it is sent.
fn key_text(path: Option<&Path>) -> Result<Vec<u8>, CliError> {
    Ok(path.map(super::recovery_key::read_key_file).transpose()?.map(|t| t.to_vec()).unwrap_or_default())
}

pub async fn run(ctx: &Ctx, command: BackupsCommand) -> Result<(), CliError> {
    let mut client = BackupsClient::new(ctx.channel.clone());
    let (op, watch) = match command {
        BackupsCommand::Start { instance_id, method, keep_days, op } => {
            let method = match method {
                None => pb::BackupMethod::Unspecified,
                Some(MethodArg::Physical) => pb::BackupMethod::Physical,
                Some(MethodArg::Logical) => pb::BackupMethod::Logical,
            } as i32;
            let request = pb::StartBackupRequest {
                request_id: op.request.resolve()?,
                instance_id,
                method,
                manual_keep_days: keep_days.unwrap_or(0),
            };
            (client.start_backup(ctx.unary(request)).await?, op.watch)
        }
        BackupsCommand::List { instance_id, from_destinations } => {
            let request = pb::ListBackupsRequest { instance_id: instance_id.unwrap_or_default(), from_destinations };
            return ctx.print(client.list_backups(ctx.unary(request)).await?.get_ref());
        }
        BackupsCommand::Get { instance_id, backup_id } => {
            return ctx
                .print(client.get_backup(ctx.unary(pb::GetBackupRequest { instance_id, backup_id })).await?.get_ref());
        }
        BackupsCommand::Verify { instance_id, backup_id, destination, recovery_key, op } => {
            let request = pb::VerifyBackupRequest {
                request_id: op.request.resolve()?,
                instance_id,
                backup_id,
                destination: destination.unwrap_or_default(),
                recovery_key: key_text(recovery_key.as_deref())?,
            };
            (client.verify_backup(ctx.unary(request)).await?, op.watch)
        }
        BackupsCommand::Restore {
            instance_id,
            backup_id,
            target_data_dir,
            target_database,
            destination,
            recovery_key,
            op,
        } => {
            let request = pb::RestoreBackupRequest {
                request_id: op.request.resolve()?,
                instance_id,
                backup_id,
                target_data_dir: target_data_dir.unwrap_or_default(),
                destination: destination.unwrap_or_default(),
                target_database: target_database.unwrap_or_default(),
                recovery_key: key_text(recovery_key.as_deref())?,
            };
            (client.restore_backup(ctx.unary(request)).await?, op.watch)
        }
        BackupsCommand::Repair { instance_id, backup_id, op } => {
            let request = pb::RepairBackupRequest { request_id: op.request.resolve()?, instance_id, backup_id };
            (client.repair_backup(ctx.unary(request)).await?, op.watch)
        }
        BackupsCommand::Drill { instance_id, backup_id, op } => {
            let request = pb::DrillBackupRequest {
                request_id: op.request.resolve()?,
                instance_id,
                backup_id: backup_id.unwrap_or_default(),
            };
            (client.drill_backup(ctx.unary(request)).await?, op.watch)
        }
        BackupsCommand::Delete { instance_id, backup_id, last_good_copy, op } => {
            let request = pb::DeleteBackupRequest {
                request_id: op.request.resolve()?,
                instance_id,
                backup_id,
                delete_last_good_copy: last_good_copy,
            };
            (client.delete_backup(ctx.unary(request)).await?, op.watch)
        }
        BackupsCommand::Policy { instance_id, at, keep_daily, keep_weekly, keep_monthly, disabled, request } => {
            let policy = pb::BackupPolicy {
                daily_at_minute_utc: at,
                keep_daily: keep_daily.unwrap_or(0),
                enabled: !disabled,
                keep_weekly,
                keep_monthly,
            };
            let request =
                pb::SetBackupPolicyRequest { request_id: request.resolve()?, instance_id, policy: Some(policy) };
            return ctx.print(client.set_backup_policy(ctx.unary(request)).await?.get_ref());
        }
    };
    finish(ctx, op.into_inner(), watch).await
}
