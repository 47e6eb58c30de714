//! Disruptive operations and maintenance windows: waiting in `waiting_for_window` until the gate
//! lets the work start, re-arming the waits the last stop left in the journal, and reporting work
//! that runs past its window's end (never cutting it off).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{Disruptive, JobFn, JobFuture, JobResult, OperationEngine, Slot};
use crate::error::ErrorCode;
use crate::maintenance::gate::{GateDecision, decide, is_overrunning};
use crate::maintenance::{Clock, SystemClock};
use crate::ops::OpsError;
use crate::ops::model::{OpError, OpState, OperationRecord};

/// Waits and window ends are re-read against the clock at least this often, so a wall-clock step
/// (NTP, a resumed VM) moves them instead of a monotonic sleep running on past them.
const MAX_NAP: Duration = Duration::from_secs(30);

pub(super) enum Waited {
    /// Start now; `window_end` is the end of the window it runs in.
    Run { window_end: Option<SystemTime> },
    /// Cancelled by request while waiting.
    Cancelled,
    /// The agent is stopping: the record stays `waiting_for_window` in the journal.
    ShuttingDown,
}

impl OperationEngine {
    /// Sets the clock windows are read against (a test clock, `testing.clock_offset_secs`). Once,
    /// at start-up, before any disruptive work is submitted; later calls are ignored.
    pub fn set_window_clock(&self, clock: Arc<dyn Clock>) {
        let _ = self.inner.window_clock.set(clock);
    }

    fn window_clock(&self) -> Arc<dyn Clock> {
        self.inner.window_clock.get_or_init(|| Arc::new(SystemClock)).clone()
    }

    pub(super) async fn wait_for_window(&self, slot: &Slot, gate: &Disruptive) -> Waited {
        let clock = self.window_clock();
        loop {
            let until = match decide(gate.window.as_ref(), gate.expected, gate.force, clock.as_ref()) {
                GateDecision::Run { window_end, overrun_expected } => {
                    if overrun_expected {
                        let op = slot.tx.borrow().id.clone();
                        tracing::warn!(op = %op, "starting work that is expected to run past its maintenance window");
                    }
                    return Waited::Run { window_end };
                }
                GateDecision::Wait { until } => until,
            };
            let shown = {
                let r = slot.tx.borrow();
                r.state == OpState::WaitingForWindow && r.window_start == Some(until)
            };
            if !shown {
                self.transition(slot, |r| {
                    r.state = OpState::WaitingForWindow;
                    r.window_start = Some(until);
                    r.progress.message =
                        format!("waiting for the maintenance window starting {}", crate::timefmt::format(until));
                })
                .await;
            }
            let nap = until.duration_since(clock.now()).unwrap_or_default().min(MAX_NAP);
            tokio::select! {
                () = tokio::time::sleep(nap) => {}
                () = slot.cancel.cancelled() => {
                    return if slot.tx.borrow().cancel_requested { Waited::Cancelled } else { Waited::ShuttingDown };
                }
            }
        }
    }

    /// Runs `job` to its end; past `window_end` the record says it is overrunning.
    pub(super) async fn run_until_done(
        &self,
        slot: &Slot,
        window_end: Option<SystemTime>,
        job: JobFuture,
    ) -> JobResult {
        let Some(end) = window_end else { return job.await };
        let clock = self.window_clock();
        tokio::pin!(job);
        loop {
            if is_overrunning(Some(end), clock.as_ref()) {
                self.transition(slot, |r| r.overrunning = true).await;
                let op = slot.tx.borrow().id.clone();
                tracing::warn!(op = %op, "operation runs past the end of its maintenance window; it is not cut off");
                return job.await;
            }
            let nap = end.duration_since(clock.now()).unwrap_or_default().min(MAX_NAP);
            tokio::select! {
                result = &mut job => return result,
                () = tokio::time::sleep(nap) => {}
            }
        }
    }

    /// The operations the last stop left waiting for a window: each must be re-armed with
    /// [`Self::resume_waiting`] or given up with [`Self::abandon_waiting`].
    pub fn waiting_for_window(&self) -> Vec<OperationRecord> {
        let slots = self.table().slots.values().map(|s| s.tx.borrow().clone()).collect::<Vec<_>>();
        slots.into_iter().filter(|r| r.state == OpState::WaitingForWindow && r.started.is_none()).collect()
    }

    /// Re-arms a waiting operation found in the journal at start-up with its job rebuilt from its
    /// parameters: it waits again (against the window given now) and starts by itself.
    pub fn resume_waiting(&self, id: &str, exclusive: bool, gate: Disruptive, job: JobFn) -> Result<(), OpsError> {
        let slot = self.table().slots.get(id).cloned().ok_or_else(|| OpsError::NotFound(id.to_owned()))?;
        tracing::info!(op = id, "operation waiting for its maintenance window re-armed");
        let engine = self.clone();
        self.inner.tasks.spawn(async move { engine.run(slot, exclusive, Some(gate), job).await });
        Ok(())
    }

    /// Ends a waiting operation that cannot be re-armed (its kind is unknown or disabled now).
    pub async fn abandon_waiting(&self, id: &str, reason: &str) -> Result<(), OpsError> {
        let slot = self.table().slots.get(id).cloned().ok_or_else(|| OpsError::NotFound(id.to_owned()))?;
        let now = SystemTime::now();
        self.transition(&slot, |r| {
            r.state = OpState::Interrupted;
            r.finished = Some(now);
            r.error = Some(OpError { code: ErrorCode::Aborted, message: reason.to_owned() });
        })
        .await;
        Ok(())
    }
}

#[cfg(test)]
#[path = "window_wait_tests.rs"]
mod tests;
