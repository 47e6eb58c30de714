//! `dbagentctl upgrade ...`: engine upgrades. Plan changes, windows, availability and certificates
//! have their own commands (`plan`, `window`, `availability`, `tls`).

use super::Ctx;
use super::args::OperationArgs;
use super::error::CliError;
use super::operations::finish;
use clap::Subcommand;
use dbagent_proto::v1 as pb;
use pb::upgrades_client::UpgradesClient;

#[derive(Debug, Subcommand)]
pub enum UpgradesCommand {
    /// Upgrade the database engine (PostgreSQL to a newer major) in the next maintenance window, or
    /// now with --force (orchestrator identity); --watch shows its progress.
    Start {
        instance_id: String,
        /// Engine version to upgrade to, e.g. 17.
        #[arg(long = "to", value_name = "VERSION")]
        target_version: String,
        /// Do not wait for the maintenance window.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        op: OperationArgs,
    },
}

pub async fn run(ctx: &Ctx, command: UpgradesCommand) -> Result<(), CliError> {
    let mut client = UpgradesClient::new(ctx.channel.clone());
    let (op, watch) = match command {
        UpgradesCommand::Start { instance_id, target_version, force, op } => {
            let request =
                pb::StartUpgradeRequest { request_id: op.request.resolve()?, instance_id, target_version, force };
            (client.start_upgrade(ctx.unary(request)).await?, op.watch)
        }
    };
    finish(ctx, op.into_inner(), watch).await
}
