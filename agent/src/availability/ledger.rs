//! The downtime ledger: per instance, the down intervals as they open and close, and the agent's
//! own evidence of being alive (a heartbeat), both durable in the state folder
//! (`<state>/availability/`, [`JsonStore`] records written atomically before memory changes).
//!
//! A crash loses nothing: an interval open at the crash stays open on disk; at the next start
//! ([`Ledger::open`]) it is closed at the last evidence (the last heartbeat: after that nothing is
//! known), and the gap from that evidence to the start is recorded once, agent-wide, as "unknown"
//! (the agent was down, the databases were not measured: not counted as database downtime).
//!
//! Intervals are opened and closed by the health probes (`crate::health`): unplanned when a probe
//! fails, planned when it fails while a disruptive operation the orchestrator ordered runs on the
//! instance, unknown while the agent could not measure it.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::json_store::{JsonRecord, JsonStore, JsonStoreError, OnCorrupt};
use crate::maintenance::Clock;

/// Intervals that ended longer ago than this are dropped when a record is rewritten: a month's
/// report is asked for the last months, and the record must stay small.
pub const KEEP_SECS: u64 = 400 * 86_400;

/// A reason longer than this is cut (it is free text from the caller, kept in the record).
const MAX_REASON: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntervalKind {
    Unplanned,
    Planned,
    Unknown,
}

/// One interval, in seconds since the epoch; `end` is `None` while it is open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interval {
    pub start: u64,
    pub end: Option<u64>,
    pub kind: IntervalKind,
    #[serde(default)]
    pub reason: String,
}

/// One instance's intervals (`<state>/availability/instances/<id>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct InstanceRecord {
    instance_id: String,
    intervals: Vec<Interval>,
    /// The last probe that saw the open interval's instance still down: at a restart after a
    /// crash, the interval is closed there if that is later than the last heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seen_down: Option<u64>,
}

impl JsonRecord for InstanceRecord {
    const KIND: &'static str = "availability record";
    fn key(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.instance_id)
    }
    fn check(&self) -> Result<(), String> {
        match self.intervals.iter().find(|iv| iv.end.is_some_and(|end| end < iv.start)) {
            Some(iv) => Err(format!("an interval ends ({:?}) before it starts ({})", iv.end, iv.start)),
            None => Ok(()),
        }
    }
}

/// The agent's evidence and its own down gaps (`<state>/availability/agent/agent.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AgentRecord {
    /// The last second the agent is known to have been running.
    last_evidence: Option<u64>,
    /// The gaps while the agent was down: unknown for every instance.
    gaps: Vec<Interval>,
}

impl JsonRecord for AgentRecord {
    const KIND: &'static str = "agent evidence record";
    fn key(&self) -> Cow<'_, str> {
        Cow::Borrowed("agent")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Store(#[from] JsonStoreError),
}

impl crate::error::HasErrorCode for LedgerError {
    fn code(&self) -> crate::error::ErrorCode {
        match self {
            LedgerError::Store(e) => e.code(),
        }
    }
}

/// What [`Ledger::open`] repaired after a crash, for the start-up log and the tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Instances whose open interval was closed at the last evidence.
    pub closed: Vec<String>,
    /// The agent's own gap recorded as unknown, if there was one.
    pub unknown_gap: Option<(u64, u64)>,
}

struct State {
    instances: HashMap<String, InstanceRecord>,
    agent: AgentRecord,
    /// When the heartbeat was last written (it is written at most every `heartbeat_every`).
    written: u64,
}

/// The durable ledger. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    instances: JsonStore<InstanceRecord>,
    agent: JsonStore<AgentRecord>,
    state: Arc<Mutex<State>>,
    clock: Arc<dyn Clock>,
    heartbeat_every: u64,
}

impl Ledger {
    /// Opens `<dir>/instances` and `<dir>/agent`, repairs what a crash left (module documentation),
    /// and writes a first heartbeat. Blocking: start-up I/O. An unreadable record is quarantined
    /// (`OnCorrupt::Quarantine`): it is history, whose loss understates nothing the agent acts on,
    /// and an operator may still read it.
    pub fn open(
        dir: PathBuf,
        clock: Arc<dyn Clock>,
        heartbeat_every: Duration,
    ) -> Result<(Ledger, Recovery), LedgerError> {
        let (instances, loaded) = JsonStore::<InstanceRecord>::open(dir.join("instances"), OnCorrupt::Quarantine)?;
        let (agent, agent_loaded) = JsonStore::<AgentRecord>::open(dir.join("agent"), OnCorrupt::Quarantine)?;
        let now = epoch_secs(clock.now());
        let mut state = State {
            instances: loaded.records.into_iter().map(|r| (r.instance_id.clone(), r)).collect(),
            agent: agent_loaded.records.into_iter().next().unwrap_or_default(),
            written: 0,
        };
        let mut recovery = Recovery::default();
        let evidence = state.agent.last_evidence;
        for record in state.instances.values_mut() {
            let seen = record.seen_down.take();
            let Some(open) = record.intervals.iter_mut().find(|iv| iv.end.is_none()) else { continue };
            // No evidence at all (a store without a heartbeat): nothing is known after the start.
            // A probe that saw it still down after the last heartbeat is evidence too.
            let last = evidence.unwrap_or(open.start).max(seen.unwrap_or(0));
            open.end = Some(last.max(open.start).min(now.max(open.start)));
            instances.put(record)?;
            recovery.closed.push(record.instance_id.clone());
        }
        recovery.closed.sort();
        if let Some(last) = evidence.filter(|last| *last < now) {
            state.agent.gaps.push(Interval {
                start: last,
                end: Some(now),
                kind: IntervalKind::Unknown,
                reason: "the agent was not running".into(),
            });
            recovery.unknown_gap = Some((last, now));
        }
        state.agent.gaps.retain(|gap| gap.end.unwrap_or(now) + KEEP_SECS >= now);
        state.agent.last_evidence = Some(now);
        agent.put(&state.agent)?;
        state.written = now;
        let ledger = Ledger {
            instances,
            agent,
            state: Arc::new(Mutex::new(state)),
            clock,
            heartbeat_every: heartbeat_every.as_secs().max(1),
        };
        Ok((ledger, recovery))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the maps as they were before the failed write.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Opens a down interval for `instance` at `at`, unless one is already open (then `false`).
    pub fn open_down(&self, instance: &str, at: SystemTime, planned: bool, reason: &str) -> Result<bool, LedgerError> {
        let kind = if planned { IntervalKind::Planned } else { IntervalKind::Unplanned };
        self.open_interval(instance, at, kind, reason)
    }

    /// Opens an interval of `kind` for `instance` at `at`, unless one is already open (then
    /// `false`): at most one interval of an instance is open at a time.
    pub fn open_interval(
        &self,
        instance: &str,
        at: SystemTime,
        kind: IntervalKind,
        reason: &str,
    ) -> Result<bool, LedgerError> {
        let at = epoch_secs(at);
        self.add(instance, |record| {
            if record.intervals.iter().any(|iv| iv.end.is_none()) {
                return None;
            }
            Some(Interval { start: at, end: None, kind, reason: reason.chars().take(MAX_REASON).collect() })
        })
    }

    /// Records a closed interval of `kind` from `start` to `end`, unless an interval of `instance`
    /// is open (then `false`: close it first, intervals of one instance do not overlap).
    pub fn record_closed(
        &self,
        instance: &str,
        start: SystemTime,
        end: SystemTime,
        kind: IntervalKind,
        reason: &str,
    ) -> Result<bool, LedgerError> {
        let (start, end) = (epoch_secs(start), epoch_secs(end));
        self.add(instance, |record| {
            if record.intervals.iter().any(|iv| iv.end.is_none()) {
                return None;
            }
            let reason = reason.chars().take(MAX_REASON).collect();
            Some(Interval { start, end: Some(end.max(start)), kind, reason })
        })
    }

    /// Adds the interval `make` gives for the record (none: `false`), written before memory changes.
    fn add(&self, instance: &str, make: impl FnOnce(&InstanceRecord) -> Option<Interval>) -> Result<bool, LedgerError> {
        let mut state = self.lock();
        let mut record = state.instances.get(instance).cloned().unwrap_or_else(|| InstanceRecord {
            instance_id: instance.to_owned(),
            intervals: Vec::new(),
            seen_down: None,
        });
        let Some(interval) = make(&record) else { return Ok(false) };
        record.seen_down = None;
        let at = interval.start;
        record.intervals.retain(|iv| iv.end.unwrap_or(at) + KEEP_SECS >= at);
        record.intervals.push(interval);
        self.instances.put(&record)?;
        state.instances.insert(instance.to_owned(), record);
        Ok(true)
    }

    /// Records that a probe at `at` saw `instance` still down (its interval open): a crash after
    /// this closes the interval no earlier than `at`. Written once per second at most.
    pub fn seen_down(&self, instance: &str, at: SystemTime) -> Result<(), LedgerError> {
        let at = epoch_secs(at);
        let mut state = self.lock();
        let Some(record) = state.instances.get(instance) else { return Ok(()) };
        if !record.intervals.iter().any(|iv| iv.end.is_none()) || record.seen_down.is_some_and(|s| s >= at) {
            return Ok(());
        }
        let mut record = record.clone();
        record.seen_down = Some(at);
        self.instances.put(&record)?;
        state.instances.insert(instance.to_owned(), record);
        Ok(())
    }

    /// The kind of `instance`'s open interval, if one is open.
    pub fn open_kind(&self, instance: &str) -> Option<IntervalKind> {
        let state = self.lock();
        state.instances.get(instance)?.intervals.iter().find(|iv| iv.end.is_none()).map(|iv| iv.kind)
    }

    /// Closes the open interval of `instance` at `at` (not before its start); `false` if none was open.
    pub fn close_down(&self, instance: &str, at: SystemTime) -> Result<bool, LedgerError> {
        let at = epoch_secs(at);
        let mut state = self.lock();
        let Some(mut record) = state.instances.get(instance).cloned() else { return Ok(false) };
        let Some(open) = record.intervals.iter_mut().find(|iv| iv.end.is_none()) else { return Ok(false) };
        open.end = Some(at.max(open.start));
        record.seen_down = None;
        self.instances.put(&record)?;
        state.instances.insert(instance.to_owned(), record);
        Ok(true)
    }

    /// Records that the agent is alive now; written to disk at most every `heartbeat_every`, which
    /// bounds what a crash can turn from measured into unknown.
    pub fn heartbeat(&self) -> Result<(), LedgerError> {
        let now = epoch_secs(self.clock.now());
        let mut state = self.lock();
        if now < state.written + self.heartbeat_every {
            return Ok(());
        }
        let mut agent = state.agent.clone();
        agent.last_evidence = Some(now);
        self.agent.put(&agent)?;
        state.agent = agent;
        state.written = now;
        Ok(())
    }

    /// Every interval that concerns `instance`: its own and the agent's unknown gaps.
    pub fn intervals(&self, instance: &str) -> Vec<Interval> {
        let state = self.lock();
        let own = state.instances.get(instance).map(|r| r.intervals.as_slice()).unwrap_or_default();
        own.iter().chain(state.agent.gaps.iter()).cloned().collect()
    }

    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }
}

/// Seconds since the epoch, for the ledger's records (and the month's arithmetic, which reads them).
pub fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs()
}
