use super::super::NewOperation;
use super::*;
use crate::instances::{MaintenanceWindow, Weekday};
use crate::locks::ResourceLocks;
use crate::maintenance::WeeklyWindow;
use crate::ops::{OpsSettings, sleep};
use std::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// The wall clock as if it had been `base` when the test started: windows come within seconds.
struct StartedAt {
    base: SystemTime,
    start: std::time::Instant,
}

impl Clock for StartedAt {
    fn now(&self) -> SystemTime {
        self.base + self.start.elapsed()
    }
}

fn t(text: &str) -> SystemTime {
    humantime::parse_rfc3339(text).unwrap()
}

fn clock_at(text: &str) -> Arc<StartedAt> {
    Arc::new(StartedAt { base: t(text), start: std::time::Instant::now() })
}

/// Tuesday 02:00 UTC for an hour (2026-12-01 is a Tuesday).
fn tuesday_two_am() -> Option<WeeklyWindow> {
    Some((&MaintenanceWindow { weekday: Weekday::Tuesday, start_minute_utc: 120, duration_minutes: 60 }).into())
}

fn open(dir: &std::path::Path, clock: Arc<dyn Clock>) -> (OperationEngine, CancellationToken) {
    let root = CancellationToken::new();
    let settings = OpsSettings { max_concurrent: 4, retention: Duration::from_secs(3600), max_finished: 100 };
    let (engine, _) = OperationEngine::open(dir, settings, ResourceLocks::default(), root.clone()).unwrap();
    engine.set_window_clock(clock);
    (engine, root)
}

fn new_sleep(request_id: &str, duration: Duration, force: bool) -> NewOperation {
    NewOperation {
        request_id: request_id.into(),
        kind: sleep::KIND,
        target: "pg-1".into(),
        params: sleep::disruptive_params(duration, force),
        exclusive: true,
    }
}

/// A job that notes the window clock's time when it starts, then sleeps `duration`.
fn noting_job(clock: Arc<dyn Clock>, started_at: Arc<Mutex<Option<SystemTime>>>, duration: Duration) -> JobFn {
    Box::new(move |ctx| {
        *started_at.lock().unwrap() = Some(clock.now());
        sleep::job(duration)(ctx)
    })
}

async fn finished(engine: &OperationEngine, id: &str) -> OperationRecord {
    engine.watch(id).unwrap().wait_for(|r| r.state.is_finished()).await.unwrap().clone()
}

#[tokio::test]
async fn a_disruptive_operation_waits_for_its_window_and_starts_by_itself_at_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock_at("2026-12-01T01:59:58Z");
    let (engine, _root) = open(dir.path(), clock.clone());
    let started_at = Arc::new(Mutex::new(None));
    let gate = Disruptive { window: tuesday_two_am(), expected: Duration::from_secs(60), force: false };
    let job = noting_job(clock.clone(), started_at.clone(), Duration::from_millis(50));
    let (record, _) =
        engine.submit_disruptive(new_sleep("r1", Duration::from_millis(50), false), gate, job).await.unwrap();
    let waiting =
        engine.watch(&record.id).unwrap().wait_for(|r| r.state == OpState::WaitingForWindow).await.unwrap().clone();
    assert_eq!(waiting.window_start, Some(t("2026-12-01T02:00:00Z")));
    assert!(waiting.progress.message.contains("waiting for the maintenance window"), "{:?}", waiting.progress);
    assert!(!waiting.state.is_finished(), "a waiting operation is open");
    let done = finished(&engine, &record.id).await;
    assert_eq!(done.state, OpState::Succeeded, "{done:?}");
    let started = started_at.lock().unwrap().expect("the job ran");
    assert!(started >= t("2026-12-01T02:00:00Z"), "started before the window: {started:?}");
    assert!(started < t("2026-12-01T02:00:30Z"), "started long after the window opened: {started:?}");
    assert_eq!((done.window_start, done.window_end), (None, Some(t("2026-12-01T03:00:00Z"))));
    assert!(!done.overrunning);
}

#[tokio::test]
async fn a_forced_operation_runs_at_once_outside_its_window() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock_at("2026-12-03T12:00:00Z");
    let (engine, _root) = open(dir.path(), clock.clone());
    let gate = Disruptive { window: tuesday_two_am(), expected: Duration::from_secs(60), force: true };
    let (record, _) = engine
        .submit_disruptive(
            new_sleep("r1", Duration::from_millis(50), true),
            gate,
            sleep::job(Duration::from_millis(50)),
        )
        .await
        .unwrap();
    let mut rx = engine.watch(&record.id).unwrap();
    let mut seen = vec![rx.borrow().state];
    while !rx.borrow().state.is_finished() {
        rx.changed().await.unwrap();
        seen.push(rx.borrow().state);
    }
    assert!(!seen.contains(&OpState::WaitingForWindow), "a forced operation never waits: {seen:?}");
    assert_eq!(rx.borrow().state, OpState::Succeeded);
    assert_eq!(rx.borrow().window_end, None, "forced outside a window, there is no window end to overrun");
}

#[tokio::test]
async fn an_operation_that_does_not_fit_in_what_is_left_waits_for_the_next_window_and_can_be_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    // Five minutes left in this week's window; the work needs ten.
    let clock = clock_at("2026-12-01T02:55:00Z");
    let (engine, _root) = open(dir.path(), clock.clone());
    let gate = Disruptive { window: tuesday_two_am(), expected: Duration::from_secs(600), force: false };
    let (record, _) = engine
        .submit_disruptive(new_sleep("r1", Duration::from_secs(600), false), gate, sleep::job(Duration::from_secs(600)))
        .await
        .unwrap();
    let waiting =
        engine.watch(&record.id).unwrap().wait_for(|r| r.state == OpState::WaitingForWindow).await.unwrap().clone();
    assert_eq!(waiting.window_start, Some(t("2026-12-08T02:00:00Z")), "next week's window");
    // Work that fits in the five minutes runs now, beside it.
    let fits = Disruptive { window: tuesday_two_am(), expected: Duration::from_secs(60), force: false };
    let (short, _) = engine
        .submit_disruptive(
            new_sleep("r2", Duration::from_millis(50), false),
            fits,
            sleep::job(Duration::from_millis(50)),
        )
        .await
        .unwrap();
    assert_eq!(finished(&engine, &short.id).await.state, OpState::Succeeded);
    engine.cancel(&record.id).await.unwrap();
    assert_eq!(finished(&engine, &record.id).await.state, OpState::Cancelled);
}

#[tokio::test]
async fn an_operation_still_running_at_its_windows_end_is_reported_overrunning_and_not_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock_at("2026-12-01T02:59:59Z");
    let (engine, _root) = open(dir.path(), clock.clone());
    // Forced: expected to overrun, it starts anyway and runs to its end.
    let gate = Disruptive { window: tuesday_two_am(), expected: Duration::from_secs(60), force: true };
    let run = Duration::from_millis(2500);
    let (record, _) = engine.submit_disruptive(new_sleep("r1", run, true), gate, sleep::job(run)).await.unwrap();
    let over = engine.watch(&record.id).unwrap().wait_for(|r| r.overrunning).await.unwrap().clone();
    assert_eq!(over.state, OpState::Running, "reported while it still runs");
    assert_eq!(over.window_end, Some(t("2026-12-01T03:00:00Z")));
    let done = finished(&engine, &record.id).await;
    assert_eq!(done.state, OpState::Succeeded, "not cut off: {done:?}");
    assert!(done.overrunning);
    assert_eq!(done.progress.done, 2500, "it slept its whole duration");
}

#[tokio::test]
async fn a_waiting_operation_survives_a_restart_and_starts_at_its_window_and_one_that_cannot_be_rearmed_is_interrupted()
{
    let dir = tempfile::tempdir().unwrap();
    let clock = clock_at("2026-12-01T01:59:57Z");
    let (first, second) = {
        let (engine, root) = open(dir.path(), clock.clone());
        let mut ids = Vec::new();
        for request_id in ["r1", "r2"] {
            let gate = Disruptive { window: tuesday_two_am(), expected: Duration::from_secs(60), force: false };
            let new = new_sleep(request_id, Duration::from_millis(50), false);
            let (record, _) = engine.submit_disruptive(new, gate, sleep::job(Duration::from_millis(50))).await.unwrap();
            engine.watch(&record.id).unwrap().wait_for(|r| r.state == OpState::WaitingForWindow).await.unwrap();
            ids.push(record.id);
        }
        root.cancel();
        assert!(engine.drain(Duration::from_secs(5)).await);
        assert_eq!(engine.get(&ids[0]).unwrap().state, OpState::WaitingForWindow, "a stop leaves it waiting");
        (ids[0].clone(), ids[1].clone())
    };
    let (engine, _root) = open(dir.path(), clock.clone());
    let mut waiting: Vec<String> = engine.waiting_for_window().into_iter().map(|r| r.id).collect();
    waiting.sort();
    let mut expected = vec![first.clone(), second.clone()];
    expected.sort();
    assert_eq!(waiting, expected, "both are still waiting after the restart");
    let started_at = Arc::new(Mutex::new(None));
    let gate = Disruptive { window: tuesday_two_am(), expected: Duration::from_secs(60), force: false };
    let job = noting_job(clock.clone(), started_at.clone(), Duration::from_millis(50));
    engine.resume_waiting(&first, true, gate, job).unwrap();
    engine.abandon_waiting(&second, "its kind is disabled now").await.unwrap();
    let done = finished(&engine, &first).await;
    assert_eq!(done.state, OpState::Succeeded, "{done:?}");
    let started = started_at.lock().unwrap().expect("the re-armed job ran");
    assert!(started >= t("2026-12-01T02:00:00Z"), "started before the window: {started:?}");
    let abandoned = engine.get(&second).unwrap();
    assert_eq!(abandoned.state, OpState::Interrupted);
    assert!(abandoned.error.unwrap().message.contains("disabled"));
}

#[tokio::test]
async fn a_disruptive_operation_marks_its_instance_disrupted_only_while_it_runs_and_other_work_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _root) = open(dir.path(), clock_at("2026-12-01T02:10:00Z"));
    // Plain work on the instance: not a disruption.
    let plain = NewOperation {
        request_id: "plain".into(),
        kind: sleep::KIND,
        target: "pg-1".into(),
        params: sleep::params(Duration::from_secs(30)),
        exclusive: false,
    };
    let (record, _) = engine.submit(plain, sleep::job(Duration::from_secs(30))).await.unwrap();
    engine.watch(&record.id).unwrap().wait_for(|r| r.state == OpState::Running).await.unwrap();
    assert!(!engine.is_disrupting("pg-1"));
    engine.cancel(&record.id).await.unwrap();
    // Disruptive work, forced: the instance is disrupted while it runs, and no other instance.
    let gate = Disruptive { window: tuesday_two_am(), expected: Duration::from_secs(30), force: true };
    let new = new_sleep("upgrade", Duration::from_secs(30), true);
    let (record, _) = engine.submit_disruptive(new, gate, sleep::job(Duration::from_secs(30))).await.unwrap();
    engine.watch(&record.id).unwrap().wait_for(|r| r.state == OpState::Running).await.unwrap();
    assert!(engine.is_disrupting("pg-1"));
    assert!(!engine.is_disrupting("pg-2"));
    engine.cancel(&record.id).await.unwrap();
    engine.watch(&record.id).unwrap().wait_for(|r| r.state.is_finished()).await.unwrap();
    // Counted until it has ended: the guard is dropped right after the record says so.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while engine.is_disrupting("pg-1") {
        assert!(std::time::Instant::now() < deadline, "still disrupting after the operation ended");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A job that disrupts without a window says so itself.
    let own = NewOperation {
        request_id: "restore-in-place".into(),
        kind: sleep::KIND,
        target: "pg-3".into(),
        params: sleep::params(Duration::from_secs(30)),
        exclusive: true,
    };
    let job: JobFn = Box::new(|ctx| {
        Box::pin(async move {
            let _disruption = ctx.disrupts_instance();
            ctx.cancel.cancelled().await;
            Ok(None)
        })
    });
    let (record, _) = engine.submit(own, job).await.unwrap();
    engine.watch(&record.id).unwrap().wait_for(|r| r.state == OpState::Running).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !engine.is_disrupting("pg-3") {
        assert!(std::time::Instant::now() < deadline, "the job's own disruption was not counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    engine.cancel(&record.id).await.unwrap();
    engine.watch(&record.id).unwrap().wait_for(|r| r.state.is_finished()).await.unwrap();
    assert!(!engine.is_disrupting("pg-3"));
}
