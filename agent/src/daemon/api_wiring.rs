//! What the gRPC services are given: the one place that hands the subsystems to the API. Each
//! service gets only what it uses.

use std::time::SystemTime;

use super::build::Daemon;
use crate::api::{self, Services};
use crate::host_inventory::HostInventory;

pub(super) fn services(d: &Daemon) -> Services {
    Services {
        agent: api::agent::AgentApi {
            started: SystemTime::now(),
            hostname: d.hostname.clone(),
            config_digest: d.config.digest(),
            dev_mode: d.mode.is_dev(),
            volumes_simulated: d.volumes_simulated,
            // Read once: the inventory does not change while the agent runs.
            host: HostInventory::read(),
            registry: d.registry.clone(),
            volumes: d.volumes.clone(),
            operations: d.engine.clone(),
            shutdown: d.root.clone(),
            backups: Some(d.backups.clone()),
            database_tls: Some(d.database_tls.clone()),
        },
        instances: api::instances::InstancesApi { registry: d.registry.clone(), requests: d.requests.clone() },
        operations: api::operations::OperationsApi {
            operations: d.engine.clone(),
            registry: d.registry.clone(),
            test_kinds: d.config.operations.enable_test_kinds,
            shutdown: d.root.clone(),
        },
        volumes: api::volumes::VolumesApi {
            volumes: d.volumes.clone(),
            registry: d.registry.clone(),
            operations: d.engine.clone(),
        },
        metrics: api::metrics::MetricsApi {
            hub: d.metrics_hub.clone(),
            registry: d.registry.clone(),
            shutdown: d.root.clone(),
        },
        logs: api::logs::LogsApi { logs: d.logs.clone(), requests: d.requests.clone(), shutdown: d.root.clone() },
        backups: api::backups::BackupsApi {
            backups: d.backups.clone(),
            registry: d.registry.clone(),
            requests: d.requests.clone(),
        },
        upgrades: api::upgrades::UpgradesApi {
            registry: d.registry.clone(),
            requests: d.requests.clone(),
            availability: d.availability.clone(),
            database_tls: d.database_tls.clone(),
            health: d.health.clone(),
            upgrades: std::sync::Arc::new(crate::upgrade::UpgradeService {
                registry: d.registry.clone(),
                operations: d.engine.clone(),
                backups: d.backups.clone(),
                health: std::sync::Arc::new(crate::upgrade::server::PsqlHealthCheck),
                config: d.config.upgrade.clone(),
                minor: d.minor_upgrades.clone(),
            }),
            plans: d.plans.clone(),
        },
    }
}
