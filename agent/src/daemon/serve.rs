//! Serving: start the critical tasks, open the volumes, tell systemd READY, then wait for a signal
//! or for a critical task to stop, and drain.

use futures::{FutureExt, TryFutureExt};
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

use super::build::Daemon;
use super::tasks::{CriticalTasks, Task};
use super::{DaemonError, api_wiring, dev, shutdown, signals::handle_signals, systemd};
use crate::api;
use crate::backup;
use crate::health;
use crate::ops::OperationEngine;
use crate::requests::RequestLedger;
use crate::tls::listener::{AcceptSettings, spawn_accept_loop};

const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Returns how the daemon ended and the shutdown deadline.
pub(super) async fn serve(d: Daemon) -> (Result<(), DaemonError>, Instant) {
    let root = d.root.clone();
    let config = &d.config;
    // Not tied to the root token: it pets through the drain, until this function returns.
    let _watchdog = systemd::start_watchdog(config.testing.fault_switches);

    let services = api_wiring::services(&d);
    let mut tasks = CriticalTasks::default();
    let accept = AcceptSettings {
        max_connections: config.api.max_connections as usize,
        max_pending_handshakes: config.api.max_pending_handshakes,
        max_handshakes_per_address: config.api.max_handshakes_per_address,
        handshake_timeout: Duration::from_secs(config.api.handshake_timeout_secs),
        idle_timeout: Duration::from_secs(config.api.idle_timeout_secs),
    };
    let (incoming, acceptor_task) = spawn_accept_loop(d.listener, d.acceptor.clone(), accept, root.clone());
    tasks.adopt(Task::ConnectionAcceptor, acceptor_task);
    let limits = api::ServeLimits::from_config(&config.api);
    tasks.spawn(Task::ApiServer, api::serve(services, incoming, limits, root.clone()).map_err(DaemonError::from));
    tasks.spawn(Task::LogShipping, d.logs.clone().run().map(Ok));
    tasks.spawn(Task::SignalHandler, handle_signals(root.clone(), d.acceptor.clone()));
    tasks.spawn(Task::RecordPruner, prune_periodically(d.engine.clone(), d.requests.clone(), root.clone()).map(Ok));
    tasks.spawn(
        Task::BackupScheduler,
        backup::scheduler::run(
            d.backups.clone(),
            d.registry.clone(),
            backup::scheduler::Schedule {
                interval: Duration::from_secs(config.backup.scheduler_interval_secs),
                clock: d.clock.clone(),
                avoid_windows: config.backup.avoid_maintenance_windows,
            },
            root.clone(),
        )
        .map(Ok),
    );
    if config.health.enabled {
        let prober = health_prober(&d.config, &d.registry, &d.engine, &d.availability, &d.health);
        tasks.spawn(Task::HealthProber, prober.run(config.health.interval(), root.clone()).map(Ok));
    }
    for handle in d.metrics_tasks.handles {
        tasks.adopt(Task::Metrics, handle);
    }

    // The listener is bound and the server task runs: connections from now on are served.
    // READY only after the instances' volumes are open, so database units ordered after the agent
    // find their data. A volume that fails is logged and reported by GetVolume.
    let open = d.volumes.open_all().await;
    let simulated = if d.volumes_simulated { " (simulated)" } else { "" };
    let summary = format!(
        "serving on {}; {} instances; volumes{simulated}: {} opened, {} failed, {} quarantined",
        config.api.listen,
        d.registry.count(),
        open.opened,
        open.failed,
        open.quarantined
    );
    systemd::ready(&summary);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "{summary}");
    if d.mode.is_dev() {
        dev::print_dev_help(&config.state_dir, d.volumes_simulated);
    }
    if let Some(addr) = d.metrics_tasks.prometheus {
        tracing::info!("Prometheus metrics at http://{addr}/metrics");
    }

    let failure = until_shutdown(&mut tasks, &root).await;
    let grace = Duration::from_secs(config.api.shutdown_grace_secs);
    let (drained, deadline) = shutdown::drain(&d.engine, tasks, grace).await;
    (failure.map_or(drained, Err), deadline)
}

/// Waits for the root token, or for a critical task to end first: that is a failure, which is
/// logged and begins the shutdown. Returns the failure, if any.
/// The prober task over the daemon's registry, operations and ledger.
fn health_prober(
    config: &crate::config::Config,
    registry: &std::sync::Arc<crate::instances::registry::Registry>,
    engine: &OperationEngine,
    ledger: &crate::availability::Ledger,
    board: &health::HealthBoard,
) -> health::task::ProberTask {
    let prober = health::engines::EngineProber::new(
        config.health.clone(),
        config.backup.clone(),
        config.instances.data_roots.clone(),
    );
    let (registry, engine) = (registry.clone(), engine.clone());
    let deps = health::task::ProberDeps {
        prober: std::sync::Arc::new(prober),
        instances: std::sync::Arc::new(move || registry.list()),
        disrupting: std::sync::Arc::new(move |id: &str| engine.is_disrupting(id)),
        ledger: ledger.clone(),
        board: board.clone(),
    };
    health::task::ProberTask::new(deps, &config.health)
}

async fn until_shutdown(tasks: &mut CriticalTasks, root: &CancellationToken) -> Option<DaemonError> {
    let (task, end) = tokio::select! {
        biased;
        () = root.cancelled() => return None,
        Some(ended) = tasks.next_end() => ended,
    };
    // The signal handler ends right after it cancelled the root token: that is the shutdown.
    if root.is_cancelled() {
        return end.err();
    }
    let failure = end.err().unwrap_or(DaemonError::TaskStopped { task });
    tracing::error!("{failure:#}; shutting down");
    root.cancel();
    Some(failure)
}

async fn prune_periodically(engine: OperationEngine, requests: RequestLedger, root: CancellationToken) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                match engine.prune(SystemTime::now()) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!("pruned {n} finished operation records"),
                    Err(e) => tracing::error!("prune operation records: {e:#}"),
                }
                // Blocking file removals: rare and few, as for the operation journal above.
                match requests.prune(SystemTime::now()) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!("pruned {n} request records"),
                    Err(e) => tracing::error!("prune request records: {e:#}"),
                }
            }
            () = root.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_ends_while_serving_begins_the_shutdown_as_a_failure() {
        let root = CancellationToken::new();
        let mut tasks = CriticalTasks::default();
        tasks.spawn(Task::SignalHandler, std::future::pending());
        tasks.spawn(Task::BackupScheduler, async { Ok(()) });
        let failure = until_shutdown(&mut tasks, &root).await;
        assert!(matches!(failure, Some(DaemonError::TaskStopped { task: Task::BackupScheduler })), "{failure:?}");
        assert!(root.is_cancelled(), "the failure must begin the shutdown");
        assert_eq!(tasks.running(), vec![Task::SignalHandler], "the others are left to the drain");
    }

    #[tokio::test]
    async fn a_signal_is_a_shutdown_not_a_failure() {
        let root = CancellationToken::new();
        let mut tasks = CriticalTasks::default();
        let token = root.clone();
        // As the signal handler does on SIGTERM: cancel the root token, then end.
        tasks.spawn(Task::SignalHandler, async move {
            token.cancel();
            Ok(())
        });
        tasks.spawn(Task::BackupScheduler, std::future::pending());
        assert!(until_shutdown(&mut tasks, &root).await.is_none());
        assert!(root.is_cancelled());
    }
}
