//! A prober in memory for unit tests: each instance answers what the test set, healthy by default.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::{Healthy, ProbeError, Prober};
use crate::instances::Instance;

#[derive(Default)]
pub struct MemoryProber {
    /// Instance id -> the failure its probes answer; absent = healthy.
    down: Mutex<HashMap<String, String>>,
}

impl MemoryProber {
    /// From now on the probes of `instance` fail with `reason` (`Some`) or succeed (`None`).
    pub fn set_down(&self, instance: &str, reason: Option<&str>) {
        let mut down = self.down.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match reason {
            Some(r) => down.insert(instance.to_owned(), r.to_owned()),
            None => down.remove(instance),
        };
    }
}

#[async_trait::async_trait]
impl Prober for MemoryProber {
    async fn check(&self, instance: &Instance, _deadline: Duration) -> Result<Healthy, ProbeError> {
        let down = self.down.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&instance.id).cloned();
        match down {
            Some(message) => Err(ProbeError::Connect {
                engine: instance.spec.engine.as_str(),
                target: instance.id.clone(),
                user: "dbagent_monitor".into(),
                message,
            }),
            None => Ok(Healthy { server_version: "memory".into(), latency: Duration::from_millis(1) }),
        }
    }
}
