//! The agent's notion of "now" for maintenance windows, behind a trait so tests fix it.

use std::time::{Duration, SystemTime};

pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
}

/// The host's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The host's clock moved by a fixed number of seconds (`testing.clock_offset_secs`): a test
/// agent reads its windows as if it were then, while everything else keeps the real time.
#[derive(Debug, Clone, Copy)]
pub struct OffsetClock {
    pub offset_secs: i64,
}

impl Clock for OffsetClock {
    fn now(&self) -> SystemTime {
        let now = SystemTime::now();
        let by = Duration::from_secs(self.offset_secs.unsigned_abs());
        let moved = if self.offset_secs >= 0 { now.checked_add(by) } else { now.checked_sub(by) };
        moved.unwrap_or(now)
    }
}

/// A clock fixed at one instant (tests).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub SystemTime);

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        self.0
    }
}
