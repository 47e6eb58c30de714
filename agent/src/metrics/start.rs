//! Starting the metrics tasks from the daemon: sampler, Prometheus endpoint, OTLP push.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::collect::{Collector, CollectorPaths, InstanceTarget};
use super::otlp::OtlpSettings;
use super::sampler::{BackupReadings, BackupSource, QuarantineCount, Targets};
use super::{MetricsError, MetricsHub, http, otlp, sampler};
use crate::config::MetricsConfig;
use crate::instances::Registry;

pub struct MetricsTasks {
    pub handles: Vec<JoinHandle<()>>,
    /// Where Prometheus scrapes are served (with the real port when the config said port 0).
    pub prometheus: Option<SocketAddr>,
}

/// The registry's instances as collector targets.
pub fn registry_targets(registry: Arc<Registry>) -> Targets {
    Arc::new(move || {
        registry
            .list()
            .into_iter()
            .map(|i| InstanceTarget { id: i.id, systemd_unit: i.spec.systemd_unit, data_dir: i.spec.data_dir })
            .collect()
    })
}

/// How many instances the registry or the volume store quarantined at start-up.
pub fn quarantine_count(registry: Arc<Registry>, volumes: crate::volume::Volumes) -> QuarantineCount {
    Arc::new(move || {
        let mut ids: Vec<String> = registry.quarantined().iter().map(|c| c.key()).collect();
        ids.extend(volumes.quarantined().iter().map(|c| c.key()));
        ids.sort();
        ids.dedup();
        ids.len()
    })
}

/// The backup scheduler's findings (`backup::health`), for instances registered in `registry`
/// (an instance without a good backup is aged from its registration).
pub fn backup_source(health: Arc<crate::backup::health::BackupHealth>, registry: Arc<Registry>) -> BackupSource {
    Arc::new(move || {
        let found = health.instances();
        BackupReadings {
            instances: registry
                .list()
                .into_iter()
                .filter_map(|i| {
                    let h = found.get(&i.id)?;
                    Some((i.id, h.last_good.unwrap_or(i.created), h.degraded))
                })
                .collect(),
            destinations: health
                .destinations()
                .into_iter()
                .map(|(name, d)| (name, d.reachable, d.failed_checks))
                .collect(),
        }
    })
}

/// Binds the Prometheus listener (a taken port fails start-up: a silently missing endpoint is worse)
/// and spawns the tasks; they all end on `shutdown`.
pub async fn start(
    config: &MetricsConfig,
    hub: Arc<MetricsHub>,
    targets: Targets,
    quarantined: QuarantineCount,
    backups: BackupSource,
    hostname: String,
    shutdown: CancellationToken,
) -> Result<MetricsTasks, MetricsError> {
    let paths = CollectorPaths { cgroup_root: config.cgroup_root.clone(), ..CollectorPaths::default() };
    let mut handles = vec![tokio::spawn(sampler::run(
        hub.clone(),
        Collector::new(paths),
        targets,
        quarantined,
        backups,
        shutdown.clone(),
    ))];
    let mut prometheus = None;
    if config.prometheus_enabled {
        let addr = config.prometheus_listen;
        let listener = TcpListener::bind(addr).await.map_err(|source| MetricsError::Bind { addr, source })?;
        prometheus = Some(listener.local_addr().map_err(|source| MetricsError::Bind { addr, source })?);
        handles.push(tokio::spawn(http::serve(listener, hub.clone(), shutdown.clone())));
    }
    if let Some(endpoint) = &config.otlp_endpoint {
        let settings = OtlpSettings {
            endpoint: endpoint.clone(),
            interval: Duration::from_secs(config.otlp_interval_secs),
            timeout: Duration::from_secs(10),
            ca: config.otlp_ca.clone(),
            hostname,
        };
        // Fail start-up on a malformed endpoint or unreadable CA rather than at the first push.
        otlp::client(&settings)?;
        handles.push(tokio::spawn(otlp::run(hub, settings, shutdown)));
    }
    Ok(MetricsTasks { handles, prometheus })
}
