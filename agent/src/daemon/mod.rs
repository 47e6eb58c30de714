//! Start-up order, the root cancellation token, signals, and an orderly drain on shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::api::{self, ServeError};
use crate::backup::{self, BackupError, BackupService};
use crate::config::Config;
use crate::fsutil;
use crate::instances::registry::{Registry, RegistryError};
use crate::instances::validate::ValidationRules;
use crate::locks::ResourceLocks;
use crate::metrics::{self, MetricsHub};
use crate::ops::{OperationEngine, OpsError, OpsSettings};
use crate::requests::{DEFAULT_MAX_ENTRIES, LedgerError, LedgerSettings, RequestLedger};
use crate::tls::listener::{AcceptSettings, spawn_accept_loop};
use crate::tls::peer::RoleMap;
use crate::tls::server::ReloadableAcceptor;
use crate::tls::{TlsError, devpki};

pub mod systemd;
pub mod tracing_setup;

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("open instance registry: {0}")]
    Registry(#[from] RegistryError),
    #[error("open operation journal: {0}")]
    Ops(#[from] OpsError),
    #[error("open request ledger: {0}")]
    Requests(#[from] LedgerError),
    #[error("listen on {addr}: {source} (is another agent running? set api.listen or --listen)")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("start metrics: {0}")]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error("set up backups: {0}")]
    Backup(#[from] BackupError),
    #[error("the API server stopped unexpectedly")]
    ServerExited,
    #[error("set up volumes: {0}")]
    Volumes(#[from] crate::volume::VolumeError),
}

/// Runs the agent until SIGTERM/SIGINT. Returns after operations and RPCs drained (or the grace ran out).
pub async fn run(config: Config, dev: bool) -> Result<(), DaemonError> {
    let root = CancellationToken::new();
    let state_dir = config.state_dir.clone();
    fsutil::ensure_private_dir(&state_dir).map_err(|source| DaemonError::Io {
        context: format!("create state folder {}", state_dir.display()),
        source,
    })?;
    if dev {
        prepare_dev(&config)?;
    }

    let locks = ResourceLocks::default();
    let rules = ValidationRules {
        data_roots: config.instances.data_roots.clone(),
        device_prefixes: config.instances.device_prefixes.clone(),
        log_roots: config.instances.log_roots.clone(),
    };
    let registry = Arc::new(Registry::open(state_dir.join("instances"), rules, locks.clone())?);
    let retention = Duration::from_secs(config.operations.retention_hours * 3600);
    let settings = OpsSettings {
        max_concurrent: config.operations.max_concurrent as usize,
        retention,
        max_finished: config.operations.max_finished,
    };
    let volumes = crate::volume::setup::from_config(&config, dev, registry.clone())?;
    let (engine, interrupted) = OperationEngine::open(&state_dir.join("operations"), settings, locks, root.clone())?;
    // Replies are replayed as long as operations are kept: one retention for every request_id.
    let requests = RequestLedger::open(
        state_dir.join("requests"),
        LedgerSettings { retention, max_entries: DEFAULT_MAX_ENTRIES },
    )?;
    for op in &interrupted {
        tracing::warn!(op = %op.id, kind = %op.kind, target = %op.target, "operation was interrupted by the last stop");
    }
    // After the volumes: in dev mode their setup has generated the KEK both use.
    let keys = backup::keywrap::from_config(&config, dev);
    let backups = BackupService::new(config.backup.clone(), &state_dir, keys, engine.clone())?;
    // Interrupted backups left uploads and partial objects; none has a manifest. Remove them.
    for id in backups.clean_interrupted().await {
        tracing::info!(backup = %id, "removed the leftovers of an interrupted backup");
    }

    let acceptor = Arc::new(ReloadableAcceptor::new(config.tls.clone())?);
    let listener = TcpListener::bind(config.api.listen)
        .await
        .map_err(|source| DaemonError::Bind { addr: config.api.listen, source })?;
    let accept = AcceptSettings {
        max_connections: config.api.max_connections as usize,
        handshake_timeout: Duration::from_secs(config.api.handshake_timeout_secs),
    };
    let roles = Arc::new(RoleMap::new(config.auth.clone()));
    let (incoming, accept_task) = spawn_accept_loop(listener, acceptor.clone(), roles, accept, root.clone());

    let hostname = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
    let metrics_hub = MetricsHub::new(
        Duration::from_secs(config.metrics.interval_secs),
        Duration::from_secs(config.metrics.history_secs),
    );
    let metrics_tasks = metrics::start::start(
        &config.metrics,
        metrics_hub.clone(),
        metrics::start::registry_targets(registry.clone()),
        hostname.clone(),
        root.clone(),
    )
    .await?;
    let logs = crate::logs::LogManager::new(
        state_dir.join("logs"),
        config.logs.clone(),
        hostname.clone(),
        registry.clone(),
        root.clone(),
    );
    let logs_task = tokio::spawn(logs.clone().run());

    let services = api::Services {
        agent: api::agent::AgentApi {
            started: SystemTime::now(),
            hostname,
            config_digest: config.digest(),
            dev_mode: dev,
            volumes_simulated: false,
            host: crate::host_inventory::HostInventory::read(),
            registry: registry.clone(),
            operations: engine.clone(),
            shutdown: root.clone(),
        },
        instances: api::instances::InstancesApi { registry: registry.clone(), requests: requests.clone() },
        operations: api::operations::OperationsApi {
            operations: engine.clone(),
            test_kinds: config.operations.enable_test_kinds,
            shutdown: root.clone(),
        },
        volumes: api::volumes::VolumesApi {
            volumes: volumes.clone(),
            registry: registry.clone(),
            operations: engine.clone(),
        },
        metrics: api::metrics::MetricsApi { hub: metrics_hub, registry: registry.clone(), shutdown: root.clone() },
        logs: api::logs::LogsApi { logs, requests: requests.clone() },
        backups: api::backups::BackupsApi {
            backups: backups.clone(),
            registry: registry.clone(),
            requests: requests.clone(),
        },
    };
    let mut server = tokio::spawn(api::serve(services, incoming, root.clone()));
    let signals = tokio::spawn(handle_signals(root.clone(), acceptor));
    let pruner = tokio::spawn(prune_periodically(engine.clone(), requests, root.clone()));
    let scheduler = tokio::spawn(backup::scheduler::run(
        backups,
        registry.clone(),
        Duration::from_secs(config.backup.scheduler_interval_secs),
        root.clone(),
    ));
    let watchdog = systemd::spawn_watchdog(root.clone(), config.testing.fault_switches);

    // The listener is bound and the server task runs: connections from now on are served.
    // READY only after the instances' volumes are open, so database units ordered after the agent
    // find their data. A volume that fails is logged and reported by GetVolume.
    let (opened, failed) = volumes.open_all().await;
    let summary = format!(
        "serving on {}; {} instances; volumes: {opened} opened, {failed} failed",
        config.api.listen,
        registry.count()
    );
    systemd::ready(&summary);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "{summary}");
    if dev {
        print_dev_help(&state_dir);
    }
    if let Some(addr) = metrics_tasks.prometheus {
        tracing::info!("Prometheus metrics at http://{addr}/metrics");
    }

    let server_result = tokio::select! {
        () = root.cancelled() => None,
        r = &mut server => Some(r),
    };
    root.cancel();
    systemd::stopping("draining");
    let grace = Duration::from_secs(config.api.shutdown_grace_secs);
    if !engine.drain(grace).await {
        tracing::warn!("operations still running after {grace:?}; they will be reported interrupted at next start");
    }
    // Log pipelines stop on the root token; let in-flight batches be acknowledged and committed.
    if tokio::time::timeout(grace, logs_task).await.is_err() {
        tracing::warn!(
            "log shipping did not stop within {grace:?}; unacknowledged batches are sent again at next start"
        );
    }
    let server_result = match server_result {
        Some(r) => Some(r),
        None => tokio::time::timeout(grace, server).await.ok(),
    };
    for task in [Some(signals), Some(pruner), Some(scheduler), Some(accept_task), watchdog]
        .into_iter()
        .flatten()
        .chain(metrics_tasks.handles)
    {
        task.abort();
    }
    match server_result {
        Some(Ok(Ok(()))) => {
            tracing::info!("stopped");
            Ok(())
        }
        Some(Ok(Err(e))) => Err(e.into()),
        Some(Err(_)) => Err(DaemonError::ServerExited),
        None => {
            tracing::warn!("in-flight RPCs did not finish within {grace:?}; exiting anyway");
            Ok(())
        }
    }
}

async fn handle_signals(root: CancellationToken, acceptor: Arc<ReloadableAcceptor>) {
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
    else {
        tracing::error!("install signal handlers; stopping");
        root.cancel();
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); root.cancel(); return; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); root.cancel(); return; }
            _ = hup.recv() => match acceptor.reload() {
                Ok(()) => tracing::info!("SIGHUP: reloaded TLS certificate, key, CA and CRLs"),
                Err(e) => tracing::error!("SIGHUP: reload TLS failed, keeping the previous configuration: {e:#}"),
            },
        }
    }
}

async fn prune_periodically(engine: OperationEngine, requests: RequestLedger, root: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
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

/// Dev PKI, client configs for `dbagentctl`, and the dev data root.
fn prepare_dev(config: &Config) -> Result<(), DaemonError> {
    let dir = &config.state_dir;
    let tls = dir.join("tls");
    if devpki::ensure(&tls)? {
        tracing::info!("generated development CA and certificates in {}", tls.display());
    }
    let listen = config.api.listen;
    let host = if listen.ip().is_unspecified() { "127.0.0.1".to_owned() } else { listen.ip().to_string() };
    let endpoint = if listen.is_ipv6() && !listen.ip().is_unspecified() {
        format!("https://[{host}]:{}", listen.port())
    } else {
        format!("https://{host}:{}", listen.port())
    };
    for (file, identity) in [("client.toml", "orchestrator"), ("monitor.toml", "monitor")] {
        let path = dir.join(file);
        fsutil::atomic_write(&path, devpki::client_toml(&tls, identity, &endpoint).as_bytes())
            .map_err(|source| DaemonError::Io { context: format!("write {}", path.display()), source })?;
    }
    for root in &config.instances.data_roots {
        fsutil::ensure_private_dir(root)
            .map_err(|source| DaemonError::Io { context: format!("create {}", root.display()), source })?;
    }
    Ok(())
}

fn print_dev_help(dir: &Path) {
    let client = dir.join("client.toml");
    let monitor = dir.join("monitor.toml");
    eprintln!(
        "\ndbagent is running in development mode; state in {}\n  \
         dbagentctl --config {} status       # orchestrator: full access\n  \
         dbagentctl --config {} status       # monitor: read-only\n",
        dir.display(),
        client.display(),
        monitor.display()
    );
}

/// `--dev` without `--state-dir`: a folder in the current directory, made absolute.
pub fn default_dev_state_dir() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/tmp")).join("dbagent-dev")
}
