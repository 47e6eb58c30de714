//! `dbagentctl operations ...`: long-running operations, and following one live.

use super::args::OperationArgs;
use super::error::CliError;
use super::render::op_state_name;
use super::table::progress_text;
use super::{Ctx, OutputFormat, parse};
use clap::Subcommand;
use dbagent_proto::v1 as pb;
use indicatif::{ProgressBar, ProgressStyle};
use pb::operations_client::OperationsClient;
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum OperationsCommand {
    /// Show one operation: state, progress, error and result.
    Get { id: String },
    /// List operations, newest first.
    List {
        /// Only operations on this target (usually an instance id).
        #[arg(long)]
        target: Option<String>,
        /// Only queued, waiting or running operations.
        #[arg(long)]
        open: bool,
        /// At most this many (the agent's default is 100, its maximum 1000).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
    /// Follow an operation with a progress bar until it finishes. Exits with 6 if it failed, was
    /// cancelled or was interrupted; Ctrl-C stops watching, not the operation.
    Watch { id: String },
    /// Ask the agent to cancel an operation (orchestrator identity); it stops at its next safe point.
    Cancel { id: String },
    /// Start a test operation that only sleeps (orchestrator identity; needs dev mode or
    /// operations.enable_test_kinds on the agent).
    Sleep {
        /// Target name recorded in the operation.
        target: String,
        /// How long to sleep, e.g. 5s.
        #[arg(long, value_parser = parse::duration)]
        duration: Duration,
        /// Treat it as disruptive work on the target instance: it waits for the instance's
        /// maintenance window (the duration is its expected length).
        #[arg(long)]
        disruptive: bool,
        /// With --disruptive: do not wait for the window.
        #[arg(long, requires = "disruptive")]
        force: bool,
        #[command(flatten)]
        op: OperationArgs,
    },
}

pub async fn run(ctx: &Ctx, command: OperationsCommand) -> Result<(), CliError> {
    let mut client = OperationsClient::new(ctx.channel.clone());
    match command {
        OperationsCommand::Get { id } => {
            ctx.print(client.get_operation(ctx.unary(pb::GetOperationRequest { id })).await?.get_ref())
        }
        OperationsCommand::List { target, open, limit } => {
            let request = pb::ListOperationsRequest {
                target: target.unwrap_or_default(),
                only_open: open,
                limit: limit.unwrap_or(0),
            };
            ctx.print(client.list_operations(ctx.unary(request)).await?.get_ref())
        }
        OperationsCommand::Watch { id } => watch(ctx, id).await,
        OperationsCommand::Cancel { id } => {
            ctx.print(client.cancel_operation(ctx.unary(pb::CancelOperationRequest { id })).await?.get_ref())
        }
        OperationsCommand::Sleep { target, duration, disruptive, force, op } => {
            let duration =
                prost_types::Duration::try_from(duration).map_err(|e| CliError::Usage(format!("--duration: {e}")))?;
            let request = pb::StartSleepRequest {
                request_id: op.request.resolve()?,
                target,
                duration: Some(duration),
                disruptive,
                force,
            };
            let started = client.start_sleep(ctx.unary(request)).await?.into_inner();
            finish(ctx, started, op.watch).await
        }
    }
}

/// After a call that returned an operation: watch it, or print it with a hint how to follow it.
pub async fn finish(ctx: &Ctx, op: pb::Operation, watch_it: bool) -> Result<(), CliError> {
    if watch_it {
        return watch(ctx, op.id).await;
    }
    ctx.print(&op)?;
    if ctx.output == OutputFormat::Table && !is_finished(op.state) {
        eprintln!("follow it with: dbagentctl operations watch {}", op.id);
    }
    Ok(())
}

fn is_finished(state: i32) -> bool {
    use pb::OperationState as S;
    matches!(S::try_from(state), Ok(S::Succeeded | S::Failed | S::Cancelled | S::Interrupted))
}

/// Streams the operation until it finishes, prints the final state, and fails unless it succeeded.
pub async fn watch(ctx: &Ctx, id: String) -> Result<(), CliError> {
    let mut client = OperationsClient::new(ctx.channel.clone());
    // No deadline: the stream lasts as long as the operation.
    let mut stream = client.watch_operation(pb::WatchOperationRequest { id: id.clone() }).await?.into_inner();
    // Drawn on stderr and hidden when stderr is not a terminal, so stdout stays clean for scripts.
    let bar = ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut last = None;
    let interrupted = loop {
        tokio::select! {
            message = stream.message() => match message? {
                Some(op) => {
                    show(&bar, &op);
                    let done = is_finished(op.state);
                    last = Some(op);
                    if done { break false; }
                }
                None => break false,
            },
            _ = tokio::signal::ctrl_c() => break true,
        }
    };
    bar.finish_and_clear();
    if interrupted {
        return Err(CliError::Interrupted(format!(
            "operation {id} keeps running on the agent; `dbagentctl operations watch {id}` follows it again"
        )));
    }
    let op = last.ok_or_else(|| CliError::Other(format!("the agent closed the watch of {id} without sending it")))?;
    ctx.print(&op)?;
    if !is_finished(op.state) {
        return Err(CliError::Other(format!(
            "the agent closed the watch of {id} while it was {}",
            op_state_name(op.state)
        )));
    }
    match pb::OperationState::try_from(op.state) {
        Ok(pb::OperationState::Succeeded) => Ok(()),
        _ => Err(CliError::OperationUnsuccessful { id: op.id, state: op_state_name(op.state) }),
    }
}

fn show(bar: &ProgressBar, op: &pb::Operation) {
    let progress = op.progress.clone().unwrap_or_default();
    let label = format!("{} {} {}", op.kind, op.target, op_state_name(op.state));
    if progress.total > 0 {
        let counts = if progress.unit == "bytes" { "{bytes}/{total_bytes}" } else { "{pos}/{len}" };
        let template = format!("{{spinner}} {{elapsed_precise}} [{{bar:30}}] {counts} {{msg}}");
        // A template error is a bug in the string above; the default style still shows progress.
        bar.set_style(ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()));
        bar.set_length(progress.total);
        bar.set_position(progress.done);
        bar.set_message(format!("{label} {}", progress.message));
    } else {
        let style = ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        bar.set_message(format!("{label} {}", progress_text(Some(&progress))));
    }
}
