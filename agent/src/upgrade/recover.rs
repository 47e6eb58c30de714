//! After a crash mid-upgrade (the agent killed, the host powered off): the instance must not stay
//! down silently. At start-up each upgrade operation the last stop interrupted while it ran is
//! recovered from two durable facts: the step the job had written to the journal
//! (`JobContext::checkpoint`, see [`super::job`]'s `STEP_*`) and the instance record, whose major
//! changes only once the new cluster has passed its health check (the commit point):
//! - the record names the target major: the switch was committed; the new cluster is started;
//! - else, stopped before the old cluster was: it still serves (it is started if it is not); a new
//!   cluster the job had begun to create is dropped;
//! - else (the downtime had begun): whatever pg_upgrade left running is stopped, the half-made new
//!   cluster dropped (never kept: pg_upgrade's copy was cut short, it never served, and a cluster of
//!   that name would block the next attempt), and the old cluster, which copy and clone modes never
//!   modify, started again.
//!
//! Each ends with the health check; the operation then ends `failed`, saying what happened and
//! what the agent did ([`recover`]).

use std::path::{Path, PathBuf};

use super::plan::{self, Cluster};
use crate::error::ErrorCode;
use crate::instances::Instance;
use crate::ops::{OpError, OperationRecord};

/// The job's progress steps that decide the recovery (the `done` of its recorded progress).
/// From this step on the new cluster may exist (the job checked it did not before).
pub const STEP_CREATE_NEW: u64 = 2;
/// From this step on the old cluster may be stopped: the downtime has begun.
pub const STEP_STOP_OLD: u64 = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The old cluster was never stopped: start it if it is not running; drop the new cluster
    /// if the job had begun to create it.
    BeforeDowntime { drop_new: bool },
    /// The downtime had begun and the switch was not committed: back to the old cluster.
    RollBack,
    /// The instance record names the target: the new cluster is the instance; start it.
    StartNew,
}

/// What to do for an upgrade to `target` interrupted at `step`, the instance record naming `recorded`.
pub fn decide(step: u64, recorded_major: u32, target: u32) -> Decision {
    if recorded_major == target {
        Decision::StartNew
    } else if step < STEP_STOP_OLD {
        Decision::BeforeDowntime { drop_new: step >= STEP_CREATE_NEW }
    } else {
        Decision::RollBack
    }
}

/// The cluster actions recovery takes: postgresql-common and systemd for real
/// ([`super::control::PgCommonControl`]), a recorder in unit tests.
#[tonic::async_trait]
pub trait ClusterControl: Send + Sync {
    async fn start(&self, c: &Cluster) -> Result<(), String>;
    async fn stop(&self, c: &Cluster) -> Result<(), String>;
    /// Stops a server pg_upgrade started on `data_dir` by itself (outside the cluster's unit).
    async fn stop_stray_server(&self, major: u32, data_dir: &Path);
    /// start.conf: "auto" or "manual".
    async fn set_start(&self, c: &Cluster, mode: &str) -> Result<(), String>;
    fn exists(&self, c: &Cluster) -> bool;
    async fn drop_cluster(&self, c: &Cluster) -> Result<(), String>;
    /// The health check of the cluster's server, which must run `c.major` on `data_dir`.
    async fn healthy(&self, c: &Cluster, data_dir: &Path) -> Result<String, String>;
}

/// Recovers the interrupted upgrade `record` of `instance` (as registered now) and returns the
/// error the operation ends with: what happened, what the agent did, whether the instance serves.
pub async fn recover(record: &OperationRecord, instance: &Instance, control: &dyn ClusterControl) -> OpError {
    let step = record.progress.done;
    let at = if record.progress.message.is_empty() {
        format!("step {step}")
    } else {
        format!("step {step} ({})", record.progress.message)
    };
    let what = format!("the agent stopped during the upgrade, at {at}");
    match plan_recovery(record, instance) {
        Ok((decision, old, new, old_data, new_data)) => {
            let done = act(&decision, &old, &new, &old_data, &new_data, control).await;
            match done {
                Ok(message) => OpError { code: ErrorCode::Aborted, message: format!("{what}; {message}") },
                Err(message) => OpError {
                    code: ErrorCode::Internal,
                    message: format!("{what}; {message}: the instance is DOWN and needs an operator"),
                },
            }
        }
        Err(message) => OpError {
            code: ErrorCode::Internal,
            message: format!(
                "{what}; the agent cannot tell what to recover ({message}); an operator must check the instance"
            ),
        },
    }
}

type Planned = (Decision, Cluster, Cluster, PathBuf, PathBuf);

/// The decision and the two clusters with their data folders, from the record and the instance.
fn plan_recovery(record: &OperationRecord, instance: &Instance) -> Result<Planned, String> {
    let target = record.params["target_version"].as_str().and_then(|t| t.parse::<u32>().ok()).ok_or_else(|| {
        format!("the operation's target_version {:?} is not a major", record.params["target_version"])
    })?;
    let spec = &instance.spec;
    let recorded = plan::current_major(&instance.id, &spec.engine_version).map_err(|e| e.to_string())?;
    let unit_cluster = Cluster::from_unit(&instance.id, &spec.systemd_unit).map_err(|e| e.to_string())?;
    let decision = decide(record.progress.done, recorded, target);
    if decision == Decision::StartNew {
        // The record is the new cluster's; the old one is not touched.
        let data = spec.data_dir.clone();
        return Ok((decision, unit_cluster.clone(), unit_cluster, data.clone(), data));
    }
    if recorded > target {
        return Err(format!("the instance is recorded at {recorded}, past the target {target}"));
    }
    let new = unit_cluster.with_major(target);
    let new_data = plan::new_data_dir(&spec.data_dir, recorded, target)
        .ok_or_else(|| format!("no new data folder for {}", spec.data_dir.display()))?;
    Ok((decision, unit_cluster, new, spec.data_dir.clone(), new_data))
}

async fn act(
    decision: &Decision,
    old: &Cluster,
    new: &Cluster,
    old_data: &Path,
    new_data: &Path,
    control: &dyn ClusterControl,
) -> Result<String, String> {
    match decision {
        Decision::StartNew => {
            control.set_start(new, "auto").await.map_err(|e| format!("set {} to start at boot: {e}", new.shown()))?;
            control
                .start(new)
                .await
                .map_err(|e| format!("the switch to {} was recorded; starting it failed: {e}", new.shown()))?;
            let health = control.healthy(new, new_data).await.map_err(|e| {
                format!("the switch to {} was recorded; started, it fails its health check: {e}", new.shown())
            })?;
            Ok(format!(
                "the switch to {} had been recorded, so the agent started it and it serves ({health}); statistics may \
                 be missing: run vacuumdb --all --analyze-in-stages",
                new.shown()
            ))
        }
        Decision::BeforeDowntime { drop_new } => {
            let dropped = if *drop_new { drop_if_there(new, control).await? } else { String::new() };
            control.start(old).await.map_err(|e| format!("start the old cluster {}: {e}", old.shown()))?;
            let health = control
                .healthy(old, old_data)
                .await
                .map_err(|e| format!("the old cluster {} fails its health check: {e}", old.shown()))?;
            Ok(format!(
                "the old cluster had not been stopped: nothing was changed{dropped}; {} serves ({health}); start the \
                 upgrade again",
                old.shown()
            ))
        }
        Decision::RollBack => {
            // The new cluster may have been started by the switch, or pg_upgrade's own servers may
            // still run if they outlived the agent.
            let _ = control.stop(new).await;
            control.stop_stray_server(old.major, old_data).await;
            control.stop_stray_server(new.major, new_data).await;
            control.set_start(old, "auto").await.map_err(|e| format!("set {} to start at boot: {e}", old.shown()))?;
            let dropped = drop_if_there(new, control).await?;
            control.start(old).await.map_err(|e| format!("start the old cluster {} again: {e}", old.shown()))?;
            let health = control.healthy(old, old_data).await.map_err(|e| {
                format!("the old cluster {} was started again but fails its health check: {e}", old.shown())
            })?;
            Ok(format!(
                "the switch to {} was not recorded{dropped}; the old cluster {} was started again and serves its data \
                 ({health}); start the upgrade again",
                new.shown(),
                old.shown()
            ))
        }
    }
}

/// Drops the half-made new cluster if it exists; the note for the message.
async fn drop_if_there(new: &Cluster, control: &dyn ClusterControl) -> Result<String, String> {
    if !control.exists(new) {
        return Ok(String::new());
    }
    control.drop_cluster(new).await.map_err(|e| format!("drop the half-made cluster {}: {e}", new.shown()))?;
    Ok(format!("; the half-made cluster {} was dropped", new.shown()))
}

#[cfg(test)]
#[path = "recover_tests.rs"]
mod tests;
