use super::*;
use crate::instances::{MaintenanceWindow, Weekday};
use crate::maintenance::clock::FixedClock;

fn t(text: &str) -> SystemTime {
    humantime::parse_rfc3339(text).unwrap()
}

fn at(text: &str) -> FixedClock {
    FixedClock(t(text))
}

/// Tuesday 02:00 UTC for an hour (2026-12-01 is a Tuesday).
fn tuesday_two_am() -> WeeklyWindow {
    (&MaintenanceWindow { weekday: Weekday::Tuesday, start_minute_utc: 120, duration_minutes: 60 }).into()
}

const TEN_MINUTES: Duration = Duration::from_secs(600);

#[test]
fn outside_the_window_work_waits_for_the_next_start_and_runs_when_it_comes() {
    let w = tuesday_two_am();
    let waiting = decide(Some(&w), TEN_MINUTES, false, &at("2026-12-01T01:00:00Z"));
    assert_eq!(waiting, GateDecision::Wait { until: t("2026-12-01T02:00:00Z") });
    // At the start it runs, bounded by the window's end.
    let at_start = decide(Some(&w), TEN_MINUTES, false, &at("2026-12-01T02:00:00Z"));
    assert_eq!(at_start, GateDecision::Run { window_end: Some(t("2026-12-01T03:00:00Z")), overrun_expected: false });
}

#[test]
fn forced_work_runs_at_once_outside_the_window_and_unforced_work_beside_it_waits() {
    let w = tuesday_two_am();
    let now = at("2026-12-03T12:00:00Z");
    assert_eq!(
        decide(Some(&w), TEN_MINUTES, true, &now),
        GateDecision::Run { window_end: None, overrun_expected: false }
    );
    assert_eq!(decide(Some(&w), TEN_MINUTES, false, &now), GateDecision::Wait { until: t("2026-12-08T02:00:00Z") });
}

#[test]
fn work_that_does_not_fit_in_what_is_left_waits_for_the_next_window_and_work_that_fits_runs() {
    let w = tuesday_two_am();
    let late = at("2026-12-01T02:45:00Z"); // 15 minutes left
    assert_eq!(
        decide(Some(&w), Duration::from_secs(20 * 60), false, &late),
        GateDecision::Wait { until: t("2026-12-08T02:00:00Z") }
    );
    assert_eq!(
        decide(Some(&w), TEN_MINUTES, false, &late),
        GateDecision::Run { window_end: Some(t("2026-12-01T03:00:00Z")), overrun_expected: false }
    );
    // Forced, the long one runs now and is known to overrun.
    assert_eq!(
        decide(Some(&w), Duration::from_secs(20 * 60), true, &late),
        GateDecision::Run { window_end: Some(t("2026-12-01T03:00:00Z")), overrun_expected: true }
    );
}

#[test]
fn work_longer_than_any_window_runs_at_a_windows_start_instead_of_waiting_forever() {
    let w = tuesday_two_am();
    let two_hours = Duration::from_secs(7200);
    // 30 seconds late at the start (a waiter woken late) still gets this window.
    assert_eq!(
        decide(Some(&w), two_hours, false, &at("2026-12-01T02:00:30Z")),
        GateDecision::Run { window_end: Some(t("2026-12-01T03:00:00Z")), overrun_expected: true }
    );
    // Later in the window it waits for the next start.
    assert_eq!(
        decide(Some(&w), two_hours, false, &at("2026-12-01T02:05:00Z")),
        GateDecision::Wait { until: t("2026-12-08T02:00:00Z") }
    );
}

#[test]
fn work_still_running_at_the_windows_end_is_reported_overrunning_not_before() {
    let end = Some(t("2026-12-01T03:00:00Z"));
    assert!(!is_overrunning(end, &at("2026-12-01T02:59:59Z")));
    assert!(is_overrunning(end, &at("2026-12-01T03:00:00Z")));
    assert!(is_overrunning(end, &at("2026-12-01T04:00:00Z")));
    // Forced outside a window or on an instance without one: never overrunning.
    assert!(!is_overrunning(None, &at("2026-12-01T04:00:00Z")));
}

#[test]
fn an_instance_without_a_window_runs_disruptive_work_at_once() {
    assert_eq!(
        decide(None, TEN_MINUTES, false, &at("2026-12-03T12:00:00Z")),
        GateDecision::Run { window_end: None, overrun_expected: false }
    );
}
