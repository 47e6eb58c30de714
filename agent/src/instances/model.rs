//! The instance registry's domain model. The API converts to and from these types at its edge.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::SystemTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Postgresql,
    Mariadb,
    Redis,
}

impl Engine {
    /// The lower-case name, as in the config (`[backup.postgresql]`) and the state files.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Postgresql => "postgresql",
            Engine::Mariadb => "mariadb",
            Engine::Redis => "redis",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Filesystem {
    #[default]
    Ext4,
    Xfs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSpec {
    /// A block device under an allowed prefix; `None` for an agent-managed sparse file.
    pub device: Option<PathBuf>,
    pub size_bytes: u64,
    pub filesystem: Filesystem,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogSource {
    FileGlob(String),
    JournaldUnit(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlanName {
    Starter,
    Business,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub name: PlanName,
    pub cpu_millis: u32,
    pub memory_bytes: u64,
    pub io_read_iops: u32,
    pub io_write_iops: u32,
    pub io_read_bps: u64,
    pub io_write_bps: u64,
    pub disk_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceWindow {
    pub weekday: Weekday,
    pub start_minute_utc: u32,
    pub duration_minutes: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupPolicy {
    pub daily_at_minute_utc: u32,
    /// Scheduled backups: the newest of each of the last `keep_daily` UTC days is kept.
    pub keep_daily: u32,
    pub enabled: bool,
    /// The newest of each of the last N ISO weeks; `None` (records written before these fields
    /// existed, or a request that left it unset) = the plan's default (`backup::retention`).
    /// Skipped when unset so the record stays what earlier builds wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    /// The newest of each of the last N calendar months; `None` = the plan's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSpec {
    pub engine: Engine,
    pub engine_version: String,
    pub systemd_unit: String,
    pub data_dir: PathBuf,
    pub os_user: String,
    pub volume: VolumeSpec,
    pub log_sources: Vec<LogSource>,
    pub plan: Plan,
    pub maintenance_window: Option<MaintenanceWindow>,
    pub backup_policy: Option<BackupPolicy>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub spec: InstanceSpec,
    #[serde(with = "crate::timefmt")]
    pub created: SystemTime,
    #[serde(with = "crate::timefmt")]
    pub updated: SystemTime,
    pub generation: u64,
}
