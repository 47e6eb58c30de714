use dbagent_proto::v1 as pb;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::convert::duration_from_proto;
use super::convert::metrics::range_from_proto;
use super::error::ApiResult;
use crate::instances::registry::Registry;
use crate::metrics::{MetricsError, MetricsHub, Owner};

/// The Metrics service: reads the hub the sampler fills.
pub struct MetricsApi {
    pub hub: Arc<MetricsHub>,
    /// Tells an unknown instance (NOT_FOUND) from one not sampled yet (UNAVAILABLE).
    pub registry: Arc<Registry>,
    /// Ends the streams, so none holds the agent's exit.
    pub shutdown: CancellationToken,
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::MetricSnapshot, Status>> + Send>>;

fn series(snapshots: &[crate::metrics::Snapshot]) -> pb::MetricSeries {
    pb::MetricSeries { snapshots: snapshots.iter().map(Into::into).collect() }
}

impl MetricsApi {
    /// The node for an empty id; otherwise a registered instance (NOT_FOUND if not).
    fn owner(&self, instance_id: &str) -> Result<Owner, Status> {
        if instance_id.is_empty() {
            return Ok(Owner::Node);
        }
        self.registry.get(instance_id)?;
        Ok(Owner::Instance(instance_id.to_owned()))
    }
}

#[tonic::async_trait]
impl pb::metrics_server::Metrics for MetricsApi {
    async fn get_node_metrics(&self, req: Request<pb::GetNodeMetricsRequest>) -> ApiResult<pb::MetricSeries> {
        let range = range_from_proto(req.into_inner().range)?;
        Ok(Response::new(series(&self.hub.query(&Owner::Node, range)?)))
    }

    async fn get_instance_metrics(&self, req: Request<pb::GetInstanceMetricsRequest>) -> ApiResult<pb::MetricSeries> {
        let req = req.into_inner();
        let owner = self.owner(&req.instance_id)?;
        let range = range_from_proto(req.range)?;
        Ok(Response::new(series(&self.hub.query(&owner, range)?)))
    }

    type StreamMetricsStream = SnapshotStream;

    async fn stream_metrics(&self, req: Request<pb::StreamMetricsRequest>) -> ApiResult<Self::StreamMetricsStream> {
        let req = req.into_inner();
        let owner = self.owner(&req.instance_id)?;
        let hub = &self.hub;
        let every = match req.interval {
            None => hub.interval,
            Some(d) => duration_from_proto("interval", Some(d))?,
        };
        if every < hub.interval {
            return Err(MetricsError::IntervalTooShort { requested: every, sampling: hub.interval }.into());
        }
        let stream = crate::metrics::stream::snapshots(hub.clone(), owner, every, self.shutdown.clone());
        Ok(Response::new(Box::pin(tokio_stream::StreamExt::map(stream, |s| Ok(pb::MetricSnapshot::from(&*s))))))
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
