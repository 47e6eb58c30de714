//! The sampling task: one collection round per interval, stored in the hub's history.

use std::sync::Arc;
use std::time::SystemTime;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::MetricsHub;
use super::collect::{Collector, InstanceTarget};
use super::model::{Metric, Owner, Reading, SeriesKey};

/// Where the sampler learns which instances exist; the registry in the daemon, a list in tests.
pub type Targets = Arc<dyn Fn() -> Vec<InstanceTarget> + Send + Sync>;

/// How many instances are quarantined (an unreadable record); the registry and the volume store
/// in the daemon. Sampled as a node gauge, so an alert sees it without calling GetStatus.
pub type QuarantineCount = Arc<dyn Fn() -> usize + Send + Sync>;

/// Backup health for alerting, as of the backup scheduler's last pass: per instance the time its
/// newest complete backup finished (or its registration) and its degraded backups; per
/// destination reachable at the last check and the failed checks. Read from memory: a sample never
/// lists a destination.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BackupReadings {
    /// (instance id, last good backup or else registration, degraded backups)
    pub instances: Vec<(String, SystemTime, u64)>,
    /// (destination, reachable, failed checks)
    pub destinations: Vec<(String, bool, u64)>,
}

pub type BackupSource = Arc<dyn Fn() -> BackupReadings + Send + Sync>;

/// Adds the backup readings to a round taken at `now`.
pub fn add_backup_readings(b: &BackupReadings, now: SystemTime, round: &mut super::collect::Round) {
    for (name, reachable, failed) in &b.destinations {
        round
            .node
            .push(SeriesKey::with(Metric::BackupDestinationReachable, "destination", name), u64::from(*reachable));
        round.node.push(SeriesKey::with(Metric::BackupDestinationFailedChecks, "destination", name), *failed);
    }
    for (id, since, degraded) in &b.instances {
        let age = now.duration_since(*since).unwrap_or_default().as_secs();
        let at = match round.instances.iter().position(|(i, _)| i == id) {
            Some(at) => at,
            None => {
                round.instances.push((id.clone(), Reading::default()));
                round.instances.len() - 1
            }
        };
        let reading = &mut round.instances[at].1;
        reading.plain(Metric::BackupLastGoodAge, age);
        reading.plain(Metric::BackupsDegraded, *degraded);
    }
}

/// Samples every `hub.interval` until `shutdown`. The first round runs at once, so the API has a
/// latest sample right after start.
pub async fn run(
    hub: Arc<MetricsHub>,
    collector: Collector,
    targets: Targets,
    quarantined: QuarantineCount,
    backups: BackupSource,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(hub.interval);
    // A round that took long (a slow statvfs) is not followed by a burst of catch-up rounds.
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut collector = Some(collector);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(mut c) = collector.take() else { return };
        let list = targets();
        let job = tokio::task::spawn_blocking(move || {
            let round = c.collect(&list);
            (c, round, list)
        });
        let (c, mut round, list) = tokio::select! {
            () = shutdown.cancelled() => return,
            r = job => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("metrics collection panicked; metrics stop: {e}");
                    return;
                }
            },
        };
        collector = Some(c);
        let now = SystemTime::now();
        hub.history.retain_instances(&|id| list.iter().any(|t| t.id == id));
        let mut b = backups();
        b.instances.retain(|(id, _, _)| list.iter().any(|t| t.id == *id));
        add_backup_readings(&b, now, &mut round);
        round.node.plain(Metric::QuarantinedInstances, u64::try_from(quarantined()).unwrap_or(u64::MAX));
        hub.history.push(Owner::Node, now, round.node);
        for (id, reading) in round.instances {
            hub.history.push(Owner::Instance(id), now, reading);
        }
        hub.round_done();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::collect::CollectorPaths;
    use std::time::Duration;

    #[tokio::test]
    async fn each_round_samples_the_quarantined_instances_as_a_node_gauge() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = CollectorPaths {
            proc_root: tmp.path().into(),
            cgroup_root: tmp.path().into(),
            mapper_dir: tmp.path().into(),
        };
        let hub = MetricsHub::new(Duration::from_secs(3600), Duration::from_secs(3600));
        let mut rounds = hub.subscribe();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(
            hub.clone(),
            Collector::new(paths),
            Arc::new(Vec::new),
            Arc::new(|| 2),
            Arc::new(BackupReadings::default),
            shutdown.clone(),
        ));
        rounds.changed().await.unwrap();
        shutdown.cancel();
        task.await.unwrap();
        let node = hub.history.latest(&Owner::Node).expect("a node sample");
        let quarantined: Vec<u64> =
            node.points.iter().filter(|p| p.key.metric == Metric::QuarantinedInstances).map(|p| p.raw).collect();
        assert_eq!(quarantined, [2]);
    }

    #[test]
    fn backup_readings_become_node_and_instance_series_and_the_age_counts_from_the_last_good_backup() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let b = BackupReadings {
            instances: vec![("pg-1".into(), now - Duration::from_secs(90), 2)],
            destinations: vec![("az1".into(), true, 0), ("az2".into(), false, 3)],
        };
        let mut round = crate::metrics::collect::Round { node: Reading::default(), instances: Vec::new() };
        add_backup_readings(&b, now, &mut round);
        let node: Vec<(Metric, String, u64)> =
            round.node.values.iter().map(|(k, v)| (k.metric, k.labels[0].1.clone(), *v)).collect();
        assert_eq!(
            node,
            [
                (Metric::BackupDestinationReachable, "az1".into(), 1),
                (Metric::BackupDestinationFailedChecks, "az1".into(), 0),
                (Metric::BackupDestinationReachable, "az2".into(), 0),
                (Metric::BackupDestinationFailedChecks, "az2".into(), 3),
            ]
        );
        let (id, reading) = &round.instances[0];
        let values: Vec<(Metric, u64)> = reading.values.iter().map(|(k, v)| (k.metric, *v)).collect();
        assert_eq!(id, "pg-1");
        assert_eq!(values, [(Metric::BackupLastGoodAge, 90), (Metric::BackupsDegraded, 2)]);
        // A newer good backup: the age starts again.
        let newer = BackupReadings { instances: vec![("pg-1".into(), now - Duration::from_secs(5), 0)], ..b };
        let mut round = crate::metrics::collect::Round { node: Reading::default(), instances: Vec::new() };
        add_backup_readings(&newer, now, &mut round);
        assert_eq!(round.instances[0].1.values[0].1, 5);
        assert_eq!(Metric::BackupDestinationFailedChecks.info().name, "backup_destination_failed_checks_total");
    }
}
