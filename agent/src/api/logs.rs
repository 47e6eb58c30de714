use dbagent_proto::v1 as pb;
use std::pin::Pin;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::auth::Caller;
use super::convert::logs::{
    drain_from_proto, drain_status_to_proto, drain_to_proto, drain_to_proto_redacted, record_to_proto,
    tail_request_from_proto,
};
use super::error::ApiResult;
use crate::logs::LogManager;
use crate::requests::RequestLedger;
use crate::tls::peer::Role;

/// The Logs service: tails and drains, with SetDrains replayed by request_id.
pub struct LogsApi {
    pub logs: LogManager,
    pub requests: RequestLedger,
    /// Ends the follow streams, so no `logs tail -f` holds the agent's exit.
    pub shutdown: CancellationToken,
}

const SHUTTING_DOWN: &str = "the agent is shutting down; tail again when it is back";

type RecordStream = Pin<Box<dyn Stream<Item = Result<pb::LogRecord, Status>> + Send>>;

#[tonic::async_trait]
impl pb::logs_server::Logs for LogsApi {
    type TailLogsStream = RecordStream;

    async fn tail_logs(&self, req: Request<pb::TailLogsRequest>) -> ApiResult<RecordStream> {
        let tail = self.logs.tail(&tail_request_from_proto(req.into_inner())?)?;
        let backlog = tokio_stream::iter(tail.backlog).map(|r| Ok(record_to_proto(&r, 0)));
        let stream: RecordStream = match tail.follow {
            Some(rx) => {
                let live = ReceiverStream::new(rx).map(|i| Ok(record_to_proto(&i.record, i.missed_before)));
                // A follow has no end of its own: shutdown ends it, with a status saying why.
                let shutdown = self.shutdown.clone();
                let live = futures::StreamExt::take_until(live, shutdown.clone().cancelled_owned());
                let why = futures::stream::once(async move {
                    shutdown.is_cancelled().then(|| Err(Status::unavailable(SHUTTING_DOWN)))
                })
                .filter_map(|e| e);
                Box::pin(backlog.chain(live).chain(why))
            }
            None => Box::pin(backlog),
        };
        Ok(Response::new(stream))
    }

    /// The orchestrator set the drains and sees them whole; anyone else (the read-only monitor)
    /// gets URLs without the user-info and query that may carry a credential.
    async fn list_drains(&self, req: Request<pb::ListDrainsRequest>) -> ApiResult<pb::ListDrainsResponse> {
        let whole = req.extensions().get::<Caller>().is_some_and(|c| c.role == Role::Orchestrator);
        let drains = self.logs.list_drains(&req.into_inner().instance_id)?;
        let convert = if whole { drain_to_proto } else { drain_to_proto_redacted };
        Ok(Response::new(pb::ListDrainsResponse { drains: drains.iter().map(convert).collect() }))
    }

    async fn set_drains(&self, req: Request<pb::SetDrainsRequest>) -> ApiResult<pb::ListDrainsResponse> {
        let req = req.into_inner();
        let drains = self.requests.once("SetDrains", &req.request_id, &req, || async {
            let drains = req
                .drains
                .iter()
                .cloned()
                .enumerate()
                .map(|(i, d)| drain_from_proto(i, d))
                .collect::<Result<_, _>>()?;
            let drains = self.logs.set_drains(&req.instance_id, drains).await?;
            Ok::<_, Status>(pb::ListDrainsResponse { drains: drains.iter().map(drain_to_proto).collect() })
        });
        Ok(Response::new(drains.await?))
    }

    async fn get_drain_status(&self, req: Request<pb::GetDrainStatusRequest>) -> ApiResult<pb::DrainStatus> {
        let req = req.into_inner();
        let status = self.logs.drain_status(&req.instance_id, &req.drain).await?;
        Ok(Response::new(drain_status_to_proto(&status)))
    }
}
