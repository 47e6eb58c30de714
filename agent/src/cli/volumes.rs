//! `dbagentctl volumes ...`: the LUKS2-encrypted volumes behind instances.

use super::args::OperationArgs;
use super::error::CliError;
use super::operations::finish;
use super::{Ctx, parse};
use clap::Subcommand;
use dbagent_proto::v1 as pb;
use pb::volumes_client::VolumesClient;

#[derive(Debug, Subcommand)]
pub enum VolumesCommand {
    /// Create, format and mount the instance's encrypted volume (orchestrator identity).
    Create {
        instance_id: String,
        /// Overwrite a device that already holds data.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        op: OperationArgs,
    },
    /// Unlock and mount the volume, e.g. after a reboot (orchestrator identity).
    Open {
        instance_id: String,
        /// The operator's recovery key (an age identity file, mode 0600): for a host that lost
        /// its keystore or KEK, opens the key escrowed in the volume's LUKS2 header and stores it
        /// in the keystore again.
        #[arg(long, value_name = "FILE")]
        recovery_key: Option<std::path::PathBuf>,
        #[command(flatten)]
        op: OperationArgs,
    },
    /// Unmount and lock the volume; the database must be stopped (orchestrator identity).
    Close {
        instance_id: String,
        #[command(flatten)]
        op: OperationArgs,
    },
    /// Grow the volume and its filesystem online (orchestrator identity).
    Grow {
        instance_id: String,
        /// New total size, e.g. 20GiB; shrinking is refused.
        #[arg(long, value_name = "SIZE", value_parser = parse::size)]
        size: u64,
        #[command(flatten)]
        op: OperationArgs,
    },
    /// Re-wrap the volume key under a new key-encryption key (orchestrator identity).
    RotateKey {
        instance_id: String,
        #[command(flatten)]
        op: OperationArgs,
    },
    /// Save a copy of the LUKS header, without which the data cannot be recovered (orchestrator identity).
    BackupHeader {
        instance_id: String,
        #[command(flatten)]
        op: OperationArgs,
    },
    /// Show a volume: backing device, mapping, cipher, sizes.
    Get { instance_id: String },
    /// List the volumes the agent manages.
    List,
    /// Erase the volume's keys: the data is gone for good (orchestrator identity).
    Destroy {
        instance_id: String,
        /// Repeat the instance id to confirm.
        #[arg(long, value_name = "INSTANCE_ID")]
        confirm: String,
        #[command(flatten)]
        op: OperationArgs,
    },
}

pub fn preflight(command: &VolumesCommand) -> Result<(), CliError> {
    match command {
        // The agent checks this too; checking here avoids sending a request that can only fail.
        VolumesCommand::Destroy { instance_id, confirm, .. } if confirm != instance_id => {
            Err(CliError::Usage(format!("--confirm {confirm:?} does not match the instance id {instance_id:?}")))
        }
        _ => Ok(()),
    }
}

pub async fn run(ctx: &Ctx, command: VolumesCommand) -> Result<(), CliError> {
    let mut client = VolumesClient::new(ctx.channel.clone());
    let (op, watch) = match command {
        VolumesCommand::Create { instance_id, force, op } => {
            let request = pb::CreateVolumeRequest { request_id: op.request.resolve()?, instance_id, force };
            (client.create_volume(ctx.unary(request)).await?, op.watch)
        }
        VolumesCommand::Open { instance_id, recovery_key, op } => {
            let recovery_key = match recovery_key {
                Some(path) => super::recovery_key::read_key_file(&path)?.to_vec(),
                None => Vec::new(),
            };
            let request = pb::OpenVolumeRequest { request_id: op.request.resolve()?, instance_id, recovery_key };
            (client.open_volume(ctx.unary(request)).await?, op.watch)
        }
        VolumesCommand::Close { instance_id, op } => {
            let request = pb::CloseVolumeRequest { request_id: op.request.resolve()?, instance_id };
            (client.close_volume(ctx.unary(request)).await?, op.watch)
        }
        VolumesCommand::Grow { instance_id, size, op } => {
            let request =
                pb::GrowVolumeRequest { request_id: op.request.resolve()?, instance_id, new_size_bytes: size };
            (client.grow_volume(ctx.unary(request)).await?, op.watch)
        }
        VolumesCommand::RotateKey { instance_id, op } => {
            let request = pb::RotateVolumeKeyRequest { request_id: op.request.resolve()?, instance_id };
            (client.rotate_volume_key(ctx.unary(request)).await?, op.watch)
        }
        VolumesCommand::BackupHeader { instance_id, op } => {
            let request = pb::BackupVolumeHeaderRequest { request_id: op.request.resolve()?, instance_id };
            (client.backup_volume_header(ctx.unary(request)).await?, op.watch)
        }
        VolumesCommand::Destroy { instance_id, confirm, op } => {
            let request = pb::DestroyVolumeRequest {
                request_id: op.request.resolve()?,
                instance_id,
                confirm_instance_id: confirm,
            };
            (client.destroy_volume(ctx.unary(request)).await?, op.watch)
        }
        VolumesCommand::Get { instance_id } => {
            return ctx.print(client.get_volume(ctx.unary(pb::GetVolumeRequest { instance_id })).await?.get_ref());
        }
        VolumesCommand::List => {
            return ctx.print(client.list_volumes(ctx.unary(pb::ListVolumesRequest {})).await?.get_ref());
        }
    };
    finish(ctx, op.into_inner(), watch).await
}
