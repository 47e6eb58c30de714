//! Flags shared by several commands: idempotency keys, `--watch`, instance specs and plans.

use super::error::CliError;
use super::parse;
use clap::{Args, ValueEnum};
use dbagent_proto::v1 as pb;

/// The idempotency key of a mutating call.
#[derive(Debug, Clone, Args)]
pub struct RequestIdArg {
    /// Idempotency key. Retrying with the same key never repeats the change; when omitted a random one
    /// is generated and printed on stderr so a retry can reuse it.
    #[arg(long, env = "DBAGENTCTL_REQUEST_ID", value_name = "ID")]
    pub request_id: Option<String>,
}

impl RequestIdArg {
    pub fn resolve(&self) -> Result<String, CliError> {
        if let Some(id) = &self.request_id {
            // Checked here too, so a typo is a usage error (exit 2) before anything is sent.
            crate::ids::request_id(id).map_err(|e| CliError::Usage(format!("--request-id: {e}")))?;
            return Ok(id.clone());
        }
        let id = parse::new_request_id().map_err(CliError::Other)?;
        eprintln!("request id: {id} (retry with --request-id {id})");
        Ok(id)
    }
}

/// Flags of mutating calls that start an operation.
#[derive(Debug, Clone, Args)]
pub struct OperationArgs {
    #[command(flatten)]
    pub request: RequestIdArg,
    /// Follow the operation until it finishes, like `operations watch`.
    #[arg(long)]
    pub watch: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineArg {
    Postgresql,
    Mariadb,
    Redis,
}

impl From<EngineArg> for pb::Engine {
    fn from(e: EngineArg) -> Self {
        match e {
            EngineArg::Postgresql => Self::Postgresql,
            EngineArg::Mariadb => Self::Mariadb,
            EngineArg::Redis => Self::Redis,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanArg {
    Starter,
    Business,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FilesystemArg {
    Ext4,
    Xfs,
}

/// Resource limits of a plan. On `instances update` only the given flags change.
#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    /// Plan name.
    #[arg(long, value_enum)]
    pub plan: Option<PlanArg>,
    /// CPU limit in thousandths of a CPU (1000 = one CPU).
    #[arg(long, value_name = "MILLIS")]
    pub cpu_millis: Option<u32>,
    /// Memory limit, e.g. 2GiB.
    #[arg(long, value_name = "SIZE", value_parser = parse::size)]
    pub memory: Option<u64>,
    /// Disk quota, e.g. 20GiB.
    #[arg(long, value_name = "SIZE", value_parser = parse::size)]
    pub disk: Option<u64>,
    /// Read IOPS limit (0 = none).
    #[arg(long, value_name = "N")]
    pub io_read_iops: Option<u32>,
    /// Write IOPS limit (0 = none).
    #[arg(long, value_name = "N")]
    pub io_write_iops: Option<u32>,
    /// Read bandwidth limit per second, e.g. 100MiB (0 = none).
    #[arg(long, value_name = "SIZE", value_parser = parse::size)]
    pub io_read_bps: Option<u64>,
    /// Write bandwidth limit per second (0 = none).
    #[arg(long, value_name = "SIZE", value_parser = parse::size)]
    pub io_write_bps: Option<u64>,
}

impl PlanArgs {
    /// Overrides `base` with the given flags; without a base the name, CPU and memory are required.
    pub fn apply(&self, base: Option<pb::Plan>, missing: &mut Vec<&'static str>) -> pb::Plan {
        if base.is_none() {
            for (given, flag) in [
                (self.plan.is_some(), "--plan"),
                (self.cpu_millis.is_some(), "--cpu-millis"),
                (self.memory.is_some(), "--memory"),
            ] {
                if !given {
                    missing.push(flag);
                }
            }
        }
        let mut plan = base.unwrap_or_default();
        if let Some(name) = self.plan {
            plan.name = match name {
                PlanArg::Starter => pb::PlanName::Starter,
                PlanArg::Business => pb::PlanName::Business,
            } as i32;
        }
        set(&mut plan.cpu_millis, self.cpu_millis);
        set(&mut plan.memory_bytes, self.memory);
        set(&mut plan.disk_bytes, self.disk);
        set(&mut plan.io_read_iops, self.io_read_iops);
        set(&mut plan.io_write_iops, self.io_write_iops);
        set(&mut plan.io_read_bps, self.io_read_bps);
        set(&mut plan.io_write_bps, self.io_write_bps);
        plan
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

/// The instance spec as flags. `register` needs the required ones; `update` changes only what is given.
#[derive(Debug, Clone, Args)]
pub struct InstanceSpecArgs {
    /// Database engine [required for register].
    #[arg(long, value_enum)]
    pub engine: Option<EngineArg>,
    /// Engine major version, e.g. 15, 10.11, 7.0 [required for register].
    #[arg(long, value_name = "VERSION")]
    pub engine_version: Option<String>,
    /// systemd unit that runs the database, e.g. postgresql@15-main.service [required for register].
    #[arg(long, value_name = "UNIT")]
    pub unit: Option<String>,
    /// Absolute path where the volume is mounted [required for register].
    #[arg(long, value_name = "PATH")]
    pub data_dir: Option<String>,
    /// OS user that owns the data directory [required for register].
    #[arg(long, value_name = "USER")]
    pub os_user: Option<String>,
    /// Volume size, e.g. 10GiB [required for register].
    #[arg(long, value_name = "SIZE", value_parser = parse::size)]
    pub volume_size: Option<u64>,
    /// Block device for the volume (under an allowed prefix); omit for an agent-managed sparse file.
    #[arg(long, value_name = "PATH")]
    pub device: Option<String>,
    /// Filesystem of the volume [default: ext4].
    #[arg(long, value_enum)]
    pub filesystem: Option<FilesystemArg>,
    /// Log file or glob to collect (repeatable); on update, log flags replace the whole list.
    #[arg(long, value_name = "GLOB")]
    pub log_file: Vec<String>,
    /// systemd unit whose journal to collect (repeatable).
    #[arg(long, value_name = "UNIT")]
    pub journald_unit: Vec<String>,
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Weekly maintenance window in UTC as DAY@HH:MM+DURATION, e.g. mon@02:00+60m.
    #[arg(long, value_name = "WINDOW", value_parser = parse::maintenance_window)]
    pub maintenance: Option<pb::MaintenanceWindow>,
    /// Daily backup time in UTC (HH:MM); needs --keep-daily unless a policy exists.
    #[arg(long, value_name = "HH:MM", value_parser = parse::time_of_day)]
    pub backup_at: Option<u32>,
    /// How many daily backups to keep (1..365).
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// How many weekly backups to keep (0..260); the plan's default when never given.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// How many monthly backups to keep (0..120); the plan's default when never given.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
}

impl InstanceSpecArgs {
    /// Builds the spec for register (`base` = None) or update (`base` = the current spec).
    pub fn apply(&self, base: Option<pb::InstanceSpec>) -> Result<pb::InstanceSpec, CliError> {
        let registering = base.is_none();
        let mut missing = Vec::new();
        if registering {
            let required = [
                (self.engine.is_some(), "--engine"),
                (self.engine_version.is_some(), "--engine-version"),
                (self.unit.is_some(), "--unit"),
                (self.data_dir.is_some(), "--data-dir"),
                (self.os_user.is_some(), "--os-user"),
                (self.volume_size.is_some(), "--volume-size"),
            ];
            missing.extend(required.into_iter().filter(|(given, _)| !given).map(|(_, flag)| flag));
        }
        let mut spec = base.unwrap_or_default();
        if let Some(e) = self.engine {
            spec.engine = pb::Engine::from(e) as i32;
        }
        set(&mut spec.engine_version, self.engine_version.clone());
        set(&mut spec.systemd_unit, self.unit.clone());
        set(&mut spec.data_dir, self.data_dir.clone());
        set(&mut spec.os_user, self.os_user.clone());
        let mut volume = spec
            .volume
            .take()
            .unwrap_or_else(|| pb::VolumeSpec { filesystem: "ext4".to_owned(), ..Default::default() });
        set(&mut volume.size_bytes, self.volume_size);
        set(&mut volume.device, self.device.clone());
        if let Some(fs) = self.filesystem {
            volume.filesystem = match fs {
                FilesystemArg::Ext4 => "ext4",
                FilesystemArg::Xfs => "xfs",
            }
            .to_owned();
        }
        spec.volume = Some(volume);
        if !self.log_file.is_empty() || !self.journald_unit.is_empty() {
            use pb::log_source::Source;
            let files = self.log_file.iter().map(|g| Source::FileGlob(g.clone()));
            let units = self.journald_unit.iter().map(|u| Source::JournaldUnit(u.clone()));
            spec.log_sources = files.chain(units).map(|s| pb::LogSource { source: Some(s) }).collect();
        }
        spec.plan = Some(self.plan.apply(spec.plan.take(), &mut missing));
        if let Some(window) = self.maintenance {
            spec.maintenance_window = Some(window);
        }
        let retention = self.keep_daily.or(self.keep_weekly).or(self.keep_monthly);
        if self.backup_at.is_some() || retention.is_some() {
            let mut policy = match spec.backup_policy.take() {
                Some(p) => p,
                None if self.backup_at.is_none() => {
                    return Err(CliError::Usage(
                        "--keep-daily, --keep-weekly and --keep-monthly need --backup-at".to_owned(),
                    ));
                }
                None if self.keep_daily.is_none() => {
                    return Err(CliError::Usage("--backup-at needs --keep-daily".to_owned()));
                }
                None => pb::BackupPolicy::default(),
            };
            set(&mut policy.daily_at_minute_utc, self.backup_at);
            set(&mut policy.keep_daily, self.keep_daily);
            policy.keep_weekly = self.keep_weekly.or(policy.keep_weekly);
            policy.keep_monthly = self.keep_monthly.or(policy.keep_monthly);
            policy.enabled = true;
            spec.backup_policy = Some(policy);
        }
        if !missing.is_empty() {
            return Err(CliError::Usage(format!("instances register needs {}", missing.join(", "))));
        }
        Ok(spec)
    }
}
