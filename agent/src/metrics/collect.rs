//! Reads the node's and the instances' figures into [`Reading`]s. A file that is missing or
//! unreadable gives no sample for what it holds: a stopped unit has no cgroup, a kernel without PSI
//! has no /proc/pressure, and neither is an error worth more than silence.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use procfs::DiskStat;

use super::cgroup::{self, parse_flat_keyed, parse_io_stat, parse_single};
use super::model::{Metric, Reading, SeriesKey};
use super::proc_files::{self, CpuTimes};

/// Where the collectors look. Tests point these at fixture trees.
#[derive(Debug, Clone)]
pub struct CollectorPaths {
    pub proc_root: PathBuf,
    pub cgroup_root: PathBuf,
    /// Where the volumes' dm-crypt mappings appear (`dbagent-<id>`).
    pub mapper_dir: PathBuf,
}

impl Default for CollectorPaths {
    fn default() -> Self {
        Self { proc_root: "/proc".into(), cgroup_root: "/sys/fs/cgroup".into(), mapper_dir: "/dev/mapper".into() }
    }
}

/// What the collector needs to know of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceTarget {
    pub id: String,
    pub systemd_unit: String,
    pub data_dir: PathBuf,
}

pub struct Collector {
    paths: CollectorPaths,
    proc: ProcReader,
    prev_cpu: Option<CpuTimes>,
}

/// Reads files under the proc root into one buffer kept from round to round.
struct ProcReader {
    root: PathBuf,
    text: String,
}

impl ProcReader {
    /// The file's text until the next read; `None` when it is missing or unreadable.
    fn read(&mut self, name: &str) -> Option<&str> {
        self.text.clear();
        let mut file = std::fs::File::open(self.root.join(name)).ok()?;
        file.read_to_string(&mut self.text).ok()?;
        Some(&self.text)
    }
}

/// One round: the node's reading, then each instance's (instances without a cgroup are left out).
pub struct Round {
    pub node: Reading,
    pub instances: Vec<(String, Reading)>,
}

const MEMORY_STAT_KEYS: &[&str] =
    &["anon", "file", "kernel", "kernel_stack", "shmem", "sock", "slab", "file_dirty", "file_writeback"];

impl Collector {
    pub fn new(paths: CollectorPaths) -> Self {
        let proc = ProcReader { root: paths.proc_root.clone(), text: String::new() };
        Self { paths, proc, prev_cpu: None }
    }

    /// Blocking (statvfs can hang on a dead network mount): call from `spawn_blocking`.
    pub fn collect(&mut self, targets: &[InstanceTarget]) -> Round {
        let disks = self.proc.read("diskstats").map(proc_files::parse_diskstats).unwrap_or_default();
        let node = self.collect_node(&disks);
        let instances = targets
            .iter()
            .filter_map(|t| {
                let r = self.collect_instance(t, &disks);
                (!r.is_empty()).then(|| (t.id.clone(), r))
            })
            .collect();
        Round { node, instances }
    }

    pub fn collect_node(&mut self, disks: &[DiskStat]) -> Reading {
        let mut r = Reading::default();
        if let Some(stat) = self.proc.read("stat").and_then(proc_files::parse_stat) {
            for (mode, v) in CpuTimes::MODES.iter().zip(stat.cpu.values()) {
                r.push(SeriesKey::with(Metric::CpuSeconds, "mode", *mode), v);
            }
            if let Some(bp) = self.prev_cpu.as_ref().and_then(|p| CpuTimes::utilization_bp(p, &stat.cpu)) {
                r.plain(Metric::CpuUtilization, bp);
            }
            self.prev_cpu = Some(stat.cpu);
            if stat.cpu_count > 0 {
                r.plain(Metric::CpuCount, stat.cpu_count);
            }
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if let Some(stale) = crate::tls::crl::stale_in_use(i64::try_from(now).unwrap_or(i64::MAX)) {
            r.plain(Metric::TlsStaleCrls, stale);
        }
        if let Some(load) = self.proc.read("loadavg").and_then(proc_files::parse_loadavg) {
            for (m, v) in [Metric::Load1, Metric::Load5, Metric::Load15].into_iter().zip(load) {
                r.plain(m, v);
            }
        }
        if let Some(mem) = self.proc.read("meminfo").and_then(proc_files::parse_meminfo) {
            // procfs gives bytes; the history keeps the kernel's KiB (model.rs scales them), whose
            // deltas encode shorter. The division is exact: procfs multiplied by 1024.
            for (m, bytes) in [
                (Metric::MemoryTotal, Some(mem.mem_total)),
                (Metric::MemoryAvailable, mem.mem_available),
                (Metric::MemoryFree, Some(mem.mem_free)),
                (Metric::MemoryCached, Some(mem.cached)),
                (Metric::MemoryBuffers, Some(mem.buffers)),
                (Metric::SwapTotal, Some(mem.swap_total)),
                (Metric::SwapFree, Some(mem.swap_free)),
            ] {
                if let Some(v) = bytes {
                    r.plain(m, v / 1024);
                }
            }
        }
        if let Some(text) = self.proc.read("self/mountinfo") {
            for mount in proc_files::parse_mountinfo(text) {
                if let Some(fs) = fs_usage(Path::new(&mount.mountpoint)) {
                    let key = |m| SeriesKey {
                        metric: m,
                        labels: vec![
                            ("mountpoint", mount.mountpoint.clone()),
                            ("fstype", mount.fstype.clone()),
                            ("device", mount.source.clone()),
                        ],
                    };
                    push_fs(&mut r, fs, key);
                }
            }
        }
        for d in disks.iter().filter(|d| !proc_files::is_ignored_disk(d)) {
            push_disk(&mut r, d);
        }
        for resource in ["cpu", "io", "memory"] {
            if let Some(text) = self.proc.read(&format!("pressure/{resource}")) {
                push_pressure(&mut r, resource, text);
            }
        }
        r
    }

    /// Empty when the unit has no cgroup (not started, or not on cgroup v2).
    pub fn collect_instance(&self, target: &InstanceTarget, disks: &[DiskStat]) -> Reading {
        let mut r = Reading::default();
        let Some(dir) = cgroup::unit_cgroup(&self.paths.cgroup_root, &target.systemd_unit) else {
            return r;
        };
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
        if let Some(text) = read("cpu.stat") {
            let cpu = parse_flat_keyed(&text);
            for (key, value) in [
                (SeriesKey::plain(Metric::CpuUsage), cpu.get("usage_usec")),
                (SeriesKey::with(Metric::CgroupCpuSeconds, "mode", "user"), cpu.get("user_usec")),
                (SeriesKey::with(Metric::CgroupCpuSeconds, "mode", "system"), cpu.get("system_usec")),
                (SeriesKey::plain(Metric::CpuThrottledPeriods), cpu.get("nr_throttled")),
                (SeriesKey::plain(Metric::CpuThrottled), cpu.get("throttled_usec")),
            ] {
                if let Some(v) = value {
                    r.push(key, *v);
                }
            }
        }
        for (metric, file) in [
            (Metric::Memory, "memory.current"),
            (Metric::MemoryPeak, "memory.peak"),
            (Metric::MemoryLimit, "memory.max"),
        ] {
            if let Some(v) = read(file).as_deref().and_then(parse_single) {
                r.plain(metric, v);
            }
        }
        if let Some(text) = read("memory.stat") {
            let stat = parse_flat_keyed(&text);
            for key in MEMORY_STAT_KEYS {
                if let Some(v) = stat.get(key) {
                    r.push(SeriesKey::with(Metric::MemoryStat, "type", *key), *v);
                }
            }
        }
        if let Some(v) = read("memory.events").as_deref().map(parse_flat_keyed).and_then(|e| e.get("oom_kill").copied())
        {
            r.plain(Metric::MemoryOomKills, v);
        }
        if let Some(text) = read("io.stat") {
            for io in parse_io_stat(&text) {
                let device = disks
                    .iter()
                    .find(|d| d.major == io.major && d.minor == io.minor)
                    .map_or_else(|| format!("{}:{}", io.major, io.minor), |d| d.name.clone());
                for (metric, v) in [
                    (Metric::IoReadBytes, io.rbytes),
                    (Metric::IoWrittenBytes, io.wbytes),
                    (Metric::IoReads, io.rios),
                    (Metric::IoWrites, io.wios),
                ] {
                    r.push(SeriesKey::with(metric, "device", device.clone()), v);
                }
            }
        }
        for resource in ["cpu", "io", "memory"] {
            if let Some(text) = read(&format!("{resource}.pressure")) {
                push_pressure(&mut r, resource, &text);
            }
        }
        if let Some(fs) = data_dir_usage(&target.data_dir) {
            push_fs(&mut r, fs, SeriesKey::plain);
        }
        if let Some(d) = self.volume_device(&target.id).and_then(|name| disks.iter().find(|d| d.name == name)) {
            push_disk(&mut r, d);
        }
        r
    }

    /// `dm-N` behind /dev/mapper/dbagent-<id>, when the volume is open.
    fn volume_device(&self, id: &str) -> Option<String> {
        let target = std::fs::canonicalize(self.paths.mapper_dir.join(format!("dbagent-{id}"))).ok()?;
        target.file_name()?.to_str().map(str::to_owned)
    }
}

#[derive(Debug, Clone, Copy)]
struct FsUsage {
    size: u64,
    avail: u64,
    used: u64,
}

fn fs_usage(path: &Path) -> Option<FsUsage> {
    usage_of(&nix::sys::statvfs::statvfs(path).ok()?)
}

/// The usage of the filesystem that holds `data_dir`, asked of the folder itself. The engine's user
/// owns it and, when no volume is mounted there, could swap it for a link to another filesystem,
/// whose usage would then be reported as the instance's. So the folder is opened with no link
/// anywhere from `/` ([`crate::beneath::DirHandle::open_root`]) and the handle is `fstatvfs`ed: a
/// data dir reached through a link gives no sample.
fn data_dir_usage(data_dir: &Path) -> Option<FsUsage> {
    let dir = crate::beneath::DirHandle::open_root(data_dir).ok()?;
    usage_of(&nix::sys::statvfs::fstatvfs(&dir).ok()?)
}

fn usage_of(s: &nix::sys::statvfs::Statvfs) -> Option<FsUsage> {
    let frsize = s.fragment_size();
    let blocks = s.blocks();
    if blocks == 0 {
        return None;
    }
    Some(FsUsage {
        size: blocks * frsize,
        avail: s.blocks_available() * frsize,
        used: blocks.saturating_sub(s.blocks_free()) * frsize,
    })
}

fn push_fs(r: &mut Reading, fs: FsUsage, key: impl Fn(Metric) -> SeriesKey) {
    r.push(key(Metric::FilesystemSize), fs.size);
    r.push(key(Metric::FilesystemAvail), fs.avail);
    r.push(key(Metric::FilesystemUsed), fs.used);
}

fn push_disk(r: &mut Reading, d: &DiskStat) {
    for (metric, v) in [
        (Metric::DiskReads, d.reads),
        (Metric::DiskWrites, d.writes),
        (Metric::DiskReadBytes, d.sectors_read),
        (Metric::DiskWrittenBytes, d.sectors_written),
        (Metric::DiskReadTime, d.time_reading),
        (Metric::DiskWriteTime, d.time_writing),
        (Metric::DiskIoNow, d.in_progress),
        (Metric::DiskIoTime, d.time_in_progress),
        (Metric::DiskIoTimeWeighted, d.weighted_time_in_progress),
    ] {
        r.push(SeriesKey::with(metric, "device", d.name.clone()), v);
    }
}

fn push_pressure(r: &mut Reading, resource: &'static str, text: &str) {
    let p = proc_files::parse_pressure(text);
    for (kind, v) in [("some", p.some_us), ("full", p.full_us)] {
        if let Some(v) = v {
            let labels = vec![("resource", resource.to_owned()), ("kind", kind.to_owned())];
            r.push(SeriesKey { metric: Metric::PressureStalled, labels }, v);
        }
    }
}

#[cfg(test)]
#[path = "collect_tests.rs"]
mod tests;
