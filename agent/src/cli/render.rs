//! JSON views of the API messages, built by hand so the output is stable for scripts: enums as
//! lower-case names, timestamps as RFC 3339, absent messages as `null`.

use dbagent_proto::v1 as pb;
use prost_types::{Duration as PbDuration, Timestamp};
use serde_json::{Value, json};
use std::time::SystemTime;

pub trait ToJson {
    fn to_json(&self) -> Value;
}

/// Lower-case enum names without the proto prefix ("ENGINE_POSTGRESQL" -> "postgresql"); values this
/// client does not know yet (a newer server) stay visible as `unknown(N)`.
macro_rules! enum_name {
    ($fn:ident, $ty:ty, $prefix:literal) => {
        pub fn $fn(value: i32) -> String {
            match <$ty>::try_from(value) {
                Ok(v) => v.as_str_name().strip_prefix($prefix).unwrap_or(v.as_str_name()).to_ascii_lowercase(),
                Err(_) => format!("unknown({value})"),
            }
        }
    };
}
enum_name!(engine_name, pb::Engine, "ENGINE_");
enum_name!(plan_name, pb::PlanName, "PLAN_NAME_");
enum_name!(weekday_name, pb::Weekday, "WEEKDAY_");
enum_name!(op_state_name, pb::OperationState, "OPERATION_STATE_");
enum_name!(severity_name, pb::Severity, "SEVERITY_");
enum_name!(backup_kind_name, pb::BackupKind, "BACKUP_KIND_");
enum_name!(backup_method_name, pb::BackupMethod, "BACKUP_METHOD_");
enum_name!(backup_state_name, pb::BackupState, "BACKUP_STATE_");

/// RFC 3339 with milliseconds; `None` for a missing or out-of-range timestamp.
pub fn time_text(t: Option<&Timestamp>) -> Option<String> {
    let t = SystemTime::try_from(*t?).ok()?;
    Some(humantime::format_rfc3339_millis(t).to_string())
}

fn time(t: Option<&Timestamp>) -> Value {
    time_text(t).map_or(Value::Null, Value::String)
}

pub fn duration_text(d: Option<&PbDuration>) -> Option<String> {
    let d = std::time::Duration::try_from(*d?).ok()?;
    // Whole seconds: nanoseconds of uptime are noise to a reader.
    Some(humantime::format_duration(std::time::Duration::from_secs(d.as_secs())).to_string())
}

/// `HH:MM` from minutes after midnight UTC.
pub fn minute_text(minute: u32) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

fn list<T: ToJson>(items: &[T]) -> Value {
    Value::Array(items.iter().map(ToJson::to_json).collect())
}

fn opt<T: ToJson>(item: Option<&T>) -> Value {
    item.map_or(Value::Null, ToJson::to_json)
}

impl ToJson for pb::AgentInfo {
    fn to_json(&self) -> Value {
        json!({
            "version": self.version, "hostname": self.hostname, "capabilities": self.capabilities,
            "config_digest": self.config_digest, "dev_mode": self.dev_mode,
            "caller_identity": self.caller_identity, "caller_role": self.caller_role,
            "host": self.host.as_ref().map(|h| json!({
                "os_name": h.os_name, "os_version": h.os_version, "kernel_version": h.kernel_version,
                "cpu_model": h.cpu_model, "cpu_count": h.cpu_count, "memory_bytes": h.memory_bytes,
            })),
        })
    }
}

impl ToJson for pb::AgentStatus {
    fn to_json(&self) -> Value {
        let uptime = self.uptime.as_ref().and_then(|d| std::time::Duration::try_from(*d).ok());
        json!({
            "state": self.state, "started": time(self.started.as_ref()),
            "uptime_seconds": uptime.map(|d| d.as_secs_f64()),
            "instance_count": self.instance_count, "open_operations": self.open_operations,
            "volumes_simulated": self.volumes_simulated,
            "quarantined": self.quarantined.iter().map(|q| json!({
                "instance_id": q.instance_id, "record": q.record, "file": q.file, "reason": q.reason,
            })).collect::<Vec<_>>(),
            "backup_redundancy": self.backup_redundancy.iter().map(|r| json!({
                "instance_id": r.instance_id, "destinations": r.destinations,
                "off_host_destinations": r.off_host_destinations, "on_host_accepted": r.on_host_accepted,
                "newest_backup_id": r.newest_backup_id, "newest_backup_copies": r.newest_backup_copies,
                "newest_backup_off_host_copies": r.newest_backup_off_host_copies,
                "last_good_backup": time(r.last_good_backup.as_ref()), "degraded_backups": r.degraded_backups,
                "checked": time(r.checked.as_ref()),
            })).collect::<Vec<_>>(),
            "expiring_certificates": self.expiring_certificates.iter().map(|c| json!({
                "instance_id": c.instance_id, "not_after": time(c.not_after.as_ref()),
                "seconds_left": c.seconds_left, "message": c.message,
            })).collect::<Vec<_>>(),
        })
    }
}

impl ToJson for pb::Operation {
    fn to_json(&self) -> Value {
        // Embed the kind-specific result as JSON when it is JSON, so `jq .result.x` works.
        let result = if self.result_json.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&self.result_json).unwrap_or_else(|_| Value::String(self.result_json.clone()))
        };
        json!({
            "id": self.id, "request_id": self.request_id, "kind": self.kind, "target": self.target,
            "state": op_state_name(self.state),
            "progress": self.progress.as_ref().map(|p| json!({
                "done": p.done, "total": p.total, "unit": p.unit, "message": p.message,
            })),
            "created": time(self.created.as_ref()), "started": time(self.started.as_ref()),
            "finished": time(self.finished.as_ref()),
            "error": self.error.as_ref().map(|e| json!({"code": e.code, "message": e.message})),
            "result": result, "cancel_requested": self.cancel_requested,
            "submitted_by": self.submitted_by.as_ref().map(|s| json!({
                "identity": s.identity, "subject": s.subject, "role": s.role,
            })),
            "window_start": time(self.window_start.as_ref()), "window_end": time(self.window_end.as_ref()),
            "overrunning": self.overrunning,
        })
    }
}

impl ToJson for pb::ListOperationsResponse {
    fn to_json(&self) -> Value {
        json!({ "operations": list(&self.operations) })
    }
}

impl ToJson for pb::Plan {
    fn to_json(&self) -> Value {
        json!({
            "name": plan_name(self.name), "cpu_millis": self.cpu_millis, "memory_bytes": self.memory_bytes,
            "io_read_iops": self.io_read_iops, "io_write_iops": self.io_write_iops,
            "io_read_bps": self.io_read_bps, "io_write_bps": self.io_write_bps, "disk_bytes": self.disk_bytes,
        })
    }
}

impl ToJson for pb::MaintenanceWindow {
    fn to_json(&self) -> Value {
        json!({
            "weekday": weekday_name(self.weekday), "start_utc": minute_text(self.start_minute_utc),
            "duration_minutes": self.duration_minutes,
        })
    }
}

impl ToJson for pb::BackupPolicy {
    fn to_json(&self) -> Value {
        json!({
            "daily_at_utc": minute_text(self.daily_at_minute_utc),
            "keep_daily": self.keep_daily,
            "keep_weekly": self.keep_weekly,
            "keep_monthly": self.keep_monthly,
            "enabled": self.enabled,
        })
    }
}

impl ToJson for pb::LogSource {
    fn to_json(&self) -> Value {
        use pb::log_source::Source;
        match &self.source {
            Some(Source::FileGlob(g)) => json!({ "file_glob": g }),
            Some(Source::JournaldUnit(u)) => json!({ "journald_unit": u }),
            None => Value::Null,
        }
    }
}

impl ToJson for pb::InstanceSpec {
    fn to_json(&self) -> Value {
        json!({
            "engine": engine_name(self.engine), "engine_version": self.engine_version,
            "systemd_unit": self.systemd_unit, "data_dir": self.data_dir, "os_user": self.os_user,
            "volume": self.volume.as_ref().map(|v| json!({
                "device": if v.device.is_empty() { Value::Null } else { json!(v.device) },
                "size_bytes": v.size_bytes, "filesystem": v.filesystem,
            })),
            "log_sources": list(&self.log_sources), "plan": opt(self.plan.as_ref()),
            "maintenance_window": opt(self.maintenance_window.as_ref()),
            "backup_policy": opt(self.backup_policy.as_ref()),
        })
    }
}

impl ToJson for pb::Instance {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id, "spec": opt(self.spec.as_ref()), "created": time(self.created.as_ref()),
            "updated": time(self.updated.as_ref()), "generation": self.generation,
        })
    }
}

impl ToJson for pb::ListInstancesResponse {
    fn to_json(&self) -> Value {
        json!({ "instances": list(&self.instances) })
    }
}

impl ToJson for pb::Volume {
    fn to_json(&self) -> Value {
        json!({
            "instance_id": self.instance_id, "backing": self.backing, "mapper_path": self.mapper_path,
            "active": self.active, "mounted": self.mounted, "cipher": self.cipher, "key_bits": self.key_bits,
            "sector_size": self.sector_size, "size_bytes": self.size_bytes, "fs_size_bytes": self.fs_size_bytes,
            "fs_used_bytes": self.fs_used_bytes, "filesystem": self.filesystem, "flags": self.flags,
        })
    }
}

impl ToJson for pb::ListVolumesResponse {
    fn to_json(&self) -> Value {
        json!({ "volumes": list(&self.volumes) })
    }
}

impl ToJson for pb::MetricSnapshot {
    fn to_json(&self) -> Value {
        let samples: Vec<Value> = self
            .samples
            .iter()
            .map(|s| {
                // Sorted so that equal snapshots print identically.
                let labels: serde_json::Map<String, Value> =
                    sorted_labels(s).into_iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                json!({ "name": s.name, "labels": labels, "value": s.value, "counter": s.counter })
            })
            .collect();
        json!({
            "time": time(self.time.as_ref()),
            "instance_id": if self.instance_id.is_empty() { Value::Null } else { json!(self.instance_id) },
            "samples": samples,
        })
    }
}

pub fn sorted_labels(sample: &pb::Sample) -> Vec<(&String, &String)> {
    let mut labels: Vec<_> = sample.labels.iter().collect();
    labels.sort();
    labels
}

impl ToJson for pb::MetricSeries {
    fn to_json(&self) -> Value {
        json!({ "snapshots": list(&self.snapshots) })
    }
}

impl ToJson for pb::LogRecord {
    fn to_json(&self) -> Value {
        json!({
            "time": time(self.time.as_ref()), "instance_id": self.instance_id, "source": self.source,
            "severity": severity_name(self.severity), "message": self.message, "missed_before": self.missed_before,
        })
    }
}

impl ToJson for pb::Drain {
    fn to_json(&self) -> Value {
        use pb::drain::Target;
        let target = match &self.target {
            Some(Target::Syslog(s)) => {
                json!({ "syslog": { "address": s.address, "tls": s.tls, "has_ca": !s.ca_pem.is_empty() } })
            }
            Some(Target::Https(h)) => json!({ "https": { "url": h.url, "has_ca": !h.ca_pem.is_empty() } }),
            None => Value::Null,
        };
        json!({ "name": self.name, "target": target })
    }
}

impl ToJson for pb::ListDrainsResponse {
    fn to_json(&self) -> Value {
        json!({ "drains": list(&self.drains) })
    }
}

impl ToJson for pb::DrainStatus {
    fn to_json(&self) -> Value {
        json!({
            "drain": self.drain, "buffered_bytes": self.buffered_bytes, "dropped_records": self.dropped_records,
            "last_ack": time(self.last_ack.as_ref()), "last_error": self.last_error,
            "buffer_error": self.buffer_error, "buffer_write_failures": self.buffer_write_failures,
            "corrupt_frames": self.corrupt_frames, "refused_files": self.refused_files,
        })
    }
}

impl ToJson for pb::Backup {
    fn to_json(&self) -> Value {
        let destinations: Vec<Value> = self
            .destinations
            .iter()
            .map(|d| {
                json!({
                    "name": d.name, "state": d.state, "bytes": d.bytes, "error": d.error,
                    "authenticated": d.authenticated, "authentication_error": d.authentication_error,
                })
            })
            .collect();
        let key_wraps: Vec<Value> =
            self.key_wraps.iter().map(|k| json!({ "wrapper": k.wrapper, "key_id": k.key_id })).collect();
        json!({
            "id": self.id, "instance_id": self.instance_id, "kind": backup_kind_name(self.kind),
            "method": backup_method_name(self.method), "state": backup_state_name(self.state),
            "size_bytes": self.size_bytes, "stored_bytes": self.stored_bytes, "sha256": self.sha256,
            "destinations": destinations, "created": time(self.created.as_ref()),
            "expires": time(self.expires.as_ref()), "engine_version": self.engine_version,
            "authenticated": self.authenticated, "authentication_error": self.authentication_error,
            "key_wraps": key_wraps,
        })
    }
}

impl ToJson for pb::ListBackupsResponse {
    fn to_json(&self) -> Value {
        json!({
            "backups": list(&self.backups), "last_drill": self.last_drill.as_ref().map(ToJson::to_json),
            "instance_ids": self.instance_ids, "destination_errors": self.destination_errors,
            "truncated": self.truncated,
        })
    }
}

impl ToJson for pb::BackupDrill {
    fn to_json(&self) -> Value {
        json!({
            "operation_id": self.operation_id, "backup_id": self.backup_id, "ok": self.ok, "reason": self.reason,
            "database": self.database, "table": self.table, "rows": self.rows, "duration_ms": self.duration_ms,
            "finished": time(self.finished.as_ref()), "last_success": time(self.last_success.as_ref()),
            "failures_total": self.failures_total,
        })
    }
}

impl ToJson for pb::Availability {
    fn to_json(&self) -> Value {
        json!({
            "instance_id": self.instance_id, "month": self.month, "objective_percent": self.objective_percent,
            "allowed_downtime_seconds": self.allowed_downtime_seconds, "downtime_seconds": self.downtime_seconds,
            "last_probe": time(self.last_probe.as_ref()), "healthy": self.healthy,
            "uptime_percent": self.uptime_percent, "unplanned_downtime_seconds": self.unplanned_downtime_seconds,
            "planned_downtime_seconds": self.planned_downtime_seconds, "unknown_seconds": self.unknown_seconds,
            "month_seconds": self.month_seconds, "measured_seconds": self.measured_seconds,
            "budget_left_seconds": self.budget_left_seconds, "budget_used_ratio": self.budget_used_ratio,
            "complete": self.complete, "picture": self.picture,
        })
    }
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
