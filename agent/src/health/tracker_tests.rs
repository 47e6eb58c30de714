use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::memory::MemoryProber;
use super::task::{ProberDeps, ProberTask};
use super::tracker::{Outcome, Tracker};
use super::{HealthBoard, HealthSettings};
use crate::availability::{Interval, IntervalKind, Ledger};
use crate::instances::Instance;
use crate::maintenance::clock::FixedClock;

const T0: u64 = 1_900_000_000;
const EVERY: u64 = 10;

fn time(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn ledger(dir: &std::path::Path, now: u64) -> Ledger {
    Ledger::open(dir.to_path_buf(), Arc::new(FixedClock(time(now))), Duration::from_secs(10)).unwrap().0
}

fn down() -> Outcome {
    Outcome::Down("connect: no such file".into())
}

/// The instance's own intervals (the agent's gaps aside).
fn own(ledger: &Ledger, id: &str) -> Vec<(u64, Option<u64>, IntervalKind)> {
    ledger
        .intervals(id)
        .into_iter()
        .filter(|iv| iv.reason != "the agent was not running")
        .map(|Interval { start, end, kind, .. }| (start, end, kind))
        .collect()
}

#[test]
fn an_outage_is_recorded_from_the_first_failed_probe_to_the_first_success_within_one_interval_of_the_real_one() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger(dir.path(), T0);
    let mut tracker = Tracker::new(ledger.clone(), Duration::from_secs(EVERY));
    // The server stops at T0+13 and starts again at T0+25: 12 s down. Probes every 10 s.
    for (at, outcome) in [(T0, Outcome::Up), (T0 + 10, Outcome::Up), (T0 + 20, down())] {
        tracker.observe("pg-1", time(at), &outcome, false).unwrap();
    }
    assert_eq!(ledger.open_kind("pg-1"), Some(IntervalKind::Unplanned));
    // Still down: the same interval stays open, nothing is added.
    assert_eq!(tracker.observe("pg-1", time(T0 + 20), &down(), false).unwrap().opened, None);
    let change = tracker.observe("pg-1", time(T0 + 30), &Outcome::Up, false).unwrap();
    assert_eq!(change.closed, Some(IntervalKind::Unplanned));
    let ivs = own(&ledger, "pg-1");
    assert_eq!(ivs, vec![(T0 + 20, Some(T0 + 30), IntervalKind::Unplanned)]);
    let recorded = ivs.iter().map(|(s, e, _)| e.unwrap_or(*s) - s).sum::<u64>() as i64;
    assert!((recorded - 12).abs() < EVERY as i64, "recorded {recorded} s for 12 s down");
    // A healthy instance beside it has nothing recorded.
    tracker.observe("redis-1", time(T0 + 20), &Outcome::Up, false).unwrap();
    assert!(own(&ledger, "redis-1").is_empty());
}

#[test]
fn a_failure_during_a_disruptive_operation_is_planned_and_turns_unplanned_when_the_operation_ends() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger(dir.path(), T0);
    let mut tracker = Tracker::new(ledger.clone(), Duration::from_secs(EVERY));
    tracker.observe("pg-1", time(T0), &Outcome::Up, true).unwrap();
    let change = tracker.observe("pg-1", time(T0 + 10), &down(), true).unwrap();
    assert_eq!(change.opened, Some(IntervalKind::Planned));
    tracker.observe("pg-1", time(T0 + 20), &down(), true).unwrap();
    // The operation ended, the server is still down: from here it is the platform's downtime.
    let change = tracker.observe("pg-1", time(T0 + 30), &down(), false).unwrap();
    assert_eq!((change.closed, change.opened), (Some(IntervalKind::Planned), Some(IntervalKind::Unplanned)));
    tracker.observe("pg-1", time(T0 + 40), &Outcome::Up, false).unwrap();
    assert_eq!(
        own(&ledger, "pg-1"),
        vec![(T0 + 10, Some(T0 + 30), IntervalKind::Planned), (T0 + 30, Some(T0 + 40), IntervalKind::Unplanned)]
    );
}

#[test]
fn a_late_round_is_unknown_not_downtime_and_a_probe_the_agent_could_not_run_is_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger(dir.path(), T0);
    let mut tracker = Tracker::new(ledger.clone(), Duration::from_secs(EVERY));
    tracker.observe("pg-1", time(T0), &Outcome::Up, false).unwrap();
    tracker.observe("pg-1", time(T0 + 10), &down(), false).unwrap();
    // The next probe comes 60 s later instead of 10: from when it was due (T0+20) to now the
    // agent measured nothing. The open outage is closed where the missed probe was due.
    let change = tracker.observe("pg-1", time(T0 + 70), &down(), false).unwrap();
    assert_eq!(change.late_gap, Some((time(T0 + 20), time(T0 + 70))));
    assert_eq!(change.closed, Some(IntervalKind::Unplanned));
    assert_eq!(change.opened, Some(IntervalKind::Unplanned));
    // Late by less than one interval (19 s after the last, due at 10): on schedule enough.
    let change = tracker.observe("pg-1", time(T0 + 89), &Outcome::Up, false).unwrap();
    assert_eq!(change.late_gap, None);
    // The agent's own failure to probe (say its password file is gone): unknown, then up again.
    let not_run = Outcome::NotRun("health.mariadb_password_file: read: no such file".into());
    assert_eq!(tracker.observe("pg-1", time(T0 + 99), &not_run, false).unwrap().opened, Some(IntervalKind::Unknown));
    tracker.observe("pg-1", time(T0 + 109), &Outcome::Up, false).unwrap();
    assert_eq!(
        own(&ledger, "pg-1"),
        vec![
            (T0 + 10, Some(T0 + 20), IntervalKind::Unplanned),
            (T0 + 20, Some(T0 + 70), IntervalKind::Unknown),
            (T0 + 70, Some(T0 + 89), IntervalKind::Unplanned),
            (T0 + 99, Some(T0 + 109), IntervalKind::Unknown),
        ]
    );
    // And the month's figures count none of the unknown as downtime.
    let month = crate::availability::Month::containing(time(T0));
    let f = crate::availability::figures(
        month,
        crate::instances::model::PlanName::Starter,
        &ledger.intervals("pg-1"),
        time(T0 + 200),
    );
    assert_eq!((f.unplanned_secs, f.unknown_secs), (10 + 19, 50 + 10));
}

fn instance(id: &str) -> Instance {
    Instance {
        id: id.to_owned(),
        spec: crate::instances::fixtures::spec(id),
        created: time(T0),
        updated: time(T0),
        generation: 1,
    }
}

#[tokio::test]
async fn a_round_probes_every_instance_records_outages_planned_while_disrupting_and_forgets_removed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger(dir.path(), T0);
    let prober = Arc::new(MemoryProber::default());
    let listed = Arc::new(std::sync::Mutex::new(vec![instance("pg-1"), instance("pg-2"), instance("pg-3")]));
    let board = HealthBoard::default();
    let deps = ProberDeps {
        prober: prober.clone(),
        instances: Arc::new({
            let listed = listed.clone();
            move || listed.lock().unwrap().clone()
        }),
        // An upgrade runs on pg-2.
        disrupting: Arc::new(|id: &str| id == "pg-2"),
        ledger: ledger.clone(),
        board: board.clone(),
    };
    let task = ProberTask::new(deps, &HealthSettings { max_concurrent: 2, ..HealthSettings::default() });
    prober.set_down("pg-1", Some("refused"));
    prober.set_down("pg-2", Some("refused"));
    task.round().await;
    assert_eq!(ledger.open_kind("pg-1"), Some(IntervalKind::Unplanned));
    assert_eq!(ledger.open_kind("pg-2"), Some(IntervalKind::Planned));
    assert_eq!(ledger.open_kind("pg-3"), None);
    let (p1, p3) = (board.get("pg-1").unwrap(), board.get("pg-3").unwrap());
    assert!(!p1.healthy && p1.error.contains("refused"), "{p1:?}");
    assert!(p3.healthy && p3.server_version == "memory" && p3.at == time(T0), "{p3:?}");
    let text = board.metrics_text();
    assert!(text.contains("dbagent_health_up{instance=\"pg-1\"} 0"), "{text}");
    assert!(text.contains("dbagent_health_up{instance=\"pg-3\"} 1"), "{text}");
    // pg-1 is back; pg-2 is unregistered while down: its interval is closed and it is forgotten.
    prober.set_down("pg-1", None);
    listed.lock().unwrap().retain(|i| i.id != "pg-2");
    task.round().await;
    assert_eq!(ledger.open_kind("pg-1"), None);
    assert_eq!(ledger.open_kind("pg-2"), None);
    assert!(board.get("pg-2").is_none());
    assert!(board.get("pg-1").unwrap().healthy);
}
