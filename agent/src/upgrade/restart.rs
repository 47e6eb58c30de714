//! What an agent start does for upgrades the last stop left behind: an upgrade waiting for its
//! maintenance window waits again ([`UpgradeService::rearm`]), and one the stop cut short while it
//! ran is recovered ([`UpgradeService::recover_interrupted`], see [`super::recover`]).

use std::time::Duration;

use super::control::PgCommonControl;
use super::service::UpgradeService;
use super::{KIND, UpgradeError, plan, recover};
use crate::ops::{Disruptive, OperationRecord};
use tokio::sync::OwnedMutexGuard;

impl UpgradeService {
    /// Re-arms an upgrade found waiting for its window at start-up: its job rebuilt from the
    /// operation's parameters and the instance as registered now, after the checks StartUpgrade
    /// made (an error: the upgrade would be refused now; the caller gives it up with the reason).
    pub async fn rearm(&self, record: &OperationRecord) -> Result<(), UpgradeError> {
        let target = plan::target_major(record.params["target_version"].as_str().unwrap_or_default())?;
        let force = record.params["force"].as_bool().unwrap_or(false);
        let instance = self.registry.get(&record.target)?;
        let job = self.check(&instance, target).await?;
        let gate = Disruptive {
            window: instance.spec.maintenance_window.as_ref().map(Into::into),
            expected: Duration::from_secs(self.config.expected_minutes * 60),
            force,
        };
        self.operations.resume_waiting(&record.id, true, gate, Box::new(move |ctx| Box::pin(job.run(ctx))))?;
        Ok(())
    }

    /// Recovers every upgrade the last stop interrupted while it ran, one after the other, and ends
    /// each as `failed` saying what happened and what was done. Returns how many.
    pub async fn recover_interrupted(&self) -> usize {
        let claimed = self.claim_interrupted();
        self.recover_claimed(claimed).await
    }

    /// The upgrades the last stop interrupted, each with its instance's lock taken now — before the
    /// API serves — so that a StartUpgrade (or a re-armed one) on that instance waits for the
    /// recovery instead of meeting its clusters half put back.
    pub fn claim_interrupted(&self) -> Vec<(OperationRecord, Option<OwnedMutexGuard<()>>)> {
        let records = self.operations.interrupted_running(KIND);
        records
            .into_iter()
            .map(|r| {
                let lock = self.operations.try_lock_target(&r.target);
                (r, lock)
            })
            .collect()
    }

    /// Recovers what [`Self::claim_interrupted`] claimed, one after the other, releasing each
    /// instance's lock once its recovery is recorded. Returns how many.
    pub async fn recover_claimed(&self, claimed: Vec<(OperationRecord, Option<OwnedMutexGuard<()>>)>) -> usize {
        let count = claimed.len();
        for (record, _lock) in claimed {
            let record = &record;
            let error = match self.registry.get(&record.target) {
                Ok(instance) => {
                    tracing::warn!(op = %record.id, instance = %instance.id, step = record.progress.done,
                        "recovering a PostgreSQL major upgrade the last stop interrupted");
                    let control = PgCommonControl {
                        layout: self.layout(),
                        instance: instance.clone(),
                        health: self.health.clone(),
                        backups: self.backups.clone(),
                    };
                    recover::recover(record, &instance, &control).await
                }
                Err(e) => crate::ops::OpError {
                    code: crate::error::ErrorCode::Aborted,
                    message: format!(
                        "the agent stopped during the upgrade; its instance is no longer registered ({e})"
                    ),
                },
            };
            tracing::warn!(op = %record.id, "interrupted upgrade recovered: {}", error.message);
            if let Err(e) = self.operations.conclude_interrupted(&record.id, error).await {
                tracing::error!(op = %record.id, "record the recovery of the interrupted upgrade: {e:#}");
            }
        }
        count
    }
}

#[cfg(test)]
#[path = "restart_tests.rs"]
mod tests;
