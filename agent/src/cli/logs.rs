//! `dbagentctl logs ...`: an instance's log records, and the drains that ship them.

use super::args::RequestIdArg;
use super::error::CliError;
use super::{Ctx, parse};
use clap::{Subcommand, ValueEnum};
use dbagent_proto::v1 as pb;
use pb::logs_client::LogsClient;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SeverityArg {
    Debug,
    Info,
    Notice,
    Warning,
    Error,
    Critical,
}

impl From<SeverityArg> for pb::Severity {
    fn from(s: SeverityArg) -> Self {
        match s {
            SeverityArg::Debug => Self::Debug,
            SeverityArg::Info => Self::Info,
            SeverityArg::Notice => Self::Notice,
            SeverityArg::Warning => Self::Warning,
            SeverityArg::Error => Self::Error,
            SeverityArg::Critical => Self::Critical,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum LogsCommand {
    /// Print an instance's recent log records, and with -f keep following new ones.
    Tail {
        instance_id: String,
        /// Keep the stream open and print new records as they arrive.
        #[arg(short, long)]
        follow: bool,
        /// How many of the latest records to print first.
        #[arg(short = 'n', long, value_name = "N")]
        lines: Option<u32>,
        /// Only records of the last period, e.g. 1h.
        #[arg(long, value_parser = parse::duration)]
        since: Option<Duration>,
        /// Only records at least this severe.
        #[arg(long, value_enum)]
        severity: Option<SeverityArg>,
    },
    /// List the drains that forward an instance's logs.
    Drains { instance_id: String },
    /// Replace an instance's drains with the given ones (orchestrator identity).
    SetDrains {
        instance_id: String,
        /// Plain syslog drain as NAME=HOST:PORT (repeatable).
        #[arg(long, value_name = "NAME=HOST:PORT", value_parser = parse::name_value)]
        syslog: Vec<(String, String)>,
        /// Syslog over TLS as NAME=HOST:PORT (repeatable).
        #[arg(long, value_name = "NAME=HOST:PORT", value_parser = parse::name_value)]
        syslog_tls: Vec<(String, String)>,
        /// HTTPS drain as NAME=URL (repeatable).
        #[arg(long, value_name = "NAME=URL", value_parser = parse::name_value)]
        https: Vec<(String, String)>,
        /// PEM CA bundle for the TLS drains; the system roots when omitted.
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        /// Remove all drains (required when no drain is given, so that is never an accident).
        #[arg(long, conflicts_with_all = ["syslog", "syslog_tls", "https"])]
        clear: bool,
        #[command(flatten)]
        request: RequestIdArg,
    },
    /// Show a drain's backlog, drops and last error.
    DrainStatus { instance_id: String, drain: String },
}

pub async fn run_logs(ctx: &Ctx, command: LogsCommand) -> Result<(), CliError> {
    let mut client = LogsClient::new(ctx.channel.clone());
    match command {
        LogsCommand::Tail { instance_id, follow, lines, since, severity } => {
            let since = since.map(|d| SystemTime::now().checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH).into());
            let message = pb::TailLogsRequest {
                instance_id,
                last_lines: lines.unwrap_or(0),
                since,
                follow,
                min_severity: severity.map_or(0, |s| pb::Severity::from(s) as i32),
            };
            // A followed stream has no end, so only a one-shot tail gets the deadline.
            let request = if follow { tonic::Request::new(message) } else { ctx.unary(message) };
            let mut stream = client.tail_logs(request).await?.into_inner();
            while let Some(record) = stream.message().await? {
                ctx.print_line(&record)?;
            }
            Ok(())
        }
        LogsCommand::Drains { instance_id } => {
            ctx.print(client.list_drains(ctx.unary(pb::ListDrainsRequest { instance_id })).await?.get_ref())
        }
        LogsCommand::SetDrains { instance_id, syslog, syslog_tls, https, ca, clear, request } => {
            let ca_pem = match &ca {
                Some(path) => std::fs::read_to_string(path)
                    .map_err(|e| CliError::Usage(format!("read CA bundle {}: {e}", path.display())))?,
                None => String::new(),
            };
            let drains = drains(syslog, syslog_tls, https, &ca_pem);
            if drains.is_empty() && !clear {
                return Err(CliError::Usage(
                    "give at least one --syslog, --syslog-tls or --https drain, or --clear to remove all".to_owned(),
                ));
            }
            let request = pb::SetDrainsRequest { request_id: request.resolve()?, instance_id, drains };
            ctx.print(client.set_drains(ctx.unary(request)).await?.get_ref())
        }
        LogsCommand::DrainStatus { instance_id, drain } => ctx.print(
            client.get_drain_status(ctx.unary(pb::GetDrainStatusRequest { instance_id, drain })).await?.get_ref(),
        ),
    }
}

fn drains(
    syslog: Vec<(String, String)>,
    syslog_tls: Vec<(String, String)>,
    https: Vec<(String, String)>,
    ca_pem: &str,
) -> Vec<pb::Drain> {
    use pb::drain::Target;
    let plain = syslog
        .into_iter()
        .map(|(name, address)| (name, Target::Syslog(pb::SyslogDrain { address, tls: false, ca_pem: String::new() })));
    let tls = syslog_tls.into_iter().map(|(name, address)| {
        (name, Target::Syslog(pb::SyslogDrain { address, tls: true, ca_pem: ca_pem.to_owned() }))
    });
    let web =
        https.into_iter().map(|(name, url)| (name, Target::Https(pb::HttpsDrain { url, ca_pem: ca_pem.to_owned() })));
    plain.chain(tls).chain(web).map(|(name, target)| pb::Drain { name, target: Some(target) }).collect()
}
