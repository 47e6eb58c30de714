//! Backups: one streaming pass from the engine's dump command through zstd and
//! AES-256-GCM chunks to every destination at once, with a manifest written last per destination.
//!
//! `docs/backups.md` describes the stored format, the configuration and the restore procedure.

pub mod catalog;
pub mod chunks;
pub mod decode;
pub mod destination;
pub mod engine_commands;
pub mod jobs;
pub mod keywrap;
pub mod manifest;
pub mod pipeline;
pub mod restore_dir;
pub mod restore_job;
pub mod scheduler;
pub mod service;
pub mod settings;

pub use catalog::{BackupInfo, BackupState, DestinationState, DestinationStatus};
pub use keywrap::{KekWrapper, KeyWrapper};
pub use manifest::{BackupKind, BackupMethod, Manifest};
pub use service::BackupService;
pub use settings::BackupConfig;

use thiserror::Error;

/// Every way a backup call can fail. The API maps each variant to one gRPC code.
#[derive(Debug, Error)]
pub enum BackupError {
    #[error(transparent)]
    Invalid(#[from] crate::ids::InvalidField),
    #[error("backup {backup} of instance {instance} does not exist on any reachable destination")]
    NotFound { instance: String, backup: String },
    #[error(
        "the manual backup quota of plan {plan} ({limit} backups) is reached for instance {instance}; delete a manual backup first"
    )]
    QuotaExhausted { instance: String, plan: &'static str, limit: usize },
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("destination {destination}: {message}")]
    Destination { destination: String, message: String },
    #[error("every destination failed: {0}")]
    AllDestinationsFailed(String),
    #[error("{command} failed: {message}")]
    Command { command: String, message: String },
    #[error("backup {backup} is corrupt on {destination}: {message}")]
    Corrupt { backup: String, destination: String, message: String },
    #[error("{0}")]
    Key(String),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Ops(#[from] crate::ops::OpsError),
}

impl BackupError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        BackupError::Io { context: context.into(), source }
    }

    pub(crate) fn dest(destination: &str, message: impl std::fmt::Display) -> Self {
        BackupError::Destination { destination: destination.to_owned(), message: message.to_string() }
    }
}

impl crate::error::HasErrorCode for BackupError {
    fn code(&self) -> crate::error::ErrorCode {
        use crate::error::ErrorCode;
        match self {
            BackupError::Invalid(_) => ErrorCode::InvalidArgument,
            BackupError::NotFound { .. } => ErrorCode::NotFound,
            BackupError::QuotaExhausted { .. } => ErrorCode::ResourceExhausted,
            BackupError::FailedPrecondition(_) | BackupError::Key(_) | BackupError::Corrupt { .. } => {
                ErrorCode::FailedPrecondition
            }
            BackupError::Destination { .. } | BackupError::AllDestinationsFailed(_) => ErrorCode::Unavailable,
            BackupError::Cancelled => ErrorCode::Cancelled,
            BackupError::Ops(e) => e.code(),
            BackupError::Command { .. } | BackupError::Io { .. } => ErrorCode::Internal,
        }
    }
}

#[cfg(test)]
mod service_tests;
