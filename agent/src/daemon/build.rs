//! Opens the state and constructs every subsystem, in dependency order, before anything serves.
//! A failure here stops the start: nothing has been announced to systemd or clients yet.

use crate::maintenance::{Clock, OffsetClock, SystemClock};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{DaemonError, RunMode, dev};
use crate::backup::{self, BackupService};
use crate::config::Config;
use crate::fsutil;
use crate::instances::registry::Registry;
use crate::instances::validate::ValidationRules;
use crate::locks::ResourceLocks;
use crate::logs::LogManager;
use crate::metrics::start::MetricsTasks;
use crate::metrics::{self, MetricsHub};
use crate::ops::{OperationEngine, OpsSettings};
use crate::requests::{DEFAULT_MAX_ENTRIES, LedgerSettings, RequestLedger};
use crate::tls::server::ReloadableAcceptor;
use crate::volume::Volumes;
use crate::volume::setup::VolumeBackend;

/// Everything the daemon runs, constructed but not serving yet.
pub(super) struct Daemon {
    pub config: Config,
    pub mode: RunMode,
    /// Cancelled when shutdown begins; every task and running operation watches it.
    pub root: CancellationToken,
    pub hostname: String,
    pub registry: Arc<Registry>,
    pub engine: OperationEngine,
    pub requests: RequestLedger,
    pub volumes: Volumes,
    /// True with `--dev --sim`: the volumes live in memory and nothing is encrypted.
    pub volumes_simulated: bool,
    pub backups: Arc<BackupService>,
    /// Plan changes (ChangePlan): limits through systemd's D-Bus API, engine settings.
    pub plans: crate::plan::PlanChanges,
    /// Upgrades (StartUpgrade): PostgreSQL majors and minor upgrades, also re-armed and recovered
    /// at start.
    pub upgrades: Arc<crate::upgrade::UpgradeService>,
    pub availability: crate::availability::Ledger,
    /// The clock maintenance windows, availability and the backup scheduler read (moved by
    /// `testing.clock_offset_secs` on test hosts).
    pub clock: Arc<dyn Clock>,
    pub database_tls: crate::dbtls::DbTlsService,
    /// The last health probe of each instance (the prober task writes it in `serve`).
    pub health: crate::health::HealthBoard,
    pub logs: LogManager,
    pub metrics_hub: Arc<MetricsHub>,
    /// Already running (they bind their listener at start); the daemon adopts them.
    pub metrics_tasks: MetricsTasks,
    pub acceptor: Arc<ReloadableAcceptor>,
    pub listener: TcpListener,
}

pub(super) async fn build(config: Config, mode: RunMode) -> Result<Daemon, DaemonError> {
    let root = CancellationToken::new();
    let state_dir = config.state_dir.clone();
    fsutil::ensure_private_dir(&state_dir).map_err(|source| DaemonError::Io {
        context: format!("create state folder {}", state_dir.display()),
        source,
    })?;
    if mode.is_dev() {
        dev::prepare_dev(&config)?;
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
    let backend = mode.volume_backend();
    let volumes = crate::volume::setup::from_config(&config, mode.is_dev(), backend, registry.clone())?;
    crate::ops::sleep::outlast_shutdown(config.testing.sleep_outlasts_shutdown);
    let (engine, interrupted) = OperationEngine::open(&state_dir.join("operations"), settings, locks, root.clone())?;
    let clock: Arc<dyn Clock> = if config.testing.clock_offset_secs != 0 {
        tracing::warn!(
            offset_secs = config.testing.clock_offset_secs,
            "testing.clock_offset_secs is set: maintenance windows and availability are read against a moved clock \
             (test hosts only)"
        );
        let clock = Arc::new(OffsetClock { offset_secs: config.testing.clock_offset_secs });
        engine.set_window_clock(clock.clone());
        clock
    } else {
        Arc::new(SystemClock)
    };
    // Before anything can open an interval: it closes what a crash left open, at the last evidence.
    let (availability, recovery) = crate::availability::Ledger::open(
        state_dir.join("availability"),
        clock.clone(),
        crate::availability::heartbeat::HEARTBEAT_EVERY,
    )?;
    for instance in &recovery.closed {
        tracing::warn!(instance = %instance, "a down interval left open by the last stop was closed at the last heartbeat");
    }
    if let Some((from, to)) = recovery.unknown_gap {
        tracing::info!(from, to, seconds = to - from, "the agent was not running: recorded as unknown availability");
    }
    // RemoveInstance and a new registration of an id ask what remains of it: its volume, keys and
    // operations.
    registry.set_leftovers(Arc::new(volumes.leftovers(engine.clone())));
    // Replies are replayed as long as operations are kept: one retention for every request_id.
    let requests = RequestLedger::open(
        state_dir.join("requests"),
        LedgerSettings { retention, max_entries: DEFAULT_MAX_ENTRIES },
    )?;
    for op in &interrupted {
        tracing::warn!(op = %op.id, kind = %op.kind, target = %op.target, "operation was interrupted by the last stop");
    }
    // After the volumes: in dev mode their setup has generated the KEK both use.
    let keys = backup::BackupKeys::from_config(&config, mode.is_dev())?;
    let backups = BackupService::new(
        config.backup.clone(),
        &state_dir,
        keys,
        config.instances.data_roots.clone(),
        engine.clone(),
    )?;
    // Interrupted backups left uploads and partial objects; none has a manifest. Remove them.
    for id in backups.clean_interrupted().await {
        tracing::info!(backup = %id, "removed the leftovers of an interrupted backup");
    }
    // Drills cut short by a crash left a server running on a scratch folder: stop it, remove it.
    for folder in backups.clean_drills().await {
        tracing::info!(folder = %folder, "removed the scratch folder of an interrupted restore drill");
    }

    let acceptor = Arc::new(ReloadableAcceptor::new(config.tls.clone(), config.auth.clone())?);
    let listener = TcpListener::bind(config.api.listen)
        .await
        .map_err(|source| DaemonError::Bind { addr: config.api.listen, source })?;

    let hostname = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
    let metrics_hub = MetricsHub::new(
        Duration::from_secs(config.metrics.interval_secs),
        Duration::from_secs(config.metrics.history_secs),
    );
    metrics_hub.add_exposition(Box::new({
        let backups = backups.clone();
        move || backups.drill_metrics_text()
    }));
    metrics_hub.add_exposition(Box::new({
        let (availability, registry) = (availability.clone(), registry.clone());
        move || {
            let instances: Vec<_> = registry.list().into_iter().map(|i| (i.id, i.spec.plan.name)).collect();
            crate::availability::metrics_text::render(&availability, &instances)
        }
    }));
    let database_tls = crate::dbtls::DbTlsService::new(
        registry.clone(),
        engine.clone(),
        config.database_tls.clone(),
        config.backup.clone(),
        config.instances.data_roots.clone(),
        hostname.clone(),
    );
    metrics_hub.add_exposition(Box::new({
        let database_tls = database_tls.clone();
        move || database_tls.metrics_text()
    }));
    let health = crate::health::HealthBoard::default();
    metrics_hub.add_exposition(Box::new({
        let health = health.clone();
        move || health.metrics_text()
    }));
    let logs =
        LogManager::new(state_dir.join("logs"), config.logs.clone(), hostname.clone(), registry.clone(), root.clone());
    let plans = crate::plan::PlanChanges {
        registry: registry.clone(),
        volumes: Arc::new(volumes.clone()),
        operations: engine.clone(),
        // Connects to the system bus on first use: a host without one fails only plan changes.
        services: Arc::new(crate::systemd::DbusServiceManager::new()),
        engines: Arc::new(crate::plan::ToolEngineControl {
            backup: config.backup.clone(),
            data_roots: config.instances.data_roots.clone(),
            postgresql_config_root: config.plans.postgresql_config_dir.clone(),
            mariadb_config_dir: config.plans.mariadb_config_dir.clone(),
        }),
        restart_timeout: Duration::from_secs(config.plans.restart_timeout_secs),
    };
    let minor_upgrades = crate::upgrade::minor::MinorUpgrades::from_config(&config, &state_dir, &registry, &engine);
    let upgrades = Arc::new(crate::upgrade::UpgradeService {
        registry: registry.clone(),
        operations: engine.clone(),
        backups: backups.clone(),
        // The availability probes' check (issue 15), after every upgrade step that starts a server.
        health: crate::upgrade::health::UpgradeHealth {
            prober: Arc::new(crate::health::engines::EngineProber::new(
                config.health.clone(),
                config.backup.clone(),
                config.instances.data_roots.clone(),
            )),
            probe_deadline: config.health.deadline(),
        },
        config: config.upgrade.clone(),
        minor: minor_upgrades,
    });
    // An upgrade a crash cut short may have left its instance down: its clusters are put right
    // (in the background: starting a cluster and its health check take up to a minute), each
    // instance locked from now on, before the API serves, until its recovery is recorded. A stop
    // during the recovery leaves the operation interrupted: the next start recovers it again.
    let claimed = upgrades.claim_interrupted();
    tokio::spawn({
        let upgrades = upgrades.clone();
        async move { upgrades.recover_claimed(claimed).await }
    });
    // Operations waiting for a window wait again (tasks of the engine, drained with it).
    super::window_rearm::rearm_waiting(&engine, &registry, &plans, &upgrades, config.operations.enable_test_kinds)
        .await;
    // Last: it spawns its tasks, and nothing after it can fail.
    let metrics_tasks = metrics::start::start(
        &config.metrics,
        metrics_hub.clone(),
        metrics::start::registry_targets(registry.clone()),
        metrics::start::quarantine_count(registry.clone(), volumes.clone()),
        metrics::start::backup_source(backups.health(), registry.clone()),
        hostname.clone(),
        root.clone(),
    )
    .await?;
    // Stops with the root token; nothing waits for it (a heartbeat cut short is one evidence less).
    drop(crate::availability::heartbeat::spawn(availability.clone(), root.clone()));

    Ok(Daemon {
        config,
        mode,
        root,
        hostname,
        registry,
        engine,
        requests,
        volumes,
        volumes_simulated: backend == VolumeBackend::Simulated,
        backups,
        plans,
        upgrades,
        availability,
        clock,
        database_tls,
        health,
        logs,
        metrics_hub,
        metrics_tasks,
        acceptor,
        listener,
    })
}
