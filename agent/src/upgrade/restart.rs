//! What an agent start does for upgrades the last stop left behind: an upgrade waiting for its
//! maintenance window waits again ([`UpgradeService::rearm`]), and one the stop cut short while it
//! ran is recovered ([`UpgradeService::recover_interrupted`], see [`super::recover`]).

use std::time::Duration;

use super::control::PgCommonControl;
use super::service::UpgradeService;
use super::{KIND, UpgradeError, plan, recover};
use crate::ops::{Disruptive, OperationRecord};

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
        let records = self.operations.interrupted_running(KIND);
        for record in &records {
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
        records.len()
    }
}

#[cfg(test)]
#[path = "restart_tests.rs"]
mod tests;
