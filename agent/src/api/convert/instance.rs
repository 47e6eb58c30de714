//! `dbagent.v1` instance messages <-> the instance domain model.
//!
//! Incoming messages are checked for shape only (required messages present, enums known); the
//! semantic rules live in `instances::validate`, which the registry applies to every spec.

use super::timestamp;
use crate::backup::retention::plan_defaults;
use crate::ids::InvalidField;
use crate::instances::model::{
    BackupPolicy, Engine, Filesystem, Instance, InstanceSpec, LogSource, MaintenanceWindow, Plan, PlanName, VolumeSpec,
    Weekday,
};
use dbagent_proto::v1 as pb;
use dbagent_proto::v1::log_source::Source;
use std::path::PathBuf;

pub fn spec_from_proto(spec: Option<pb::InstanceSpec>) -> Result<InstanceSpec, InvalidField> {
    let spec = spec.ok_or_else(|| missing("spec"))?;
    let volume = spec.volume.ok_or_else(|| missing("spec.volume"))?;
    let plan = plan_from_proto("spec.plan", spec.plan)?;
    let plan_name = plan.name;
    let log_sources =
        spec.log_sources.into_iter().enumerate().map(|(i, s)| log_source_from_proto(i, s)).collect::<Result<_, _>>()?;
    Ok(InstanceSpec {
        engine: engine_from_proto(spec.engine)?,
        engine_version: spec.engine_version,
        systemd_unit: spec.systemd_unit,
        data_dir: PathBuf::from(spec.data_dir),
        os_user: spec.os_user,
        volume: VolumeSpec {
            // proto3 strings cannot be absent: empty means "no device, an agent-managed file".
            device: Some(volume.device).filter(|d| !d.is_empty()).map(PathBuf::from),
            size_bytes: volume.size_bytes,
            filesystem: filesystem_from_proto(&volume.filesystem)?,
        },
        log_sources,
        plan,
        maintenance_window: spec
            .maintenance_window
            .map(|w| maintenance_window_from_proto("spec.maintenance_window", w))
            .transpose()?,
        // keep_daily 0 = the plan's default, stored as the number (earlier builds need one there);
        // unset weekly and monthly counts stay unset and follow the plan (`backup::retention`).
        backup_policy: spec.backup_policy.map(|b| BackupPolicy {
            daily_at_minute_utc: b.daily_at_minute_utc,
            keep_daily: if b.keep_daily == 0 { plan_defaults(plan_name).daily } else { b.keep_daily },
            enabled: b.enabled,
            keep_weekly: b.keep_weekly,
            keep_monthly: b.keep_monthly,
        }),
    })
}

/// `field` names the message in the request, for the error about an unknown weekday.
pub fn maintenance_window_from_proto(field: &str, w: pb::MaintenanceWindow) -> Result<MaintenanceWindow, InvalidField> {
    Ok(MaintenanceWindow {
        weekday: weekday_from_proto(&format!("{field}.weekday"), w.weekday)?,
        start_minute_utc: w.start_minute_utc,
        duration_minutes: w.duration_minutes,
    })
}

pub fn maintenance_window_to_proto(w: &MaintenanceWindow) -> pb::MaintenanceWindow {
    pb::MaintenanceWindow {
        weekday: weekday_to_proto(w.weekday) as i32,
        start_minute_utc: w.start_minute_utc,
        duration_minutes: w.duration_minutes,
    }
}

pub fn spec_to_proto(spec: &InstanceSpec) -> pb::InstanceSpec {
    pb::InstanceSpec {
        engine: engine_to_proto(spec.engine) as i32,
        engine_version: spec.engine_version.clone(),
        systemd_unit: spec.systemd_unit.clone(),
        data_dir: spec.data_dir.to_string_lossy().into_owned(),
        os_user: spec.os_user.clone(),
        volume: Some(pb::VolumeSpec {
            device: spec.volume.device.as_ref().map(|d| d.to_string_lossy().into_owned()).unwrap_or_default(),
            size_bytes: spec.volume.size_bytes,
            filesystem: filesystem_name(spec.volume.filesystem).to_owned(),
        }),
        log_sources: spec
            .log_sources
            .iter()
            .map(|s| pb::LogSource {
                source: Some(match s {
                    LogSource::FileGlob(g) => Source::FileGlob(g.clone()),
                    LogSource::JournaldUnit(u) => Source::JournaldUnit(u.clone()),
                }),
            })
            .collect(),
        plan: Some(plan_to_proto(&spec.plan)),
        maintenance_window: spec.maintenance_window.as_ref().map(maintenance_window_to_proto),
        backup_policy: spec.backup_policy.as_ref().map(policy_to_proto),
    }
}

/// The policy as stored: weekly and monthly counts left unset stay unset (they follow the plan, also
/// after a plan change), so a spec read and sent back keeps meaning the same.
pub fn policy_to_proto(b: &BackupPolicy) -> pb::BackupPolicy {
    pb::BackupPolicy {
        daily_at_minute_utc: b.daily_at_minute_utc,
        keep_daily: b.keep_daily,
        enabled: b.enabled,
        keep_weekly: b.keep_weekly,
        keep_monthly: b.keep_monthly,
    }
}

impl From<&Instance> for pb::Instance {
    fn from(i: &Instance) -> Self {
        pb::Instance {
            id: i.id.clone(),
            spec: Some(spec_to_proto(&i.spec)),
            created: Some(timestamp(i.created)),
            updated: Some(timestamp(i.updated)),
            generation: i.generation,
        }
    }
}

fn missing(field: &str) -> InvalidField {
    InvalidField::new(field, "is required")
}

fn engine_from_proto(value: i32) -> Result<Engine, InvalidField> {
    match pb::Engine::try_from(value) {
        Ok(pb::Engine::Postgresql) => Ok(Engine::Postgresql),
        Ok(pb::Engine::Mariadb) => Ok(Engine::Mariadb),
        Ok(pb::Engine::Redis) => Ok(Engine::Redis),
        Ok(pb::Engine::Unspecified) | Err(_) => Err(InvalidField::new(
            "spec.engine",
            format!("{value} is not an engine; use ENGINE_POSTGRESQL, ENGINE_MARIADB or ENGINE_REDIS"),
        )),
    }
}

fn engine_to_proto(engine: Engine) -> pb::Engine {
    match engine {
        Engine::Postgresql => pb::Engine::Postgresql,
        Engine::Mariadb => pb::Engine::Mariadb,
        Engine::Redis => pb::Engine::Redis,
    }
}

/// A plan message, required; `field` names it in the request (`spec.plan`, or `plan` in ChangePlan).
pub fn plan_from_proto(field: &str, plan: Option<pb::Plan>) -> Result<Plan, InvalidField> {
    let plan = plan.ok_or_else(|| InvalidField::new(field, "is required"))?;
    Ok(Plan {
        name: plan_name_from_proto(field, plan.name)?,
        cpu_millis: plan.cpu_millis,
        memory_bytes: plan.memory_bytes,
        io_read_iops: plan.io_read_iops,
        io_write_iops: plan.io_write_iops,
        io_read_bps: plan.io_read_bps,
        io_write_bps: plan.io_write_bps,
        disk_bytes: plan.disk_bytes,
    })
}

fn plan_name_from_proto(field: &str, value: i32) -> Result<PlanName, InvalidField> {
    match pb::PlanName::try_from(value) {
        Ok(pb::PlanName::Starter) => Ok(PlanName::Starter),
        Ok(pb::PlanName::Business) => Ok(PlanName::Business),
        Ok(pb::PlanName::Unspecified) | Err(_) => Err(InvalidField::new(
            format!("{field}.name"),
            format!("{value} is not a plan; use PLAN_NAME_STARTER or PLAN_NAME_BUSINESS"),
        )),
    }
}

pub fn plan_to_proto(plan: &Plan) -> pb::Plan {
    pb::Plan {
        name: plan_name_to_proto(plan.name) as i32,
        cpu_millis: plan.cpu_millis,
        memory_bytes: plan.memory_bytes,
        io_read_iops: plan.io_read_iops,
        io_write_iops: plan.io_write_iops,
        io_read_bps: plan.io_read_bps,
        io_write_bps: plan.io_write_bps,
        disk_bytes: plan.disk_bytes,
    }
}

fn plan_name_to_proto(name: PlanName) -> pb::PlanName {
    match name {
        PlanName::Starter => pb::PlanName::Starter,
        PlanName::Business => pb::PlanName::Business,
    }
}

/// Also used for the maintenance window of the Upgrades service, hence the field parameter.
pub fn weekday_from_proto(field: &str, value: i32) -> Result<Weekday, InvalidField> {
    match pb::Weekday::try_from(value) {
        Ok(pb::Weekday::Monday) => Ok(Weekday::Monday),
        Ok(pb::Weekday::Tuesday) => Ok(Weekday::Tuesday),
        Ok(pb::Weekday::Wednesday) => Ok(Weekday::Wednesday),
        Ok(pb::Weekday::Thursday) => Ok(Weekday::Thursday),
        Ok(pb::Weekday::Friday) => Ok(Weekday::Friday),
        Ok(pb::Weekday::Saturday) => Ok(Weekday::Saturday),
        Ok(pb::Weekday::Sunday) => Ok(Weekday::Sunday),
        Ok(pb::Weekday::Unspecified) | Err(_) => {
            Err(InvalidField::new(field, format!("{value} is not a weekday; use WEEKDAY_MONDAY .. WEEKDAY_SUNDAY")))
        }
    }
}

pub fn weekday_to_proto(day: Weekday) -> pb::Weekday {
    match day {
        Weekday::Monday => pb::Weekday::Monday,
        Weekday::Tuesday => pb::Weekday::Tuesday,
        Weekday::Wednesday => pb::Weekday::Wednesday,
        Weekday::Thursday => pb::Weekday::Thursday,
        Weekday::Friday => pb::Weekday::Friday,
        Weekday::Saturday => pb::Weekday::Saturday,
        Weekday::Sunday => pb::Weekday::Sunday,
    }
}

fn filesystem_from_proto(name: &str) -> Result<Filesystem, InvalidField> {
    match name {
        "" | "ext4" => Ok(Filesystem::Ext4),
        "xfs" => Ok(Filesystem::Xfs),
        other => Err(InvalidField::new(
            "spec.volume.filesystem",
            format!(
                "{:?} is not supported; use \"ext4\" (the default when empty) or \"xfs\"",
                crate::ids::truncate_for_message(other)
            ),
        )),
    }
}

fn filesystem_name(fs: Filesystem) -> &'static str {
    match fs {
        Filesystem::Ext4 => "ext4",
        Filesystem::Xfs => "xfs",
    }
}

fn log_source_from_proto(i: usize, source: pb::LogSource) -> Result<LogSource, InvalidField> {
    match source.source {
        Some(Source::FileGlob(g)) => Ok(LogSource::FileGlob(g)),
        Some(Source::JournaldUnit(u)) => Ok(LogSource::JournaldUnit(u)),
        None => Err(InvalidField::new(format!("spec.log_sources[{i}]"), "must set file_glob or journald_unit")),
    }
}

#[cfg(test)]
#[path = "instance_tests.rs"]
mod tests;
