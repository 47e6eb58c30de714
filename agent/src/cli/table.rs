//! Human views of the API messages: aligned columns for lists, `key: value` blocks for single objects.

use super::render::{
    backup_kind_name, backup_method_name, backup_state_name, duration_text, engine_name, minute_text, op_state_name,
    plan_name, severity_name, sorted_labels, time_text, weekday_name,
};
use dbagent_proto::v1 as pb;

pub trait ToTable {
    fn to_table(&self) -> String;
}

/// Left-aligned columns separated by two spaces; the last column is not padded so lines do not end
/// in blanks.
pub fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            out.push_str(cell);
            if i < last {
                out.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `key: value` lines with the values aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs.iter().map(|(k, v)| format!("{k}:{}{v}\n", " ".repeat(width - k.len() + 1))).collect()
}

/// Binary units, as the flags take them.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract() == 0.0 {
        format!("{value} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn or_dash(s: Option<String>) -> String {
    s.filter(|s| !s.is_empty()).unwrap_or_else(|| "-".to_owned())
}

pub fn progress_text(p: Option<&pb::Progress>) -> String {
    let Some(p) = p else { return "-".to_owned() };
    let amount = match (p.total, p.unit.as_str()) {
        (0, _) if p.done == 0 => String::new(),
        (0, "bytes") => bytes(p.done),
        (0, unit) => format!("{} {unit}", p.done),
        (total, "bytes") => format!("{}/{} ({}%)", bytes(p.done), bytes(total), p.done.saturating_mul(100) / total),
        (total, unit) => format!("{}/{total} {unit} ({}%)", p.done, p.done.saturating_mul(100) / total),
    };
    or_dash(Some([amount, p.message.clone()].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ")))
}

impl ToTable for pb::AgentInfo {
    fn to_table(&self) -> String {
        // An agent older than the host inventory sends none.
        let host = self.host.as_ref();
        fields(&[
            ("version", self.version.clone()),
            ("hostname", self.hostname.clone()),
            ("capabilities", or_dash(Some(self.capabilities.join(", ")))),
            ("config digest", or_dash(Some(self.config_digest.clone()))),
            ("dev mode", self.dev_mode.to_string()),
            ("you are", format!("{} (role {})", self.caller_identity, or_dash(Some(self.caller_role.clone())))),
            ("os", or_dash(host.map(|h| format!("{} {}", h.os_name, h.os_version).trim().to_owned()))),
            ("kernel", or_dash(host.map(|h| h.kernel_version.clone()))),
            ("cpus", or_dash(host.map(|h| format!("{} x {}", h.cpu_count, or_dash(Some(h.cpu_model.clone())))))),
            ("memory", or_dash(host.map(|h| bytes(h.memory_bytes)))),
        ])
    }
}

/// Leads `dbagentctl status` when the volumes are in-memory stand-ins, so nobody takes that agent for
/// one that stores data.
pub const SIMULATED_VOLUMES_WARNING: &str =
    "WARNING: volumes are simulated in memory (dbagent --dev --sim): no disk is encrypted or written";

impl ToTable for pb::AgentStatus {
    fn to_table(&self) -> String {
        let mut out = String::new();
        if self.volumes_simulated {
            out.push_str(SIMULATED_VOLUMES_WARNING);
            out.push('\n');
        }
        out + &fields(&[
            ("state", self.state.clone()),
            ("started", or_dash(time_text(self.started.as_ref()))),
            ("uptime", or_dash(duration_text(self.uptime.as_ref()))),
            ("instances", self.instance_count.to_string()),
            ("open operations", self.open_operations.to_string()),
        ]) + &self
            .quarantined
            .iter()
            .map(|q| {
                format!("QUARANTINED: instance {} ({} record {}: {})\n", q.instance_id, q.record, q.file, q.reason)
            })
            .collect::<String>()
            + &self.backup_redundancy.iter().map(redundancy_line).collect::<String>()
            + &self.expiring_certificates.iter().map(|c| format!("WARNING: {}\n", c.message)).collect::<String>()
    }
}

/// One instance's backup redundancy: how many copies would survive the loss of this host.
fn redundancy_line(r: &pb::BackupRedundancy) -> String {
    let warning = if r.off_host_destinations >= 2 {
        ""
    } else if r.on_host_accepted {
        " (accepted: backups die with this host)"
    } else {
        " (backups refused: fewer than two destinations off the host)"
    };
    let newest = if r.newest_backup_id.is_empty() {
        "no backup yet".to_owned()
    } else {
        format!(
            "newest {} on {} destinations, {} off the host",
            r.newest_backup_id, r.newest_backup_copies, r.newest_backup_off_host_copies
        )
    };
    format!(
        "backups of {}: {} of {} destinations off the host{warning}; {newest}; last good {}; {} degraded\n",
        r.instance_id,
        r.off_host_destinations,
        r.destinations,
        or_dash(time_text(r.last_good_backup.as_ref())),
        r.degraded_backups
    )
}

impl ToTable for pb::Operation {
    fn to_table(&self) -> String {
        let mut pairs = vec![
            ("id", self.id.clone()),
            ("kind", self.kind.clone()),
            ("target", self.target.clone()),
            ("state", op_state_name(self.state) + if self.cancel_requested { " (cancel requested)" } else { "" }),
            ("progress", progress_text(self.progress.as_ref())),
            ("request id", or_dash(Some(self.request_id.clone()))),
            ("created", or_dash(time_text(self.created.as_ref()))),
            ("started", or_dash(time_text(self.started.as_ref()))),
            ("finished", or_dash(time_text(self.finished.as_ref()))),
            (
                "submitted by",
                self.submitted_by.as_ref().map_or_else(|| "-".to_owned(), |s| format!("{} ({})", s.subject, s.role)),
            ),
        ];
        if let Some(start) = time_text(self.window_start.as_ref()) {
            pairs.push(("waits for window", start));
        }
        if let Some(end) = time_text(self.window_end.as_ref()) {
            pairs.push(("window ends", end + if self.overrunning { " (overrunning)" } else { "" }));
        }
        if let Some(e) = &self.error {
            pairs.push(("error", format!("{}: {}", e.code, e.message)));
        }
        if !self.result_json.is_empty() {
            pairs.push(("result", self.result_json.clone()));
        }
        fields(&pairs)
    }
}

impl ToTable for pb::ListOperationsResponse {
    fn to_table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .operations
            .iter()
            .map(|o| {
                vec![
                    o.id.clone(),
                    o.kind.clone(),
                    o.target.clone(),
                    op_state_name(o.state),
                    or_dash(time_text(o.created.as_ref())),
                    progress_text(o.progress.as_ref()),
                ]
            })
            .collect();
        columns(&["ID", "KIND", "TARGET", "STATE", "CREATED", "PROGRESS"], &rows)
    }
}

impl ToTable for pb::Instance {
    fn to_table(&self) -> String {
        let spec = self.spec.clone().unwrap_or_default();
        let volume = spec.volume.unwrap_or_default();
        let plan = spec.plan.unwrap_or_default();
        let logs: Vec<String> = spec
            .log_sources
            .iter()
            .filter_map(|s| match &s.source {
                Some(pb::log_source::Source::FileGlob(g)) => Some(format!("file {g}")),
                Some(pb::log_source::Source::JournaldUnit(u)) => Some(format!("journald {u}")),
                None => None,
            })
            .collect();
        let window = spec.maintenance_window.map(|w| {
            format!(
                "{} {} UTC for {} min",
                weekday_name(w.weekday),
                minute_text(w.start_minute_utc),
                w.duration_minutes
            )
        });
        let backups = spec.backup_policy.map(|b| {
            let state = if b.enabled { "" } else { " (disabled)" };
            let count = |n: Option<u32>| n.map_or_else(|| "plan".to_owned(), |n| n.to_string());
            format!(
                "daily at {} UTC, keep {} days / {} weeks / {} months{state}",
                minute_text(b.daily_at_minute_utc),
                b.keep_daily,
                count(b.keep_weekly),
                count(b.keep_monthly)
            )
        });
        let device = if volume.device.is_empty() { "agent-managed file".to_owned() } else { volume.device };
        fields(&[
            ("id", self.id.clone()),
            ("engine", format!("{} {}", engine_name(spec.engine), spec.engine_version)),
            ("unit", spec.systemd_unit),
            ("data dir", format!("{} (owner {})", spec.data_dir, spec.os_user)),
            ("volume", format!("{} {} on {device}", bytes(volume.size_bytes), or_dash(Some(volume.filesystem)))),
            (
                "plan",
                format!(
                    "{} ({} mCPU, {} memory, {} disk)",
                    plan_name(plan.name),
                    plan.cpu_millis,
                    bytes(plan.memory_bytes),
                    bytes(plan.disk_bytes)
                ),
            ),
            ("logs", or_dash(Some(logs.join(", ")))),
            ("maintenance", or_dash(window)),
            ("backups", or_dash(backups)),
            ("generation", self.generation.to_string()),
            ("created", or_dash(time_text(self.created.as_ref()))),
            ("updated", or_dash(time_text(self.updated.as_ref()))),
        ])
    }
}

impl ToTable for pb::ListInstancesResponse {
    fn to_table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .instances
            .iter()
            .map(|i| {
                let spec = i.spec.clone().unwrap_or_default();
                let size = spec.volume.map_or(0, |v| v.size_bytes);
                vec![
                    i.id.clone(),
                    format!("{} {}", engine_name(spec.engine), spec.engine_version),
                    spec.plan.map_or_else(|| "-".to_owned(), |p| plan_name(p.name)),
                    bytes(size),
                    spec.systemd_unit,
                    i.generation.to_string(),
                ]
            })
            .collect();
        columns(&["ID", "ENGINE", "PLAN", "VOLUME", "UNIT", "GEN"], &rows)
    }
}

impl ToTable for pb::Volume {
    fn to_table(&self) -> String {
        fields(&[
            ("instance", self.instance_id.clone()),
            ("backing", self.backing.clone()),
            ("mapper", self.mapper_path.clone()),
            ("active", self.active.to_string()),
            ("mounted", self.mounted.to_string()),
            ("cipher", format!("{} ({} bit key, {} byte sectors)", self.cipher, self.key_bits, self.sector_size)),
            ("size", bytes(self.size_bytes)),
            (
                "filesystem",
                format!("{} {} used of {}", self.filesystem, bytes(self.fs_used_bytes), bytes(self.fs_size_bytes)),
            ),
            ("flags", or_dash(Some(self.flags.join(", ")))),
        ])
    }
}

impl ToTable for pb::ListVolumesResponse {
    fn to_table(&self) -> String {
        let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
        let rows: Vec<Vec<String>> = self
            .volumes
            .iter()
            .map(|v| {
                vec![v.instance_id.clone(), bytes(v.size_bytes), yes_no(v.active), yes_no(v.mounted), v.backing.clone()]
            })
            .collect();
        columns(&["INSTANCE", "SIZE", "ACTIVE", "MOUNTED", "BACKING"], &rows)
    }
}

impl ToTable for pb::MetricSeries {
    fn to_table(&self) -> String {
        // The latest sample reads best as the grouped table `top` shows; a range stays one row per sample.
        if self.snapshots.len() == 1 {
            return super::metrics_table::render_table(&self.snapshots, None);
        }
        let rows: Vec<Vec<String>> = self.snapshots.iter().flat_map(metric_rows).collect();
        columns(&["TIME", "INSTANCE", "METRIC", "VALUE"], &rows)
    }
}

pub fn metric_rows(s: &pb::MetricSnapshot) -> Vec<Vec<String>> {
    s.samples
        .iter()
        .map(|sample| {
            let labels: Vec<String> = sorted_labels(sample).into_iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            let name = if labels.is_empty() {
                sample.name.clone()
            } else {
                format!("{}{{{}}}", sample.name, labels.join(","))
            };
            vec![
                or_dash(time_text(s.time.as_ref())),
                or_dash(Some(s.instance_id.clone())),
                name,
                sample.value.to_string(),
            ]
        })
        .collect()
}

impl ToTable for pb::LogRecord {
    fn to_table(&self) -> String {
        let missed =
            if self.missed_before > 0 { format!("[{} records missed]\n", self.missed_before) } else { String::new() };
        format!(
            "{missed}{} {} {}: {}\n",
            or_dash(time_text(self.time.as_ref())),
            severity_name(self.severity),
            self.source,
            self.message
        )
    }
}

impl ToTable for pb::ListDrainsResponse {
    fn to_table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .drains
            .iter()
            .map(|d| match &d.target {
                Some(pb::drain::Target::Syslog(s)) => {
                    vec![d.name.clone(), if s.tls { "syslog+tls" } else { "syslog" }.to_owned(), s.address.clone()]
                }
                Some(pb::drain::Target::Https(h)) => vec![d.name.clone(), "https".to_owned(), h.url.clone()],
                None => vec![d.name.clone(), "-".to_owned(), "-".to_owned()],
            })
            .collect();
        columns(&["NAME", "KIND", "ADDRESS"], &rows)
    }
}

impl ToTable for pb::DrainStatus {
    fn to_table(&self) -> String {
        fields(&[
            ("drain", self.drain.clone()),
            ("buffered", bytes(self.buffered_bytes)),
            ("dropped records", self.dropped_records.to_string()),
            ("last ack", or_dash(time_text(self.last_ack.as_ref()))),
            ("last error", or_dash(Some(self.last_error.clone()))),
            ("buffer error", or_dash(Some(self.buffer_error.clone()))),
            ("buffer write failures", self.buffer_write_failures.to_string()),
            ("corrupt frames skipped", self.corrupt_frames.to_string()),
            ("refused log files", self.refused_files.to_string()),
        ])
    }
}

impl ToTable for pb::Backup {
    fn to_table(&self) -> String {
        let dests: Vec<String> = self.destinations.iter().map(|d| format!("{} {}", d.name, d.state)).collect();
        fields(&[
            ("id", self.id.clone()),
            ("instance", self.instance_id.clone()),
            ("kind", format!("{} {}", backup_kind_name(self.kind), backup_method_name(self.method))),
            ("state", backup_state_name(self.state)),
            ("size", format!("{} ({} stored)", bytes(self.size_bytes), bytes(self.stored_bytes))),
            ("sha256", self.sha256.clone()),
            ("destinations", or_dash(Some(dests.join(", ")))),
            ("created", or_dash(time_text(self.created.as_ref()))),
            ("expires", or_dash(time_text(self.expires.as_ref()))),
            ("engine version", self.engine_version.clone()),
        ])
    }
}

impl ToTable for pb::ListBackupsResponse {
    fn to_table(&self) -> String {
        let mut out = if !self.instance_ids.is_empty() {
            let rows: Vec<Vec<String>> = self.instance_ids.iter().map(|i| vec![i.clone()]).collect();
            columns(&["INSTANCE"], &rows)
        } else if self.backups.iter().any(from_destinations) {
            columns(&["ID", "STATE", "KIND", "SIZE", "CREATED", "AUTHENTICATED", "KEYS"], &found_rows(&self.backups))
        } else {
            let rows: Vec<Vec<String>> = self
                .backups
                .iter()
                .map(|b| {
                    vec![
                        b.id.clone(),
                        backup_state_name(b.state),
                        backup_kind_name(b.kind),
                        bytes(b.size_bytes),
                        or_dash(time_text(b.created.as_ref())),
                    ]
                })
                .collect();
            columns(&["ID", "STATE", "KIND", "SIZE", "CREATED"], &rows)
        };
        if self.instance_ids.is_empty() && !self.backups.iter().any(from_destinations) {
            match &self.last_drill {
                None => out.push_str("\nlast drill: none\n"),
                Some(d) => out.push_str(&format!("\nlast drill: {}\n", drill_text(d))),
            }
        }
        for e in &self.destination_errors {
            out.push_str(&format!("unreachable: {e}\n"));
        }
        if self.truncated {
            out.push_str("(truncated: more were found than one answer holds)\n");
        }
        out
    }
}

/// One line on a restore drill: when, which backup, and what it found or why it failed.
fn drill_text(d: &pb::BackupDrill) -> String {
    let when = or_dash(time_text(d.finished.as_ref()));
    let took = format!("{:.1} s", d.duration_ms as f64 / 1000.0);
    if d.ok {
        let what =
            if d.table.is_empty() { "no table to count".to_owned() } else { format!("{} rows in {}", d.rows, d.table) };
        format!("ok at {when}, backup {}, {what}, took {took}", d.backup_id)
    } else {
        let success = or_dash(time_text(d.last_success.as_ref()));
        format!(
            "FAILED at {when}, backup {}, after {took}: {} (last success {success}, {} failures)",
            d.backup_id, d.reason, d.failures_total
        )
    }
}

/// A backup listed with `--from-destinations` carries its authentication result.
fn from_destinations(b: &pb::Backup) -> bool {
    b.authenticated || !b.authentication_error.is_empty() || !b.key_wraps.is_empty()
}

fn found_rows(backups: &[pb::Backup]) -> Vec<Vec<String>> {
    backups
        .iter()
        .map(|b| {
            let auth = if b.authenticated { "yes".to_owned() } else { format!("no: {}", b.authentication_error) };
            let keys: Vec<String> = b.key_wraps.iter().map(|k| format!("{} {}", k.wrapper, k.key_id)).collect();
            vec![
                b.id.clone(),
                backup_state_name(b.state),
                backup_kind_name(b.kind),
                bytes(b.size_bytes),
                or_dash(time_text(b.created.as_ref())),
                auth,
                or_dash(Some(keys.join(", "))),
            ]
        })
        .collect()
}

impl ToTable for pb::BackupPolicy {
    fn to_table(&self) -> String {
        fields(&[
            ("daily at", format!("{} UTC", minute_text(self.daily_at_minute_utc))),
            ("keep daily", self.keep_daily.to_string()),
            ("keep weekly", self.keep_weekly.map_or_else(|| "plan default".to_owned(), |w| w.to_string())),
            ("keep monthly", self.keep_monthly.map_or_else(|| "plan default".to_owned(), |m| m.to_string())),
            ("enabled", self.enabled.to_string()),
        ])
    }
}

impl ToTable for pb::MaintenanceWindow {
    fn to_table(&self) -> String {
        fields(&[
            ("weekday", weekday_name(self.weekday)),
            ("start", format!("{} UTC", minute_text(self.start_minute_utc))),
            ("duration", format!("{} min", self.duration_minutes)),
        ])
    }
}

impl ToTable for pb::Availability {
    fn to_table(&self) -> String {
        let hours = |secs: u64| format!("{secs}s ({:.2} h)", secs as f64 / 3600.0);
        let period =
            if self.complete { "whole month".to_owned() } else { format!("so far: {}", hours(self.measured_seconds)) };
        let mut out = fields(&[
            ("instance", self.instance_id.clone()),
            ("month", format!("{} ({} days, {period})", self.month, self.month_seconds / 86_400)),
            ("uptime", format!("{:.4}%", self.uptime_percent)),
            ("objective", format!("{}%", self.objective_percent)),
            ("unplanned downtime", hours(self.unplanned_downtime_seconds)),
            ("planned downtime", hours(self.planned_downtime_seconds)),
            ("unknown", hours(self.unknown_seconds)),
            ("allowed downtime", hours(self.allowed_downtime_seconds)),
            (
                "budget left",
                format!("{} ({:.0}% used)", hours(self.budget_left_seconds), self.budget_used_ratio * 100.0),
            ),
            ("last probe", or_dash(time_text(self.last_probe.as_ref()))),
        ]);
        if !self.picture.is_empty() {
            out.push_str(&format!(
                "\n|{}|\n . up  p planned  X unplanned  ? unknown (one character per 6 hours)\n",
                self.picture
            ));
        }
        out
    }
}

impl ToTable for pb::MetricSnapshot {
    fn to_table(&self) -> String {
        columns(&["TIME", "INSTANCE", "METRIC", "VALUE"], &metric_rows(self))
    }
}
