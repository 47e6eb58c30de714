//! The test-only `sleep` operation: exercises the engine (progress, cancel, locks, restarts)
//! without touching the host. Enabled in dev mode or by `operations.enable_test_kinds`.

use std::time::Duration;

use super::engine::{JobContext, JobFn, JobResult};
use super::model::{OpError, Progress};
use crate::error::ErrorCode;
use crate::ids::InvalidField;

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

pub fn job(duration: Duration) -> JobFn {
    Box::new(move |ctx| Box::pin(run(ctx, duration)))
}

async fn run(ctx: JobContext, duration: Duration) -> JobResult {
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
            () = ctx.cancel.cancelled() => {
                return Err(OpError { code: ErrorCode::Cancelled, message: format!("stopped after {elapsed} ms") });
            }
        }
    }
}
