//! The drain after shutdown began: one deadline, `api.shutdown_grace_secs` from its start, for the
//! operations engine, the API server's in-flight RPCs and log shipping together. They drain
//! concurrently; what still runs at the deadline is cut off and what that costs is logged.

use std::time::{Duration, Instant};

use super::DaemonError;
use super::systemd;
use super::tasks::CriticalTasks;
use crate::ops::OperationEngine;

/// Returns how the tasks ended (the first failure, if any) and the deadline, which also bounds the
/// runtime's wait for blocking work after this.
pub(super) async fn drain(
    engine: &OperationEngine,
    mut tasks: CriticalTasks,
    grace: Duration,
) -> (Result<(), DaemonError>, Instant) {
    let deadline = Instant::now() + grace;
    systemd::stopping("draining");
    tracing::info!("draining: running operations, in-flight RPCs and log shipping have {grace:?} together");
    let (operations_finished, tasks_result) = tokio::join!(
        engine.drain(deadline.saturating_duration_since(Instant::now())),
        join_until(&mut tasks, deadline)
    );
    let mut clean = operations_finished;
    if !operations_finished {
        tracing::warn!(
            "operations still running at the shutdown deadline; they are reported interrupted at next start"
        );
    }
    for task in tasks.running() {
        clean = false;
        tracing::warn!("the {task} was still running at the shutdown deadline: {}", task.when_cut_off());
    }
    // Aborts whatever is left.
    drop(tasks);
    if clean && tasks_result.is_ok() {
        tracing::info!("stopped");
    }
    (tasks_result, deadline)
}

/// Joins the tasks as they end until none is left or the deadline passes. Ending is expected now;
/// ending with an error is not.
async fn join_until(tasks: &mut CriticalTasks, deadline: Instant) -> Result<(), DaemonError> {
    let mut result = Ok(());
    while let Ok(Some((task, end))) = tokio::time::timeout_at(deadline.into(), tasks.next_end()).await {
        if let Err(e) = end {
            tracing::error!("the {task} failed while stopping: {e:#}");
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    result
}
