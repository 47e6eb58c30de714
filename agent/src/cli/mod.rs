//! `dbagentctl`, the operator's command-line client for the agent's gRPC API.
//!
//! Every RPC has a subcommand. Output is a human table by default and hand-built JSON with
//! `--output json`; errors go to stderr with exit codes scripts can branch on (see `EXIT_CODES`).

mod args;
mod backups;
pub mod config;
mod connect;
pub mod error;
mod instances;
mod logs;
mod metrics;
mod metrics_table;
mod operations;
pub mod parse;
mod plan;
mod recovery_key;
pub mod render;
pub mod table;
mod tls;
mod upgrades;
mod volumes;
mod window;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use dbagent_proto::v1 as pb;
use error::CliError;
use render::ToJson;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use table::ToTable;
use tonic::transport::Channel;

const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    the agent refused or failed the request (other gRPC codes, e.g. UNIMPLEMENTED, INVALID_ARGUMENT)
  2    bad command line or client config
  3    UNAUTHENTICATED or PERMISSION_DENIED (wrong certificate, or not the orchestrator identity)
  4    NOT_FOUND
  5    the agent is unreachable (connection, TLS handshake, UNAVAILABLE, deadline exceeded)
  6    a watched operation ended failed, cancelled or interrupted
  130  interrupted with Ctrl-C (the operation keeps running on the agent)

Commands that change state need the orchestrator identity in the client certificate; read-only
commands also work with an observer certificate.";

#[derive(Debug, Parser)]
#[command(
    name = "dbagentctl",
    version,
    about = "Control the dbagent node agent over gRPC with mutual TLS",
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// Client config: endpoint, TLS server name, CA, client certificate and key.
    #[arg(long, global = true, env = "DBAGENTCTL_CONFIG", help_heading = "Global options", value_name = "FILE", default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Agent address, overriding `endpoint` in the config (e.g. https://10.0.0.5:7443).
    #[arg(long, global = true, env = "DBAGENTCTL_ENDPOINT", help_heading = "Global options", value_name = "URL")]
    pub endpoint: Option<String>,
    /// Output format: aligned tables for people, JSON for scripts.
    #[arg(long, global = true, env = "DBAGENTCTL_OUTPUT", help_heading = "Global options", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Time limit for connecting and for each request (seconds, or a duration like 2m); streams
    /// (watch, logs -f) are not limited.
    #[arg(long, global = true, env = "DBAGENTCTL_TIMEOUT", help_heading = "Global options", value_name = "SECS", default_value = "30", value_parser = parse::duration)]
    pub timeout: Duration,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

// Parsed once per process, so the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show whether the agent is serving, its uptime and open operations, and who you are to it.
    Status,
    /// Show the agent's version, host, capabilities and your identity and role.
    Info,
    /// Register, change, remove and inspect database instances.
    #[command(subcommand)]
    Instances(instances::InstancesCommand),
    /// Inspect, follow and cancel long-running operations.
    #[command(subcommand)]
    Operations(operations::OperationsCommand),
    /// Manage the encrypted volumes behind instances.
    #[command(subcommand)]
    Volumes(volumes::VolumesCommand),
    /// Read node and instance metrics.
    #[command(subcommand)]
    Metrics(metrics::MetricsCommand),
    /// Read instance logs and configure log drains.
    #[command(subcommand)]
    Logs(logs::LogsCommand),
    /// Take, check, restore and expire backups.
    #[command(subcommand)]
    Backups(backups::BackupsCommand),
    /// Engine upgrades (PostgreSQL majors), run in the maintenance window unless forced.
    #[command(subcommand, alias = "upgrades")]
    Upgrade(upgrades::UpgradesCommand),
    /// An instance's database TLS certificate: install one (served without a restart), show it.
    #[command(subcommand)]
    Tls(tls::TlsCommand),
    /// An instance's weekly maintenance window: set it, or show it with whether it is open now.
    #[command(subcommand)]
    Window(window::WindowCommand),
    /// An instance's plan: change it (limits at once, engine settings by reload or by a restart in
    /// the maintenance window), or show it with the limits and settings it gives.
    #[command(subcommand)]
    Plan(plan::PlanCommand),
    /// An instance's availability for a calendar month (UTC): uptime, unplanned and planned downtime,
    /// unknown time, the plan's objective and budget, and a picture of the month (one character per
    /// 6 hours: `.` up, `p` planned, `X` unplanned, `?` unknown).
    Availability {
        instance_id: String,
        /// Month as YYYY-MM; the current month when omitted.
        #[arg(long, value_parser = parse::month)]
        month: Option<String>,
    },
    /// Make the operator-held recovery key that opens backups on a new host (no connection needed).
    #[command(subcommand)]
    RecoveryKey(recovery_key::RecoveryKeyCommand),
    /// Print a shell completion script (no connection needed), e.g.
    /// `dbagentctl completions bash > /etc/bash_completion.d/dbagentctl`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// What every command needs: the connected channel and how to print.
pub struct Ctx {
    pub channel: Channel,
    pub output: OutputFormat,
    pub timeout: Duration,
}

impl Ctx {
    /// A unary request with the `--timeout` deadline (sent to the agent as grpc-timeout too).
    pub fn unary<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        request
    }

    pub fn print<T: ToJson + ToTable>(&self, value: &T) -> Result<(), CliError> {
        match self.output {
            OutputFormat::Json => emit(&format!("{:#}\n", value.to_json())),
            OutputFormat::Table => emit(&value.to_table()),
        }
    }

    /// One line per item, for streams: NDJSON, or the table form.
    pub fn print_line<T: ToJson + ToTable>(&self, value: &T) -> Result<(), CliError> {
        match self.output {
            OutputFormat::Json => emit(&format!("{}\n", value.to_json())),
            OutputFormat::Table => emit(&value.to_table()),
        }
    }
}

/// Writes to stdout; a closed pipe (`| head`) ends the command quietly instead of panicking.
pub fn emit(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(CliError::StdoutClosed),
        Err(e) => Err(CliError::Other(format!("write to stdout: {e}"))),
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completions { shell } = cli.command {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "dbagentctl", &mut script);
        return match emit(&String::from_utf8_lossy(&script)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => e.report(),
        };
    }
    if let Command::RecoveryKey(command) = cli.command {
        return match recovery_key::run(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => e.report(),
        };
    }
    // Flag mistakes are reported before the config is read or the agent is contacted.
    if let Err(e) = preflight(&cli.command) {
        return e.report();
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return CliError::Other(format!("start the async runtime: {e}")).report(),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let mut config = config::ClientConfig::load(&cli.config).map_err(CliError::Config)?;
    let endpoint = cli.endpoint.clone().unwrap_or_else(|| config.endpoint.clone());
    config.endpoint.clone_from(&endpoint);
    let target = connect::Target { endpoint, config };
    let channel = connect::connect(&target, cli.timeout).await?;
    let ctx = Ctx { channel, output: cli.output, timeout: cli.timeout };
    match cli.command {
        Command::Status => status(&ctx).await,
        Command::Info => {
            let info = pb::agent_client::AgentClient::new(ctx.channel.clone())
                .get_info(ctx.unary(pb::GetInfoRequest {}))
                .await?;
            ctx.print(info.get_ref())
        }
        Command::Instances(cmd) => instances::run(&ctx, cmd).await,
        Command::Operations(cmd) => operations::run(&ctx, cmd).await,
        Command::Volumes(cmd) => volumes::run(&ctx, cmd).await,
        Command::Metrics(cmd) => metrics::run_metrics(&ctx, cmd).await,
        Command::Logs(cmd) => logs::run_logs(&ctx, cmd).await,
        Command::Backups(cmd) => backups::run(&ctx, cmd).await,
        Command::Upgrade(cmd) => upgrades::run(&ctx, cmd).await,
        Command::Tls(cmd) => tls::run(&ctx, cmd).await,
        Command::Window(cmd) => window::run(&ctx, cmd).await,
        Command::Plan(cmd) => plan::run(&ctx, cmd).await,
        Command::Availability { instance_id, month } => {
            let request = pb::GetAvailabilityRequest { instance_id, month: month.unwrap_or_default() };
            let mut client = pb::upgrades_client::UpgradesClient::new(ctx.channel.clone());
            ctx.print(client.get_availability(ctx.unary(request)).await?.get_ref())
        }
        Command::Completions { .. } | Command::RecoveryKey(_) => Ok(()),
    }
}

/// Checks that need no connection, so a usage error is never hidden behind a config or network error.
fn preflight(command: &Command) -> Result<(), CliError> {
    match command {
        Command::Instances(instances::InstancesCommand::Register { spec, .. }) => spec.apply(None).map(drop),
        Command::Volumes(cmd) => volumes::preflight(cmd),
        _ => Ok(()),
    }
}

/// GetStatus and GetInfo together: what an operator wants to see first.
async fn status(ctx: &Ctx) -> Result<(), CliError> {
    let mut client = pb::agent_client::AgentClient::new(ctx.channel.clone());
    let status = client.get_status(ctx.unary(pb::GetStatusRequest {})).await?.into_inner();
    let info = client.get_info(ctx.unary(pb::GetInfoRequest {})).await?.into_inner();
    match ctx.output {
        OutputFormat::Json => {
            emit(&format!("{:#}\n", serde_json::json!({ "status": status.to_json(), "info": info.to_json() })))
        }
        OutputFormat::Table => emit(&format!("{}{}", status.to_table(), info.to_table())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_parse_anywhere() {
        let cli =
            Cli::try_parse_from(["dbagentctl", "instances", "list", "--output", "json", "--timeout", "5s"]).unwrap();
        assert_eq!(cli.output, OutputFormat::Json);
        assert_eq!(cli.timeout, Duration::from_secs(5));
        assert!(Cli::try_parse_from(["dbagentctl", "backups", "list"]).is_err(), "instance id is required");
        // ... unless the instance ids on the destinations are asked for.
        assert!(Cli::try_parse_from(["dbagentctl", "backups", "list", "--from-destinations"]).is_ok());
        assert!(Cli::try_parse_from(["dbagentctl", "backups", "list", "pg-42", "--from-destinations"]).is_ok());
    }
}
