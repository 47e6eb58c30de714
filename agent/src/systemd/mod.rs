//! systemd's service manager, behind a small trait: runtime unit properties (resource limits),
//! a unit's main PID and state, and reload/restart jobs waited for to their end. The real one
//! speaks systemd's D-Bus API (`dbus`); the in-memory one (`memory`) lets the plan change and,
//! later, upgrades be tested without systemd.

pub mod dbus;
pub mod memory;

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

pub use dbus::DbusServiceManager;
pub use memory::InMemoryServiceManager;

/// A property of `org.freedesktop.systemd1.Manager.SetUnitProperties`, typed so that its D-Bus
/// signature cannot be wrong. `u64::MAX` is systemd's "no limit" for every limit here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitProperty {
    /// CPU time per second of wall time, in microseconds: 1_000_000 = one CPU (`CPUQuota=100%`).
    CpuQuotaPerSecUsec(u64),
    /// Relative CPU share against other units, 1..=10000 (systemd's default 100).
    CpuWeight(u64),
    MemoryMax(u64),
    MemoryHigh(u64),
    /// Per block device (a `/dev` path): bytes per second.
    IoReadBandwidthMax(PathBuf, u64),
    IoWriteBandwidthMax(PathBuf, u64),
    /// Per block device: operations per second.
    IoReadIopsMax(PathBuf, u64),
    IoWriteIopsMax(PathBuf, u64),
}

impl UnitProperty {
    /// The property's name on the D-Bus API (and in `systemctl set-property`).
    pub fn name(&self) -> &'static str {
        match self {
            UnitProperty::CpuQuotaPerSecUsec(_) => "CPUQuotaPerSecUSec",
            UnitProperty::CpuWeight(_) => "CPUWeight",
            UnitProperty::MemoryMax(_) => "MemoryMax",
            UnitProperty::MemoryHigh(_) => "MemoryHigh",
            UnitProperty::IoReadBandwidthMax(..) => "IOReadBandwidthMax",
            UnitProperty::IoWriteBandwidthMax(..) => "IOWriteBandwidthMax",
            UnitProperty::IoReadIopsMax(..) => "IOReadIOPSMax",
            UnitProperty::IoWriteIopsMax(..) => "IOWriteIOPSMax",
        }
    }

    /// The value as the operation's result and `plan show` report it ("max" for no limit).
    pub fn shown(&self) -> String {
        let n = |v: u64| if v == u64::MAX { "max".to_owned() } else { v.to_string() };
        match self {
            UnitProperty::CpuQuotaPerSecUsec(v)
            | UnitProperty::CpuWeight(v)
            | UnitProperty::MemoryMax(v)
            | UnitProperty::MemoryHigh(v) => n(*v),
            UnitProperty::IoReadBandwidthMax(d, v)
            | UnitProperty::IoWriteBandwidthMax(d, v)
            | UnitProperty::IoReadIopsMax(d, v)
            | UnitProperty::IoWriteIopsMax(d, v) => format!("{} {}", d.display(), n(*v)),
        }
    }
}

/// How a unit job ended, as systemd's `JobRemoved` signal says it.
#[derive(Debug, Error)]
pub enum SystemdError {
    #[error("connect to systemd over D-Bus (the system bus): {0}")]
    Connect(String),
    #[error("systemd refused {method} for unit {unit}: {message}")]
    Call { method: &'static str, unit: String, message: String },
    #[error("unit {unit} is not loaded in systemd; check the instance's systemd_unit")]
    NoSuchUnit { unit: String },
    #[error("{verb} of unit {unit} ended with result {result:?} (see `journalctl -u {unit}`)")]
    JobFailed { verb: &'static str, unit: String, result: String },
    #[error("{verb} of unit {unit} did not finish within {timeout:?}")]
    JobTimeout { verb: &'static str, unit: String, timeout: Duration },
}

impl crate::error::HasErrorCode for SystemdError {
    fn code(&self) -> crate::error::ErrorCode {
        use crate::error::ErrorCode as C;
        match self {
            SystemdError::Connect(_) => C::Unavailable,
            SystemdError::NoSuchUnit { .. } | SystemdError::JobFailed { .. } => C::FailedPrecondition,
            SystemdError::JobTimeout { .. } => C::Aborted,
            SystemdError::Call { .. } => C::Internal,
        }
    }
}

/// systemd's service manager, as the agent uses it. Reusable beyond plan changes: upgrades
/// restart units through it.
#[async_trait::async_trait]
pub trait ServiceManager: Send + Sync {
    /// Sets `props` on a loaded unit; `runtime`: until the next reboot only (systemd keeps them in
    /// `/run`), not written to `/etc`: the agent applies the plan again at every change.
    async fn set_unit_properties(&self, unit: &str, runtime: bool, props: &[UnitProperty]) -> Result<(), SystemdError>;

    /// The unit's main process (0: none, the unit is not running).
    async fn main_pid(&self, unit: &str) -> Result<u32, SystemdError>;

    /// `active`, `inactive`, `failed`, `activating`, ...
    async fn active_state(&self, unit: &str) -> Result<String, SystemdError>;

    /// `ReloadUnit(unit, "replace")`, waited for until the job is removed (or `timeout`).
    async fn reload_unit(&self, unit: &str, timeout: Duration) -> Result<(), SystemdError>;

    /// `RestartUnit(unit, "replace")`, waited for until the job is removed (or `timeout`).
    async fn restart_unit(&self, unit: &str, timeout: Duration) -> Result<(), SystemdError>;
}
