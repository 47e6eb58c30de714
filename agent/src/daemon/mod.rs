//! The daemon's life: `build` opens the state and constructs the subsystems, `serve` starts their
//! tasks, tells systemd READY and waits for a signal or a critical task's exit, `shutdown` drains
//! everything against one deadline. `--dev` helpers are in [`dev`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use thiserror::Error;

use crate::api::ServeError;
use crate::backup::BackupError;
use crate::config::Config;
use crate::instances::registry::RegistryError;
use crate::ops::OpsError;
use crate::requests::LedgerError;
use crate::tls::TlsError;
use crate::volume::setup::VolumeBackend;

mod api_wiring;
mod build;
pub mod dev;
mod serve;
mod shutdown;
mod signals;
pub mod systemd;
mod tasks;
pub mod tracing_setup;
mod window_rearm;

pub use tasks::Task;

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("open instance registry: {0}")]
    Registry(#[from] RegistryError),
    #[error("open operation journal: {0}")]
    Ops(#[from] OpsError),
    #[error("open request ledger: {0}")]
    Requests(#[from] LedgerError),
    #[error("open availability ledger: {0}")]
    Availability(#[from] crate::availability::LedgerError),
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
    #[error("set up volumes: {0}")]
    Volumes(#[from] crate::volume::VolumeError),
    #[error("install the signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("the {task} stopped while the agent was serving")]
    TaskStopped { task: Task },
    #[error("the {task} panicked: {message}")]
    TaskPanicked { task: Task, message: String },
}

/// How the agent was started. Only the command line chooses it: no configuration key can turn on
/// development mode or simulated volumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// `--config`: the host's devices, dm-crypt, the configured key provider.
    Production,
    /// `--dev`: the development defaults; `--dev --sim` adds in-memory volumes.
    Dev { volumes: VolumeBackend },
}

impl RunMode {
    pub fn is_dev(self) -> bool {
        matches!(self, RunMode::Dev { .. })
    }

    pub fn volume_backend(self) -> VolumeBackend {
        match self {
            RunMode::Production => VolumeBackend::System,
            RunMode::Dev { volumes } => volumes,
        }
    }
}

/// Runs the agent until SIGTERM/SIGINT or until a critical task stops, then drains. Returns by the
/// shutdown deadline: `api.shutdown_grace_secs` after shutdown began, for everything at once.
pub fn run(config: Config, mode: RunMode) -> Result<(), DaemonError> {
    // Blocking threads outlive the default 10 s of idleness, so the metrics collection that runs on
    // one every 10 s reuses a thread instead of starting a new one each round.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_keep_alive(std::time::Duration::from_secs(120))
        .build()
        .map_err(DaemonError::Runtime)?;
    let grace = Duration::from_secs(config.api.shutdown_grace_secs);
    let (result, deadline) = runtime.block_on(async move {
        match build::build(config, mode).await {
            Ok(daemon) => serve::serve(daemon).await,
            // Nothing was started that needs draining; blocking start-up work gets the grace.
            Err(e) => (Err(e), Instant::now() + grace),
        }
    });
    // Blocking work still running (a libcryptsetup call, a file write) gets what is left of the
    // deadline, not more: the process is gone by the deadline.
    runtime.shutdown_timeout(deadline.saturating_duration_since(Instant::now()));
    result
}
