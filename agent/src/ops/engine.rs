//! Submitting, running, watching and cancelling operations. Every state change is written to the
//! journal before anyone can observe it, so what a client saw survives a crash.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::OpsError;
use super::journal::Journal;
use super::model::{OpError, OpState, OperationRecord, Progress, Submitter};
use crate::error::ErrorCode;
use crate::ids;
use crate::locks::ResourceLocks;
use crate::maintenance::{Clock, WeeklyWindow};

#[path = "window_wait.rs"]
mod window_wait;

#[path = "interrupted.rs"]
mod interrupted;

use super::disruptions::{Disruption, Disruptions};

pub type JobResult = Result<Option<serde_json::Value>, OpError>;
pub type JobFuture = Pin<Box<dyn Future<Output = JobResult> + Send>>;
pub type JobFn = Box<dyn FnOnce(JobContext) -> JobFuture + Send>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    /// The request_id was seen before: this is the operation it started.
    Existing,
}

pub struct NewOperation {
    pub request_id: String,
    pub kind: &'static str,
    pub target: String,
    /// Kind-specific parameters; part of the idempotency digest. Never secrets: a secret given
    /// with the request (a recovery key) is noted as [`super::IN_MEMORY_ONLY`] only.
    pub params: serde_json::Value,
    /// Takes the target's lock: one exclusive operation per target at a time, others queue.
    pub exclusive: bool,
}

/// Work that disrupts its instance (a restart, an upgrade): it runs inside the instance's
/// maintenance window (`maintenance::gate`), waiting in `waiting_for_window` until then.
#[derive(Debug, Clone, Copy)]
pub struct Disruptive {
    /// The target instance's window as submitted; `None`: the instance has none, nothing to wait for.
    pub window: Option<WeeklyWindow>,
    /// How long the work is expected to take: work that does not fit in what is left of the
    /// current window waits for the next one.
    pub expected: Duration,
    /// Run at once, whatever the window says.
    pub force: bool,
}

pub struct OpsSettings {
    pub max_concurrent: usize,
    pub retention: Duration,
    pub max_finished: usize,
}

/// What a running job gets: its cancellation token (check it at every await) and a progress reporter.
pub struct JobContext {
    pub cancel: CancellationToken,
    slot: Arc<Slot>,
    disruptions: Disruptions,
    /// For [`Self::checkpoint`]: progress a job must find again after a crash.
    journal: Journal,
}

impl JobContext {
    pub fn progress(&self, progress: Progress) {
        self.slot.tx.send_modify(|r| r.progress = progress);
    }

    /// The id of the operation this job runs, for what the job names after it (a scratch folder).
    pub fn operation_id(&self) -> String {
        self.slot.tx.borrow().id.clone()
    }

    /// For a job that disrupts its target instance without going through the maintenance window
    /// (a restore in place): while the guard lives, a failed health probe of the instance counts
    /// as planned downtime. Work submitted with `submit_disruptive` is counted without this.
    pub fn disrupts_instance(&self) -> Disruption {
        let target = self.slot.tx.borrow().target.clone();
        self.disruptions.begin(&target)
    }
}

struct Slot {
    tx: watch::Sender<OperationRecord>,
    cancel: CancellationToken,
    /// Orders the journal writes of one operation: without it a cancel request and a state change
    /// could race on the same file and an older state could land last.
    write: tokio::sync::Mutex<()>,
}

impl Slot {
    fn new(record: OperationRecord, cancel: CancellationToken) -> Arc<Self> {
        let (tx, _) = watch::channel(record);
        Arc::new(Slot { tx, cancel, write: tokio::sync::Mutex::new(()) })
    }
}

#[derive(Default)]
struct Table {
    slots: HashMap<String, Arc<Slot>>,
    by_request: HashMap<String, String>,
}

struct Inner {
    journal: Journal,
    table: Mutex<Table>,
    /// Serialises submissions so a request_id is checked and recorded atomically.
    submit: tokio::sync::Mutex<()>,
    locks: ResourceLocks,
    permits: Arc<Semaphore>,
    root: CancellationToken,
    tasks: TaskTracker,
    settings: OpsSettings,
    /// The clock maintenance windows are read against; the host's unless set at start-up.
    window_clock: OnceLock<Arc<dyn Clock>>,
    /// The instances disruptive operations are running on now.
    disruptions: Disruptions,
}

#[derive(Clone)]
pub struct OperationEngine {
    inner: Arc<Inner>,
}

/// `message`, plus for each parameter stored as [`super::IN_MEMORY_ONLY`] (a secret the request
/// carried) a note that it is gone with the process: the operation cannot simply be retried.
fn not_kept_note(message: &str, params: &serde_json::Value) -> String {
    let mut out = message.to_owned();
    for (name, _) in params.as_object().into_iter().flatten().filter(|(_, v)| v.as_str() == Some(super::IN_MEMORY_ONLY))
    {
        out.push_str(&format!("; the {} is not kept across restarts; submit again", name.replace('_', " ")));
    }
    out
}

impl OperationEngine {
    /// Loads the journal (an unreadable record is quarantined, see `Journal::open`); operations
    /// that were queued or running when the agent stopped become `interrupted` (returned so their
    /// kinds can clean up).
    pub fn open(
        dir: &std::path::Path,
        settings: OpsSettings,
        locks: ResourceLocks,
        root: CancellationToken,
    ) -> Result<(Self, Vec<OperationRecord>), OpsError> {
        let (journal, loaded) = Journal::open(dir)?;
        let mut table = Table::default();
        let mut interrupted = Vec::new();
        let now = SystemTime::now();
        for mut record in loaded.records {
            // A waiting operation did no work yet: it keeps waiting, re-armed by `resume_waiting`.
            if record.state == OpState::WaitingForWindow {
                table.by_request.insert(record.request_id.clone(), record.id.clone());
                table.slots.insert(record.id.clone(), Slot::new(record, root.child_token()));
                continue;
            }
            if !record.state.is_finished() {
                let was = record.state.as_str();
                record.state = OpState::Interrupted;
                record.finished = Some(now);
                let message = format!("the agent stopped while this operation was {was}; its work was not finished");
                let message = not_kept_note(&message, &record.params);
                record.error = Some(OpError { code: ErrorCode::Aborted, message });
                journal.save(&record)?;
                interrupted.push(record.clone());
            }
            table.by_request.insert(record.request_id.clone(), record.id.clone());
            table.slots.insert(record.id.clone(), Slot::new(record, CancellationToken::new()));
        }
        let permits = Arc::new(Semaphore::new(settings.max_concurrent));
        let inner = Inner {
            journal,
            table: Mutex::new(table),
            submit: tokio::sync::Mutex::new(()),
            locks,
            permits,
            root,
            tasks: TaskTracker::new(),
            settings,
            window_clock: OnceLock::new(),
            disruptions: Disruptions::default(),
        };
        let engine = Self { inner: Arc::new(inner) };
        engine.prune(now)?;
        Ok((engine, interrupted))
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.inner.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The operation `request_id` started, while its record is kept. A caller that picks a fresh
    /// value for a new operation (a backup id) reuses the recorded one on a retry, so the retry
    /// matches the record.
    pub fn by_request(&self, request_id: &str) -> Option<OperationRecord> {
        let table = self.table();
        table.by_request.get(request_id).and_then(|id| table.slots.get(id)).map(|s| s.tx.borrow().clone())
    }

    /// The operation `request_id` started, if it was this same request: the same kind, target and
    /// parameters. A retry gets its operation back whatever changed since (a check that would refuse
    /// it now, the instance record an upgrade changed).
    pub fn replay(
        &self,
        request_id: &str,
        kind: &str,
        target: &str,
        params: &serde_json::Value,
    ) -> Option<OperationRecord> {
        self.by_request(request_id).filter(|r| r.kind == kind && r.target == target && &r.params == params)
    }

    /// Starts an operation, or returns the one that `request_id` started before.
    pub async fn submit(&self, new: NewOperation, job: JobFn) -> Result<(OperationRecord, Outcome), OpsError> {
        self.submit_gated(new, None, job).await
    }

    /// [`Self::submit`] for disruptive work: it starts inside the target's maintenance window.
    pub async fn submit_disruptive(
        &self,
        new: NewOperation,
        gate: Disruptive,
        job: JobFn,
    ) -> Result<(OperationRecord, Outcome), OpsError> {
        self.submit_gated(new, Some(gate), job).await
    }

    async fn submit_gated(
        &self,
        new: NewOperation,
        gate: Option<Disruptive>,
        job: JobFn,
    ) -> Result<(OperationRecord, Outcome), OpsError> {
        ids::request_id(&new.request_id)?;
        let digest = request_digest(new.kind, &new.target, &new.params);
        let _serial = self.inner.submit.lock().await;
        let existing = {
            let table = self.table();
            table.by_request.get(&new.request_id).and_then(|id| table.slots.get(id)).map(|s| s.tx.borrow().clone())
        };
        if let Some(record) = existing {
            if record.request_digest != digest {
                return Err(OpsError::RequestIdReused { request_id: new.request_id, existing: record.id });
            }
            return Ok((record, Outcome::Existing));
        }
        if self.inner.root.is_cancelled() {
            return Err(OpsError::ShuttingDown);
        }
        let record = OperationRecord {
            id: new_operation_id(),
            request_id: new.request_id,
            request_digest: digest,
            kind: new.kind.to_owned(),
            target: new.target,
            params: new.params,
            state: OpState::Queued,
            progress: Progress::default(),
            created: SystemTime::now(),
            started: None,
            finished: None,
            error: None,
            result: None,
            cancel_requested: false,
            submitted_by: Submitter::current(),
            window_start: None,
            window_end: None,
            overrunning: false,
        };
        self.persist(record.clone()).await?;
        let slot = Slot::new(record.clone(), self.inner.root.child_token());
        {
            let mut table = self.table();
            table.by_request.insert(record.request_id.clone(), record.id.clone());
            table.slots.insert(record.id.clone(), slot.clone());
        }
        let (by, by_role) =
            record.submitted_by.as_ref().map_or(("agent", ""), |s| (s.subject.as_str(), s.role.as_str()));
        tracing::info!(op = %record.id, kind = %record.kind, target = %record.target, by, by_role, "operation queued");
        let engine = self.clone();
        self.inner.tasks.spawn(async move { engine.run(slot, new.exclusive, gate, job).await });
        Ok((record, Outcome::Created))
    }

    /// Takes `target`'s exclusive lock for work done outside an operation (the start-up recovery of
    /// an interrupted upgrade), if nobody holds it: exclusive operations on the target queue behind
    /// it as behind one of their own.
    pub fn try_lock_target(&self, target: &str) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        self.inner.locks.try_lock(target)
    }

    async fn run(&self, slot: Arc<Slot>, exclusive: bool, gate: Option<Disruptive>, job: JobFn) {
        // Waiting takes no lock: a week's wait must not block the instance's other work.
        let window_end = match gate {
            None => None,
            Some(gate) => match self.wait_for_window(&slot, &gate).await {
                window_wait::Waited::Run { window_end } => window_end,
                window_wait::Waited::Cancelled => return self.finish(&slot, Err(cancelled())).await,
                // Left waiting in the journal; the next start re-arms it.
                window_wait::Waited::ShuttingDown => return,
            },
        };
        let target = slot.tx.borrow().target.clone();
        let _lock = if exclusive {
            tokio::select! {
                g = self.inner.locks.lock(&target) => Some(g),
                () = slot.cancel.cancelled() => return self.finish(&slot, Err(cancelled())).await,
            }
        } else {
            None
        };
        let _permit = tokio::select! {
            p = self.inner.permits.clone().acquire_owned() => p,
            () = slot.cancel.cancelled() => return self.finish(&slot, Err(cancelled())).await,
        };
        let started = SystemTime::now();
        self.transition(&slot, |r| {
            r.state = OpState::Running;
            r.started = Some(started);
            r.window_start = None;
            r.window_end = window_end;
        })
        .await;
        // Disruptive work counts as planned downtime of its instance until it has ended.
        let _disruption = gate.is_some().then(|| self.inner.disruptions.begin(&target));
        let ctx = JobContext {
            cancel: slot.cancel.clone(),
            slot: slot.clone(),
            disruptions: self.inner.disruptions.clone(),
            journal: self.inner.journal.clone(),
        };
        let result = self.run_until_done(&slot, window_end, job(ctx)).await;
        self.finish(&slot, result).await;
    }

    /// Whether an operation that disrupts `instance` is running now (the health probes count a
    /// failure then as planned downtime).
    pub fn is_disrupting(&self, instance: &str) -> bool {
        self.inner.disruptions.is_disrupting(instance)
    }

    async fn finish(&self, slot: &Slot, result: JobResult) {
        let shutting_down = self.inner.root.is_cancelled();
        let finished = SystemTime::now();
        self.transition(slot, |r| {
            r.finished = Some(finished);
            match &result {
                Ok(value) => {
                    r.state = OpState::Succeeded;
                    r.result.clone_from(value);
                }
                Err(_) if r.cancel_requested => {
                    r.state = OpState::Cancelled;
                    r.error = Some(OpError { code: ErrorCode::Cancelled, message: "cancelled by request".into() });
                }
                Err(e) if e.code == ErrorCode::Cancelled && shutting_down => {
                    r.state = OpState::Interrupted;
                    let message = "the agent shut down while this operation ran; its work was not finished";
                    r.error = Some(OpError { code: ErrorCode::Aborted, message: not_kept_note(message, &r.params) });
                }
                Err(e) => {
                    r.state = OpState::Failed;
                    r.error = Some(e.clone());
                }
            }
        })
        .await;
        let record = slot.tx.borrow().clone();
        match &record.error {
            None => tracing::info!(op = %record.id, kind = %record.kind, "operation succeeded"),
            Some(e) => {
                tracing::warn!(op = %record.id, kind = %record.kind, state = record.state.as_str(), "operation ended: {}", e.message)
            }
        }
    }

    /// Applies `change` to the journal first, then publishes it to watchers: nobody sees a state
    /// that a crash could take back. A failed journal write is logged; the operation goes on.
    async fn transition(&self, slot: &Slot, change: impl Fn(&mut OperationRecord)) {
        let _write = slot.write.lock().await;
        let mut record = slot.tx.borrow().clone();
        change(&mut record);
        if let Err(e) = self.persist(record).await {
            tracing::error!("{e:#}");
        }
        slot.tx.send_modify(change);
    }

    async fn persist(&self, record: OperationRecord) -> Result<(), OpsError> {
        let journal = self.inner.journal.clone();
        tokio::task::spawn_blocking(move || journal.save(&record))
            .await
            .map_err(|e| OpsError::journal("write journal record".into(), std::io::Error::other(e)))?
    }

    pub fn get(&self, id: &str) -> Result<OperationRecord, OpsError> {
        ids::operation_id(id)?;
        self.table().slots.get(id).map(|s| s.tx.borrow().clone()).ok_or_else(|| OpsError::NotFound(id.to_owned()))
    }

    /// Newest first.
    pub fn list(&self, target: Option<&str>, only_open: bool, limit: usize) -> Vec<OperationRecord> {
        let mut records: Vec<OperationRecord> = self
            .table()
            .slots
            .values()
            .map(|s| s.tx.borrow().clone())
            .filter(|r| target.is_none_or(|t| r.target == t) && (!only_open || !r.state.is_finished()))
            .collect();
        records.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.id.cmp(&a.id)));
        records.truncate(limit);
        records
    }

    pub fn open_count(&self) -> usize {
        self.table().slots.values().filter(|s| !s.tx.borrow().state.is_finished()).count()
    }

    /// The current record now, then every change.
    pub fn watch(&self, id: &str) -> Result<watch::Receiver<OperationRecord>, OpsError> {
        ids::operation_id(id)?;
        self.table().slots.get(id).map(|s| s.tx.subscribe()).ok_or_else(|| OpsError::NotFound(id.to_owned()))
    }

    /// Asks a queued or running operation to stop. Cancelling a cancelled operation is a no-op.
    pub async fn cancel(&self, id: &str) -> Result<OperationRecord, OpsError> {
        ids::operation_id(id)?;
        let slot = self.table().slots.get(id).cloned().ok_or_else(|| OpsError::NotFound(id.to_owned()))?;
        {
            let _write = slot.write.lock().await;
            let mut record = slot.tx.borrow().clone();
            if record.state == OpState::Cancelled || record.cancel_requested {
                return Ok(record);
            }
            if record.state.is_finished() {
                return Err(OpsError::AlreadyFinished { id: id.to_owned(), state: record.state.as_str() });
            }
            record.cancel_requested = true;
            self.persist(record).await?;
            slot.tx.send_modify(|r| r.cancel_requested = true);
        }
        slot.cancel.cancel();
        tracing::info!(op = id, "cancel requested");
        Ok(slot.tx.borrow().clone())
    }

    /// Drops finished records past the retention period, and the oldest beyond `max_finished`.
    pub fn prune(&self, now: SystemTime) -> Result<usize, OpsError> {
        let mut finished: Vec<(SystemTime, String, String)> = self
            .table()
            .slots
            .values()
            .map(|s| s.tx.borrow().clone())
            .filter(|r| r.state.is_finished())
            .map(|r| (r.finished.unwrap_or(r.created), r.id, r.request_id))
            .collect();
        finished.sort();
        let excess = finished.len().saturating_sub(self.inner.settings.max_finished);
        let cutoff = now.checked_sub(self.inner.settings.retention).unwrap_or(SystemTime::UNIX_EPOCH);
        let doomed: Vec<_> = finished
            .into_iter()
            .enumerate()
            .filter(|(i, (t, _, _))| *i < excess || *t < cutoff)
            .map(|(_, x)| x)
            .collect();
        for (_, id, request_id) in &doomed {
            self.inner.journal.remove(id)?;
            let mut table = self.table();
            table.slots.remove(id);
            table.by_request.remove(request_id);
        }
        Ok(doomed.len())
    }

    /// After the root token was cancelled: waits up to `grace` for running operations to record
    /// how they ended. Returns false if some did not finish in time (they come back interrupted).
    pub async fn drain(&self, grace: Duration) -> bool {
        self.inner.tasks.close();
        tokio::time::timeout(grace, self.inner.tasks.wait()).await.is_ok()
    }
}

fn cancelled() -> OpError {
    OpError { code: ErrorCode::Cancelled, message: "cancelled before it started".into() }
}

fn request_digest(kind: &str, target: &str, params: &serde_json::Value) -> String {
    let mut h = Sha256::new();
    for part in [kind, target, &params.to_string()] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    crate::hex::encode(&h.finalize())
}

fn new_operation_id() -> String {
    let mut bytes = [0u8; 10];
    // getrandom only fails without an entropy source; fall back to time so ids stay unique.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        bytes.copy_from_slice(&nanos.to_le_bytes()[..10]);
    }
    format!("op-{}", crate::hex::encode(&bytes))
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
