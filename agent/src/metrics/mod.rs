//! Node and per-instance metrics: collectors (procfs, statvfs, cgroup v2), a sampling task with a
//! bounded in-memory history, and three ways out: the gRPC Metrics service (api/metrics.rs), a
//! Prometheus text endpoint on loopback, and OTLP push. docs/metrics.md lists names and config.

pub mod cgroup;
pub mod collect;
pub mod http;
pub mod model;
pub mod otlp;
pub mod proc_files;
pub mod prometheus;
pub mod sampler;
pub mod start;
pub mod store;
pub mod stream;

use std::sync::Arc;
use std::time::{Duration, SystemTime};
use thiserror::Error;
use tokio::sync::watch;

pub use collect::{Collector, CollectorPaths, InstanceTarget};
pub use model::{Owner, Snapshot};
pub use store::History;

#[derive(Debug, Error)]
pub enum MetricsError {
    #[error("time range: end is before start; give an end at or after the start")]
    RangeEndsBeforeStart,
    #[error("no metrics sample has been taken yet; the first comes within {0:?} of start")]
    NoSampleYet(Duration),
    #[error("interval {requested:?} is shorter than the sampling interval {sampling:?}; ask for {sampling:?} or more")]
    IntervalTooShort { requested: Duration, sampling: Duration },
    #[error(
        "listen for Prometheus scrapes on {addr}: {source} (set metrics.prometheus_listen or metrics.prometheus_enabled = false)"
    )]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("OTLP endpoint {endpoint:?}: {message}")]
    OtlpEndpoint { endpoint: String, message: String },
    #[error("read OTLP CA bundle {path}: {source}")]
    OtlpCa { path: std::path::PathBuf, source: std::io::Error },
}

/// At most this many snapshots in one range answer: more are thinned evenly, so a day of history
/// stays a few megabytes on the wire.
pub const MAX_RANGE_SNAPSHOTS: usize = 1000;

/// What the sampler writes and the API, Prometheus and OTLP read. Cheap to share.
pub struct MetricsHub {
    pub history: History,
    pub interval: Duration,
    /// Bumped after every sampling round; StreamMetrics waits on it.
    rounds: watch::Sender<u64>,
    /// Families kept outside the sampled history (the restore drills' results), appended to the
    /// Prometheus text as their owners render them.
    expositions: std::sync::Mutex<Vec<Exposition>>,
}

/// Renders metric families in the Prometheus text format.
pub type Exposition = Box<dyn Fn() -> String + Send + Sync>;

impl MetricsHub {
    pub fn new(interval: Duration, retention: Duration) -> Arc<Self> {
        Arc::new(Self {
            history: History::new(retention),
            interval,
            rounds: watch::Sender::new(0),
            expositions: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Adds families that the Prometheus endpoint appends to every scrape.
    pub fn add_exposition(&self, render: Exposition) {
        self.expositions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(render);
    }

    /// The added families, rendered now.
    pub fn render_expositions(&self) -> String {
        self.expositions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().map(|r| r()).collect()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.rounds.subscribe()
    }

    pub(crate) fn round_done(&self) {
        self.rounds.send_modify(|n| *n += 1);
    }

    /// The latest snapshot, or the snapshots of a time range (thinned to `MAX_RANGE_SNAPSHOTS`).
    /// `Ok(vec![])` for an owner with no samples, such as an instance whose unit is not running.
    pub fn query(&self, owner: &Owner, range: Option<(SystemTime, SystemTime)>) -> Result<Vec<Snapshot>, MetricsError> {
        let Some((start, end)) = range else {
            if *owner == Owner::Node && self.history.latest(owner).is_none() {
                return Err(MetricsError::NoSampleYet(self.interval));
            }
            return Ok(self.history.latest(owner).map(|s| (*s).clone()).into_iter().collect());
        };
        if end < start {
            return Err(MetricsError::RangeEndsBeforeStart);
        }
        Ok(thin(self.history.range(owner, start, end), MAX_RANGE_SNAPSHOTS))
    }
}

/// Keeps `max` evenly spread items, always including the last.
fn thin<T>(items: Vec<T>, max: usize) -> Vec<T> {
    let n = items.len();
    if n <= max || max == 0 {
        return items;
    }
    let step = n.div_ceil(max);
    items.into_iter().enumerate().filter(|(i, _)| (n - 1 - i).is_multiple_of(step)).map(|(_, s)| s).collect()
}

impl crate::error::HasErrorCode for MetricsError {
    fn code(&self) -> crate::error::ErrorCode {
        use crate::error::ErrorCode as C;
        match self {
            MetricsError::RangeEndsBeforeStart | MetricsError::IntervalTooShort { .. } => C::InvalidArgument,
            MetricsError::NoSampleYet(_) => C::Unavailable,
            MetricsError::Bind { .. } | MetricsError::OtlpEndpoint { .. } | MetricsError::OtlpCa { .. } => C::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinning_keeps_the_last_and_the_bound() {
        let v: Vec<usize> = (0..8640).collect();
        let t = thin(v, 1000);
        assert!(t.len() <= 1000, "{}", t.len());
        assert_eq!(*t.last().unwrap(), 8639);
        assert_eq!(thin(vec![1, 2, 3], 10), vec![1, 2, 3]);
    }
}
