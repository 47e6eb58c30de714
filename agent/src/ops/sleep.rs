//! The test-only `sleep` operation: exercises the engine (progress, cancel, locks, restarts)
//! without touching the host. Enabled in dev mode or by `operations.enable_test_kinds`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::engine::{Disruptive, JobContext, JobFn, JobResult};
use super::model::{OpError, Progress};
use crate::error::ErrorCode;
use crate::ids::InvalidField;
use crate::instances::MaintenanceWindow;
use crate::maintenance::WeeklyWindow;

pub const KIND: &str = "sleep";
pub const MAX: Duration = Duration::from_secs(3600);
const STEP: Duration = Duration::from_millis(100);

pub fn validate(duration: Duration) -> Result<(), InvalidField> {
    if duration.is_zero() || duration > MAX {
        return Err(InvalidField::new("duration", "must be more than 0 and at most 1 hour"));
    }
    Ok(())
}

pub fn params(duration: Duration) -> serde_json::Value {
    serde_json::json!({ "duration_ms": u64::try_from(duration.as_millis()).unwrap_or(u64::MAX) })
}

/// A sleep standing in for disruptive work (the tests' upgrade): its parameters say so, and
/// whether it was forced, so a restart can re-arm it from the journal (`from_params`).
pub fn disruptive_params(duration: Duration, force: bool) -> serde_json::Value {
    let mut params = params(duration);
    params["disruptive"] = serde_json::json!({ "force": force });
    params
}

/// The gate of a disruptive sleep on an instance with `window`: its duration is its expected length.
pub fn disruptive(window: Option<&MaintenanceWindow>, duration: Duration, force: bool) -> Disruptive {
    Disruptive { window: window.map(WeeklyWindow::from), expected: duration, force }
}

/// The duration, and for a disruptive sleep whether it was forced, from stored parameters.
pub fn from_params(params: &serde_json::Value) -> Option<(Duration, Option<bool>)> {
    let duration = Duration::from_millis(params.get("duration_ms")?.as_u64()?);
    let force = params.get("disruptive").map(|d| d.get("force").and_then(serde_json::Value::as_bool).unwrap_or(false));
    Some((duration, force))
}

/// Set at start from `testing.sleep_outlasts_shutdown`. A process-wide switch because the handler
/// that builds sleep jobs has no configuration, and only a test agent ever turns it on.
static OUTLASTS_SHUTDOWN: AtomicBool = AtomicBool::new(false);

/// With `on`, sleeps ignore cancellation (the agent's shutdown and CancelOperation alike) and run
/// their whole duration, as a step that cannot be interrupted would: tests use it to show that
/// `api.shutdown_grace_secs` bounds the drain.
pub fn outlast_shutdown(on: bool) {
    if on {
        tracing::warn!("testing.sleep_outlasts_shutdown is on: sleep operations ignore cancellation (test hosts only)");
    }
    OUTLASTS_SHUTDOWN.store(on, Ordering::Relaxed);
}

pub fn job(duration: Duration) -> JobFn {
    let stoppable = !OUTLASTS_SHUTDOWN.load(Ordering::Relaxed);
    Box::new(move |ctx| Box::pin(run(ctx, duration, stoppable)))
}

async fn run(ctx: JobContext, duration: Duration, stoppable: bool) -> JobResult {
    let total = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    let start = tokio::time::Instant::now();
    loop {
        let elapsed = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX).min(total);
        ctx.progress(Progress { done: elapsed, total, unit: "ms".into(), message: "sleeping".into() });
        if elapsed >= total {
            return Ok(Some(serde_json::json!({ "slept_ms": elapsed })));
        }
        let step = STEP.min(Duration::from_millis(total - elapsed));
        tokio::select! {
            () = tokio::time::sleep(step) => {}
            () = ctx.cancel.cancelled(), if stoppable => {
                return Err(OpError { code: ErrorCode::Cancelled, message: format!("stopped after {elapsed} ms") });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locks::ResourceLocks;
    use crate::ops::{NewOperation, OpState, OperationEngine, OpsSettings};
    use tokio_util::sync::CancellationToken;

    #[tokio::test]
    async fn an_unstoppable_sleep_outlasts_the_drain_and_a_stoppable_one_does_not() {
        for (stoppable, drains_in_time) in [(true, true), (false, false)] {
            let dir = tempfile::tempdir().unwrap();
            let root = CancellationToken::new();
            let settings = OpsSettings { max_concurrent: 1, retention: Duration::from_secs(60), max_finished: 10 };
            let (engine, _) =
                OperationEngine::open(dir.path(), settings, ResourceLocks::default(), root.clone()).unwrap();
            let duration = Duration::from_secs(60);
            let new = NewOperation {
                request_id: "r1".into(),
                kind: KIND,
                target: "pg-1".into(),
                params: params(duration),
                exclusive: true,
            };
            let job: JobFn = Box::new(move |ctx| Box::pin(run(ctx, duration, stoppable)));
            let (record, _) = engine.submit(new, job).await.unwrap();
            engine.watch(&record.id).unwrap().wait_for(|r| r.state == OpState::Running).await.unwrap();
            root.cancel();
            // A drain long enough for a loaded machine to stop the stoppable sleep, far shorter
            // than the unstoppable one's minute.
            let drained = engine.drain(Duration::from_secs(5)).await;
            assert_eq!(drained, drains_in_time, "stoppable: {stoppable}");
            let state = engine.get(&record.id).unwrap().state;
            let expected = if stoppable { OpState::Interrupted } else { OpState::Running };
            assert_eq!(state, expected, "stoppable: {stoppable}");
        }
    }
}
