//! The agent's heartbeat: the evidence, written every [`HEARTBEAT_EVERY`], that the agent was
//! running. After a crash, what lies between the last heartbeat and the next start is "unknown".

use std::time::Duration;
use tokio_util::sync::CancellationToken;

use super::ledger::Ledger;

/// How often the evidence is written: at most this much measured time turns into "unknown" at a
/// crash, for one small fsynced write per period.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

/// Writes the heartbeat every [`HEARTBEAT_EVERY`] until `stop` is cancelled; a failed write is
/// logged and tried again at the next tick (the ledger keeps the last evidence it wrote).
pub fn spawn(ledger: Ledger, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let ledger = ledger.clone();
            match tokio::task::spawn_blocking(move || ledger.heartbeat()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "write the availability heartbeat"),
                Err(e) => tracing::warn!(error = %e, "the availability heartbeat task failed"),
            }
        }
    })
}
