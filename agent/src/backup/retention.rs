//! Which backups retention keeps: grandfather-father-son over the scheduled backups, manual ones
//! until their own expiry, and never the last good copy. A pure function of the backups, the time
//! and the policy (no clock, no storage), so every boundary is unit-tested; the service feeds it
//! only backups whose manifests authenticate and deletes what it returns.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use super::manifest::BackupKind;
use crate::instances::{BackupPolicy, PlanName};

/// Days a manual backup is kept when StartBackup does not say (its manifest's `expires`).
pub const DEFAULT_MANUAL_KEEP_DAYS: u32 = 30;
/// The longest a manual backup may be kept (ten years).
pub const MAX_MANUAL_KEEP_DAYS: u32 = 3650;

/// Retention of one instance's scheduled backups: the newest of each of the last `daily` UTC days,
/// of each of the last `weekly` ISO weeks and of each of the last `monthly` calendar months.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gfs {
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
}

/// What a plan keeps when the policy does not say: Starter a week of days, a month of weeks and a
/// quarter of months; Business two weeks of days, two months of weeks and a year of months.
pub fn plan_defaults(plan: PlanName) -> Gfs {
    match plan {
        PlanName::Starter => Gfs { daily: 7, weekly: 4, monthly: 3 },
        PlanName::Business => Gfs { daily: 14, weekly: 8, monthly: 12 },
    }
}

impl Gfs {
    /// The policy's numbers, the plan's defaults for those it leaves unset (older records and
    /// requests have no weekly or monthly count); no policy at all means the plan's defaults.
    pub fn of(policy: Option<&BackupPolicy>, plan: PlanName) -> Gfs {
        let d = plan_defaults(plan);
        match policy {
            None => d,
            Some(p) => Gfs {
                daily: if p.keep_daily == 0 { d.daily } else { p.keep_daily },
                weekly: p.keep_weekly.unwrap_or(d.weekly),
                monthly: p.keep_monthly.unwrap_or(d.monthly),
            },
        }
    }
}

/// One backup as retention sees it, from its authenticated manifest and the merged listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub started: SystemTime,
    pub kind: BackupKind,
    /// Complete on every destination (not degraded).
    pub good: bool,
    pub expires: Option<SystemTime>,
}

/// A GFS slot: a UTC day, an ISO week, a calendar month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Slot {
    /// Days since 1970-01-01.
    Day(i64),
    /// ISO weeks since the one starting Monday 1969-12-29.
    Week(i64),
    /// year * 12 + month - 1.
    Month(i64),
}

/// Why a backup is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepRule {
    /// The newest backup of a GFS slot.
    Newest(Slot),
    /// The newest good backup of a slot whose newest backup is degraded.
    GoodCopyOf(Slot),
    /// The instance's newest good backup, kept whatever its age.
    LastGoodCopy,
    /// No backup of the instance is good: its newest one is kept whatever its age.
    LastCopy,
    /// A manual backup before its expiry.
    ManualUntilExpiry,
    /// Started after `now` (a clock set back): never judged by slots that have not begun.
    FromTheFuture,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Kept ids with the first rule that keeps each, oldest first.
    pub keep: Vec<(String, KeepRule)>,
    /// Ids to delete, oldest first.
    pub delete: Vec<String>,
}

/// Decides retention for one instance's backups at `now`.
pub fn decide(backups: &[Candidate], now: SystemTime, gfs: Gfs) -> Decision {
    let mut sorted: Vec<&Candidate> = backups.iter().collect();
    sorted.sort_by(|a, b| a.started.cmp(&b.started).then_with(|| a.id.cmp(&b.id)));
    // The first rule to keep a backup is its reason; later ones change nothing.
    let mut kept: BTreeMap<&str, KeepRule> = BTreeMap::new();
    let today = day_of(now);
    // GFS slots over the scheduled backups; iterating oldest first, the last one seen per slot is
    // its newest.
    let mut newest: BTreeMap<Slot, &Candidate> = BTreeMap::new();
    let mut newest_good: BTreeMap<Slot, &Candidate> = BTreeMap::new();
    for b in sorted.iter().filter(|b| b.kind == BackupKind::Scheduled) {
        if b.started > now {
            keep(&b.id, KeepRule::FromTheFuture, &mut kept);
            continue;
        }
        for slot in slots_of(b.started, today, gfs) {
            newest.insert(slot, b);
            if b.good {
                newest_good.insert(slot, b);
            }
        }
    }
    for (slot, b) in &newest {
        keep(&b.id, KeepRule::Newest(*slot), &mut kept);
        if !b.good
            && let Some(g) = newest_good.get(slot)
        {
            keep(&g.id, KeepRule::GoodCopyOf(*slot), &mut kept);
        }
    }
    for b in sorted.iter().filter(|b| b.kind == BackupKind::Manual) {
        if b.expires.is_none_or(|e| e > now) {
            keep(&b.id, KeepRule::ManualUntilExpiry, &mut kept);
        }
    }
    // The last good copy, of whatever kind and age; without one, the newest copy at all.
    match sorted.iter().rev().find(|b| b.good) {
        Some(b) => keep(&b.id, KeepRule::LastGoodCopy, &mut kept),
        None => {
            if let Some(b) = sorted.last() {
                keep(&b.id, KeepRule::LastCopy, &mut kept);
            }
        }
    }
    let mut decision = Decision::default();
    for b in sorted {
        match kept.get(b.id.as_str()) {
            Some(rule) => decision.keep.push((b.id.clone(), *rule)),
            None => decision.delete.push(b.id.clone()),
        }
    }
    decision
}

fn keep<'a>(id: &'a str, rule: KeepRule, kept: &mut BTreeMap<&'a str, KeepRule>) {
    kept.entry(id).or_insert(rule);
}

/// The slots among the last `gfs` days, weeks and months (counting the current one) that `t` falls in.
fn slots_of(t: SystemTime, today: i64, gfs: Gfs) -> Vec<Slot> {
    let day = day_of(t);
    let mut out = Vec::with_capacity(3);
    if today - day < i64::from(gfs.daily) {
        out.push(Slot::Day(day));
    }
    if week_of_day(today) - week_of_day(day) < i64::from(gfs.weekly) {
        out.push(Slot::Week(week_of_day(day)));
    }
    if month_of_day(today) - month_of_day(day) < i64::from(gfs.monthly) {
        out.push(Slot::Month(month_of_day(day)));
    }
    out
}

/// UTC days since the epoch (negative before it).
fn day_of(t: SystemTime) -> i64 {
    let secs = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX) - 1,
    };
    secs.div_euclid(86_400)
}

/// ISO weeks start on Monday; day 0 (1970-01-01) is a Thursday, so day -3 is the Monday of week 0.
fn week_of_day(day: i64) -> i64 {
    (day + 3).div_euclid(7)
}

fn month_of_day(day: i64) -> i64 {
    let (y, m, _) = civil_from_days(day);
    y * 12 + i64::from(m) - 1
}

/// (year, month 1..=12, day 1..=31) of a day number (H. Hinnant's algorithm, proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The day number of a date (the inverse of `civil_from_days`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Slot::Day(d) => {
                let (y, m, d) = civil_from_days(d);
                write!(f, "day {y:04}-{m:02}-{d:02}")
            }
            Slot::Week(w) => {
                // An ISO week belongs to the year of its Thursday.
                let thursday = w * 7; // its Monday is w * 7 - 3
                let (y, _, _) = civil_from_days(thursday);
                let number = (thursday - days_from_civil(y, 1, 1)) / 7 + 1;
                write!(f, "week {y:04}-W{number:02}")
            }
            Slot::Month(m) => write!(f, "month {:04}-{:02}", m.div_euclid(12), m.rem_euclid(12) + 1),
        }
    }
}

impl fmt::Display for KeepRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepRule::Newest(s) => write!(f, "newest of {s}"),
            KeepRule::GoodCopyOf(s) => write!(f, "newest complete backup of {s}, whose newest is degraded"),
            KeepRule::LastGoodCopy => f.write_str("the instance's newest complete backup"),
            KeepRule::LastCopy => f.write_str("the instance's newest backup (none is complete)"),
            KeepRule::ManualUntilExpiry => f.write_str("manual, not expired"),
            KeepRule::FromTheFuture => f.write_str("started after now"),
        }
    }
}

#[cfg(test)]
#[path = "retention_tests.rs"]
mod tests;
