//! Parsers for the node's /proc files. Each takes the file's text and skips lines it cannot read
//! (a truncated read, a field a newer kernel added) instead of failing the whole sample.

use std::collections::BTreeMap;

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

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stat {
    pub cpu: Option<CpuTimes>,
    pub cpu_count: u64,
}

pub fn parse_stat(text: &str) -> Stat {
    let mut stat = Stat::default();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        match fields.next() {
            Some("cpu") => {
                let v: Vec<u64> = fields.take(8).map_while(|f| f.parse().ok()).collect();
                // Kernels before 2.6.11 had fewer columns; treat the missing ones as zero, but a line
                // cut before idle is unusable.
                if v.len() >= 4 {
                    let at = |i: usize| v.get(i).copied().unwrap_or(0);
                    stat.cpu = Some(CpuTimes {
                        user: at(0),
                        nice: at(1),
                        system: at(2),
                        idle: at(3),
                        iowait: at(4),
                        irq: at(5),
                        softirq: at(6),
                        steal: at(7),
                    });
                }
            }
            Some(name) if name.starts_with("cpu") && name[3..].bytes().all(|b| b.is_ascii_digit()) => {
                stat.cpu_count += 1
            }
            _ => {}
        }
    }
    stat
}

/// /proc/meminfo in KiB, by field name.
pub fn parse_meminfo(text: &str) -> BTreeMap<&str, u64> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let value = rest.split_ascii_whitespace().next()?.parse().ok()?;
            Some((name, value))
        })
        .collect()
}

/// Load averages times 100, so they are stored as integers.
pub fn parse_loadavg(text: &str) -> Option<[u64; 3]> {
    let mut f = text.split_ascii_whitespace().map(|v| v.parse::<f64>().ok().map(|v| (v * 100.0).round() as u64));
    Some([f.next()??, f.next()??, f.next()??])
}

/// One line of /proc/diskstats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskStats {
    pub major: u32,
    pub minor: u32,
    pub name: String,
    pub reads: u64,
    pub read_sectors: u64,
    pub read_ms: u64,
    pub writes: u64,
    pub write_sectors: u64,
    pub write_ms: u64,
    pub in_flight: u64,
    pub io_ms: u64,
    pub weighted_ms: u64,
}

pub fn parse_diskstats(text: &str) -> Vec<DiskStats> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_ascii_whitespace().collect();
            if f.len() < 14 {
                return None;
            }
            let n = |i: usize| f[i].parse::<u64>().ok();
            Some(DiskStats {
                major: f[0].parse().ok()?,
                minor: f[1].parse().ok()?,
                name: f[2].to_owned(),
                reads: n(3)?,
                read_sectors: n(5)?,
                read_ms: n(6)?,
                writes: n(7)?,
                write_sectors: n(9)?,
                write_ms: n(10)?,
                in_flight: n(11)?,
                io_ms: n(12)?,
                weighted_ms: n(13)?,
            })
        })
        .collect()
}

/// Devices that say nothing about the database's storage: RAM disks, unused loop devices, floppies.
pub fn is_ignored_disk(d: &DiskStats) -> bool {
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
#[path = "procfs_tests.rs"]
mod tests;
