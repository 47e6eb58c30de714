//! Work a crash can leave half done: a job writes the step it has reached to the journal
//! ([`JobContext::checkpoint`]) so that after the agent died mid-way its kind can tell at the next
//! start what to undo or finish, then record what it did on the interrupted operation
//! ([`OperationEngine::conclude_interrupted`]).

use super::{JobContext, OperationEngine};
use crate::ops::OpsError;
use crate::ops::model::{OpError, OpState, OperationRecord, Progress};

impl JobContext {
    /// Reports `progress` like [`JobContext::progress`], and writes it to the journal before
    /// returning: a step recorded here is what the record says after a crash (`kill -9`, power
    /// loss). For steps whose undoing depends on how far the job got; a failed write is logged and
    /// the job goes on (the record then names the step before).
    pub async fn checkpoint(&self, progress: Progress) {
        let _write = self.slot.write.lock().await;
        let mut record = self.slot.tx.borrow().clone();
        record.progress = progress.clone();
        let journal = self.journal.clone();
        let saved = tokio::task::spawn_blocking(move || journal.save(&record)).await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("record the step of a running operation: {e:#}"),
            Err(e) => tracing::error!("record the step of a running operation: {e}"),
        }
        self.slot.tx.send_modify(|r| r.progress = progress);
    }
}

impl OperationEngine {
    /// The operations of `kind` the last stop interrupted while they ran (not those given up while
    /// waiting for a window, which did no work) and that were not concluded yet: the work their
    /// kind must recover. Stays so until [`Self::conclude_interrupted`], so a recovery that is
    /// itself cut short by a stop is done again at the next start.
    pub fn interrupted_running(&self, kind: &str) -> Vec<OperationRecord> {
        let records = self.table().slots.values().map(|s| s.tx.borrow().clone()).collect::<Vec<_>>();
        records
            .into_iter()
            .filter(|r| r.kind == kind && r.state == OpState::Interrupted && r.started.is_some())
            .collect()
    }

    /// Ends an interrupted operation as `failed` with what happened and what the agent did about
    /// it (`error`), once its kind has recovered from the interruption. Only an `interrupted`
    /// record can be concluded: the others already say how they ended.
    pub async fn conclude_interrupted(&self, id: &str, error: OpError) -> Result<OperationRecord, OpsError> {
        let slot = self.table().slots.get(id).cloned().ok_or_else(|| OpsError::NotFound(id.to_owned()))?;
        let state = slot.tx.borrow().state;
        if state != OpState::Interrupted {
            return Err(OpsError::AlreadyFinished { id: id.to_owned(), state: state.as_str() });
        }
        self.transition(&slot, |r| {
            r.state = OpState::Failed;
            r.error = Some(error.clone());
        })
        .await;
        Ok(slot.tx.borrow().clone())
    }
}
