//! The prober task: every `health.interval_secs`, one probe of every registered instance,
//! concurrent up to `health.max_concurrent`, each with `health.deadline_secs`; the outcomes go to
//! the ledger (`tracker`) and the board (API, metrics). Stops with the daemon's root token.

use futures::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use super::tracker::{Change, Outcome, Tracker};
use super::{HealthBoard, HealthSettings, ProbeError, ProbeStatus, Prober};
use crate::availability::Ledger;
use crate::instances::Instance;

/// What the task reads each round.
pub struct ProberDeps {
    pub prober: Arc<dyn Prober>,
    /// The registered instances now.
    pub instances: Arc<dyn Fn() -> Vec<Instance> + Send + Sync>,
    /// Whether an ordered disruptive operation runs on the instance now.
    pub disrupting: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    pub ledger: Ledger,
    pub board: HealthBoard,
}

pub struct ProberTask {
    deps: ProberDeps,
    tracker: Arc<Mutex<Tracker>>,
    deadline: Duration,
    max_concurrent: usize,
}

impl ProberTask {
    pub fn new(deps: ProberDeps, settings: &HealthSettings) -> Self {
        let tracker = Arc::new(Mutex::new(Tracker::new(deps.ledger.clone(), settings.interval())));
        Self { deps, tracker, deadline: settings.deadline(), max_concurrent: settings.max_concurrent as usize }
    }

    /// Rounds every `interval` until `stop`. A round that takes longer than the interval delays
    /// the next (ticks are not bunched up); the tracker records the delay as unknown.
    pub async fn run(self, interval: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.round() => {}
            }
        }
    }

    /// One probe of every registered instance; returns when all have been recorded.
    pub async fn round(&self) {
        let instances = (self.deps.instances)();
        self.forget_removed(&instances).await;
        futures::stream::iter(instances).for_each_concurrent(self.max_concurrent, |i| self.probe(i)).await;
    }

    async fn probe(&self, instance: Instance) {
        let at = self.deps.ledger.now();
        let result = self.deps.prober.check(&instance, self.deadline).await;
        let planned = (self.deps.disrupting)(&instance.id);
        let (outcome, status) = match &result {
            Ok(h) => (
                Outcome::Up,
                ProbeStatus {
                    at,
                    healthy: true,
                    latency: h.latency,
                    server_version: h.server_version.clone(),
                    error: String::new(),
                },
            ),
            Err(e) => {
                let outcome = if matches!(e, ProbeError::Setup(_)) {
                    Outcome::NotRun(e.to_string())
                } else {
                    Outcome::Down(e.to_string())
                };
                let latency = self.deps.ledger.now().duration_since(at).unwrap_or_default();
                (
                    outcome,
                    ProbeStatus { at, healthy: false, latency, server_version: String::new(), error: e.to_string() },
                )
            }
        };
        let was_healthy = self.deps.board.get(&instance.id).map(|s| s.healthy);
        self.deps.board.set(&instance.id, status);
        let (tracker, id, o) = (self.tracker.clone(), instance.id.clone(), outcome.clone());
        let recorded = tokio::task::spawn_blocking(move || {
            tracker.lock().unwrap_or_else(std::sync::PoisonError::into_inner).observe(&id, at, &o, planned)
        })
        .await;
        match recorded {
            Ok(Ok(change)) => log_change(&instance.id, &outcome, &change, was_healthy),
            Ok(Err(e)) => {
                tracing::error!(instance = %instance.id, error = %e, "record the health probe in the availability ledger")
            }
            Err(e) => tracing::error!(instance = %instance.id, error = %e, "the availability ledger write failed"),
        }
    }

    async fn forget_removed(&self, instances: &[Instance]) {
        let ids: Vec<String> = instances.iter().map(|i| i.id.clone()).collect();
        self.deps.board.retain(&ids);
        let (tracker, at) = (self.tracker.clone(), self.deps.ledger.now());
        let _ = tokio::task::spawn_blocking(move || {
            let mut tracker = tracker.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for gone in tracker.known().into_iter().filter(|k| !ids.contains(k)) {
                if let Err(e) = tracker.forget(&gone, at) {
                    tracing::error!(instance = %gone, error = %e, "close the availability interval of a removed instance");
                }
            }
        })
        .await;
    }
}

/// Logs transitions only: a probe every 10 s must not flood the journal.
fn log_change(instance: &str, outcome: &Outcome, change: &Change, was_healthy: Option<bool>) {
    if let Some((from, to)) = change.late_gap {
        let secs = to.duration_since(from).unwrap_or_default().as_secs();
        tracing::warn!(instance, secs, "health probe ran late: the gap is recorded as unknown availability");
    }
    match (outcome, change.opened) {
        (Outcome::Down(reason) | Outcome::NotRun(reason), Some(kind)) => {
            tracing::warn!(instance, kind = ?kind, %reason, "health probe failed: down interval opened");
        }
        (Outcome::Up, _) if change.closed.is_some() || was_healthy == Some(false) => {
            tracing::info!(instance, "health probe succeeded again: down interval closed");
        }
        _ => {}
    }
}
