//! `dbagentctl upgrades ...`: engine upgrades, plan changes, maintenance windows, availability and
//! the database's TLS certificate.

use super::args::{OperationArgs, PlanArgs, RequestIdArg};
use super::error::CliError;
use super::operations::finish;
use super::{Ctx, parse};
use clap::Subcommand;
use dbagent_proto::v1 as pb;
use pb::upgrades_client::UpgradesClient;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum UpgradesCommand {
    /// Upgrade PostgreSQL to a newer major (pg_upgrade, rolled back on failure) in the next maintenance
    /// window, or now with --force (orchestrator identity). Needs a recent backup; --watch follows it.
    Start {
        instance_id: String,
        /// PostgreSQL major to upgrade to, e.g. 17.
        #[arg(long = "to", value_name = "VERSION")]
        target_version: String,
        /// Do not wait for the maintenance window.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        op: OperationArgs,
    },
    /// Change the instance's plan and resource limits (orchestrator identity); --plan, --cpu-millis and
    /// --memory are required.
    Plan {
        instance_id: String,
        #[command(flatten)]
        plan: PlanArgs,
        /// Do not wait for the maintenance window.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        op: OperationArgs,
    },
    /// Set the weekly maintenance window (orchestrator identity).
    Window {
        instance_id: String,
        /// DAY@HH:MM+DURATION in UTC, e.g. mon@02:00+60m.
        #[arg(value_parser = parse::maintenance_window)]
        window: pb::MaintenanceWindow,
        #[command(flatten)]
        request: RequestIdArg,
    },
    /// Show the month's availability (the same as `dbagentctl availability`).
    Availability {
        instance_id: String,
        /// Month as YYYY-MM; the current month when omitted.
        #[arg(long, value_parser = super::parse::month)]
        month: Option<String>,
    },
    /// Install a TLS certificate for the database server (the same as `dbagentctl tls install`).
    InstallCert {
        instance_id: String,
        /// PEM certificate, then its intermediates.
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// PEM private key, readable by its owner only (chmod 600).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// PEM CA certificate(s) the chain must verify to.
        #[arg(long, value_name = "FILE")]
        ca: PathBuf,
        /// Write and reload even if the instance already serves this certificate.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        op: OperationArgs,
    },
}

fn plan(args: &PlanArgs) -> Result<pb::Plan, CliError> {
    let mut missing = Vec::new();
    let plan = args.apply(None, &mut missing);
    if missing.is_empty() {
        Ok(plan)
    } else {
        Err(CliError::Usage(format!("upgrades plan needs {}", missing.join(", "))))
    }
}

pub fn preflight(command: &UpgradesCommand) -> Result<(), CliError> {
    match command {
        UpgradesCommand::Plan { plan: args, .. } => plan(args).map(drop),
        _ => Ok(()),
    }
}

pub async fn run(ctx: &Ctx, command: UpgradesCommand) -> Result<(), CliError> {
    let mut client = UpgradesClient::new(ctx.channel.clone());
    let (op, watch) = match command {
        UpgradesCommand::Start { instance_id, target_version, force, op } => {
            let request =
                pb::StartUpgradeRequest { request_id: op.request.resolve()?, instance_id, target_version, force };
            (client.start_upgrade(ctx.unary(request)).await?, op.watch)
        }
        UpgradesCommand::Plan { instance_id, plan: args, force, op } => {
            let request = pb::ChangePlanRequest {
                request_id: op.request.resolve()?,
                instance_id,
                plan: Some(plan(&args)?),
                force,
            };
            (client.change_plan(ctx.unary(request)).await?, op.watch)
        }
        UpgradesCommand::Window { instance_id, window, request } => {
            let request =
                pb::SetMaintenanceWindowRequest { request_id: request.resolve()?, instance_id, window: Some(window) };
            return ctx.print(client.set_maintenance_window(ctx.unary(request)).await?.get_ref());
        }
        UpgradesCommand::Availability { instance_id, month } => {
            let request = pb::GetAvailabilityRequest { instance_id, month: month.unwrap_or_default() };
            return ctx.print(client.get_availability(ctx.unary(request)).await?.get_ref());
        }
        UpgradesCommand::InstallCert { instance_id, cert, key, ca, force, op } => {
            let request = super::tls::install_request(op.request.resolve()?, instance_id, &cert, &key, &ca, force)?;
            (client.install_certificate(ctx.unary(request)).await?, op.watch)
        }
    };
    finish(ctx, op.into_inner(), watch).await
}
