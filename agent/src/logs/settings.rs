//! The `[logs]` section of the agent config: plain data, imported by the modules it configures and
//! importing none of them (sources and pipelines turn it into each part's settings).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogsConfig {
    /// Disk space of each drain's buffer; when full, the oldest records are dropped and counted.
    pub buffer_max_bytes: u64,
    /// Size of one buffer segment file; the buffer drops whole segments.
    pub segment_bytes: u64,
    /// Largest batch sent to a drain at once (one connection per syslog batch, one POST per HTTPS batch).
    pub batch_max_bytes: u64,
    /// Wait this long for more data before sending a small batch.
    pub linger_ms: u64,
    /// Buffered frames are fsynced at most this long after they were written.
    pub sync_interval_ms: u64,
    /// How often files are checked for new data when they are quiet.
    pub poll_interval_ms: u64,
    /// A file renamed away by rotation is read until it has been quiet this long.
    pub rotate_wait_ms: u64,
    /// A multi-line record is handed on after this long without a next line.
    pub flush_after_ms: u64,
    /// Records per instance kept in memory for `TailLogs` (last N lines, since a time).
    pub tail_records: usize,
    /// Records queued per `TailLogs` client; a client further behind misses records and is told how many.
    pub client_queue: usize,
    /// The journalctl binary, and extra arguments (e.g. "--directory=/var/log/journal").
    pub journalctl: PathBuf,
    pub journalctl_args: Vec<String>,
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self {
            buffer_max_bytes: 256 * 1024 * 1024,
            segment_bytes: 8 * 1024 * 1024,
            batch_max_bytes: 2 * 1024 * 1024,
            linger_ms: 200,
            sync_interval_ms: 500,
            poll_interval_ms: 200,
            rotate_wait_ms: 5000,
            flush_after_ms: 500,
            tail_records: 5000,
            client_queue: 1024,
            journalctl: PathBuf::from("journalctl"),
            journalctl_args: Vec::new(),
        }
    }
}

impl LogsConfig {
    /// The first bad key and why, for the config loader to report.
    pub fn check(&self) -> Option<(&'static str, String)> {
        const MIB: u64 = 1024 * 1024;
        if self.segment_bytes < 64 * 1024 || self.segment_bytes > 1024 * MIB {
            return Some(("logs.segment_bytes", "must be from 65536 to 1073741824".into()));
        }
        if self.buffer_max_bytes < 2 * self.segment_bytes {
            return Some(("logs.buffer_max_bytes", "must be at least twice logs.segment_bytes".into()));
        }
        if !(4096..=64 * MIB).contains(&self.batch_max_bytes) || self.batch_max_bytes > self.segment_bytes {
            return Some((
                "logs.batch_max_bytes",
                "must be from 4096 to 67108864 and at most logs.segment_bytes".into(),
            ));
        }
        for (key, v, max) in [
            ("logs.linger_ms", self.linger_ms, 10_000),
            ("logs.sync_interval_ms", self.sync_interval_ms, 60_000),
            ("logs.poll_interval_ms", self.poll_interval_ms, 10_000),
            ("logs.rotate_wait_ms", self.rotate_wait_ms, 600_000),
            ("logs.flush_after_ms", self.flush_after_ms, 60_000),
        ] {
            if v > max || (key == "logs.poll_interval_ms" && v == 0) {
                return Some((key, format!("must be from {} to {max} ms", u64::from(key == "logs.poll_interval_ms"))));
            }
        }
        if !(1..=1_000_000).contains(&self.tail_records) {
            return Some(("logs.tail_records", "must be from 1 to 1000000".into()));
        }
        if !(16..=1_000_000).contains(&self.client_queue) {
            return Some(("logs.client_queue", "must be from 16 to 1000000".into()));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert_eq!(LogsConfig::default().check(), None);
        let c = LogsConfig { buffer_max_bytes: 1, ..LogsConfig::default() };
        assert_eq!(c.check().unwrap().0, "logs.buffer_max_bytes");
        let c = LogsConfig { poll_interval_ms: 0, ..LogsConfig::default() };
        assert_eq!(c.check().unwrap().0, "logs.poll_interval_ms");
        let c: LogsConfig = toml::from_str("batch_max_bytes = 65536\njournalctl_args = [\"--directory=/j\"]").unwrap();
        assert_eq!(c.batch_max_bytes, 65536);
        assert!(toml::from_str::<LogsConfig>("nope = 1").is_err());
    }
}
