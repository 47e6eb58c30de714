//! A calendar month (UTC) and its figures: pure arithmetic over recorded intervals and a given
//! "now", so every percentage is tested with a fixed clock.
//!
//! Definitions (docs/operations.md, "Availability"):
//! - the month's length is its real length in seconds (28, 29, 30 or 31 days);
//! - for the current month the figures are "so far": the elapsed part, from the first second of
//!   the month to now, is the measured length;
//! - uptime % = (measured - unplanned) / measured x 100. Planned downtime (ordered by the
//!   orchestrator) and unknown time (the agent itself was down: nothing was measured) are reported
//!   separately and are not counted as down;
//! - allowed downtime = (1 - objective) x the whole month's length (the contract's budget for that
//!   calendar month), and budget left = allowed - unplanned, never below zero.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use super::ledger::{Interval, IntervalKind};
use crate::instances::model::PlanName;

/// A calendar month in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Month {
    pub year: i32,
    /// 1 to 12.
    pub month: u32,
}

/// Why a `month` field is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("month {0:?} is not a calendar month written YYYY-MM (1970-01 to 9999-12)")]
pub struct BadMonth(pub String);

impl Month {
    /// Parses "YYYY-MM" exactly (four digits, a dash, two digits).
    pub fn parse(s: &str) -> Result<Month, BadMonth> {
        let bad = || BadMonth(crate::ids::truncate_for_message(s));
        let b = s.as_bytes();
        if b.len() != 7 || b[4] != b'-' || !b.iter().enumerate().all(|(i, c)| i == 4 || c.is_ascii_digit()) {
            return Err(bad());
        }
        let year: i32 = s[..4].parse().map_err(|_| bad())?;
        let month: u32 = s[5..].parse().map_err(|_| bad())?;
        if !(1..=12).contains(&month) || year < 1970 {
            return Err(bad());
        }
        Ok(Month { year, month })
    }

    /// The month `t` falls in (UTC).
    pub fn containing(t: SystemTime) -> Month {
        let days = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / 86_400;
        let (year, month, _) = civil_from_days(days as i64);
        Month { year, month }
    }

    pub fn days(self) -> u32 {
        match self.month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            _ if is_leap(self.year) => 29,
            _ => 28,
        }
    }

    /// Seconds since the epoch of the month's first second.
    pub fn start_secs(self) -> u64 {
        days_from_civil(self.year, self.month, 1) as u64 * 86_400
    }

    pub fn length_secs(self) -> u64 {
        u64::from(self.days()) * 86_400
    }

    pub fn end_secs(self) -> u64 {
        self.start_secs() + self.length_secs()
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

fn is_leap(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let y = i64::from(if m <= 2 { y - 1 } else { y });
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i32, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as i32, m, d)
}

/// The contract's monthly objective of a plan, in percent.
pub fn objective_percent(plan: PlanName) -> f64 {
    match plan {
        PlanName::Starter => 98.0,
        PlanName::Business => 99.96,
    }
}

/// The figures of one instance for one month.
#[derive(Debug, Clone, PartialEq)]
pub struct MonthFigures {
    pub month: Month,
    /// The whole month's length.
    pub month_secs: u64,
    /// What the figures cover: the whole month, or up to now for the current month (0 for a month
    /// not begun).
    pub measured_secs: u64,
    pub unplanned_secs: u64,
    pub planned_secs: u64,
    pub unknown_secs: u64,
    /// (measured - unplanned) / measured x 100; 100 when nothing is measured yet.
    pub uptime_percent: f64,
    pub objective_percent: f64,
    /// (1 - objective) x the whole month's length, rounded down to the second.
    pub allowed_downtime_secs: u64,
    /// allowed - unplanned, never below zero.
    pub budget_left_secs: u64,
    /// unplanned / allowed: 0.5 and 0.9 are the alerting thresholds; above 1 the contract is broken.
    pub budget_used_ratio: f64,
}

/// The figures of `month` from `intervals` (an interval still open runs to `now`), as seen at `now`.
pub fn figures(month: Month, plan: PlanName, intervals: &[Interval], now: SystemTime) -> MonthFigures {
    let now_secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let start = month.start_secs();
    let end = month.end_secs().min(now_secs.max(start));
    let (mut unplanned, mut planned, mut unknown) = (0u64, 0u64, 0u64);
    for iv in intervals {
        let from = iv.start.max(start);
        let to = iv.end.unwrap_or(now_secs).min(end);
        let secs = to.saturating_sub(from);
        match iv.kind {
            IntervalKind::Unplanned => unplanned += secs,
            IntervalKind::Planned => planned += secs,
            IntervalKind::Unknown => unknown += secs,
        }
    }
    let measured = end - start;
    let objective = objective_percent(plan);
    // Integer arithmetic in hundredths of a percent: 99.96% of 2 419 200 s must be exactly 967.68 s
    // allowed, floored to 967, not 967.6799999.
    let allowed_bp = 10_000 - (objective * 100.0).round() as u64;
    let allowed = month.length_secs() * allowed_bp / 10_000;
    let uptime =
        if measured == 0 { 100.0 } else { (measured - unplanned.min(measured)) as f64 * 100.0 / measured as f64 };
    let ratio = if allowed == 0 { 0.0 } else { unplanned as f64 / allowed as f64 };
    MonthFigures {
        month,
        month_secs: month.length_secs(),
        measured_secs: measured,
        unplanned_secs: unplanned,
        planned_secs: planned,
        unknown_secs: unknown,
        uptime_percent: uptime,
        objective_percent: objective,
        allowed_downtime_secs: allowed,
        budget_left_secs: allowed.saturating_sub(unplanned),
        budget_used_ratio: ratio,
    }
}

/// The state of one slot of a month's picture, worst first: unplanned > unknown > planned > up.
pub fn picture(month: Month, intervals: &[Interval], now: SystemTime, slot_secs: u64) -> String {
    let now_secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let slots = month.length_secs().div_ceil(slot_secs);
    (0..slots)
        .map(|i| {
            let from = month.start_secs() + i * slot_secs;
            let to = from + slot_secs;
            if from >= now_secs {
                return ' ';
            }
            let touches = |kind: IntervalKind| {
                intervals.iter().any(|iv| iv.kind == kind && iv.start < to && iv.end.unwrap_or(now_secs) > from)
            };
            if touches(IntervalKind::Unplanned) {
                'X'
            } else if touches(IntervalKind::Unknown) {
                '?'
            } else if touches(IntervalKind::Planned) {
                'p'
            } else {
                '.'
            }
        })
        .collect()
}
