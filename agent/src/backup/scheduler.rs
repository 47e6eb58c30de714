//! Daily backups at each instance's policy time, and retention, run by the agent itself: they go on
//! when the orchestrator is unreachable. The request id of a scheduled backup names the instance
//! and the UTC day, so a restart on the same day does not take a second one.
//!
//! Restore drills: on each pass, if no drill runs on the host, one drill starts, of the instance
//! whose last drill is the oldest among those due (never drilled, or last drilled more than
//! `backup.drill_interval_days` ago) that have a complete backup. Its request id names the
//! instance and the day (the interval's slot when shorter), so a restart does not run it twice.
//!
//! Maintenance windows: with `backup.avoid_maintenance_windows` (the default), neither a scheduled
//! backup nor a scheduled drill starts while the instance's window is open: the window belongs to
//! the disruptive work the orchestrator ordered (an upgrade wants the disk and the CPU, and a backup
//! running through its switch-over would be of neither version). A backup due during the window
//! starts at the first pass after it ends; the request id keeps the UTC day it was due, so it is
//! still one backup a day. Retention still runs (it only deletes expired copies).

use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

use super::manifest::{BackupKind, BackupMethod};
use super::service::BackupService;
use crate::instances::{Instance, Registry};
use crate::maintenance::{Clock, WeeklyWindow};

/// How the scheduler runs: every `interval`, reading time from `clock` (the one maintenance windows
/// are read against), keeping scheduled work out of open windows when `avoid_windows`.
#[derive(Clone)]
pub struct Schedule {
    pub interval: Duration,
    pub clock: Arc<dyn Clock>,
    pub avoid_windows: bool,
}

/// Whether scheduled work on `instance` must wait at `now`: its maintenance window is open and
/// the scheduler avoids windows.
pub fn held_by_window(instance: &Instance, now: SystemTime, avoid_windows: bool) -> bool {
    avoid_windows && instance.spec.maintenance_window.as_ref().is_some_and(|w| WeeklyWindow::from(w).contains(now))
}

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

/// The request id of the instance's scheduled drill if one is due at `now`: it was never drilled
/// or its last drill finished at least `interval` before `now`.
pub fn drill_due_request(
    instance_id: &str,
    last: Option<SystemTime>,
    interval: Duration,
    now: SystemTime,
) -> Option<String> {
    let due = last.is_none_or(|last| now.duration_since(last).is_ok_and(|age| age >= interval));
    let slot_secs = interval.as_secs().clamp(1, 86_400);
    let slot = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs() / slot_secs;
    due.then(|| format!("scheduled-drill:{instance_id}:{slot}"))
}

/// Starts at most one due drill (see the module documentation).
async fn start_due_drill(service: &BackupService, instances: &[&Instance], now: SystemTime) {
    let Some(interval) = service.drill_interval() else { return };
    if service.drill_running() {
        return;
    }
    let mut due: Vec<(Option<SystemTime>, &Instance, String)> = instances
        .iter()
        .copied()
        .filter_map(|i| {
            let last = service.last_drill(&i.id).map(|r| r.last_finished());
            drill_due_request(&i.id, last, interval, now).map(|request| (last, i, request))
        })
        .collect();
    // Never drilled first (None sorts first), then the longest ago.
    due.sort_by_key(|(last, ..)| *last);
    for (_, instance, request_id) in due {
        match service.drill(instance, "", &request_id).await {
            Ok(op) if !op.state.is_finished() => {
                tracing::info!(instance = %instance.id, op = %op.id, "scheduled restore drill started");
                return;
            }
            // This slot's drill already ran (its record was not written, or it is being written).
            Ok(_) => {}
            Err(super::BackupError::Drill(super::drill::DrillError::NoCompleteBackup { .. })) => {}
            Err(e) => tracing::warn!(instance = %instance.id, "scheduled restore drill: {e:#}"),
        }
    }
}

/// One pass: starts due backups and applies retention for every instance, then starts a due drill.
/// Instances whose maintenance window is open get no new scheduled work (`avoid_windows`).
pub async fn tick(service: &Arc<BackupService>, registry: &Registry, now: SystemTime, avoid_windows: bool) {
    let instances = registry.list();
    service.health().retain_instances(&|id| instances.iter().any(|i| i.id == id));
    let free: Vec<&Instance> = instances.iter().filter(|i| !held_by_window(i, now, avoid_windows)).collect();
    start_due_drill(service, &free, now).await;
    for instance in &instances {
        let due = due_request(instance, now);
        if due.is_some() && held_by_window(instance, now, avoid_windows) {
            tracing::debug!(instance = %instance.id, "scheduled backup waits: the maintenance window is open");
        } else if let Some(request_id) = due {
            let method = BackupMethod::Physical;
            match service.start(instance, method, BackupKind::Scheduled, &request_id).await {
                Ok(op) if op.created >= now - Duration::from_secs(1) => {
                    tracing::info!(instance = %instance.id, op = %op.id, "scheduled backup started");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(instance = %instance.id, "scheduled backup: {e:#}"),
            }
        }
        match service.apply_retention(instance, now).await {
            Ok(outcome) if !outcome.removed.is_empty() => {
                tracing::info!(instance = %instance.id, "retention removed {} backups", outcome.removed.len())
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(instance = %instance.id, "retention: {e:#}"),
        }
    }
}

/// Runs until `root` is cancelled.
pub async fn run(service: Arc<BackupService>, registry: Arc<Registry>, schedule: Schedule, root: CancellationToken) {
    let mut timer = tokio::time::interval(schedule.interval);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = timer.tick() => tick(&service, &registry, schedule.clock.now(), schedule.avoid_windows).await,
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

    #[test]
    fn scheduled_work_is_held_only_while_the_window_is_open_and_only_when_avoiding_windows() {
        // fixtures::spec's window: Sunday 02:00 UTC for 60 minutes. 1970-01-04 was a Sunday.
        let sunday = SystemTime::UNIX_EPOCH + Duration::from_secs(3 * 86_400);
        let spec = fixtures::spec("a");
        let window = spec.maintenance_window.clone().expect("the fixture has a window");
        assert_eq!((window.start_minute_utc, window.duration_minutes), (120, 60));
        let instance = Instance { id: "a".into(), spec, created: sunday, updated: sunday, generation: 1 };
        let at = |minutes: u64| sunday + Duration::from_secs(minutes * 60);
        assert!(!held_by_window(&instance, at(119), true), "before the window");
        assert!(held_by_window(&instance, at(120), true), "the window's first minute");
        assert!(held_by_window(&instance, at(179), true), "its last minute");
        assert!(!held_by_window(&instance, at(180), true), "after it");
        assert!(!held_by_window(&instance, at(150), false), "not avoiding windows");
        let mut none = instance.clone();
        none.spec.maintenance_window = None;
        assert!(!held_by_window(&none, at(150), true), "no window, nothing to avoid");
    }

    #[test]
    fn a_drill_is_due_when_never_run_or_older_than_the_interval() {
        let week = Duration::from_secs(7 * 86_400);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(86_400 * 20_000 + 3600);
        assert_eq!(drill_due_request("a", None, week, now).unwrap(), "scheduled-drill:a:20000");
        assert_eq!(drill_due_request("a", Some(now - week + Duration::from_secs(1)), week, now), None);
        assert!(drill_due_request("a", Some(now - week), week, now).is_some());
        // A last drill in the future (clock stepped back) is not due.
        assert_eq!(drill_due_request("a", Some(now + week), week, now), None);
        // A test interval shorter than a day: one request id per interval.
        let five = Duration::from_secs(5);
        let first = drill_due_request("a", None, five, now).unwrap();
        assert_eq!(drill_due_request("a", None, five, now + Duration::from_secs(1)).unwrap(), first);
        assert_ne!(drill_due_request("a", None, five, now + five).unwrap(), first);
    }
}
