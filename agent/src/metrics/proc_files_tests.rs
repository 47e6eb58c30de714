use super::*;

const STAT: &str = include_str!("fixtures/proc/stat");
const MEMINFO: &str = include_str!("fixtures/proc/meminfo");
const DISKSTATS: &str = include_str!("fixtures/proc/diskstats");
const MOUNTINFO: &str = include_str!("fixtures/proc/mountinfo");

#[test]
fn stat_of_this_machine() {
    let s = parse_stat(STAT).unwrap();
    let cpu = s.cpu;
    assert_eq!(cpu.user, 110_552);
    assert_eq!(cpu.idle, 28_664);
    assert_eq!(cpu.steal, 198);
    assert_eq!(s.cpu_count, 2);
}

#[test]
fn stat_truncated_or_old_kernel() {
    // procfs requires the ctxt, btime and processes lines, which every kernel since 2.6 writes.
    const REST: &str = "ctxt 1267140\nbtime 1795670072\nprocesses 42244\n";
    // An old kernel without iowait/irq/softirq/steal columns.
    let s = parse_stat(&format!("cpu  10 0 5 100\ncpu0 10 0 5 100\n{REST}")).unwrap();
    assert_eq!((s.cpu.idle, s.cpu.iowait, s.cpu_count), (100, 0, 1));
    // A read cut off before idle: no CPU sample rather than a wrong one.
    assert_eq!(parse_stat(&format!("cpu  10 0 5\n{REST}")), None);
    assert_eq!(parse_stat(""), None);
}

#[test]
fn utilization_and_counter_decrease() {
    let a = CpuTimes { user: 100, system: 50, idle: 800, iowait: 50, ..CpuTimes::default() };
    let b = CpuTimes { user: 160, system: 70, idle: 900, iowait: 70, ..CpuTimes::default() };
    // busy 80 of 200 ticks
    assert_eq!(CpuTimes::utilization_bp(&a, &b), Some(4000));
    assert_eq!(CpuTimes::utilization_bp(&a, &a), None, "no time passed");
    // A CPU went offline and took its ticks with it: skip, do not report a spike.
    let c = CpuTimes { user: 90, system: 70, idle: 950, iowait: 70, ..CpuTimes::default() };
    assert_eq!(CpuTimes::utilization_bp(&b, &c), None);
}

#[test]
fn meminfo_of_this_machine() {
    let m = parse_meminfo(MEMINFO).unwrap();
    assert!(m.mem_total > m.mem_available.unwrap());
    assert_eq!((m.mem_total, m.cached, m.swap_total), (24_684_084 * 1024, 10_790_300 * 1024, 0), "in bytes");
    // A file cut short gives no memory sample: procfs needs each of the fields every kernel writes.
    assert!(parse_meminfo("MemTotal:       24684084 kB\nMemFree:").is_none());
}

#[test]
fn loadavg() {
    assert_eq!(parse_loadavg("6.75 5.08 2.86 13/178 9687\n"), Some([675, 508, 286]));
    assert_eq!(parse_loadavg("6.75"), None);
}

#[test]
fn diskstats_of_this_machine() {
    let d = parse_diskstats(DISKSTATS);
    assert_eq!(d.len(), 10);
    let vda = d.iter().find(|d| d.name == "vda").unwrap();
    assert_eq!((vda.major, vda.minor), (254, 0));
    assert_eq!(vda.reads, 105_159);
    assert_eq!(vda.sectors_read, 5_730_666);
    assert_eq!(vda.writes, 58_619);
    assert_eq!(vda.time_in_progress, 24_224);
    assert_eq!(vda.weighted_time_in_progress, 387_425);
    let kept: Vec<_> = d.iter().filter(|d| !is_ignored_disk(d)).map(|d| d.name.as_str()).collect();
    assert_eq!(kept, ["vda"]);
    // Kernels before 4.18 have 14 columns, no discard fields; a truncated line is skipped.
    let old = parse_diskstats("   8       0 sda 1 2 3 4 5 6 7 8 9 10 11\n   8       1 sda1 1 2 3\n");
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].weighted_time_in_progress, 11);
}

#[test]
fn pressure_files() {
    let p = parse_pressure(include_str!("fixtures/proc/pressure/io"));
    assert!(p.some_us.is_some() && p.full_us.is_some());
    let p = parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=12345\n");
    assert_eq!(p, Pressure { some_us: Some(12345), full_us: None });
}

#[test]
fn mountinfo_skips_pseudo_filesystems() {
    let m = parse_mountinfo(MOUNTINFO);
    let points: Vec<_> = m.iter().map(|m| m.mountpoint.as_str()).collect();
    assert!(points.contains(&"/"), "{points:?}");
    assert!(!points.iter().any(|p| p.starts_with("/proc") || p.starts_with("/sys") || *p == "/dev/shm"), "{points:?}");
    let root = m.iter().find(|m| m.mountpoint == "/").unwrap();
    assert_eq!((root.fstype.as_str(), root.source.as_str()), ("ext4", "/dev/vda"));
}

#[test]
fn mountinfo_escapes_and_overmounts() {
    let text = "36 35 98:0 / /srv/my\\040data rw - ext4 /dev/vdb rw\n\
                37 35 98:1 / /srv/my\\040data rw - xfs /dev/mapper/dbagent-pg-1 rw\n\
                38 35 98:1 / /broken\n";
    let m = parse_mountinfo(text);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].mountpoint, "/srv/my data");
    assert_eq!(m[0].fstype, "xfs", "the later mount hides the earlier one");
}
