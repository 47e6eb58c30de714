//! The sampling task: one collection round per interval, stored in the hub's history.

use std::sync::Arc;
use std::time::SystemTime;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::MetricsHub;
use super::collect::{Collector, InstanceTarget};
use super::model::Owner;

/// Where the sampler learns which instances exist; the registry in the daemon, a list in tests.
pub type Targets = Arc<dyn Fn() -> Vec<InstanceTarget> + Send + Sync>;

/// Samples every `hub.interval` until `shutdown`. The first round runs at once, so the API has a
/// latest sample right after start.
pub async fn run(hub: Arc<MetricsHub>, collector: Collector, targets: Targets, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(hub.interval);
    // A round that took long (a slow statvfs) is not followed by a burst of catch-up rounds.
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut collector = Some(collector);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(mut c) = collector.take() else { return };
        let list = targets();
        let job = tokio::task::spawn_blocking(move || {
            let round = c.collect(&list);
            (c, round, list)
        });
        let (c, round, list) = tokio::select! {
            () = shutdown.cancelled() => return,
            r = job => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("metrics collection panicked; metrics stop: {e}");
                    return;
                }
            },
        };
        collector = Some(c);
        let now = SystemTime::now();
        hub.history.retain_instances(&|id| list.iter().any(|t| t.id == id));
        hub.history.push(Owner::Node, now, round.node);
        for (id, reading) in round.instances {
            hub.history.push(Owner::Instance(id), now, reading);
        }
        hub.round_done();
    }
}
