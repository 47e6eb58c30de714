//! Checks per-instance metrics from a real cgroup v2 against a dev-mode agent inside the VM, through
//! the gRPC Metrics API, and prints `PASS <step> <ms>` / `FAIL <step> <ms> <why>` lines; exits 1 if
//! any step failed.
//!
//! `metrics-vm-check --state-dir S --unit dbagent-burn.service [--log-unit U] [--endpoint https://127.0.0.1:7443]`
//!
//! The unit must already run (it burns CPU and holds ~200 MiB under `MemoryMax=512M`). The check
//! registers instance `burn` with that unit, waits for two distinct snapshots at least 2 s apart
//! (the agent samples every `metrics.interval_secs`) and asserts: CPU usage grew by more than 1 s,
//! memory above 150 MiB, memory limit 512 MiB, io.stat and pressure series present.
//!
//! With `--log-unit U` the instance also gets the journald source `U` (a unit printing
//! `dbagent-vm-journal-line N` twice a second), and TailLogs must deliver three of those lines from
//! the live journal.

use anyhow::{Context, Result, bail};
use dbagent_integration::guest::{arg, connect, report};
use dbagent_proto::v1 as pb;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const INSTANCE: &str = "burn";
const MIB: f64 = 1024.0 * 1024.0;

async fn register(channel: &Channel, state: &Path, unit: &str, log_unit: Option<&str>) -> Result<()> {
    let data_dir = state.join("data").join(INSTANCE);
    std::fs::create_dir_all(&data_dir).with_context(|| format!("create {}", data_dir.display()))?;
    let spec = pb::InstanceSpec {
        engine: pb::Engine::Postgresql.into(),
        engine_version: "15".into(),
        systemd_unit: unit.into(),
        data_dir: data_dir.display().to_string(),
        os_user: "postgres".into(),
        volume: Some(pb::VolumeSpec { device: String::new(), size_bytes: 64 << 20, filesystem: "ext4".into() }),
        log_sources: log_unit
            .map(|u| pb::LogSource { source: Some(pb::log_source::Source::JournaldUnit(u.to_owned())) })
            .into_iter()
            .collect(),
        plan: Some(pb::Plan {
            name: pb::PlanName::Starter.into(),
            cpu_millis: 1000,
            memory_bytes: 1 << 30,
            disk_bytes: 0,
            ..Default::default()
        }),
        maintenance_window: None,
        backup_policy: None,
    };
    let mut instances = pb::instances_client::InstancesClient::new(channel.clone());
    instances
        .register_instance(pb::RegisterInstanceRequest {
            request_id: "metrics-vm-check-register".into(),
            id: INSTANCE.into(),
            spec: Some(spec),
        })
        .await?;
    Ok(())
}

async fn latest(channel: &Channel) -> Result<Option<pb::MetricSnapshot>> {
    let mut metrics = pb::metrics_client::MetricsClient::new(channel.clone());
    let series = metrics
        .get_instance_metrics(pb::GetInstanceMetricsRequest { instance_id: INSTANCE.into(), range: None })
        .await?
        .into_inner();
    Ok(series.snapshots.into_iter().last())
}

fn seconds(t: Option<&prost_types::Timestamp>) -> f64 {
    t.map_or(0.0, |t| t.seconds as f64 + f64::from(t.nanos) / 1e9)
}

/// Polls until two snapshots of the instance are at least `gap` apart (a first one must appear within
/// `deadline`; the agent samples on its own interval).
async fn two_snapshots(
    channel: &Channel,
    gap: Duration,
    deadline: Duration,
) -> Result<(pb::MetricSnapshot, pb::MetricSnapshot)> {
    let until = Instant::now() + deadline;
    let mut first: Option<pb::MetricSnapshot> = None;
    loop {
        if let Some(snap) = latest(channel).await? {
            match &first {
                None => first = Some(snap),
                Some(f) if seconds(snap.time.as_ref()) - seconds(f.time.as_ref()) >= gap.as_secs_f64() => {
                    return Ok((first.take().context("first snapshot")?, snap));
                }
                Some(_) => {}
            }
        }
        if Instant::now() > until {
            bail!("no two snapshots {gap:?} apart within {deadline:?} (first: {})", first.is_some());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn value(s: &pb::MetricSnapshot, name: &str) -> Option<f64> {
    s.samples.iter().find(|x| x.name == name && x.labels.is_empty()).map(|x| x.value)
}

fn names(s: &pb::MetricSnapshot) -> Vec<String> {
    let mut n: Vec<String> = s.samples.iter().map(|x| x.name.clone()).collect();
    n.sort();
    n.dedup();
    n
}

/// Follows the instance's logs until three lines of the logger unit came through the live journal.
async fn journald_lines(channel: &Channel, log_unit: &str) -> Result<()> {
    let mut logs = pb::logs_client::LogsClient::new(channel.clone());
    let request = pb::TailLogsRequest {
        instance_id: INSTANCE.into(),
        last_lines: 10,
        since: None,
        follow: true,
        min_severity: 0,
    };
    let mut stream = logs.tail_logs(request).await?.into_inner();
    let until = Instant::now() + Duration::from_secs(90);
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let left = until.saturating_duration_since(Instant::now());
        let record = tokio::time::timeout(left, stream.message())
            .await
            .with_context(|| format!("only {} lines of {log_unit} within 90 s: {seen:?}", seen.len()))??
            .context("TailLogs ended")?;
        if record.message.starts_with("dbagent-vm-journal-line ") {
            seen.push(record.message);
        }
    }
    println!("INFO journald lines: {seen:?}");
    Ok(())
}

fn check(name: &str, r: Result<()>) -> bool {
    report(name, Instant::now(), r).is_some()
}

#[tokio::main]
async fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let state = PathBuf::from(arg("--state-dir").context("--state-dir is required")?);
    let unit = arg("--unit").context("--unit is required")?;
    let log_unit = arg("--log-unit");
    let channel = connect(&state).await?;
    let mut ok =
        report("register-burn", Instant::now(), register(&channel, &state, &unit, log_unit.as_deref()).await).is_some();
    if let Some(log_unit) = &log_unit {
        ok &= report("journald-lines", Instant::now(), journald_lines(&channel, log_unit).await).is_some();
    }

    let t = Instant::now();
    let snaps =
        report("two-snapshots", t, two_snapshots(&channel, Duration::from_secs(2), Duration::from_secs(90)).await);
    ok &= snaps.is_some();
    if let Some((a, b)) = snaps {
        println!("INFO series in the instance snapshot: {:?}", names(&b));
        let dt = seconds(b.time.as_ref()) - seconds(a.time.as_ref());
        let cpu = |s: &pb::MetricSnapshot| value(s, "cpu_usage_seconds_total");
        ok &= check(
            "cpu-usage-grows",
            match (cpu(&a), cpu(&b)) {
                (Some(x), Some(y)) => {
                    println!("INFO cpu_usage_seconds_total {x:.2} -> {y:.2} over {dt:.1} s");
                    if y - x > 1.0 { Ok(()) } else { Err(anyhow::anyhow!("grew by {:.3} s over {dt:.1} s", y - x)) }
                }
                other => Err(anyhow::anyhow!("cpu_usage_seconds_total missing: {other:?}")),
            },
        );
        ok &= check(
            "memory-above-150mib",
            match value(&b, "memory_bytes") {
                Some(m) if m > 150.0 * MIB => {
                    println!("INFO memory_bytes {:.1} MiB", m / MIB);
                    Ok(())
                }
                other => Err(anyhow::anyhow!("memory_bytes {other:?}")),
            },
        );
        ok &= check(
            "memory-limit-512mib",
            match value(&b, "memory_limit_bytes") {
                Some(m) if (m - 512.0 * MIB).abs() < 1.0 => Ok(()),
                other => Err(anyhow::anyhow!("memory_limit_bytes {other:?}")),
            },
        );
        let has = |prefix: &str| b.samples.iter().any(|x| x.name.starts_with(prefix));
        ok &= check(
            "io-series-present",
            if has("io_") { Ok(()) } else { Err(anyhow::anyhow!("no io_* series in {:?}", names(&b))) },
        );
        let pressure: Vec<String> = b
            .samples
            .iter()
            .filter(|x| x.name == "pressure_stalled_seconds_total")
            .filter_map(|x| x.labels.get("resource").cloned())
            .collect();
        ok &= check(
            "pressure-series-present",
            if ["cpu", "memory", "io"].iter().all(|r| pressure.iter().any(|p| p == r)) {
                Ok(())
            } else {
                Err(anyhow::anyhow!("pressure resources {pressure:?}"))
            },
        );
    }
    if !ok {
        println!("FAIL metrics-vm-check some checks failed");
        std::process::exit(1);
    }
    println!("PASS metrics-vm-check");
    Ok(())
}
