//! `dbagentctl metrics ...`: the node's and the instances' metrics, once or as a refreshing table.

use super::error::CliError;
use super::{Ctx, parse};
use clap::Subcommand;
use dbagent_proto::v1 as pb;
use pb::metrics_client::MetricsClient;
use std::time::{Duration, SystemTime};

#[derive(Debug, Subcommand)]
pub enum MetricsCommand {
    /// Node metrics: the latest sample, or every sample of the last --since.
    Node {
        /// Return the samples of this past period (e.g. 15m) instead of the latest one.
        #[arg(long, value_parser = parse::duration)]
        since: Option<Duration>,
    },
    /// One instance's metrics: the latest sample, or every sample of the last --since.
    Instance {
        instance_id: String,
        #[arg(long, value_parser = parse::duration)]
        since: Option<Duration>,
    },
    /// Refresh a table of the node and every instance (CPU, memory, disk, I/O rates) until interrupted.
    Top {
        /// Time between refreshes.
        #[arg(long, value_parser = parse::duration, default_value = "2s")]
        interval: Duration,
        /// Stop after this many refreshes (0 = until interrupted).
        #[arg(long, default_value_t = 0)]
        count: u32,
    },
    /// Print snapshots as the agent takes them until interrupted (one JSON object per line with --output json).
    Stream {
        /// Instance to follow; the node when omitted.
        instance_id: Option<String>,
        /// Time between snapshots, e.g. 10s (the agent may round it).
        #[arg(long, value_parser = parse::duration)]
        interval: Option<Duration>,
    },
}

fn range(since: Option<Duration>) -> Option<pb::TimeRange> {
    let since = since?;
    let now = SystemTime::now();
    let start = now.checked_sub(since).unwrap_or(SystemTime::UNIX_EPOCH);
    Some(pb::TimeRange { start: Some(start.into()), end: Some(now.into()) })
}

pub async fn run_metrics(ctx: &Ctx, command: MetricsCommand) -> Result<(), CliError> {
    let mut client = MetricsClient::new(ctx.channel.clone());
    match command {
        MetricsCommand::Node { since } => ctx.print(
            client.get_node_metrics(ctx.unary(pb::GetNodeMetricsRequest { range: range(since) })).await?.get_ref(),
        ),
        MetricsCommand::Instance { instance_id, since } => {
            let request = pb::GetInstanceMetricsRequest { instance_id, range: range(since) };
            ctx.print(client.get_instance_metrics(ctx.unary(request)).await?.get_ref())
        }
        MetricsCommand::Top { interval, count } => top(ctx, &mut client, interval, count).await,
        MetricsCommand::Stream { instance_id, interval } => {
            let interval = interval
                .map(prost_types::Duration::try_from)
                .transpose()
                .map_err(|e| CliError::Usage(format!("--interval: {e}")))?;
            let request = pb::StreamMetricsRequest { instance_id: instance_id.unwrap_or_default(), interval };
            let mut stream = client.stream_metrics(request).await?.into_inner();
            while let Some(snapshot) = stream.message().await? {
                ctx.print_line(&snapshot)?;
            }
            Ok(())
        }
    }
}

/// The latest snapshot of the node and of every registered instance, redrawn each `interval`;
/// rates come from the difference to the previous refresh.
async fn top(
    ctx: &Ctx,
    client: &mut MetricsClient<tonic::transport::Channel>,
    interval: Duration,
    count: u32,
) -> Result<(), CliError> {
    let mut instances = pb::instances_client::InstancesClient::new(ctx.channel.clone());
    let mut previous: Option<Vec<pb::MetricSnapshot>> = None;
    let mut refreshes = 0;
    loop {
        let mut current =
            client.get_node_metrics(ctx.unary(pb::GetNodeMetricsRequest { range: None })).await?.into_inner().snapshots;
        let list = instances.list_instances(ctx.unary(pb::ListInstancesRequest {})).await?.into_inner();
        for instance in list.instances {
            let request = pb::GetInstanceMetricsRequest { instance_id: instance.id, range: None };
            // An instance without a sample yet (unit not running) is simply not shown.
            if let Ok(series) = client.get_instance_metrics(ctx.unary(request)).await {
                current.extend(series.into_inner().snapshots);
            }
        }
        let screen = super::metrics_table::render_table(&current, previous.as_deref());
        // Clear the terminal and home the cursor, as top does.
        super::emit(&format!("\x1b[2J\x1b[H{screen}"))?;
        previous = Some(current);
        refreshes += 1;
        if count != 0 && refreshes >= count {
            return Ok(());
        }
        tokio::time::sleep(interval).await;
    }
}
