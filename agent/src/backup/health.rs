//! What the backup scheduler learned at its last pass, for alerting metrics and GetStatus: per
//! instance the last good backup, the degraded ones and the copies of the newest; per destination
//! whether it answered. Filled from the listing the scheduler does anyway, so a scrape or a status
//! call never lists a destination.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

use super::catalog::{BackupInfo, BackupState};

/// One instance as of the scheduler's last pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceHealth {
    /// Finish time of the newest backup complete on every destination.
    pub last_good: Option<SystemTime>,
    pub degraded: u64,
    pub newest_id: Option<String>,
    /// Destinations holding a complete copy of the newest backup.
    pub newest_copies: Vec<String>,
    pub checked: SystemTime,
}

impl InstanceHealth {
    /// From the merged listing (oldest first). Only backups whose manifest authenticated
    /// (`authentic`) can be the last good or the newest one: a manifest planted in storage must not
    /// silence the age alert.
    pub fn from_listing(backups: &[BackupInfo], authentic: &dyn Fn(&str) -> bool, checked: SystemTime) -> Self {
        let mut real = backups.iter().filter(|b| authentic(&b.manifest.backup_id));
        let last_good = real.clone().rev().find(|b| b.state == BackupState::Complete).map(|b| b.manifest.finished);
        let newest = real.next_back();
        Self {
            last_good,
            degraded: backups.iter().filter(|b| b.state == BackupState::Degraded).count() as u64,
            newest_id: newest.map(|b| b.manifest.backup_id.clone()),
            newest_copies: newest.map(|b| b.healthy_destinations().map(str::to_owned).collect()).unwrap_or_default(),
            checked,
        }
    }
}

/// One destination: reachable at the last check, and how many checks failed since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationHealth {
    pub reachable: bool,
    pub failed_checks: u64,
    pub last_error: Option<String>,
}

#[derive(Default)]
pub struct BackupHealth {
    instances: Mutex<BTreeMap<String, InstanceHealth>>,
    destinations: Mutex<BTreeMap<String, DestinationHealth>>,
}

impl BackupHealth {
    pub fn record_instance(&self, instance_id: &str, health: InstanceHealth) {
        self.instances.lock().unwrap_or_else(|e| e.into_inner()).insert(instance_id.to_owned(), health);
    }

    /// One check of `destination`: `Err` with the reason when it could not be listed.
    pub fn record_check(&self, destination: &str, result: Result<(), String>) {
        let mut map = self.destinations.lock().unwrap_or_else(|e| e.into_inner());
        let d = map.entry(destination.to_owned()).or_default();
        match result {
            Ok(()) => {
                d.reachable = true;
                d.last_error = None;
            }
            Err(e) => {
                d.reachable = false;
                d.failed_checks += 1;
                d.last_error = Some(e);
            }
        }
    }

    /// Drops instances no longer registered.
    pub fn retain_instances(&self, keep: &dyn Fn(&str) -> bool) {
        self.instances.lock().unwrap_or_else(|e| e.into_inner()).retain(|id, _| keep(id));
    }

    pub fn instances(&self) -> BTreeMap<String, InstanceHealth> {
        self.instances.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn instance(&self, id: &str) -> Option<InstanceHealth> {
        self.instances.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    pub fn destinations(&self) -> BTreeMap<String, DestinationHealth> {
        self.destinations.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
