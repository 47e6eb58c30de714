//! PostgreSQL major upgrades (issue 14): `service` checks a StartUpgrade request and submits the
//! disruptive operation; `job` runs it (check, new cluster, stop, pg_upgrade, switch, health check,
//! analyze) and rolls back to the old cluster on any failure; `plan` is the pure part (versions,
//! cluster names, the new data directory, the copy mode); `server` asks the running servers over
//! their socket; `cluster` drives postgresql-common's clusters and units.

pub mod cluster;
pub mod control;
pub mod health;
pub mod job;
pub mod minor;
pub mod plan;
pub mod recover;
mod restart;
pub mod server;
pub mod service;
pub mod upgrade_port;

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use thiserror::Error;

use crate::error::{ErrorCode, HasErrorCode};

pub use service::UpgradeService;

/// The operation kind in the journal: never rename it.
pub const KIND: &str = "upgrade.postgresql_major";

/// `[upgrade]` in agent.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpgradeConfig {
    /// A major upgrade needs a backup of the instance no older than this (hours), read from the
    /// backup catalog: the way back if the new major misbehaves after the old cluster is gone.
    pub max_backup_age_hours: u64,
    /// Where postgresql-common installs each major's binaries: `<dir>/<major>/bin`.
    pub postgresql_lib_dir: PathBuf,
    /// Where each major's extension control files are: `<dir>/<major>/extension/<name>.control`.
    pub postgresql_share_dir: PathBuf,
    /// postgresql-common's configuration folder: `<dir>/<major>/<cluster>/postgresql.conf`.
    pub postgresql_conf_dir: PathBuf,
    /// How long an upgrade is expected to take, for the maintenance window gate: an upgrade that
    /// does not fit in what is left of the current window waits for the next one.
    pub expected_minutes: u64,
    /// The folder beneath which a minor upgrade's package repository must lie (root's, writable by
    /// no one else): packages are installed from nowhere else.
    pub package_repository_root: PathBuf,
    /// How long a minor upgrade is expected to take (install and restart), for the window gate.
    pub minor_expected_minutes: u64,
    /// How long a server has after a minor upgrade's restart to pass the health check.
    pub minor_health_deadline_secs: u64,
}

impl Default for UpgradeConfig {
    fn default() -> Self {
        Self {
            max_backup_age_hours: 24,
            postgresql_lib_dir: PathBuf::from("/usr/lib/postgresql"),
            postgresql_share_dir: PathBuf::from("/usr/share/postgresql"),
            postgresql_conf_dir: PathBuf::from("/etc/postgresql"),
            expected_minutes: 30,
            package_repository_root: PathBuf::from("/var/lib/dbagent/packages"),
            minor_expected_minutes: 10,
            minor_health_deadline_secs: 120,
        }
    }
}

impl UpgradeConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.max_backup_age_hours == 0 {
            return Err((
                "upgrade.max_backup_age_hours",
                "must be at least 1: an upgrade needs a recent backup".into(),
            ));
        }
        for (key, dir) in [
            ("upgrade.postgresql_lib_dir", &self.postgresql_lib_dir),
            ("upgrade.postgresql_share_dir", &self.postgresql_share_dir),
            ("upgrade.postgresql_conf_dir", &self.postgresql_conf_dir),
            ("upgrade.package_repository_root", &self.package_repository_root),
        ] {
            if !dir.is_absolute() {
                return Err((key, format!("{} must be an absolute folder", dir.display())));
            }
        }
        if self.expected_minutes == 0 || self.expected_minutes > 24 * 60 {
            return Err(("upgrade.expected_minutes", "must be between 1 and 1440".into()));
        }
        if self.package_repository_root.parent().is_none() {
            return Err(("upgrade.package_repository_root", "must be a folder below /, not / itself".into()));
        }
        if self.minor_expected_minutes == 0 || self.minor_expected_minutes > 24 * 60 {
            return Err(("upgrade.minor_expected_minutes", "must be between 1 and 1440".into()));
        }
        if !(5..=3600).contains(&self.minor_health_deadline_secs) {
            return Err(("upgrade.minor_health_deadline_secs", "must be between 5 and 3600".into()));
        }
        Ok(())
    }
}

#[derive(Debug, Error)]
pub enum UpgradeError {
    #[error("{field}: {message}")]
    InvalidRequest { field: &'static str, message: String },
    #[error("{engine} has no major upgrade: the agent upgrades {engine} within its major only (minor upgrades)")]
    EngineNotSupported { engine: &'static str },
    #[error(
        "instance {instance} runs PostgreSQL {current}; {target} is not a newer major (a minor upgrade names \
         {current}); downgrades are never offered"
    )]
    NotNewer { instance: String, current: u32, target: u32 },
    #[error("PostgreSQL {major} is not installed on this host: {missing} is missing (install postgresql-{major})")]
    NotInstalled { major: u32, missing: PathBuf },
    #[error("instance {instance}: {message}")]
    Unsupported { instance: String, message: String },
    #[error(
        "instance {instance} has no backup newer than {max_age_hours} h (upgrade.max_backup_age_hours){newest}; take \
         one (StartBackup) and start the upgrade again"
    )]
    NoRecentBackup { instance: String, max_age_hours: u64, newest: String },
    #[error(
        "extension(s) installed in the old cluster have no control file for PostgreSQL {target}: {missing}; install \
         their packages for {target} (e.g. postgresql-{target}-<name>) or drop them first"
    )]
    ExtensionsMissing { target: u32, missing: String },
    #[error("not enough disk space for the new cluster at {dir}: {needed} bytes needed ({mode}), {free} free")]
    NoSpace { dir: PathBuf, needed: u64, free: u64, mode: &'static str },
    #[error("pg_upgrade --check refused the upgrade; nothing was changed: {reasons}")]
    CheckFailed { reasons: String },
    #[error("{step} failed: {message}")]
    Step { step: &'static str, message: String },
    #[error("the upgrade failed at {step} ({cause}); the old cluster was started again and serves its data")]
    RolledBack { step: &'static str, cause: String },
    #[error(
        "the upgrade failed at {step} ({cause}) and starting the old cluster again failed too ({restart}): the \
         instance is DOWN and needs an operator"
    )]
    RollbackFailed { step: &'static str, cause: String, restart: String },
    #[error("cancelled before the old cluster was stopped; nothing was changed")]
    Cancelled,
    #[error(transparent)]
    Registry(#[from] crate::instances::registry::RegistryError),
    #[error(transparent)]
    Ops(#[from] crate::ops::OpsError),
    #[error(transparent)]
    Minor(#[from] minor::MinorError),
}

impl HasErrorCode for UpgradeError {
    fn code(&self) -> ErrorCode {
        match self {
            UpgradeError::InvalidRequest { .. } => ErrorCode::InvalidArgument,
            UpgradeError::EngineNotSupported { .. } | UpgradeError::NotNewer { .. } => ErrorCode::FailedPrecondition,
            UpgradeError::NotInstalled { .. }
            | UpgradeError::Unsupported { .. }
            | UpgradeError::NoRecentBackup { .. }
            | UpgradeError::ExtensionsMissing { .. }
            | UpgradeError::CheckFailed { .. } => ErrorCode::FailedPrecondition,
            UpgradeError::NoSpace { .. } => ErrorCode::ResourceExhausted,
            UpgradeError::Step { .. } | UpgradeError::RolledBack { .. } => ErrorCode::Aborted,
            UpgradeError::RollbackFailed { .. } => ErrorCode::Internal,
            UpgradeError::Cancelled => ErrorCode::Cancelled,
            UpgradeError::Registry(e) => e.code(),
            UpgradeError::Ops(e) => e.code(),
            UpgradeError::Minor(e) => e.code(),
        }
    }
}
