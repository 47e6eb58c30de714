use super::*;
use crate::metrics::Owner;
use crate::metrics::model::Point;
use crate::metrics::store::History;
use std::time::{Duration, SystemTime};

pub(crate) fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/metrics/fixtures")
}

fn find(r: &Reading, metric: Metric, label: Option<&str>) -> Option<u64> {
    r.values
        .iter()
        .find(|(k, _)| k.metric == metric && label.is_none_or(|l| k.labels.iter().any(|(_, v)| v == l)))
        .map(|(_, v)| *v)
}

/// A /proc with the captured files plus a dm-0 line, and a mapper folder with dbagent-pg-1 -> dm-0.
fn fixture_paths(tmp: &Path) -> CollectorPaths {
    let proc_root = tmp.join("proc");
    std::fs::create_dir_all(proc_root.join("pressure")).unwrap();
    std::fs::create_dir_all(proc_root.join("self")).unwrap();
    let src = fixtures().join("proc");
    for f in ["stat", "meminfo", "loadavg", "pressure/cpu", "pressure/io", "pressure/memory"] {
        std::fs::copy(src.join(f), proc_root.join(f)).unwrap();
    }
    std::fs::copy(src.join("mountinfo"), proc_root.join("self/mountinfo")).unwrap();
    let mut disks = std::fs::read_to_string(src.join("diskstats")).unwrap();
    disks.push_str(" 253       3 dm-0 17920 0 1433600 9120 88123 0 4194304 70211 0 20112 79331 0 0 0 0 0 0\n");
    std::fs::write(proc_root.join("diskstats"), disks).unwrap();
    let dev = tmp.join("dev");
    std::fs::create_dir_all(dev.join("mapper")).unwrap();
    std::fs::write(dev.join("dm-0"), "").unwrap();
    std::os::unix::fs::symlink("../dm-0", dev.join("mapper/dbagent-pg-1")).unwrap();
    CollectorPaths { proc_root, cgroup_root: fixtures().join("cgroup"), mapper_dir: dev.join("mapper") }
}

fn targets(data_dir: &Path) -> Vec<InstanceTarget> {
    vec![
        InstanceTarget {
            id: "pg-1".into(),
            systemd_unit: "postgresql@15-main.service".into(),
            data_dir: data_dir.into(),
        },
        InstanceTarget {
            id: "redis-1".into(),
            systemd_unit: "redis-server.service".into(),
            data_dir: "/nonexistent".into(),
        },
        InstanceTarget { id: "stopped".into(), systemd_unit: "mariadb.service".into(), data_dir: data_dir.into() },
    ]
}

#[test]
fn fixture_tree_node_and_instances() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = Collector::new(fixture_paths(tmp.path()));
    let round = c.collect(&targets(tmp.path()));
    let node = &round.node;
    assert_eq!(find(node, Metric::CpuSeconds, Some("user")), Some(110_552));
    assert_eq!(find(node, Metric::CpuCount, None), Some(2));
    assert_eq!(find(node, Metric::CpuUtilization, None), None, "needs two rounds");
    assert!(find(node, Metric::MemoryTotal, None).unwrap() > 0);
    assert_eq!(find(node, Metric::DiskReads, Some("vda")), Some(105_159));
    assert_eq!(find(node, Metric::DiskReads, Some("loop0")), None, "idle loop devices are skipped");
    assert!(find(node, Metric::FilesystemSize, Some("/")).unwrap() > 0);
    assert!(find(node, Metric::PressureStalled, Some("io")).is_some());

    let ids: Vec<_> = round.instances.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["pg-1", "redis-1"], "a unit without a cgroup gives no sample");
    let pg = &round.instances[0].1;
    assert_eq!(find(pg, Metric::CpuUsage, None), Some(98_234_511));
    assert_eq!(find(pg, Metric::CgroupCpuSeconds, Some("system")), Some(37_211_607));
    assert_eq!(find(pg, Metric::CpuThrottled, None), Some(40_122_055));
    assert_eq!(find(pg, Metric::Memory, None), Some(1_207_959_552));
    assert_eq!(find(pg, Metric::MemoryPeak, None), Some(1_610_612_736));
    assert_eq!(find(pg, Metric::MemoryLimit, None), Some(2_147_483_648));
    assert_eq!(find(pg, Metric::MemoryStat, Some("anon")), Some(182_452_224));
    assert_eq!(find(pg, Metric::MemoryOomKills, None), Some(1));
    assert_eq!(find(pg, Metric::IoReadBytes, Some("vda")), Some(734_003_200), "254:0 is named from diskstats");
    assert_eq!(find(pg, Metric::IoReadBytes, Some("dm-0")), Some(734_003_200));
    assert_eq!(find(pg, Metric::DiskWrittenBytes, Some("dm-0")), Some(4_194_304), "the volume's dm device");
    assert!(find(pg, Metric::FilesystemAvail, None).is_some(), "data_dir filesystem");
    assert!(find(pg, Metric::PressureStalled, Some("cpu")).is_some());

    let redis = &round.instances[1].1;
    assert_eq!(find(redis, Metric::MemoryLimit, None), None, "memory.max is \"max\"");
    assert_eq!(find(redis, Metric::MemoryPeak, None), None, "no memory.peak on this kernel");
    assert_eq!(find(redis, Metric::FilesystemSize, None), None);
    assert_eq!(find(redis, Metric::IoReads, None), None);

    // The second round has a utilization: nothing moved in the fixtures, so no time passed.
    let round = c.collect(&[]);
    assert_eq!(find(&round.node, Metric::CpuUtilization, None), None);
}

#[test]
fn a_data_dir_swapped_for_a_link_gives_no_filesystem_sample() {
    let tmp = tempfile::tempdir().unwrap();
    let c = Collector::new(fixture_paths(tmp.path()));
    let real = tmp.path().join("real");
    std::fs::create_dir(&real).unwrap();
    // The tenant's swap: the data dir's name is now a link to a folder elsewhere (in a real attack
    // on another filesystem; any target with blocks shows whether the link was followed).
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let swapped = tmp.path().join("swapped");
    std::os::unix::fs::symlink(&elsewhere, &swapped).unwrap();
    assert!(fs_usage(&swapped).is_some(), "by path, the link's target is measured");
    let target = |data_dir: &Path| InstanceTarget {
        id: "pg-1".into(),
        systemd_unit: "postgresql@15-main.service".into(),
        data_dir: data_dir.into(),
    };
    let linked = c.collect_instance(&target(&swapped), &[]);
    assert!(find(&linked, Metric::CpuUsage, None).is_some(), "the rest of the instance is still read");
    for m in [Metric::FilesystemSize, Metric::FilesystemAvail, Metric::FilesystemUsed] {
        assert_eq!(find(&linked, m, None), None, "{m:?} of the link's target was reported");
    }
    let beside = c.collect_instance(&target(&real), &[]);
    assert!(find(&beside, Metric::FilesystemSize, None).unwrap() > 0, "the real folder is reported");
}

#[test]
fn missing_proc_files_give_an_empty_reading() {
    let tmp = tempfile::tempdir().unwrap();
    let paths =
        CollectorPaths { proc_root: tmp.path().into(), cgroup_root: tmp.path().into(), mapper_dir: tmp.path().into() };
    let round = Collector::new(paths).collect(&targets(tmp.path()));
    assert!(round.node.is_empty());
    assert!(round.instances.is_empty());
}

/// Against this machine's real /proc: two rounds a moment apart.
#[test]
fn real_proc_of_this_machine() {
    let mut c = Collector::new(CollectorPaths::default());
    let first = c.collect(&[]);
    std::thread::sleep(Duration::from_millis(300));
    let second = c.collect(&[]);
    for r in [&first.node, &second.node] {
        assert!(find(r, Metric::CpuSeconds, Some("idle")).unwrap() > 0);
        assert!(find(r, Metric::MemoryTotal, None).unwrap() > find(r, Metric::MemoryAvailable, None).unwrap());
        assert!(find(r, Metric::FilesystemSize, Some("/")).unwrap() > 0, "root filesystem");
        assert!(find(r, Metric::Load1, None).is_some());
        assert!(r.values.iter().any(|(k, _)| k.metric == Metric::DiskReads), "a block device");
    }
    let util = find(&second.node, Metric::CpuUtilization, None);
    assert!(util.is_none_or(|u| u <= 10_000), "{util:?}");
    // Counters never go backwards between two rounds of a running machine.
    let a = find(&first.node, Metric::CpuSeconds, Some("user")).unwrap();
    let b = find(&second.node, Metric::CpuSeconds, Some("user")).unwrap();
    assert!(b >= a);
    // And the history takes it.
    let h = History::new(Duration::from_secs(60));
    h.push(Owner::Node, SystemTime::now(), second.node);
    let latest = h.latest(&Owner::Node).unwrap();
    assert!(latest.points.iter().map(Point::value).all(f64::is_finite));
}
