//! What a minor upgrade uses, shared by its submission (`service`) and its job (`job`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::host::MinorHost;
use super::packages::Owner;
use super::version::Version;
use crate::health::Prober;
use crate::instances::Registry;
use crate::ops::OperationEngine;
use crate::systemd::ServiceManager;

#[derive(Debug, Clone)]
pub struct MinorSettings {
    /// `[upgrade] package_repository_root`.
    pub repository_root: PathBuf,
    /// For the window gate.
    pub expected: Duration,
    /// How long systemd's restart job may take.
    pub restart_timeout: Duration,
    /// How long the server has after the restart to pass the health check.
    pub health_deadline: Duration,
    /// One probe's deadline.
    pub probe_deadline: Duration,
    /// Who must own the repository's folders and files.
    pub owner: Owner,
}

/// Everything a minor upgrade uses; cheap to clone into each job.
#[derive(Clone)]
pub struct MinorUpgrades {
    pub registry: Arc<Registry>,
    pub operations: OperationEngine,
    pub prober: Arc<dyn Prober>,
    pub services: Arc<dyn ServiceManager>,
    pub host: Arc<dyn MinorHost>,
    pub settings: MinorSettings,
    /// One install at a time on the host: apt holds dpkg's lock and the policy-rc.d is shared.
    pub install_lock: Arc<tokio::sync::Mutex<()>>,
}

/// What the checks made of a request, stored in the operation's parameters (the re-arm reads them).
#[derive(Debug, Clone)]
pub struct Checked {
    pub major: Version,
    pub exact: Option<Version>,
    /// The folder (absolute) and its part beneath the root, or none.
    pub repository: Option<(PathBuf, PathBuf)>,
    pub packages: Vec<String>,
}
