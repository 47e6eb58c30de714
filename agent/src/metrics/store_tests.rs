use super::*;
use crate::metrics::model::Metric;

fn at(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
}

fn reading(values: &[(&str, u64)]) -> Reading {
    let mut r = Reading::default();
    for (dev, v) in values {
        r.push(SeriesKey::with(Metric::DiskReads, "device", *dev), *v);
    }
    r.plain(Metric::MemoryTotal, 24_684_084);
    r
}

fn values(s: &Snapshot) -> Vec<(String, u64)> {
    s.points.iter().map(|p| (p.key.labels.first().map(|l| l.1.clone()).unwrap_or_default(), p.raw)).collect()
}

#[test]
fn round_trip_with_devices_coming_and_going_and_counters_resetting() {
    let h = History::new(Duration::from_secs(3600));
    let node = Owner::Node;
    h.push(node.clone(), at(0), reading(&[("vda", 100)]));
    h.push(node.clone(), at(10), reading(&[("vda", 150), ("dm-0", 7)])); // dm-0 appears
    h.push(node.clone(), at(20), reading(&[("dm-0", 9)])); // vda gone
    h.push(node.clone(), at(30), reading(&[("vda", 3), ("dm-0", 2)])); // both reset
    h.push(node.clone(), at(40), reading(&[("vda", u64::MAX), ("dm-0", 0)]));
    let all = h.range(&node, at(0), at(40));
    assert_eq!(all.len(), 5);
    let got: Vec<_> = all.iter().map(values).collect();
    let m = |d: &str, v: u64| (d.to_owned(), v);
    assert_eq!(got[0], [m("vda", 100), m("", 24_684_084)]);
    assert_eq!(got[1], [m("vda", 150), m("", 24_684_084), m("dm-0", 7)]);
    assert_eq!(got[2], [m("", 24_684_084), m("dm-0", 9)]);
    assert_eq!(got[3], [m("vda", 3), m("", 24_684_084), m("dm-0", 2)]);
    assert_eq!(got[4], [m("vda", u64::MAX), m("", 24_684_084), m("dm-0", 0)]);
    assert_eq!(all[3].time, at(30));
    assert_eq!(*h.latest(&node).unwrap(), all[4]);
    assert_eq!(h.range(&node, at(11), at(29)).len(), 1);
    assert!(h.range(&Owner::Instance("pg-1".into()), at(0), at(40)).is_empty());
}

#[test]
fn old_chunks_fall_off_and_removed_instances_go() {
    let h = History::new(Duration::from_secs(2 * 3600));
    let pg = Owner::Instance("pg-1".into());
    let n = u64::from(CHUNK_SAMPLES) * 5;
    for i in 0..n {
        h.push(pg.clone(), at(i * 10), reading(&[("vda", i * 37)]));
    }
    let kept = h.range(&pg, at(0), at(n * 10));
    // Two hours asked, whole chunks of one hour dropped: between 2 and 3 hours remain.
    assert!(kept.len() >= 720 && kept.len() <= 1080, "{}", kept.len());
    assert_eq!(kept.last().unwrap().points[0].raw, (n - 1) * 37);
    h.retain_instances(&|id| id != "pg-1");
    assert!(h.latest(&pg).is_none());
}

/// The figure in docs/metrics.md: a day of 10 s samples of an instance with 45 series of the kinds
/// an instance has: constants (limits, sizes, idle PSI), slow counters (OOM kills, throttling, I/O
/// counts), fast counters (CPU microseconds, bytes read and written) and wobbling gauges (memory).
#[test]
fn a_day_of_an_instance_costs_well_under_a_megabyte() {
    let h = History::new(Duration::from_secs(86_400));
    let pg = Owner::Instance("pg-1".into());
    let mut rng = 1u64;
    let mut next = move |bits: u32| {
        rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        rng >> (64 - bits)
    };
    let mut counters = vec![0u64; 45];
    for i in 0..8640u64 {
        let mut r = Reading::default();
        for (s, counter) in counters.iter_mut().enumerate() {
            let (metric, v) = match s {
                0..15 => (Metric::MemoryLimit, 2_147_483_648 + s as u64),
                15..30 => {
                    *counter += next(6);
                    (Metric::IoReads, *counter)
                }
                30..40 => {
                    *counter += 10_000_000 + next(17);
                    (Metric::IoReadBytes, *counter)
                }
                _ => (Metric::Memory, 1_207_959_552 + next(20)),
            };
            r.push(SeriesKey::with(metric, "n", format!("s{s}")), v);
        }
        h.push(pg.clone(), at(i * 10), r);
    }
    let bytes = h.heap_bytes();
    eprintln!("one instance, 45 series, 8640 samples: {bytes} bytes");
    assert!(bytes < 700_000, "{bytes} bytes for a day of one instance");
    let day = h.range(&pg, at(0), at(86_400));
    assert_eq!(day.len(), 8640);
    assert_eq!(day.last().unwrap().points[35].raw, counters[35]);
}
