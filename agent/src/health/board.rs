//! The last probe of each instance, in memory: GetAvailability's `last_probe` and `healthy`, and
//! the health metrics. Lost at a restart by design: the next round fills it within an interval.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, PartialEq)]
pub struct ProbeStatus {
    /// When the probe started.
    pub at: SystemTime,
    pub healthy: bool,
    /// How long it took (up to the deadline for one that timed out).
    pub latency: Duration,
    /// Empty when the probe failed.
    pub server_version: String,
    /// Why it failed; empty when healthy.
    pub error: String,
}

/// Cheap to clone; shared by the prober task, the API and the metrics.
#[derive(Clone, Default)]
pub struct HealthBoard(Arc<Mutex<HashMap<String, ProbeStatus>>>);

impl HealthBoard {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, ProbeStatus>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn set(&self, instance: &str, status: ProbeStatus) {
        self.lock().insert(instance.to_owned(), status);
    }

    pub fn get(&self, instance: &str) -> Option<ProbeStatus> {
        self.lock().get(instance).cloned()
    }

    /// Forgets the instances not in `keep` (unregistered).
    pub fn retain(&self, keep: &[String]) {
        self.lock().retain(|id, _| keep.contains(id));
    }

    /// `dbagent_health_*` in the Prometheus text format, one series per probed instance.
    pub fn metrics_text(&self) -> String {
        let mut rows: Vec<(String, ProbeStatus)> = self.lock().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        if rows.is_empty() {
            return String::new();
        }
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        type Family = (&'static str, &'static str, fn(&ProbeStatus) -> f64);
        let families: [Family; 3] = [
            ("dbagent_health_up", "1 if the last health probe of the instance succeeded, else 0.", |s| {
                f64::from(u8::from(s.healthy))
            }),
            (
                "dbagent_health_probe_duration_seconds",
                "How long the last health probe of the instance took (the deadline for one that timed out).",
                |s| s.latency.as_secs_f64(),
            ),
            (
                "dbagent_health_last_probe_timestamp_seconds",
                "When the last health probe of the instance started.",
                |s| s.at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64(),
            ),
        ];
        let mut out = String::new();
        for (name, help, value) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (id, s) in &rows {
                // Instance ids are [a-z0-9-]: nothing to escape in the label.
                let _ = writeln!(out, "{name}{{instance=\"{id}\"}} {}", value(s));
            }
        }
        out
    }
}
