//! From probe outcomes to the ledger's intervals, per instance.
//!
//! Where an interval starts and ends: at the start of the first failed probe, and at the start of
//! the first probe that succeeds again. Both ends lag the real stop and start by less than one
//! probe interval, and by about as much, so the recorded length is within one interval of the real
//! one (starting at the last success instead would always add up to an interval).
//!
//! - A failed probe while a disruptive operation runs on the instance opens a *planned* interval;
//!   otherwise *unplanned*. When that changes while the instance stays down (the operation ends),
//!   the interval is closed and one of the other kind opened at that probe.
//! - A probe the agent could not run ([`Outcome::NotRun`]: its own configuration or files) opens
//!   an *unknown* interval: nothing was measured, which is not database downtime.
//! - A round later than one interval behind its schedule (the agent was overloaded or stopped):
//!   the time from when the missed probe was due to this probe is *unknown*; an interval open
//!   before is closed where the missed probe was due.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use crate::availability::{IntervalKind, Ledger, LedgerError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Up,
    /// The server did not answer, or answered an error.
    Down(String),
    /// The agent could not run the probe.
    NotRun(String),
}

/// What an observation changed in the ledger, for the logs and the tests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Change {
    /// The kind of the interval closed at this probe (or where the missed probe was due).
    pub closed: Option<IntervalKind>,
    pub opened: Option<IntervalKind>,
    /// An unknown gap recorded because the probe was late: (from, to).
    pub late_gap: Option<(SystemTime, SystemTime)>,
}

pub struct Tracker {
    ledger: Ledger,
    interval: Duration,
    /// When each instance's last probe started.
    last: HashMap<String, SystemTime>,
}

impl Tracker {
    pub fn new(ledger: Ledger, interval: Duration) -> Self {
        Self { ledger, interval, last: HashMap::new() }
    }

    /// Records the outcome of the probe of `instance` started at `at`; `planned`: a disruptive
    /// operation runs on it. Blocking: ledger writes are fsynced.
    pub fn observe(
        &mut self,
        instance: &str,
        at: SystemTime,
        outcome: &Outcome,
        planned: bool,
    ) -> Result<Change, LedgerError> {
        let mut change = Change::default();
        if let Some(due) = self.last.get(instance).map(|last| *last + self.interval)
            && at.duration_since(due).unwrap_or_default() > self.interval
        {
            let was_open = self.ledger.open_kind(instance);
            if self.ledger.close_down(instance, due)? {
                change.closed = was_open;
            }
            let reason = "the agent did not probe in time (overloaded or stopped)";
            self.ledger.record_closed(instance, due, at, IntervalKind::Unknown, reason)?;
            change.late_gap = Some((due, at));
        }
        self.last.insert(instance.to_owned(), at);
        let (wanted, reason) = match outcome {
            Outcome::Up => (None, ""),
            Outcome::Down(r) if planned => (Some(IntervalKind::Planned), r.as_str()),
            Outcome::Down(r) => (Some(IntervalKind::Unplanned), r.as_str()),
            Outcome::NotRun(r) => (Some(IntervalKind::Unknown), r.as_str()),
        };
        let open = self.ledger.open_kind(instance);
        if open == wanted {
            if wanted.is_some() {
                // Still down: the evidence a crash recovery closes the interval at.
                self.ledger.seen_down(instance, at)?;
            }
            return Ok(change);
        }
        if let Some(kind) = open {
            self.ledger.close_down(instance, at)?;
            change.closed = Some(kind);
        }
        if let Some(kind) = wanted {
            self.ledger.open_interval(instance, at, kind, reason)?;
            change.opened = Some(kind);
        }
        Ok(change)
    }

    /// Closes what is open for an instance that is no longer registered, and forgets it.
    pub fn forget(&mut self, instance: &str, at: SystemTime) -> Result<(), LedgerError> {
        self.last.remove(instance);
        self.ledger.close_down(instance, at)?;
        Ok(())
    }

    /// The instances the tracker has seen.
    pub fn known(&self) -> Vec<String> {
        self.last.keys().cloned().collect()
    }
}
