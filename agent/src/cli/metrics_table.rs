//! Terminal tables for `dbagentctl metrics` and `dbagentctl top`. This is client-side presentation,
//! so it reads the wire type (`MetricSnapshot`) the CLI receives, not the agent's internal model.
//!
//! Rates (disk throughput, instance CPU) need two snapshots: pass the previous ones for `top`;
//! without them those columns show `-`.

use dbagent_proto::v1 as pb;
use std::fmt::Write as _;

fn secs(t: Option<&prost_types::Timestamp>) -> Option<f64> {
    t.map(|t| t.seconds as f64 + f64::from(t.nanos) * 1e-9)
}

/// Sum of every sample named `name` whose labels include all of `labels`.
fn value(s: &pb::MetricSnapshot, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for x in s.samples.iter().filter(|x| x.name == name) {
        if labels.iter().all(|(k, v)| x.labels.get(*k).is_some_and(|l| l == v)) {
            *found.get_or_insert(0.0) += x.value;
        }
    }
    found
}

/// Per-second growth of a counter between two snapshots; a decrease (reset) counts from zero.
fn rate(
    cur: &pb::MetricSnapshot,
    prev: Option<&pb::MetricSnapshot>,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    let prev = prev?;
    let dt = secs(cur.time.as_ref())? - secs(prev.time.as_ref())?;
    let (c, p) = (value(cur, name, labels)?, value(prev, name, labels)?);
    (dt > 0.0).then(|| if c >= p { (c - p) / dt } else { c / dt })
}

pub fn bytes(v: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = v;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{v:.0} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "-".to_owned(), f)
}

/// Distinct values of label `label` on samples named `name`, in order of appearance.
fn label_values<'a>(s: &'a pb::MetricSnapshot, name: &str, label: &str) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for x in s.samples.iter().filter(|x| x.name == name) {
        if let Some(v) = x.labels.get(label)
            && !out.contains(&v.as_str())
        {
            out.push(v);
        }
    }
    out
}

/// Renders the node and instance snapshots as tables. `previous` are the snapshots of the same
/// owners one refresh earlier (matched by `instance_id`).
pub fn render_table(current: &[pb::MetricSnapshot], previous: Option<&[pb::MetricSnapshot]>) -> String {
    let prev_of = |s: &pb::MetricSnapshot| previous.and_then(|p| p.iter().find(|x| x.instance_id == s.instance_id));
    let mut out = String::new();
    for node in current.iter().filter(|s| s.instance_id.is_empty()) {
        render_node(&mut out, node, prev_of(node));
    }
    let instances: Vec<_> = current.iter().filter(|s| !s.instance_id.is_empty()).collect();
    if !instances.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<20} {:>6} {:>10} {:>10} {:>4} {:>21} {:>10} {:>10}",
            "INSTANCE", "CPU", "MEMORY", "LIMIT", "OOM", "DISK USED/SIZE", "READ/s", "WRITE/s"
        );
        for s in instances {
            let prev = prev_of(s);
            let disk = match (value(s, "filesystem_used_bytes", &[]), value(s, "filesystem_size_bytes", &[])) {
                (Some(u), Some(t)) => format!("{} / {}", bytes(u), bytes(t)),
                _ => "-".into(),
            };
            let _ = writeln!(
                out,
                "{:<20} {:>6} {:>10} {:>10} {:>4} {:>21} {:>10} {:>10}",
                s.instance_id,
                opt(rate(s, prev, "cpu_usage_seconds_total", &[]), |c| format!("{c:.2}")),
                opt(value(s, "memory_bytes", &[]), bytes),
                opt(value(s, "memory_limit_bytes", &[]), bytes),
                opt(value(s, "memory_oom_kills_total", &[]), |v| format!("{v:.0}")),
                disk,
                opt(rate(s, prev, "io_read_bytes_total", &[]), |v| format!("{}/s", bytes(v))),
                opt(rate(s, prev, "io_written_bytes_total", &[]), |v| format!("{}/s", bytes(v))),
            );
        }
        out.push_str("(CPU in cores; READ/WRITE from the cgroup's io.stat)\n");
    }
    out
}

fn render_node(out: &mut String, s: &pb::MetricSnapshot, prev: Option<&pb::MetricSnapshot>) {
    let cpu = opt(value(s, "cpu_utilization_ratio", &[]), |v| format!("{:.1}%", v * 100.0));
    let cpus = opt(value(s, "cpus", &[]), |v| format!("{v:.0}"));
    let load = [("load1"), ("load5"), ("load15")].map(|n| opt(value(s, n, &[]), |v| format!("{v:.2}")));
    let total = value(s, "memory_total_bytes", &[]);
    let avail = value(s, "memory_available_bytes", &[]);
    let used = total.zip(avail).map(|(t, a)| t - a);
    let _ = writeln!(
        out,
        "NODE  cpu {cpu} of {cpus} CPUs   load {} {} {}   memory {} used of {} ({} available)   swap {} free of {}",
        load[0],
        load[1],
        load[2],
        opt(used, bytes),
        opt(total, bytes),
        opt(avail, bytes),
        opt(value(s, "swap_free_bytes", &[]), bytes),
        opt(value(s, "swap_total_bytes", &[]), bytes),
    );
    let _ = writeln!(out, "\n{:<30} {:>10} {:>10} {:>10} {:>5}", "FILESYSTEM", "SIZE", "USED", "AVAIL", "USE%");
    for m in label_values(s, "filesystem_size_bytes", "mountpoint") {
        let l = [("mountpoint", m)];
        let (size, used, avail) = (
            value(s, "filesystem_size_bytes", &l),
            value(s, "filesystem_used_bytes", &l),
            value(s, "filesystem_avail_bytes", &l),
        );
        let pct = used.zip(avail).filter(|(u, a)| u + a > 0.0).map(|(u, a)| u * 100.0 / (u + a));
        let _ = writeln!(
            out,
            "{m:<30} {:>10} {:>10} {:>10} {:>5}",
            opt(size, bytes),
            opt(used, bytes),
            opt(avail, bytes),
            opt(pct, |p| format!("{p:.0}%"))
        );
    }
    let _ = writeln!(
        out,
        "\n{:<12} {:>12} {:>12} {:>10} {:>10} {:>6}",
        "DEVICE", "READ/s", "WRITE/s", "READS/s", "WRITES/s", "UTIL%"
    );
    for d in label_values(s, "disk_reads_completed_total", "device") {
        let l = [("device", d)];
        let _ = writeln!(
            out,
            "{d:<12} {:>12} {:>12} {:>10} {:>10} {:>6}",
            opt(rate(s, prev, "disk_read_bytes_total", &l), |v| format!("{}/s", bytes(v))),
            opt(rate(s, prev, "disk_written_bytes_total", &l), |v| format!("{}/s", bytes(v))),
            opt(rate(s, prev, "disk_reads_completed_total", &l), |v| format!("{v:.1}")),
            opt(rate(s, prev, "disk_writes_completed_total", &l), |v| format!("{v:.1}")),
            opt(rate(s, prev, "disk_io_time_seconds_total", &l), |v| format!("{:.0}%", (v * 100.0).min(100.0))),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, labels: &[(&str, &str)], value: f64) -> pb::Sample {
        pb::Sample {
            name: name.into(),
            labels: labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            value,
            counter: name.ends_with("_total"),
        }
    }

    fn snap(t: i64, id: &str, samples: Vec<pb::Sample>) -> pb::MetricSnapshot {
        pb::MetricSnapshot {
            time: Some(prost_types::Timestamp { seconds: t, nanos: 0 }),
            instance_id: id.into(),
            samples,
        }
    }

    #[test]
    fn table_with_rates() {
        let node = |t, reads: f64| {
            snap(
                t,
                "",
                vec![
                    sample("cpu_utilization_ratio", &[], 0.25),
                    sample("memory_total_bytes", &[], 8.0 * 1024.0 * 1024.0 * 1024.0),
                    sample("memory_available_bytes", &[], 6.0 * 1024.0 * 1024.0 * 1024.0),
                    sample("filesystem_size_bytes", &[("mountpoint", "/")], 100.0),
                    sample("filesystem_used_bytes", &[("mountpoint", "/")], 25.0),
                    sample("filesystem_avail_bytes", &[("mountpoint", "/")], 75.0),
                    sample("disk_reads_completed_total", &[("device", "vda")], reads),
                    sample("disk_read_bytes_total", &[("device", "vda")], reads * 4096.0),
                ],
            )
        };
        let inst = |t, cpu: f64| {
            snap(
                t,
                "pg-1",
                vec![sample("cpu_usage_seconds_total", &[], cpu), sample("memory_bytes", &[], 512.0 * 1024.0 * 1024.0)],
            )
        };
        let prev = vec![node(100, 10.0), inst(100, 50.0)];
        let cur = vec![node(110, 110.0), inst(110, 55.0)];
        let text = render_table(&cur, Some(&prev));
        assert!(text.contains("cpu 25.0%"), "{text}");
        assert!(text.contains("2.0 GiB used of 8.0 GiB"), "{text}");
        assert!(text.contains("25%"), "{text}");
        assert!(text.contains("10.0"), "reads per second: {text}");
        assert!(text.contains("40.0 KiB/s"), "{text}");
        assert!(text.contains("pg-1") && text.contains("0.50") && text.contains("512.0 MiB"), "{text}");
        let once = render_table(&cur, None);
        assert!(once.contains(" - "), "rates without a previous snapshot: {once}");
    }
}
