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
    /// Upgrade the database engine in the next maintenance window, or now with --force
    /// (orchestrator identity); --watch shows its progress. A newer PostgreSQL major (--to 17) is a
    /// major upgrade; the instance's own major (--to 15, --to 10.11.19) a minor one: the server
    /// restarted onto the installed binaries, after installing --package from --package-repository.
    Start {
        instance_id: String,
        /// Engine version to upgrade to, e.g. 17 (major), 15, 15.20, 10.11.19 (minor).
        #[arg(long = "to", value_name = "VERSION")]
        target_version: String,
        /// Do not wait for the maintenance window.
        #[arg(long)]
        force: bool,
        /// Minor upgrades: the flat apt repository (a folder beneath upgrade.package_repository_root)
        /// the packages are installed from.
        #[arg(long, value_name = "DIR")]
        package_repository: Option<String>,
        /// Minor upgrades: a package to install from --package-repository (repeat for each).
        #[arg(long = "package", value_name = "NAME")]
        packages: Vec<String>,
        #[command(flatten)]
        op: OperationArgs,
    },
}

pub async fn run(ctx: &Ctx, command: UpgradesCommand) -> Result<(), CliError> {
    let mut client = UpgradesClient::new(ctx.channel.clone());
    let (op, watch) = match command {
        UpgradesCommand::Start { instance_id, target_version, force, package_repository, packages, op } => {
            let request = pb::StartUpgradeRequest {
                request_id: op.request.resolve()?,
                instance_id,
                target_version,
                force,
                package_repository: package_repository.unwrap_or_default(),
                packages,
            };
            (client.start_upgrade(ctx.unary(request)).await?, op.watch)
        }
    };
    finish(ctx, op.into_inner(), watch).await
}
