//! Shared test data: a spec that passes validation, and the rules it passes under.

use super::model::*;
use super::validate::ValidationRules;
use std::path::PathBuf;

pub(crate) const GIB: u64 = 1 << 30;

pub(crate) fn rules() -> ValidationRules {
    ValidationRules {
        data_roots: vec![PathBuf::from("/srv/db"), PathBuf::from("/var/lib/dbagent/data")],
        device_prefixes: vec![PathBuf::from("/dev/disk/by-id/"), PathBuf::from("/dev/vd")],
        log_roots: vec![PathBuf::from("/var/log/postgresql")],
    }
}

/// A valid PostgreSQL spec whose data_dir is `/srv/db/<name>`, without a device.
pub(crate) fn spec(name: &str) -> InstanceSpec {
    InstanceSpec {
        engine: Engine::Postgresql,
        engine_version: "15.4".to_owned(),
        systemd_unit: "postgresql@15-main.service".to_owned(),
        data_dir: PathBuf::from(format!("/srv/db/{name}")),
        os_user: "postgres".to_owned(),
        volume: VolumeSpec { device: None, size_bytes: 10 * GIB, filesystem: Filesystem::Ext4 },
        log_sources: vec![
            LogSource::FileGlob("/var/log/postgresql/*.log".to_owned()),
            LogSource::JournaldUnit("postgresql@15-main.service".to_owned()),
        ],
        plan: Plan {
            name: PlanName::Starter,
            cpu_millis: 2000,
            memory_bytes: 4 * GIB,
            io_read_iops: 3000,
            io_write_iops: 3000,
            io_read_bps: 100 << 20,
            io_write_bps: 100 << 20,
            disk_bytes: 10 * GIB,
        },
        maintenance_window: Some(MaintenanceWindow {
            weekday: Weekday::Sunday,
            start_minute_utc: 120,
            duration_minutes: 60,
        }),
        backup_policy: Some(BackupPolicy {
            daily_at_minute_utc: 180,
            keep_daily: 7,
            enabled: true,
            keep_weekly: None,
            keep_monthly: None,
        }),
    }
}
