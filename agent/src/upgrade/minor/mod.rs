//! Minor upgrades of PostgreSQL, MariaDB and Redis (issue 14): the server restarted onto the
//! binaries that are installed, after installing packages from a local repository the request
//! names (never from anywhere else), with the version before and after read from the server
//! itself through the health prober, which is also the health check after the restart. MariaDB
//! runs `mariadb-upgrade` after it. Disruptive: the operation `upgrade.minor` waits for the
//! instance's maintenance window unless forced, and is re-armed after an agent restart.
//!
//! `version` reads targets and server versions (pure), `packages` checks names and the repository
//! folder (through directory handles), `host` runs apt, dpkg-query, journalctl and
//! mariadb-upgrade (real; `memory` for tests), `job` is the operation, `service` checks the
//! request and submits it.

pub mod context;
pub mod host;
pub mod job;
pub mod memory;
pub mod packages;
pub mod service;
pub mod version;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use thiserror::Error;

pub use service::{MinorRequest, MinorUpgrades};

use crate::error::{ErrorCode, HasErrorCode};

/// The operation kind in the journal: never rename it.
pub const KIND: &str = "upgrade.minor";

#[derive(Debug, Error)]
pub enum MinorError {
    #[error("{field}: {message}")]
    InvalidRequest { field: &'static str, message: String },
    #[error("instance {instance}: {message}")]
    Unsupported { instance: String, message: String },
    #[error(
        "instance {instance} runs {engine} {current}; {target} is a newer major: the agent upgrades {engine} within \
         its major only (a major upgrade of {engine} is a migration to a new instance)"
    )]
    MajorNotOffered { instance: String, engine: &'static str, current: String, target: String },
    #[error("instance {instance} runs {running}; {target} is older: downgrades are never offered")]
    Downgrade { instance: String, running: String, target: String },
    #[error("packages: {name:?} is not a package of {engine}; allowed: {allowed}")]
    ForeignPackage { name: String, engine: &'static str, allowed: String },
    #[error("package_repository {}: refused, {message}", path.display())]
    Repository { path: PathBuf, message: String },
    #[error("instance {instance}: the server is not healthy before the upgrade ({reason}); nothing was changed")]
    NotHealthyBefore { instance: String, reason: String },
    #[error(
        "instance {instance}: the server reports {version:?}, which is not of {engine} {major}; nothing was changed"
    )]
    OtherMajorRunning { instance: String, engine: &'static str, major: String, version: String },
    #[error("installing the packages failed, the server was not restarted by the agent and runs {running}: {apt}")]
    Install { apt: String, running: String },
    /// `message`: the unit's state, the restart's or the probe's error, the journal's last lines and
    /// what became of the packages (`job::MinorJob::not_back`).
    #[error("instance {instance}: the server did not come back healthy after the restart of {message}")]
    NotBack { instance: String, message: String },
    #[error(
        "instance {instance}: the server reports {reported} after the restart, not the requested {wanted} (the \
         repository's packages bring {reported}); it runs and passed the health check"
    )]
    VersionMismatch { instance: String, wanted: String, reported: String },
    #[error(
        "instance {instance}: mariadb-upgrade failed after the restart ({message}); the server runs {running} and \
         passed the health check: run mariadb-upgrade by hand"
    )]
    MariadbUpgrade { instance: String, running: String, message: String },
    #[error("cancelled before the server was touched; nothing was changed")]
    Cancelled,
    #[error(transparent)]
    Systemd(#[from] crate::systemd::SystemdError),
    #[error(transparent)]
    Registry(#[from] crate::instances::registry::RegistryError),
    #[error(transparent)]
    Ops(#[from] crate::ops::OpsError),
}

impl HasErrorCode for MinorError {
    fn code(&self) -> ErrorCode {
        match self {
            MinorError::InvalidRequest { .. } | MinorError::ForeignPackage { .. } => ErrorCode::InvalidArgument,
            MinorError::Unsupported { .. }
            | MinorError::MajorNotOffered { .. }
            | MinorError::Downgrade { .. }
            | MinorError::Repository { .. }
            | MinorError::NotHealthyBefore { .. }
            | MinorError::OtherMajorRunning { .. }
            | MinorError::VersionMismatch { .. } => ErrorCode::FailedPrecondition,
            MinorError::Install { .. } | MinorError::MariadbUpgrade { .. } => ErrorCode::Aborted,
            MinorError::NotBack { .. } => ErrorCode::Unavailable,
            MinorError::Cancelled => ErrorCode::Cancelled,
            MinorError::Systemd(e) => e.code(),
            MinorError::Registry(e) => e.code(),
            MinorError::Ops(e) => e.code(),
        }
    }
}
