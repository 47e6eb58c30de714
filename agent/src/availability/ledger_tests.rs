use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::ledger::{Interval, IntervalKind, Ledger};
use crate::maintenance::clock::FixedClock;

fn time(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn open(dir: &std::path::Path, now: u64) -> (Ledger, super::Recovery) {
    Ledger::open(dir.to_path_buf(), Arc::new(FixedClock(time(now))), Duration::from_secs(10)).unwrap()
}

#[test]
fn intervals_survive_a_restart_and_a_second_open_is_refused_while_one_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, _) = open(dir.path(), 1000);
    assert!(ledger.open_down("pg-1", time(1000), false, "probe failed").unwrap());
    assert!(!ledger.open_down("pg-1", time(1005), true, "again").unwrap());
    assert!(ledger.close_down("pg-1", time(1030)).unwrap());
    assert!(!ledger.close_down("pg-1", time(1040)).unwrap());
    assert!(ledger.open_down("pg-1", time(1100), true, "upgrade").unwrap());
    assert!(ledger.close_down("pg-1", time(1160)).unwrap());
    drop(ledger);
    // Restarted at the same second: no gap, the intervals as they were.
    let (ledger, recovery) = open(dir.path(), 1000);
    assert_eq!(recovery, super::Recovery::default());
    let ivs = ledger.intervals("pg-1");
    assert_eq!(
        ivs,
        vec![
            Interval { start: 1000, end: Some(1030), kind: IntervalKind::Unplanned, reason: "probe failed".into() },
            Interval { start: 1100, end: Some(1160), kind: IntervalKind::Planned, reason: "upgrade".into() },
        ]
    );
    assert!(ledger.intervals("redis-1").is_empty());
}

#[test]
fn a_crash_during_an_outage_closes_it_at_the_last_heartbeat_and_records_the_gap_as_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(std::sync::Mutex::new(1000u64));
    struct Moving(Arc<std::sync::Mutex<u64>>);
    impl crate::maintenance::Clock for Moving {
        fn now(&self) -> SystemTime {
            time(*self.0.lock().unwrap())
        }
    }
    let (ledger, _) =
        Ledger::open(dir.path().to_path_buf(), Arc::new(Moving(clock.clone())), Duration::from_secs(10)).unwrap();
    assert!(ledger.open_down("pg-1", time(1020), false, "probe failed").unwrap());
    // Heartbeats at most every 10 s: 1005 is not written, 1030 is, 1035 is not.
    for t in [1005, 1030, 1035] {
        *clock.lock().unwrap() = t;
        ledger.heartbeat().unwrap();
    }
    // The crash: nothing closes the interval. The agent starts again at 2000.
    drop(ledger);
    let (ledger, recovery) = open(dir.path(), 2000);
    assert_eq!(recovery.closed, vec!["pg-1".to_owned()]);
    assert_eq!(recovery.unknown_gap, Some((1030, 2000)));
    let ivs = ledger.intervals("pg-1");
    assert!(ivs.contains(&Interval {
        start: 1020,
        end: Some(1030),
        kind: IntervalKind::Unplanned,
        reason: "probe failed".into()
    }));
    assert!(ivs.iter().any(|iv| iv.kind == IntervalKind::Unknown && iv.start == 1030 && iv.end == Some(2000)));
    // The gap is the agent's: every instance sees it, none as downtime.
    assert_eq!(ledger.intervals("redis-1").iter().map(|iv| iv.kind).collect::<Vec<_>>(), vec![IntervalKind::Unknown]);
    // And it is recorded once: a later start without a crash adds only its own (empty) gap.
    drop(ledger);
    let (ledger, recovery) = open(dir.path(), 2000);
    assert_eq!(recovery, super::Recovery::default());
    assert_eq!(ledger.intervals("pg-1").len(), 2);
    // The recovered interval is closed: a new outage opens a new one.
    assert!(ledger.open_down("pg-1", time(2100), false, "probe failed").unwrap());
}

#[test]
fn a_corrupt_record_is_quarantined_and_the_others_load() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, _) = open(dir.path(), 1000);
    ledger.open_down("pg-1", time(1000), false, "x").unwrap();
    ledger.close_down("pg-1", time(1010)).unwrap();
    drop(ledger);
    std::fs::write(dir.path().join("instances/pg-2.json"), b"{not json").unwrap();
    let (ledger, _) = open(dir.path(), 1000);
    assert_eq!(ledger.intervals("pg-1").len(), 1);
    assert!(ledger.intervals("pg-2").is_empty());
    assert!(!dir.path().join("instances/pg-2.json").exists());
}

#[test]
fn a_crash_during_an_outage_closes_it_at_the_last_probe_that_saw_it_down_when_that_is_after_the_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, _) = open(dir.path(), 1000);
    assert!(ledger.open_down("pg-1", time(1002), false, "probe failed").unwrap());
    // Probes every 2 s saw it down until 1016; the last heartbeat is the one written at 1000.
    for t in (1004..=1016).step_by(2) {
        ledger.seen_down("pg-1", time(t)).unwrap();
    }
    // An instance that is up is not touched by a stray call.
    ledger.seen_down("redis-1", time(1016)).unwrap();
    drop(ledger);
    let (ledger, recovery) = open(dir.path(), 1100);
    assert_eq!(recovery.closed, vec!["pg-1".to_owned()]);
    assert_eq!(recovery.unknown_gap, Some((1000, 1100)));
    let own: Vec<_> = ledger.intervals("pg-1").into_iter().filter(|iv| iv.kind != IntervalKind::Unknown).collect();
    assert_eq!(own.iter().map(|iv| (iv.start, iv.end)).collect::<Vec<_>>(), vec![(1002, Some(1016))]);
    // A new outage starts from a clean slate: its own evidence, not the old one's.
    assert!(ledger.open_down("pg-1", time(1200), false, "probe failed").unwrap());
    drop(ledger);
    let (ledger, _) = open(dir.path(), 1300);
    let last = ledger.intervals("pg-1").into_iter().filter(|iv| iv.start == 1200).collect::<Vec<_>>();
    assert_eq!(last[0].end, Some(1200), "closed at its start: the heartbeat at 1100 is before it, no probe saw it");
}
