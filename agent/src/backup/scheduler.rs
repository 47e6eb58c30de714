//! Daily backups at each instance's policy time, and retention, run by the agent itself: they go on
//! when the orchestrator is unreachable. The request id of a scheduled backup names the instance
//! and the UTC day, so a restart on the same day does not take a second one.

use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

use super::manifest::{BackupKind, BackupMethod};
use super::service::BackupService;
use crate::instances::{Instance, Registry};

/// The UTC day number and minute of day of `t`.
fn day_and_minute(t: SystemTime) -> (u64, u32) {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
    (secs / 86_400, u32::try_from((secs % 86_400) / 60).unwrap_or(0))
}

/// The request id of today's scheduled backup if it is due at `now`.
pub fn due_request(instance: &Instance, now: SystemTime) -> Option<String> {
    let policy = instance.spec.backup_policy.as_ref().filter(|p| p.enabled)?;
    let (day, minute) = day_and_minute(now);
    (minute >= policy.daily_at_minute_utc).then(|| format!("scheduled:{}:{day}", instance.id))
}

/// One pass: starts due backups and applies retention for every instance.
pub async fn tick(service: &Arc<BackupService>, registry: &Registry, now: SystemTime) {
    let instances = registry.list();
    service.health().retain_instances(&|id| instances.iter().any(|i| i.id == id));
    for instance in instances {
        if let Some(request_id) = due_request(&instance, now) {
            let method = BackupMethod::Physical;
            match service.start(&instance, method, BackupKind::Scheduled, &request_id).await {
                Ok(op) if op.created >= now - Duration::from_secs(1) => {
                    tracing::info!(instance = %instance.id, op = %op.id, "scheduled backup started");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(instance = %instance.id, "scheduled backup: {e:#}"),
            }
        }
        match service.apply_retention(&instance, now).await {
            Ok(outcome) if !outcome.removed.is_empty() => {
                tracing::info!(instance = %instance.id, "retention removed {} backups", outcome.removed.len())
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(instance = %instance.id, "retention: {e:#}"),
        }
    }
}

/// Runs until `root` is cancelled.
pub async fn run(service: Arc<BackupService>, registry: Arc<Registry>, interval: Duration, root: CancellationToken) {
    let mut timer = tokio::time::interval(interval);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = timer.tick() => tick(&service, &registry, SystemTime::now()).await,
            () = root.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instances::fixtures;

    #[test]
    fn due_once_the_policy_minute_passed() {
        let spec = fixtures::spec("a"); // daily at 03:00 UTC
        let now = SystemTime::UNIX_EPOCH;
        let instance = Instance { id: "a".into(), spec, created: now, updated: now, generation: 1 };
        let day = Duration::from_secs(86_400 * 20_000);
        assert_eq!(due_request(&instance, now + day + Duration::from_secs(179 * 60)), None);
        assert_eq!(due_request(&instance, now + day + Duration::from_secs(180 * 60)).unwrap(), "scheduled:a:20000");
        let mut off = instance.clone();
        off.spec.backup_policy.as_mut().unwrap().enabled = false;
        assert_eq!(due_request(&off, now + day + Duration::from_secs(200 * 60)), None);
    }
}
