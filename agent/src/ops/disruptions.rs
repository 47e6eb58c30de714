//! Which instances a disruptive operation is running on now: the one hook the health probes read
//! to count a failed probe as planned downtime (`health::tracker`). An operation is counted from
//! the moment it runs to the moment it has ended, whatever its kind: work submitted through
//! `OperationEngine::submit_disruptive` is counted by the engine, and a job that disrupts its
//! instance without a window (a restore in place) says so with `JobContext::disrupts_instance`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Clone, Default)]
pub struct Disruptions(Arc<Mutex<HashMap<String, usize>>>);

impl Disruptions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a disruption of `instance` until the guard is dropped.
    pub fn begin(&self, instance: &str) -> Disruption {
        *self.lock().entry(instance.to_owned()).or_default() += 1;
        Disruption { of: self.clone(), instance: instance.to_owned() }
    }

    pub fn is_disrupting(&self, instance: &str) -> bool {
        self.lock().get(instance).is_some_and(|n| *n > 0)
    }
}

/// While it lives, its instance is being disrupted by an ordered operation.
pub struct Disruption {
    of: Disruptions,
    instance: String,
}

impl Drop for Disruption {
    fn drop(&mut self) {
        let mut map = self.of.lock();
        if let Some(n) = map.get_mut(&self.instance) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.instance);
            }
        }
    }
}
