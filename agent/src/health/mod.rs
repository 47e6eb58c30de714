//! Health probes (issue 15): one check per instance, through the engine's own protocol client,
//! as a dedicated low-privilege monitoring role, with a deadline (`engines`). The prober task
//! (`task`) runs it for every registered instance every `health.interval_secs` and turns the
//! outcomes into the downtime ledger's intervals (`tracker`): a failed probe opens an unplanned
//! interval, or a planned one while a disruptive operation runs on the instance
//! (`ops::OperationEngine::is_disrupting`); the next success closes it. Upgrades (issue 14) call
//! the same [`Prober::check`] after every step.

pub mod board;
pub mod engines;
pub mod memory;
pub mod settings;
pub mod task;
pub mod tracker;

#[cfg(test)]
mod tracker_tests;

use std::time::Duration;

pub use board::{HealthBoard, ProbeStatus};
pub use settings::HealthSettings;

use crate::instances::Instance;

/// What a successful probe learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthy {
    /// As the server reports it (`server_version`, `@@version`, `redis_version`).
    pub server_version: String,
    /// From the start of the connection to the answer of the read.
    pub latency: Duration,
}

/// Why a probe failed. Never carries a password: the clients' errors name the user at most.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{engine} at {target}: no answer within {deadline:?}")]
    Deadline { engine: &'static str, target: String, deadline: Duration },
    #[error("{engine} at {target}: connect as {user:?}: {message}")]
    Connect { engine: &'static str, target: String, user: String, message: String },
    #[error("{engine} at {target}: {query}: {message}")]
    Query { engine: &'static str, target: String, query: &'static str, message: String },
    /// The agent's own configuration or files, not the database: e.g. an unreadable password file.
    #[error("{0}")]
    Setup(String),
}

impl crate::error::HasErrorCode for ProbeError {
    fn code(&self) -> crate::error::ErrorCode {
        use crate::error::ErrorCode as C;
        match self {
            // The server did not answer in time: to a caller (an upgrade step), as unavailable.
            ProbeError::Deadline { .. } | ProbeError::Connect { .. } | ProbeError::Query { .. } => C::Unavailable,
            ProbeError::Setup(_) => C::FailedPrecondition,
        }
    }
}

/// One health check of one instance. Real: [`engines::EngineProber`]; in memory:
/// [`memory::MemoryProber`] (unit tests).
#[async_trait::async_trait]
pub trait Prober: Send + Sync {
    /// Connects to `instance`'s server, runs the engine's read, and answers within `deadline`
    /// (a probe past it is [`ProbeError::Deadline`], its connection dropped).
    async fn check(&self, instance: &Instance, deadline: Duration) -> Result<Healthy, ProbeError>;
}
