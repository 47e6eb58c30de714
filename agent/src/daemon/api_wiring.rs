//! What the gRPC services are given: the one place that hands the subsystems to the API.

use std::time::SystemTime;

use super::build::Daemon;
use crate::api::ApiState;

pub(super) fn api_state(d: &Daemon) -> ApiState {
    ApiState {
        registry: d.registry.clone(),
        engine: d.engine.clone(),
        backups: d.backups.clone(),
        started: SystemTime::now(),
        hostname: d.hostname.clone(),
        config_digest: d.config.digest(),
        dev_mode: d.mode.is_dev(),
        test_kinds: d.config.operations.enable_test_kinds,
        shutdown: d.root.clone(),
        volumes: d.volumes.clone(),
        metrics: d.metrics_hub.clone(),
        logs: d.logs.clone(),
        requests: d.requests.clone(),
    }
}
