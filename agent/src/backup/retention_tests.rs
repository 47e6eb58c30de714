//! The retention rule on an injected clock, across day, ISO week, month and year boundaries.

use std::time::{Duration, SystemTime};

use super::*;

/// `y-m-d hh:00` UTC.
fn at(y: i64, m: u32, d: u32, h: u64) -> SystemTime {
    let day = days_from_civil(y, m, d);
    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(day).unwrap() * 86_400 + h * 3600)
}

fn scheduled(id: &str, started: SystemTime) -> Candidate {
    Candidate { id: id.into(), started, kind: BackupKind::Scheduled, good: true, expires: None }
}

fn manual(id: &str, started: SystemTime, expires: SystemTime) -> Candidate {
    Candidate { id: id.into(), started, kind: BackupKind::Manual, good: true, expires: Some(expires) }
}

fn degraded(mut c: Candidate) -> Candidate {
    c.good = false;
    c
}

fn rule_of(d: &Decision, id: &str) -> Option<KeepRule> {
    d.keep.iter().find(|(k, _)| k == id).map(|(_, r)| *r)
}

#[test]
fn dates_round_trip_and_slots_are_named_as_people_read_them() {
    for (y, m, d) in [(1970, 1, 1), (2000, 2, 29), (2026, 12, 31), (2027, 1, 1), (1969, 12, 29)] {
        assert_eq!(civil_from_days(days_from_civil(y, m, d)), (y, m, d));
    }
    // 2027-01-01 is a Friday: ISO week 53 of 2026. 2026-12-28 (Monday) starts that week.
    let day = days_from_civil(2027, 1, 1);
    assert_eq!(Slot::Week(week_of_day(day)).to_string(), "week 2026-W53");
    assert_eq!(week_of_day(day), week_of_day(days_from_civil(2026, 12, 28)));
    assert_ne!(week_of_day(day), week_of_day(days_from_civil(2027, 1, 4)), "Monday 2027-01-04 starts W01");
    assert_eq!(Slot::Week(week_of_day(days_from_civil(2027, 1, 4))).to_string(), "week 2027-W01");
    assert_eq!(Slot::Day(day).to_string(), "day 2027-01-01");
    assert_eq!(Slot::Month(month_of_day(day)).to_string(), "month 2027-01");
}

#[test]
fn daily_keeps_the_newest_of_each_of_the_last_d_utc_days_and_deletes_the_rest() {
    let now = at(2026, 3, 10, 12);
    let backups = [
        scheduled("a", at(2026, 3, 10, 3)),
        scheduled("b", at(2026, 3, 10, 9)), // newest of today
        scheduled("c", at(2026, 3, 9, 3)),
        scheduled("d", at(2026, 3, 8, 3)), // three days ago: outside D = 2
    ];
    let gfs = Gfs { daily: 2, weekly: 0, monthly: 0 };
    let d = decide(&backups, now, gfs);
    assert_eq!(rule_of(&d, "b"), Some(KeepRule::Newest(Slot::Day(days_from_civil(2026, 3, 10)))));
    assert_eq!(rule_of(&d, "c"), Some(KeepRule::Newest(Slot::Day(days_from_civil(2026, 3, 9)))));
    assert_eq!(d.delete, ["d", "a"], "oldest first");
    // One more day kept: d stays too.
    let d = decide(&backups, now, Gfs { daily: 3, ..gfs });
    assert_eq!(d.delete, ["a"]);
}

#[test]
fn weekly_slots_follow_iso_weeks_across_the_new_year() {
    // Now: Wednesday 2027-01-06 (week 2027-W01). Last 2 ISO weeks: 2027-W01 and 2026-W53
    // (Mon 2026-12-28 .. Sun 2027-01-03); 2026-W52 ends Sunday 2026-12-27.
    let now = at(2027, 1, 6, 12);
    let backups = [
        scheduled("w52", at(2026, 12, 27, 3)),
        scheduled("w53-old", at(2026, 12, 28, 3)),
        scheduled("w53-new", at(2027, 1, 3, 3)), // Sunday, newest of W53, in the previous year's week
        scheduled("w01", at(2027, 1, 5, 3)),
    ];
    let d = decide(&backups, now, Gfs { daily: 1, weekly: 2, monthly: 0 });
    assert_eq!(rule_of(&d, "w53-new").map(|r| r.to_string()).as_deref(), Some("newest of week 2026-W53"));
    assert_eq!(rule_of(&d, "w01").map(|r| r.to_string()).as_deref(), Some("newest of week 2027-W01"));
    assert_eq!(d.delete, ["w52", "w53-old"]);
}

#[test]
fn monthly_slots_follow_calendar_months_across_the_year_and_a_leap_day() {
    // Now: 2028-03-01 00:30. Last 3 months: 2028-03, 2028-02 (leap year), 2028-01.
    let now = at(2028, 3, 1, 0) + Duration::from_secs(1800);
    let backups = [
        scheduled("dec", at(2027, 12, 31, 23)),
        scheduled("jan-a", at(2028, 1, 1, 0)),
        scheduled("jan-b", at(2028, 1, 31, 23)),
        scheduled("feb", at(2028, 2, 29, 23)),
        scheduled("mar", at(2028, 3, 1, 0)),
    ];
    let d = decide(&backups, now, Gfs { daily: 1, weekly: 0, monthly: 3 });
    assert_eq!(rule_of(&d, "jan-b").map(|r| r.to_string()).as_deref(), Some("newest of month 2028-01"));
    assert_eq!(rule_of(&d, "feb").map(|r| r.to_string()).as_deref(), Some("newest of month 2028-02"));
    // The newest of today is kept as a daily first.
    assert_eq!(rule_of(&d, "mar").map(|r| r.to_string()).as_deref(), Some("newest of day 2028-03-01"));
    assert_eq!(d.delete, ["dec", "jan-a"]);
    // Four months: December 2027 is kept, across the year boundary.
    let d = decide(&backups, now, Gfs { daily: 1, weekly: 0, monthly: 4 });
    assert_eq!(d.delete, ["jan-a"]);
}

#[test]
fn a_backup_kept_by_several_rules_is_kept_once_by_the_first_and_the_horizon_is_the_longest() {
    // Thirty days of daily backups up to Sunday 2026-05-31, policy 7 days / 4 weeks / 2 months.
    let now = at(2026, 5, 31, 12);
    let backups: Vec<Candidate> = (1..=30).map(|day| scheduled(&format!("d{day:02}"), at(2026, 5, day, 3))).collect();
    let d = decide(&backups, now, Gfs { daily: 7, weekly: 4, monthly: 2 });
    let kept: Vec<&str> = d.keep.iter().map(|(id, _)| id.as_str()).collect();
    // Days 25..=31 (31 has no backup yet); the newest of the current ISO week (May 25..31, d30)
    // and of the three before it (Sundays d24, d17, d10); May's newest is d30 and April has none.
    assert_eq!(kept, ["d10", "d17", "d24", "d25", "d26", "d27", "d28", "d29", "d30"]);
    assert_eq!(d.delete.len(), 30 - kept.len());
    assert_eq!(rule_of(&d, "d24").map(|r| r.to_string()).as_deref(), Some("newest of week 2026-W21"));
    assert_eq!(rule_of(&d, "d30").map(|r| r.to_string()).as_deref(), Some("newest of day 2026-05-30"));
}

#[test]
fn manual_backups_are_kept_until_their_own_expiry_whatever_the_gfs_policy() {
    let now = at(2026, 6, 15, 12);
    let backups = [
        manual("m-expired", at(2026, 5, 1, 3), at(2026, 5, 31, 3)),
        manual("m-live", at(2026, 6, 1, 3), at(2026, 7, 1, 3)),
        scheduled("s", at(2026, 6, 15, 3)),
    ];
    let d = decide(&backups, now, Gfs { daily: 1, weekly: 0, monthly: 0 });
    assert_eq!(rule_of(&d, "m-live"), Some(KeepRule::ManualUntilExpiry));
    assert_eq!(d.delete, ["m-expired"]);
    // No expiry (written by an earlier build): kept.
    let mut forever = backups.clone();
    forever[0].expires = None;
    assert!(decide(&forever, now, Gfs { daily: 1, weekly: 0, monthly: 0 }).delete.is_empty());
}

#[test]
fn the_newest_good_backup_is_never_deleted_even_when_every_rule_has_let_it_go() {
    // Newer backups failed for two months: the last good one is old, out of every slot.
    let now = at(2026, 9, 1, 12);
    let backups = [
        scheduled("old", at(2026, 6, 1, 3)),
        scheduled("last-good", at(2026, 7, 1, 3)),
        manual("m", at(2026, 6, 20, 3), at(2026, 7, 20, 3)),
    ];
    let d = decide(&backups, now, Gfs { daily: 7, weekly: 1, monthly: 1 });
    assert_eq!(d.keep, [("last-good".to_owned(), KeepRule::LastGoodCopy)]);
    assert_eq!(d.delete, ["old", "m"]);
    // The newest good one is a manual past its expiry: kept by the same rule, the scheduled go.
    let backups = [scheduled("s", at(2026, 6, 1, 3)), manual("m", at(2026, 7, 1, 3), at(2026, 7, 31, 3))];
    let d = decide(&backups, now, Gfs { daily: 7, weekly: 1, monthly: 1 });
    assert_eq!(d.keep, [("m".to_owned(), KeepRule::LastGoodCopy)]);
    assert_eq!(d.delete, ["s"]);
    // No good backup at all: the newest degraded one is kept, the older degraded one goes.
    let backups = [degraded(scheduled("x", at(2026, 6, 1, 3))), degraded(scheduled("y", at(2026, 6, 2, 3)))];
    let d = decide(&backups, now, Gfs { daily: 7, weekly: 1, monthly: 1 });
    assert_eq!(d.keep, [("y".to_owned(), KeepRule::LastCopy)]);
    assert_eq!(d.delete, ["x"]);
}

#[test]
fn a_slot_whose_newest_backup_is_degraded_keeps_its_newest_good_one_too() {
    let now = at(2026, 4, 30, 12);
    // March: good backups on the 10th and the 11th, a degraded one on the 20th; April's (today's)
    // is good and is the last good copy. Only month slots (no days, no weeks).
    let backups = [
        scheduled("mar10", at(2026, 3, 10, 3)),
        scheduled("mar11", at(2026, 3, 11, 3)),
        degraded(scheduled("mar20", at(2026, 3, 20, 3))),
        scheduled("apr30", at(2026, 4, 30, 3)),
    ];
    // Slots: month 2026-03 (newest: the degraded 20th) and month 2026-04 (the 30th).
    let d = decide(&backups, now, Gfs { daily: 0, weekly: 0, monthly: 2 });
    let march = Slot::Month(month_of_day(days_from_civil(2026, 3, 1)));
    assert_eq!(rule_of(&d, "mar20"), Some(KeepRule::Newest(march)));
    assert_eq!(rule_of(&d, "mar11"), Some(KeepRule::GoodCopyOf(march)), "{d:?}");
    assert_eq!(d.delete, ["mar10"], "the older good one of the slot still goes");
    // Once the slot's newest is good again, the extra copy is no longer kept.
    let mut healed = backups.clone();
    healed[2].good = true;
    assert_eq!(decide(&healed, now, Gfs { daily: 0, weekly: 0, monthly: 2 }).delete, ["mar10", "mar11"]);
}

#[test]
fn a_backup_from_the_future_is_kept_and_judged_later() {
    let now = at(2026, 1, 1, 12);
    let backups = [scheduled("old", at(2025, 12, 1, 3)), scheduled("ahead", at(2026, 1, 2, 3))];
    let d = decide(&backups, now, Gfs { daily: 1, weekly: 0, monthly: 0 });
    assert_eq!(rule_of(&d, "ahead"), Some(KeepRule::FromTheFuture));
    // The newest good backup is "ahead" itself, so the month-old one is no last copy and goes.
    assert_eq!(d.delete, ["old"]);
}

#[test]
fn plan_defaults_fill_what_the_policy_leaves_unset() {
    let policy = |d, w, m| BackupPolicy {
        daily_at_minute_utc: 0,
        keep_daily: d,
        enabled: true,
        keep_weekly: w,
        keep_monthly: m,
    };
    assert_eq!(Gfs::of(None, PlanName::Starter), Gfs { daily: 7, weekly: 4, monthly: 3 });
    assert_eq!(Gfs::of(None, PlanName::Business), Gfs { daily: 14, weekly: 8, monthly: 12 });
    assert_eq!(Gfs::of(Some(&policy(10, None, None)), PlanName::Business), Gfs { daily: 10, weekly: 8, monthly: 12 });
    assert_eq!(
        Gfs::of(Some(&policy(10, Some(0), Some(24))), PlanName::Starter),
        Gfs { daily: 10, weekly: 0, monthly: 24 }
    );
    // A record written before weekly and monthly existed reads as the plan's defaults.
    let old: BackupPolicy =
        serde_json::from_str(r#"{"daily_at_minute_utc":180,"keep_daily":7,"enabled":true}"#).unwrap();
    assert_eq!(Gfs::of(Some(&old), PlanName::Starter), Gfs { daily: 7, weekly: 4, monthly: 3 });
    // And unset counts are written as earlier builds wrote the record.
    assert_eq!(serde_json::to_string(&old).unwrap(), r#"{"daily_at_minute_utc":180,"keep_daily":7,"enabled":true}"#);
}
