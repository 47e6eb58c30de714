use dbagent_proto::v1 as pb;
use std::pin::Pin;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::ApiState;
use super::convert::duration_from_proto;
use super::convert::metrics::range_from_proto;
use super::error::ApiResult;
use crate::metrics::{MetricsError, Owner};

pub struct MetricsApi(pub ApiState);

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
        self.0.registry.get(instance_id)?;
        Ok(Owner::Instance(instance_id.to_owned()))
    }
}

#[tonic::async_trait]
impl pb::metrics_server::Metrics for MetricsApi {
    async fn get_node_metrics(&self, req: Request<pb::GetNodeMetricsRequest>) -> ApiResult<pb::MetricSeries> {
        let range = range_from_proto(req.into_inner().range)?;
        Ok(Response::new(series(&self.0.metrics.query(&Owner::Node, range)?)))
    }

    async fn get_instance_metrics(&self, req: Request<pb::GetInstanceMetricsRequest>) -> ApiResult<pb::MetricSeries> {
        let req = req.into_inner();
        let owner = self.owner(&req.instance_id)?;
        let range = range_from_proto(req.range)?;
        Ok(Response::new(series(&self.0.metrics.query(&owner, range)?)))
    }

    type StreamMetricsStream = SnapshotStream;

    async fn stream_metrics(&self, req: Request<pb::StreamMetricsRequest>) -> ApiResult<Self::StreamMetricsStream> {
        let req = req.into_inner();
        let owner = self.owner(&req.instance_id)?;
        let hub = &self.0.metrics;
        let every = match req.interval {
            None => hub.interval,
            Some(d) => duration_from_proto("interval", Some(d))?,
        };
        if every < hub.interval {
            return Err(MetricsError::IntervalTooShort { requested: every, sampling: hub.interval }.into());
        }
        let stream = crate::metrics::stream::snapshots(hub.clone(), owner, every, self.0.shutdown.clone());
        Ok(Response::new(Box::pin(tokio_stream::StreamExt::map(stream, |s| Ok(pb::MetricSnapshot::from(&*s))))))
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
