//! The node's /proc files. The `procfs` crate parses /proc/stat, /proc/loadavg, /proc/meminfo and
//! /proc/diskstats; this module turns its types into what the collector records. Two parsers are our
//! own, each saying why: pressure stall files ([`parse_pressure`]) and mountinfo
//! ([`parse_mountinfo`]).
//!
//! Every function takes the file's text, so the collector reads a fixture tree as it reads /proc.
//! A file procfs cannot parse gives no sample for what it holds; /proc/diskstats is parsed line by
//! line so that one line procfs cannot read (a truncated read) is skipped, not the whole file.
//! Fields a newer kernel adds are ignored.

use std::collections::BTreeMap;

use procfs::{DiskStat, FromBufRead, FromBufReadSI, FromRead, KernelStats, LoadAverage, Meminfo};

/// CPU time by mode from the aggregate `cpu` line of /proc/stat, in USER_HZ ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

impl CpuTimes {
    pub const MODES: [&'static str; 8] = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"];

    pub fn values(&self) -> [u64; 8] {
        [self.user, self.nice, self.system, self.idle, self.iowait, self.irq, self.softirq, self.steal]
    }

    /// Busy share between two readings in basis points (0..=10000). `None` when no time passed or a
    /// mode went backwards (CPU hot-unplug drops that CPU's ticks from the sum): skip that interval
    /// rather than report a spike.
    pub fn utilization_bp(prev: &CpuTimes, cur: &CpuTimes) -> Option<u64> {
        let (p, c) = (prev.values(), cur.values());
        if p.iter().zip(&c).any(|(p, c)| c < p) {
            return None;
        }
        let total: u64 = c.iter().zip(&p).map(|(c, p)| c - p).sum();
        let idle = (cur.idle - prev.idle) + (cur.iowait - prev.iowait);
        (total > 0).then(|| (total - idle) * 10_000 / total)
    }
}

impl From<&procfs::CpuTime> for CpuTimes {
    /// Kernels before 2.6.11 lack the iowait..steal columns; those count as zero.
    fn from(t: &procfs::CpuTime) -> Self {
        CpuTimes {
            user: t.user,
            nice: t.nice,
            system: t.system,
            idle: t.idle,
            iowait: t.iowait.unwrap_or(0),
            irq: t.irq.unwrap_or(0),
            softirq: t.softirq.unwrap_or(0),
            steal: t.steal.unwrap_or(0),
        }
    }
}

/// What the node's figures need of /proc/stat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub cpu: CpuTimes,
    /// The `cpuN` lines: online CPUs.
    pub cpu_count: u64,
}

/// `None` when procfs cannot read the file, e.g. a `cpu` line cut before idle.
pub fn parse_stat(text: &str) -> Option<Stat> {
    // The system info only gives procfs the tick rate for its *_ms helpers; the ticks are kept raw.
    let stat = KernelStats::from_buf_read(text.as_bytes(), procfs::current_system_info()).ok()?;
    Some(Stat { cpu: CpuTimes::from(&stat.total), cpu_count: stat.cpu_time.len() as u64 })
}

/// Load averages times 100, so they are stored as integers.
pub fn parse_loadavg(text: &str) -> Option<[u64; 3]> {
    let load = LoadAverage::from_read(text.as_bytes()).ok()?;
    // procfs reads them as f32: 5.08 is 5.0799999; round, do not truncate.
    Some([load.one, load.five, load.fifteen].map(|v| (f64::from(v) * 100.0).round() as u64))
}

/// /proc/meminfo; procfs gives its sizes in bytes. It keeps every line in a HashMap of owned names
/// on the way, 2.4x the time of the hand parser it replaced (8.8 µs against 3.7 µs on the captured
/// file); that is once per round for the node, and the collector's reused read buffer saves as much
/// (docs/benchmarks.md).
pub fn parse_meminfo(text: &str) -> Option<Meminfo> {
    Meminfo::from_buf_read(text.as_bytes()).ok()
}

/// The block devices of /proc/diskstats, skipping lines procfs cannot read (a truncated line, or
/// the 4-field partition lines of kernels before 2.6.25).
pub fn parse_diskstats(text: &str) -> Vec<DiskStat> {
    text.lines().filter_map(|line| DiskStat::from_line(line).ok()).collect()
}

/// Devices that say nothing about the database's storage: RAM disks, unused loop devices, floppies.
pub fn is_ignored_disk(d: &DiskStat) -> bool {
    let virtual_dev = ["ram", "zram", "fd"].iter().any(|p| d.name.starts_with(p));
    let idle_loop = d.name.starts_with("loop") && d.reads == 0 && d.writes == 0;
    virtual_dev || idle_loop
}

/// Cumulative stall times in microseconds from a PSI file (/proc/pressure/* or a cgroup's
/// *.pressure). `full` is absent for the node's cpu on older kernels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pressure {
    pub some_us: Option<u64>,
    pub full_us: Option<u64>,
}

/// Our own parser rather than procfs's `CpuPressure`/`IoPressure`/`MemoryPressure`: those fail the
/// whole file when the `full` line is missing, which /proc/pressure/cpu is before Linux 5.13, and
/// this runs for three files of every instance's cgroup each round, where procfs builds a HashMap
/// and two Strings per file to keep the averages we do not use.
pub fn parse_pressure(text: &str) -> Pressure {
    let mut p = Pressure::default();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let kind = fields.next();
        let total = fields.find_map(|f| f.strip_prefix("total=")).and_then(|v| v.parse().ok());
        match kind {
            Some("some") => p.some_us = total,
            Some("full") => p.full_us = total,
            _ => {}
        }
    }
    p
}

/// A mounted filesystem worth reporting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mountpoint: String,
    pub fstype: String,
    pub source: String,
}

/// Kernel and virtual filesystems: their "usage" is not disk usage.
const PSEUDO_FS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
    "fuse.lxcfs",
    "fuse.gvfsd-fuse",
    "nfsd",
];

/// Real filesystems from /proc/self/mountinfo, one per mountpoint (the last mount over a path wins,
/// as it hides the earlier ones).
///
/// Our own parser rather than procfs's `MountInfo::from_line`, which covers this file worse for what
/// we take from it (three fields): it leaves the `\040` escapes in mountpoints and sources, reads
/// the source "none" as no source, and builds two HashMaps of owned option strings per line that we
/// do not use, which made it 4x slower on the captured file (8.9 µs against 2.3 µs for 20 lines,
/// docs/benchmarks.md).
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut by_point: BTreeMap<String, Mount> = BTreeMap::new();
    for line in text.lines() {
        // "36 35 98:0 /root /mnt rw,noatime master:1 - ext3 /dev/root rw,errors=continue"
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let Some(point) = left.split(' ').nth(4) else { continue };
        let mut r = right.split(' ');
        let (Some(fstype), Some(source)) = (r.next(), r.next()) else { continue };
        if PSEUDO_FS.contains(&fstype) {
            continue;
        }
        let mountpoint = unescape_octal(point);
        by_point.insert(
            mountpoint.clone(),
            Mount { mountpoint, fstype: fstype.to_owned(), source: unescape_octal(source) },
        );
    }
    by_point.into_values().collect()
}

/// mountinfo writes space, tab, newline and backslash as `\040`-style octal escapes.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let code = u16::from(b[i + 1] - b'0') * 64 + u16::from(b[i + 2] - b'0') * 8 + u16::from(b[i + 3] - b'0');
            out.push(u8::try_from(code).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[path = "proc_files_tests.rs"]
mod tests;
