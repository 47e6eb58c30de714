use super::*;

pub(crate) fn t(text: &str) -> SystemTime {
    humantime::parse_rfc3339(text).unwrap()
}

fn window(weekday: Weekday, hh: u32, mm: u32, minutes: u32) -> WeeklyWindow {
    (&MaintenanceWindow { weekday, start_minute_utc: hh * 60 + mm, duration_minutes: minutes }).into()
}

#[test]
fn a_time_inside_the_window_is_inside_and_the_minutes_around_it_are_not() {
    // 2026-12-01 is a Tuesday.
    let w = window(Weekday::Tuesday, 2, 0, 60);
    assert!(!w.contains(t("2026-12-01T01:59:59Z")));
    assert!(w.contains(t("2026-12-01T02:00:00Z")));
    assert!(w.contains(t("2026-12-01T02:59:59Z")));
    assert!(!w.contains(t("2026-12-01T03:00:00Z")));
    // The same hour on another weekday is outside.
    assert!(!w.contains(t("2026-12-02T02:30:00Z")));
    assert_eq!(w.time_left(t("2026-12-01T02:45:00Z")), Some(Duration::from_secs(15 * 60)));
    assert_eq!(w.time_left(t("2026-12-01T03:00:00Z")), None);
}

#[test]
fn the_next_start_is_later_this_week_or_next_week_never_now() {
    let w = window(Weekday::Tuesday, 2, 0, 60);
    assert_eq!(w.next_start_after(t("2026-12-01T01:00:00Z")), t("2026-12-01T02:00:00Z"));
    // At the start itself and inside the window, the next start is a week on.
    assert_eq!(w.next_start_after(t("2026-12-01T02:00:00Z")), t("2026-12-08T02:00:00Z"));
    assert_eq!(w.next_start_after(t("2026-12-01T02:30:00Z")), t("2026-12-08T02:00:00Z"));
    assert_eq!(w.next_start_after(t("2026-12-01T03:00:00Z")), t("2026-12-08T02:00:00Z"));
    assert_eq!(w.next_start_after(t("2026-12-05T12:00:00Z")), t("2026-12-08T02:00:00Z"));
}

#[test]
fn a_window_crossing_midnight_spans_both_days() {
    // Friday 23:30 for two hours ends Saturday 01:30.
    let w = window(Weekday::Friday, 23, 30, 120);
    assert!(w.contains(t("2026-12-04T23:45:00Z")));
    assert!(w.contains(t("2026-12-05T01:29:59Z")));
    assert!(!w.contains(t("2026-12-05T01:30:00Z")));
    assert_eq!(w.time_left(t("2026-12-05T01:00:00Z")), Some(Duration::from_secs(30 * 60)));
    assert_eq!(
        w.position(t("2026-12-05T01:00:00Z")),
        WindowPosition::Inside { start: t("2026-12-04T23:30:00Z"), end: t("2026-12-05T01:30:00Z") }
    );
}

#[test]
fn a_window_crossing_sunday_to_monday_wraps_the_week() {
    // Sunday 22:00 for 24 hours (the longest window) ends Monday 22:00 of the next ISO week.
    let w = window(Weekday::Sunday, 22, 0, 24 * 60);
    assert!(w.contains(t("2026-12-06T22:00:00Z")));
    assert!(w.contains(t("2026-12-07T21:59:59Z")), "Monday before 22:00 belongs to Sunday's window");
    assert!(!w.contains(t("2026-12-07T22:00:00Z")));
    assert_eq!(w.time_left(t("2026-12-07T21:00:00Z")), Some(Duration::from_secs(3600)));
    assert_eq!(w.next_start_after(t("2026-12-07T22:00:00Z")), t("2026-12-13T22:00:00Z"));
}

#[test]
fn year_boundaries_and_leap_days_change_nothing() {
    // 2023-12-31 is a Sunday, 2024-01-01 a Monday: a window across the new year.
    let w = window(Weekday::Sunday, 23, 0, 120);
    assert!(w.contains(t("2024-01-01T00:30:00Z")));
    assert_eq!(w.next_start_after(t("2024-01-01T01:00:00Z")), t("2024-01-07T23:00:00Z"));
    // 2026-12-31 is a Thursday; the next Monday window is in 2027.
    let monday = window(Weekday::Monday, 3, 0, 30);
    assert_eq!(monday.next_start_after(t("2026-12-31T12:00:00Z")), t("2027-01-04T03:00:00Z"));
    // Across a leap day: Thursday 2024-02-29.
    let thursday = window(Weekday::Thursday, 0, 0, 60);
    assert!(thursday.contains(t("2024-02-29T00:10:00Z")));
    assert_eq!(thursday.next_start_after(t("2024-02-27T00:00:00Z")), t("2024-02-29T00:00:00Z"));
    assert_eq!(thursday.next_start_after(t("2024-02-29T00:00:00Z")), t("2024-03-07T00:00:00Z"));
}
