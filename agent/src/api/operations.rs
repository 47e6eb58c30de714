use dbagent_proto::v1 as pb;
use std::pin::Pin;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::convert::duration_from_proto;
use super::error::ApiResult;
use crate::ids::{self, InvalidField};
use crate::instances::Registry;
use crate::ops::{NewOperation, OperationEngine, OpsError, sleep};
use std::sync::Arc;

/// The Operations service: reads and cancels operations, and starts the test kind.
pub struct OperationsApi {
    pub operations: OperationEngine,
    /// A disruptive test sleep reads its target instance's maintenance window.
    pub registry: Arc<Registry>,
    /// `operations.enable_test_kinds`: StartSleep is refused without it.
    pub test_kinds: bool,
    /// Ends the watch streams, so none holds the agent's exit.
    pub shutdown: CancellationToken,
}

const DEFAULT_LIST_LIMIT: usize = 100;
const MAX_LIST_LIMIT: usize = 1000;

#[tonic::async_trait]
impl pb::operations_server::Operations for OperationsApi {
    async fn get_operation(&self, req: Request<pb::GetOperationRequest>) -> ApiResult<pb::Operation> {
        let record = self.operations.get(&req.into_inner().id)?;
        Ok(Response::new((&record).into()))
    }

    async fn list_operations(&self, req: Request<pb::ListOperationsRequest>) -> ApiResult<pb::ListOperationsResponse> {
        let req = req.into_inner();
        let limit = match req.limit as usize {
            0 => DEFAULT_LIST_LIMIT,
            n if n > MAX_LIST_LIMIT => {
                return Err(InvalidField::new("limit", format!("at most {MAX_LIST_LIMIT}")).into());
            }
            n => n,
        };
        let target = (!req.target.is_empty()).then_some(req.target.as_str());
        let operations = self.operations.list(target, req.only_open, limit).iter().map(Into::into).collect();
        Ok(Response::new(pb::ListOperationsResponse { operations }))
    }

    type WatchOperationStream = Pin<Box<dyn Stream<Item = Result<pb::Operation, Status>> + Send>>;

    async fn watch_operation(&self, req: Request<pb::WatchOperationRequest>) -> ApiResult<Self::WatchOperationStream> {
        let mut rx = self.operations.watch(&req.into_inner().id)?;
        let shutdown = self.shutdown.clone();
        let (tx, out) = tokio::sync::mpsc::channel(4);
        // Sends the current state, then each change, and ends after the final state; a shutdown
        // ends the stream too so it never holds the agent's exit.
        tokio::spawn(async move {
            loop {
                let record = rx.borrow_and_update().clone();
                if tx.send(Ok(pb::Operation::from(&record))).await.is_err() || record.state.is_finished() {
                    return;
                }
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                    () = shutdown.cancelled() => {
                        let _ = tx.send(Err(Status::unavailable("the agent is shutting down; watch again when it is back"))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }

    async fn cancel_operation(&self, req: Request<pb::CancelOperationRequest>) -> ApiResult<pb::Operation> {
        let record = self.operations.cancel(&req.into_inner().id).await?;
        Ok(Response::new((&record).into()))
    }

    async fn start_sleep(&self, req: Request<pb::StartSleepRequest>) -> ApiResult<pb::Operation> {
        if !self.test_kinds {
            return Err(OpsError::TestKindsDisabled.into());
        }
        let req = req.into_inner();
        ids::request_id(&req.request_id)?;
        ids::instance_id("target", &req.target)?;
        let duration = duration_from_proto("duration", req.duration)?;
        sleep::validate(duration)?;
        if req.force && !req.disruptive {
            return Err(InvalidField::new("force", "applies to disruptive work only; set disruptive too").into());
        }
        let (params, gate) = if req.disruptive {
            let window = self.registry.get(&req.target)?.spec.maintenance_window;
            (
                sleep::disruptive_params(duration, req.force),
                Some(sleep::disruptive(window.as_ref(), duration, req.force)),
            )
        } else {
            (sleep::params(duration), None)
        };
        let new =
            NewOperation { request_id: req.request_id, kind: sleep::KIND, target: req.target, params, exclusive: true };
        let (record, _) = match gate {
            Some(gate) => self.operations.submit_disruptive(new, gate, sleep::job(duration)).await?,
            None => self.operations.submit(new, sleep::job(duration)).await?,
        };
        Ok(Response::new((&record).into()))
    }
}
