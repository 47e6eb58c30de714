//! Logs: following each instance's log files and journald units, TailLogs for clients, and shipping
//! to drains with at-least-once delivery. `docs/logs.md` describes the guarantees.
//!
//! Data path of a drain: sources (file globs across rotation, journald through journalctl) ->
//! joined records -> the drain's wire format -> its on-disk buffer (with the source checkpoint of
//! every batch) -> the transport, whose acknowledgement commits the checkpoint.

pub mod buffer;
pub mod checkpoint;
pub mod drain;
pub mod file_source;
pub mod hub;
pub mod journald;
pub mod lines;
pub mod manager;
pub mod pipeline;
pub mod record;
pub mod settings;
pub mod sources;

#[cfg(test)]
mod buffer_tests;
#[cfg(test)]
mod file_source_tests;

pub use drain::{DrainSpec, DrainTarget};
pub use hub::{TailItem, TailRequest};
pub use manager::LogManager;
pub use pipeline::DrainStatus;
pub use record::{LogRecord, Severity};
pub use settings::LogsConfig;

use crate::ids::InvalidField;

#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    #[error("instance {0} is not registered")]
    InstanceNotFound(String),
    #[error("instance {instance} has no drain named {drain:?}; ListDrains shows its drains")]
    DrainNotFound { instance: String, drain: String },
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("{0}")]
    Corrupt(String),
    #[error("{0}")]
    Journal(String),
    #[error("{0}")]
    Drain(String),
    #[error("{0}")]
    Tls(String),
    #[error("the agent is shutting down; retry against the restarted agent")]
    ShuttingDown,
}

impl crate::error::HasErrorCode for LogsError {
    fn code(&self) -> crate::error::ErrorCode {
        use crate::error::ErrorCode as C;
        match self {
            LogsError::Invalid(_) => C::InvalidArgument,
            LogsError::InstanceNotFound(_) | LogsError::DrainNotFound { .. } => C::NotFound,
            LogsError::ShuttingDown | LogsError::Drain(_) | LogsError::Journal(_) | LogsError::Tls(_) => C::Unavailable,
            LogsError::Io { .. } | LogsError::Corrupt(_) => C::Internal,
        }
    }
}
