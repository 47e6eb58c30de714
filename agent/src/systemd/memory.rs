//! The in-memory [`ServiceManager`]: units with properties, a main PID and a state, so plan
//! changes (and restarts) are tested without systemd. A restart gives the unit a new PID, a
//! reload keeps it, as systemd does; a unit can be set to refuse its next properties or job.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use super::{ServiceManager, SystemdError, UnitProperty};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitState {
    /// Property name -> value as [`UnitProperty::shown`] gives it; one entry per device for I/O.
    pub properties: BTreeMap<String, String>,
    pub main_pid: u32,
    pub active_state: String,
    pub reloads: u32,
    pub restarts: u32,
    /// The next job of this unit ends with this result instead of "done".
    pub fail_next_job: Option<String>,
}

#[derive(Default)]
pub struct InMemoryServiceManager {
    units: Mutex<HashMap<String, UnitState>>,
    next_pid: Mutex<u32>,
}

impl InMemoryServiceManager {
    pub fn new() -> Self {
        Self { units: Mutex::default(), next_pid: Mutex::new(1000) }
    }

    fn units(&self) -> std::sync::MutexGuard<'_, HashMap<String, UnitState>> {
        self.units.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn new_pid(&self) -> u32 {
        let mut pid = self.next_pid.lock().unwrap_or_else(|p| p.into_inner());
        *pid += 1;
        *pid
    }

    /// Loads a running unit.
    pub fn add_running(&self, unit: &str) {
        let pid = self.new_pid();
        self.units().insert(
            unit.to_owned(),
            UnitState { main_pid: pid, active_state: "active".into(), ..UnitState::default() },
        );
    }

    pub fn unit(&self, unit: &str) -> Option<UnitState> {
        self.units().get(unit).cloned()
    }

    pub fn fail_next_job(&self, unit: &str, result: &str) {
        if let Some(u) = self.units().get_mut(unit) {
            u.fail_next_job = Some(result.to_owned());
        }
    }

    fn with_unit<T>(&self, unit: &str, f: impl FnOnce(&mut UnitState) -> T) -> Result<T, SystemdError> {
        self.units().get_mut(unit).map(f).ok_or_else(|| SystemdError::NoSuchUnit { unit: unit.to_owned() })
    }

    fn job(&self, unit: &str, verb: &'static str, restart: bool) -> Result<(), SystemdError> {
        let pid = self.new_pid();
        self.with_unit(unit, |u| {
            if let Some(result) = u.fail_next_job.take() {
                u.active_state = "failed".into();
                u.main_pid = 0;
                return Err(SystemdError::JobFailed { verb, unit: unit.to_owned(), result });
            }
            if restart {
                u.restarts += 1;
                u.main_pid = pid;
            } else {
                u.reloads += 1;
            }
            u.active_state = "active".into();
            Ok(())
        })?
    }
}

#[async_trait::async_trait]
impl ServiceManager for InMemoryServiceManager {
    async fn set_unit_properties(
        &self,
        unit: &str,
        _runtime: bool,
        props: &[UnitProperty],
    ) -> Result<(), SystemdError> {
        self.with_unit(unit, |u| {
            for p in props {
                let key = match p {
                    UnitProperty::IoReadBandwidthMax(d, _)
                    | UnitProperty::IoWriteBandwidthMax(d, _)
                    | UnitProperty::IoReadIopsMax(d, _)
                    | UnitProperty::IoWriteIopsMax(d, _) => format!("{} {}", p.name(), d.display()),
                    _ => p.name().to_owned(),
                };
                let value = p.shown();
                let value = value.rsplit(' ').next().unwrap_or_default().to_owned();
                u.properties.insert(key, value);
            }
        })
    }

    async fn main_pid(&self, unit: &str) -> Result<u32, SystemdError> {
        self.with_unit(unit, |u| u.main_pid)
    }

    async fn active_state(&self, unit: &str) -> Result<String, SystemdError> {
        self.with_unit(unit, |u| u.active_state.clone())
    }

    async fn reload_unit(&self, unit: &str, _timeout: Duration) -> Result<(), SystemdError> {
        self.job(unit, "reload", false)
    }

    async fn restart_unit(&self, unit: &str, _timeout: Duration) -> Result<(), SystemdError> {
        self.job(unit, "restart", true)
    }
}
