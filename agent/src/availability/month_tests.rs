use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::ledger::{Interval, IntervalKind};
use super::month::{Month, figures, picture};
use crate::instances::model::PlanName;

fn at(month: &str, day: u64, hour: u64) -> u64 {
    Month::parse(month).unwrap().start_secs() + (day - 1) * 86_400 + hour * 3600
}

fn iv(start: u64, end: u64, kind: IntervalKind) -> Interval {
    Interval { start, end: Some(end), kind, reason: String::new() }
}

fn time(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// The same set for every month: one unplanned hour that began 2 h before the month (1 h inside),
/// 30 min unplanned on the 10th, 2 h planned, 3 h unknown, and an unplanned hour after the month.
fn set(month: &str, next: &str) -> Vec<Interval> {
    let start = Month::parse(month).unwrap().start_secs();
    vec![
        iv(start - 7200, start + 3600, IntervalKind::Unplanned),
        iv(at(month, 10, 5), at(month, 10, 5) + 1800, IntervalKind::Unplanned),
        iv(at(month, 12, 1), at(month, 12, 3), IntervalKind::Planned),
        iv(at(month, 20, 0), at(month, 20, 3), IntervalKind::Unknown),
        iv(at(next, 1, 1), at(next, 1, 2), IntervalKind::Unplanned),
    ]
}

#[test]
fn months_have_their_real_length_and_parse_strictly() {
    assert_eq!(Month::parse("2026-02").unwrap().days(), 28);
    assert_eq!(Month::parse("2028-02").unwrap().days(), 29);
    assert_eq!(Month::parse("2000-02").unwrap().days(), 29);
    assert_eq!(Month::parse("2100-02").unwrap().days(), 28);
    assert_eq!(Month::parse("2026-12").unwrap().days(), 31);
    assert_eq!(Month::parse("2026-11").unwrap().days(), 30);
    // 2026-03-01T00:00:00Z is 1772323200.
    assert_eq!(Month::parse("2026-03").unwrap().start_secs(), 1_772_323_200);
    assert_eq!(Month::containing(time(1_772_323_199)).to_string(), "2026-02");
    assert_eq!(Month::containing(time(1_772_323_200)).to_string(), "2026-03");
    for bad in ["", "2026-13", "2026-00", "2026-1", "26-01", "2026/01", "2026-01x", "1969-12", "+026-01", "２026-01"] {
        assert!(Month::parse(bad).is_err(), "{bad:?} must be refused");
    }
}

#[test]
fn february_of_28_days_gives_the_exact_figures_for_both_plans() {
    let month = Month::parse("2026-02").unwrap();
    let now = time(at("2026-04", 1, 0));
    let ivs = set("2026-02", "2026-03");
    let f = figures(month, PlanName::Business, &ivs, now);
    assert_eq!(f.month_secs, 2_419_200);
    assert_eq!(f.measured_secs, 2_419_200);
    assert_eq!((f.unplanned_secs, f.planned_secs, f.unknown_secs), (5400, 7200, 10_800));
    assert_eq!(f.uptime_percent, (2_419_200.0 - 5400.0) * 100.0 / 2_419_200.0);
    assert!((f.uptime_percent - 99.776_785_714).abs() < 1e-6);
    // 0.04% of 2 419 200 s = 967.68 s, floored.
    assert_eq!(f.allowed_downtime_secs, 967);
    assert_eq!(f.budget_left_secs, 0);
    assert!(f.budget_used_ratio > 5.5);
    let f = figures(month, PlanName::Starter, &ivs, now);
    assert_eq!(f.objective_percent, 98.0);
    // 2% of 2 419 200 s = 48 384 s.
    assert_eq!(f.allowed_downtime_secs, 48_384);
    assert_eq!(f.budget_left_secs, 48_384 - 5400);
    assert_eq!(f.budget_used_ratio, 5400.0 / 48_384.0);
}

#[test]
fn february_of_29_days_gives_the_exact_figures_for_both_plans() {
    let month = Month::parse("2028-02").unwrap();
    let now = time(at("2028-04", 1, 0));
    let ivs = set("2028-02", "2028-03");
    let f = figures(month, PlanName::Business, &ivs, now);
    assert_eq!(f.month_secs, 2_505_600);
    assert_eq!((f.unplanned_secs, f.planned_secs, f.unknown_secs), (5400, 7200, 10_800));
    assert_eq!(f.uptime_percent, (2_505_600.0 - 5400.0) * 100.0 / 2_505_600.0);
    // 0.04% of 2 505 600 s = 1002.24 s.
    assert_eq!(f.allowed_downtime_secs, 1002);
    let f = figures(month, PlanName::Starter, &ivs, now);
    assert_eq!(f.allowed_downtime_secs, 50_112);
    assert_eq!(f.budget_left_secs, 50_112 - 5400);
}

#[test]
fn a_31_day_month_gives_the_exact_figures_for_both_plans_and_clips_at_its_boundaries() {
    let month = Month::parse("2026-01").unwrap();
    let now = time(at("2026-03", 1, 0));
    let ivs = set("2026-01", "2026-02");
    let f = figures(month, PlanName::Business, &ivs, now);
    assert_eq!(f.month_secs, 2_678_400);
    // The interval from December counts only its January hour, the one in February not at all.
    assert_eq!((f.unplanned_secs, f.planned_secs, f.unknown_secs), (5400, 7200, 10_800));
    assert_eq!(f.uptime_percent, (2_678_400.0 - 5400.0) * 100.0 / 2_678_400.0);
    // 0.04% of 2 678 400 s = 1071.36 s.
    assert_eq!(f.allowed_downtime_secs, 1071);
    let f = figures(month, PlanName::Starter, &ivs, now);
    assert_eq!(f.allowed_downtime_secs, 53_568);
    assert_eq!(f.budget_left_secs, 53_568 - 5400);
    // The following month sees only its own hour of the interval that crossed into it.
    let feb = figures(Month::parse("2026-02").unwrap(), PlanName::Starter, &ivs, now);
    assert_eq!(feb.unplanned_secs, 3600);
}

#[test]
fn the_current_month_is_measured_so_far_and_an_open_interval_runs_to_now() {
    let month = Month::parse("2026-11").unwrap();
    let now = time(at("2026-11", 3, 0));
    let ivs =
        vec![Interval { start: at("2026-11", 2, 23), end: None, kind: IntervalKind::Unplanned, reason: "x".into() }];
    let f = figures(month, PlanName::Business, &ivs, now);
    assert_eq!(f.measured_secs, 2 * 86_400);
    assert_eq!(f.unplanned_secs, 3600);
    assert_eq!(f.uptime_percent, (172_800.0 - 3600.0) * 100.0 / 172_800.0);
    // The budget is the whole month's: 0.04% of 30 days = 1036.8 s.
    assert_eq!(f.allowed_downtime_secs, 1036);
    // A month not begun measures nothing and is 100% up.
    let dec = figures(Month::parse("2026-12").unwrap(), PlanName::Business, &ivs, now);
    assert_eq!((dec.measured_secs, dec.unplanned_secs, dec.uptime_percent), (0, 0, 100.0));
}

#[test]
fn the_picture_marks_each_day_with_its_worst_state() {
    let ivs = set("2026-02", "2026-03");
    let pic = picture(Month::parse("2026-02").unwrap(), &ivs, time(at("2026-02", 25, 12)), 86_400);
    assert_eq!(pic.chars().count(), 28);
    let expect: String = (1..=28)
        .map(|d| match d {
            1 | 10 => 'X',
            12 => 'p',
            20 => '?',
            26.. => ' ',
            _ => '.',
        })
        .collect();
    assert_eq!(pic, expect);
}
