//! Weekly window arithmetic. A window repeats every week at the same UTC weekday and minute, so
//! everything is computed as an offset into the week: no calendar is needed, and year, leap-year
//! and DST boundaries cannot matter (UTC has none of the last). The Unix epoch fell on a Thursday.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::instances::{MaintenanceWindow, Weekday};

const DAY: u64 = 86_400;
const WEEK: u64 = 7 * DAY;
/// 1970-01-01 was a Thursday: the epoch's day is day 3 of a week that starts on Monday.
const EPOCH_WEEKDAY: u64 = 3;

/// A validated window (`instances::validate` bounds start and duration) as seconds into the
/// week, Monday 00:00 UTC being 0. A duration is at most a day, so a window never meets the next
/// week's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeeklyWindow {
    start: u64,
    duration: u64,
}

/// Where `now` stands relative to a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowPosition {
    /// Inside the window that started at `start` and ends at `end`.
    Inside { start: SystemTime, end: SystemTime },
    /// Outside; the next window starts at `next`.
    Outside { next: SystemTime },
}

fn weekday_index(day: Weekday) -> u64 {
    match day {
        Weekday::Monday => 0,
        Weekday::Tuesday => 1,
        Weekday::Wednesday => 2,
        Weekday::Thursday => 3,
        Weekday::Friday => 4,
        Weekday::Saturday => 5,
        Weekday::Sunday => 6,
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    // Before 1970 only on a broken clock; treat it as the epoch rather than panic.
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

impl From<&MaintenanceWindow> for WeeklyWindow {
    fn from(w: &MaintenanceWindow) -> Self {
        Self {
            start: weekday_index(w.weekday) * DAY + u64::from(w.start_minute_utc) * 60,
            duration: u64::from(w.duration_minutes) * 60,
        }
    }
}

impl WeeklyWindow {
    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.duration)
    }

    /// Where `now` (whole seconds) stands: inside a window, or before the next one.
    pub fn position(&self, now: SystemTime) -> WindowPosition {
        let now = unix_secs(now);
        let into_week = ((now / DAY + EPOCH_WEEKDAY) % 7) * DAY + now % DAY;
        // How long ago this week's (or, across Sunday -> Monday, last week's) window started.
        let since_start = (into_week + WEEK - self.start) % WEEK;
        if since_start < self.duration {
            let start = now - since_start;
            return WindowPosition::Inside { start: at(start), end: at(start + self.duration) };
        }
        WindowPosition::Outside { next: at(now + (WEEK - since_start)) }
    }

    pub fn contains(&self, now: SystemTime) -> bool {
        matches!(self.position(now), WindowPosition::Inside { .. })
    }

    /// The first window start strictly after `now`.
    pub fn next_start_after(&self, now: SystemTime) -> SystemTime {
        match self.position(now) {
            WindowPosition::Inside { start, .. } => start + Duration::from_secs(WEEK),
            WindowPosition::Outside { next } => next,
        }
    }

    /// What is left of the current window; `None` outside one.
    pub fn time_left(&self, now: SystemTime) -> Option<Duration> {
        match self.position(now) {
            WindowPosition::Inside { end, .. } => Some(end.duration_since(now).unwrap_or_default()),
            WindowPosition::Outside { .. } => None,
        }
    }
}

#[cfg(test)]
#[path = "window_tests.rs"]
mod tests;
