//! The results of restore drills, one JSON record per instance in `<state_dir>/backups/drills/`:
//! the last drill (which backup, ok or why not, what was counted, how long it took, when it
//! finished), the time of the last successful one and the number of failed drills ever.
//!
//! Policy: the store is a [`JsonStore`] with the `Quarantine` policy: an unreadable record costs
//! only the history of one instance's drills (the next drill writes a new one, and the scheduler
//! runs a drill sooner), and the file is kept aside for an operator. Records are also held in
//! memory, for the scheduler and the metrics endpoint, and changed there only after the write.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use super::BackupError;
use crate::json_store::{JsonRecord, JsonStore, OnCorrupt};

/// How one drill ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillOutcome {
    pub operation_id: String,
    pub backup_id: String,
    pub ok: bool,
    /// Why it failed (the step and the error); empty when it succeeded.
    pub reason: String,
    /// The table (PostgreSQL `"schema"."table"` in `database`, MariaDB `` `schema`.`table` ``) or,
    /// for Redis, the key that was read; empty when the backup holds none.
    pub table: String,
    pub database: String,
    /// Rows counted in `table` (Redis: DBSIZE).
    pub rows: u64,
    pub duration_ms: u64,
    #[serde(with = "crate::timefmt")]
    pub finished: SystemTime,
}

/// What is kept per instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillRecord {
    pub instance_id: String,
    pub last: DrillOutcome,
    #[serde(with = "crate::timefmt::option", default)]
    pub last_success: Option<SystemTime>,
    /// Failed drills of this instance since its first drill; never reset (a Prometheus counter).
    pub failures_total: u64,
}

impl JsonRecord for DrillRecord {
    const KIND: &'static str = "drill record";

    fn key(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.instance_id)
    }

    fn check(&self) -> Result<(), String> {
        crate::ids::instance_id("instance_id", &self.instance_id).map_err(|e| e.to_string())
    }
}

impl DrillRecord {
    /// When the scheduler counts the instance as drilled: its last drill, successful or not (a
    /// failing drill is retried on the next interval, not on every scheduler pass).
    pub fn last_finished(&self) -> SystemTime {
        self.last.finished
    }
}

/// The value of one metric family for one instance's record; `None`: no series for it.
type SeriesValue = dyn Fn(&DrillRecord) -> Option<f64>;

#[derive(Clone)]
pub struct DrillStore {
    store: JsonStore<DrillRecord>,
    records: Arc<Mutex<BTreeMap<String, DrillRecord>>>,
}

impl DrillStore {
    /// Opens (creating, private) `<state_dir>/backups/drills`.
    pub fn open(state_dir: &Path) -> Result<Self, BackupError> {
        let (store, loaded) = JsonStore::<DrillRecord>::open(state_dir.join("backups/drills"), OnCorrupt::Quarantine)?;
        let records = loaded.records.into_iter().map(|r: DrillRecord| (r.instance_id.clone(), r)).collect();
        Ok(Self { store, records: Arc::new(Mutex::new(records)) })
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, DrillRecord>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn get(&self, instance_id: &str) -> Option<DrillRecord> {
        self.map().get(instance_id).cloned()
    }

    pub fn all(&self) -> Vec<DrillRecord> {
        self.map().values().cloned().collect()
    }

    /// Records `outcome` as the instance's last drill, durably, and returns the new record.
    pub fn record(&self, instance_id: &str, outcome: DrillOutcome) -> Result<DrillRecord, BackupError> {
        let mut map = self.map();
        let before = map.get(instance_id);
        let record = DrillRecord {
            instance_id: instance_id.to_owned(),
            last_success: if outcome.ok { Some(outcome.finished) } else { before.and_then(|b| b.last_success) },
            failures_total: before.map_or(0, |b| b.failures_total) + u64::from(!outcome.ok),
            last: outcome,
        };
        self.store.put(&record)?;
        map.insert(instance_id.to_owned(), record.clone());
        Ok(record)
    }

    /// The three drill metric families in the Prometheus text format, one series per instance.
    pub fn prometheus_text(&self) -> String {
        use std::fmt::Write as _;
        let records = self.all();
        let mut out = String::new();
        if records.is_empty() {
            return out;
        }
        fn secs(t: SystemTime) -> f64 {
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs_f64()
        }
        let families: [(&str, &str, &str, &SeriesValue); 3] = [
            (
                "dbagent_backup_drill_last_success_timestamp_seconds",
                "gauge",
                "When the last successful restore drill of the instance finished (Unix time).",
                &|r| r.last_success.map(secs),
            ),
            (
                "dbagent_backup_drill_duration_seconds",
                "gauge",
                "How long the instance's last restore drill took, successful or not.",
                &|r| Some(r.last.duration_ms as f64 / 1000.0),
            ),
            ("dbagent_backup_drill_failures_total", "counter", "Restore drills of the instance that failed.", &|r| {
                Some(r.failures_total as f64)
            }),
        ];
        for (name, kind, help, value) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for r in &records {
                // Instance ids are [a-z0-9-]: nothing to escape in the label.
                if let Some(v) = value(r) {
                    let _ = writeln!(out, "{name}{{instance=\"{}\"}} {v}", r.instance_id);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(ok: bool, finished_secs: u64) -> DrillOutcome {
        DrillOutcome {
            operation_id: "op-1".into(),
            backup_id: "b0123456789abcdef0123".into(),
            ok,
            reason: if ok { String::new() } else { "start the server: it exited".into() },
            table: "\"public\".\"items\"".into(),
            database: "shop".into(),
            rows: 42,
            duration_ms: 1500,
            finished: SystemTime::UNIX_EPOCH + Duration::from_secs(finished_secs),
        }
    }

    #[test]
    fn records_survive_a_reopen_and_keep_the_last_success_through_failures() {
        let dir = tempfile::tempdir().unwrap();
        let store = DrillStore::open(dir.path()).unwrap();
        assert!(store.get("pg1").is_none());
        store.record("pg1", outcome(true, 1000)).unwrap();
        store.record("pg1", outcome(false, 2000)).unwrap();
        let r = store.record("pg1", outcome(false, 3000)).unwrap();
        assert_eq!(r.failures_total, 2);
        assert_eq!(r.last_success, Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1000)));
        assert!(!r.last.ok);

        let reopened = DrillStore::open(dir.path()).unwrap();
        assert_eq!(reopened.get("pg1"), Some(r));
        let ok = reopened.record("pg1", outcome(true, 4000)).unwrap();
        assert_eq!(ok.failures_total, 2, "a counter never goes back");
        assert_eq!(ok.last_success, Some(SystemTime::UNIX_EPOCH + Duration::from_secs(4000)));
        // A record cannot be written under a key that is not an instance id.
        assert!(reopened.record("../x", outcome(true, 1)).is_err());
        assert!(reopened.get("../x").is_none());
    }

    #[test]
    fn metrics_text_has_one_series_per_instance_and_no_success_time_before_a_success() {
        let dir = tempfile::tempdir().unwrap();
        let store = DrillStore::open(dir.path()).unwrap();
        assert_eq!(store.prometheus_text(), "", "no drill yet: no families");
        store.record("pg1", outcome(true, 1000)).unwrap();
        store.record("redis-2", outcome(false, 2000)).unwrap();
        let text = store.prometheus_text();
        assert!(
            text.contains("dbagent_backup_drill_last_success_timestamp_seconds{instance=\"pg1\"} 1000\n"),
            "{text}"
        );
        assert!(!text.contains("last_success_timestamp_seconds{instance=\"redis-2\"}"), "{text}");
        assert!(text.contains("dbagent_backup_drill_duration_seconds{instance=\"redis-2\"} 1.5\n"), "{text}");
        assert!(text.contains("dbagent_backup_drill_failures_total{instance=\"redis-2\"} 1\n"), "{text}");
        assert!(text.contains("dbagent_backup_drill_failures_total{instance=\"pg1\"} 0\n"), "{text}");
        assert!(text.contains("# TYPE dbagent_backup_drill_failures_total counter\n"), "{text}");
    }
}
