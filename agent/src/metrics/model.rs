//! What a sample is. Every value is a raw integer in the source's own unit (ticks, KiB, sectors,
//! microseconds); a fixed per-metric scale turns it into the exported base unit. Integers keep the
//! history compact (delta-encoded varints, see `store`) and keep counters exact.

use std::sync::Arc;
use std::time::SystemTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Cumulative, only grows except on a reset (reboot, cgroup re-created, device re-attached).
    Counter,
    Gauge,
}

/// Every series the agent produces. The node and instances share names where the meaning is the
/// same (`disk_*` is a block device, whoever owns it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    CpuSeconds,
    CpuUtilization,
    CpuCount,
    Load1,
    Load5,
    Load15,
    MemoryTotal,
    MemoryAvailable,
    MemoryFree,
    MemoryCached,
    MemoryBuffers,
    SwapTotal,
    SwapFree,
    FilesystemSize,
    FilesystemAvail,
    FilesystemUsed,
    DiskReads,
    DiskWrites,
    DiskReadBytes,
    DiskWrittenBytes,
    DiskReadTime,
    DiskWriteTime,
    DiskIoNow,
    DiskIoTime,
    DiskIoTimeWeighted,
    PressureStalled,
    CpuUsage,
    /// An instance's user/system CPU from cpu.stat, in microseconds (the node's are ticks).
    CgroupCpuSeconds,
    CpuThrottledPeriods,
    CpuThrottled,
    Memory,
    MemoryPeak,
    MemoryLimit,
    MemoryStat,
    MemoryOomKills,
    IoReadBytes,
    IoWrittenBytes,
    IoReads,
    IoWrites,
    /// CRLs of the API's client CA that are past their nextUpdate (`tls.stale_crl`).
    TlsStaleCrls,
    /// Instances set aside at start-up because a record of theirs could not be read.
    QuarantinedInstances,
    /// Seconds since the instance's newest complete backup finished (since registration if none).
    BackupLastGoodAge,
    /// The instance's backups missing on some destination.
    BackupsDegraded,
    /// A backup destination answered the scheduler's last listing (1) or not (0).
    BackupDestinationReachable,
    /// Listings of a backup destination that failed since the agent started.
    BackupDestinationFailedChecks,
}

/// Name (without the `dbagent_node_` / `dbagent_instance_` prefix), kind, raw-to-base-unit scale, help.
pub struct MetricInfo {
    pub name: &'static str,
    pub kind: Kind,
    pub scale: f64,
    pub unit: &'static str,
    pub help: &'static str,
}

const fn info(name: &'static str, kind: Kind, scale: f64, unit: &'static str, help: &'static str) -> MetricInfo {
    MetricInfo { name, kind, scale, unit, help }
}

use Kind::{Counter as C, Gauge as G};

/// /proc/stat counts in USER_HZ, which the kernel ABI fixes at 100 on every architecture.
const TICK: f64 = 0.01;
const KIB: f64 = 1024.0;
const SECTOR: f64 = 512.0;
const MS: f64 = 0.001;
const US: f64 = 0.000_001;

impl Metric {
    pub fn info(self) -> MetricInfo {
        use Metric::*;
        match self {
            CpuSeconds => info("cpu_seconds_total", C, TICK, "s", "CPU time spent in each mode."),
            CpuUtilization => info(
                "cpu_utilization_ratio",
                G,
                0.0001,
                "1",
                "Share of CPU time not idle or iowait over the last interval, 0 to 1.",
            ),
            CpuCount => info("cpus", G, 1.0, "1", "Online CPUs."),
            Load1 => info("load1", G, 0.01, "1", "1-minute load average."),
            Load5 => info("load5", G, 0.01, "1", "5-minute load average."),
            Load15 => info("load15", G, 0.01, "1", "15-minute load average."),
            MemoryTotal => info("memory_total_bytes", G, KIB, "By", "Usable RAM (MemTotal)."),
            MemoryAvailable => info(
                "memory_available_bytes",
                G,
                KIB,
                "By",
                "RAM available for new work without swapping (MemAvailable).",
            ),
            MemoryFree => info("memory_free_bytes", G, KIB, "By", "Unused RAM (MemFree)."),
            MemoryCached => info("memory_cached_bytes", G, KIB, "By", "Page cache (Cached)."),
            MemoryBuffers => info("memory_buffers_bytes", G, KIB, "By", "Block device buffers (Buffers)."),
            SwapTotal => info("swap_total_bytes", G, KIB, "By", "Swap space (SwapTotal)."),
            SwapFree => info("swap_free_bytes", G, KIB, "By", "Unused swap space (SwapFree)."),
            FilesystemSize => info("filesystem_size_bytes", G, 1.0, "By", "Filesystem size."),
            FilesystemAvail => {
                info("filesystem_avail_bytes", G, 1.0, "By", "Filesystem space available to unprivileged users.")
            }
            FilesystemUsed => info("filesystem_used_bytes", G, 1.0, "By", "Filesystem space in use."),
            DiskReads => info("disk_reads_completed_total", C, 1.0, "1", "Reads completed."),
            DiskWrites => info("disk_writes_completed_total", C, 1.0, "1", "Writes completed."),
            DiskReadBytes => info("disk_read_bytes_total", C, SECTOR, "By", "Bytes read."),
            DiskWrittenBytes => info("disk_written_bytes_total", C, SECTOR, "By", "Bytes written."),
            DiskReadTime => info("disk_read_time_seconds_total", C, MS, "s", "Time spent reading."),
            DiskWriteTime => info("disk_write_time_seconds_total", C, MS, "s", "Time spent writing."),
            DiskIoNow => info("disk_io_now", G, 1.0, "1", "I/Os in flight."),
            DiskIoTime => info(
                "disk_io_time_seconds_total",
                C,
                MS,
                "s",
                "Time the device had I/O in flight (utilization when taken as a rate).",
            ),
            DiskIoTimeWeighted => info(
                "disk_io_time_weighted_seconds_total",
                C,
                MS,
                "s",
                "In-flight time weighted by the number of I/Os (queue length when taken as a rate).",
            ),
            PressureStalled => info(
                "pressure_stalled_seconds_total",
                C,
                US,
                "s",
                "Pressure stall time: some = at least one task stalled, full = all non-idle tasks stalled.",
            ),
            CgroupCpuSeconds => {
                info("cpu_seconds_total", C, US, "s", "CPU time of the instance's cgroup by mode (user, system).")
            }
            CpuUsage => info("cpu_usage_seconds_total", C, US, "s", "CPU time used by the instance's cgroup."),
            CpuThrottledPeriods => info(
                "cpu_throttled_periods_total",
                C,
                1.0,
                "1",
                "Enforcement periods in which the cgroup was throttled.",
            ),
            CpuThrottled => {
                info("cpu_throttled_seconds_total", C, US, "s", "Time the cgroup was throttled by its CPU limit.")
            }
            Memory => info("memory_bytes", G, 1.0, "By", "Memory charged to the instance's cgroup (memory.current)."),
            MemoryPeak => {
                info("memory_peak_bytes", G, 1.0, "By", "Highest memory.current since the cgroup was created.")
            }
            MemoryLimit => info("memory_limit_bytes", G, 1.0, "By", "memory.max; absent when unlimited."),
            MemoryStat => info("memory_stat_bytes", G, 1.0, "By", "Breakdown of the cgroup's memory from memory.stat."),
            MemoryOomKills => {
                info("memory_oom_kills_total", C, 1.0, "1", "Processes of the cgroup killed by the OOM killer.")
            }
            IoReadBytes => info("io_read_bytes_total", C, 1.0, "By", "Bytes the cgroup read, per device (io.stat)."),
            IoWrittenBytes => {
                info("io_written_bytes_total", C, 1.0, "By", "Bytes the cgroup wrote, per device (io.stat).")
            }
            IoReads => info("io_reads_total", C, 1.0, "1", "Read operations of the cgroup, per device (io.stat)."),
            IoWrites => info("io_writes_total", C, 1.0, "1", "Write operations of the cgroup, per device (io.stat)."),
            TlsStaleCrls => info(
                "tls_stale_crls",
                G,
                1.0,
                "1",
                "CRLs of the API's client CA past their nextUpdate: revocations since are unknown to the agent.",
            ),
            QuarantinedInstances => info(
                "quarantined_instances",
                G,
                1.0,
                "1",
                "Instances whose instance or volume record could not be read at start-up: left alone until repaired (GetStatus names them).",
            ),
            BackupLastGoodAge => info(
                "backup_last_good_age_seconds",
                G,
                1.0,
                "s",
                "Seconds since the instance's newest backup complete on every destination finished; since registration when it has none. As of the backup scheduler's last pass.",
            ),
            BackupsDegraded => info(
                "backups_degraded",
                G,
                1.0,
                "1",
                "The instance's backups missing or refused on some destination (repair them), at the backup scheduler's last pass.",
            ),
            BackupDestinationReachable => info(
                "backup_destination_reachable",
                G,
                1.0,
                "1",
                "1 if the backup destination answered the scheduler's last listing, 0 if not.",
            ),
            BackupDestinationFailedChecks => info(
                "backup_destination_failed_checks_total",
                C,
                1.0,
                "1",
                "Listings of the backup destination that failed since the agent started.",
            ),
        }
    }
}

/// One series of an owner: the metric and its labels (besides the owner itself). Interned once per
/// owner in the history, so a stored sample carries a small id, never these strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub metric: Metric,
    pub labels: Vec<(&'static str, String)>,
}

impl SeriesKey {
    pub fn plain(metric: Metric) -> Self {
        Self { metric, labels: Vec::new() }
    }

    pub fn with(metric: Metric, name: &'static str, value: impl Into<String>) -> Self {
        Self { metric, labels: vec![(name, value.into())] }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub key: Arc<SeriesKey>,
    pub raw: u64,
}

impl Point {
    /// The value in the metric's base unit (seconds, bytes, ratio).
    pub fn value(&self) -> f64 {
        self.raw as f64 * self.key.metric.info().scale
    }
}

/// Whose figures these are.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    Node,
    Instance(String),
}

/// Everything one owner reported at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub time: SystemTime,
    pub owner: Owner,
    pub points: Vec<Point>,
}

/// A collector's output before interning: keys are owned, not yet shared.
#[derive(Debug, Default)]
pub struct Reading {
    pub values: Vec<(SeriesKey, u64)>,
}

impl Reading {
    pub fn push(&mut self, key: SeriesKey, raw: u64) {
        self.values.push((key, raw));
    }

    pub fn plain(&mut self, metric: Metric, raw: u64) {
        self.values.push((SeriesKey::plain(metric), raw));
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// How much a counter grew from `prev` to `cur`. A decrease means the source was reset (reboot,
/// re-created cgroup, re-attached device) or a narrower counter wrapped: the growth since the reset is
/// then at least `cur`, which is what Prometheus' `rate()` assumes too.
pub fn counter_delta(prev: u64, cur: u64) -> u64 {
    if cur >= prev { cur - prev } else { cur }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_reset_counts_from_zero() {
        assert_eq!(counter_delta(10, 25), 15);
        assert_eq!(counter_delta(u64::MAX - 1, 3), 3);
        assert_eq!(counter_delta(7, 7), 0);
    }

    #[test]
    fn counter_names_end_in_total() {
        use Metric::*;
        for m in [CpuSeconds, CpuUtilization, DiskReads, DiskIoNow, PressureStalled, Memory, MemoryOomKills, IoReads] {
            let i = m.info();
            assert_eq!(i.kind == Kind::Counter, i.name.ends_with("_total"), "{}", i.name);
        }
    }
}
