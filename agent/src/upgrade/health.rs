//! The upgrade's health check, after every step that starts a server (the new cluster after the
//! switch, the old one after a rollback or a crash): the shared health probe (`crate::health`,
//! the same Rust client, monitoring role, table read and deadline as the availability probes),
//! which must also find the expected major, then a write the server accepts. Retried until
//! [`SERVE_DEADLINE`]: a server just started takes a moment to accept connections.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::plan::Cluster;
use super::server::ServerAt;
use crate::health::Prober;
use crate::instances::Instance;

/// How long a started server has to pass the health check.
pub const SERVE_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct UpgradeHealth {
    pub prober: Arc<dyn Prober>,
    /// One probe's deadline (`health.deadline_secs`).
    pub probe_deadline: Duration,
}

/// The major of a `server_version` as the server reports it ("17.2 (Debian 17.2-1)", "15.10").
pub fn major_of(server_version: &str) -> Option<u32> {
    let digits: String = server_version.trim().chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// `instance` as the cluster `c` on `data_dir`: the probe finds the server of that data folder.
pub fn as_cluster(instance: &Instance, c: &Cluster, data_dir: &Path) -> Instance {
    let mut view = instance.clone();
    view.spec.data_dir = data_dir.to_path_buf();
    view.spec.systemd_unit = c.unit();
    view.spec.engine_version = c.major.to_string();
    view
}

impl UpgradeHealth {
    /// One check: the probe answers, from the expected major. Ok: what it read.
    pub async fn check_once(&self, instance: &Instance, major: u32) -> Result<String, String> {
        let healthy = self.prober.check(instance, self.probe_deadline).await.map_err(|e| e.to_string())?;
        let served = major_of(&healthy.server_version);
        if served != Some(major) {
            return Err(format!(
                "the server answering for {} reports version {:?}, not PostgreSQL {major}",
                instance.spec.data_dir.display(),
                healthy.server_version
            ));
        }
        Ok(format!("version {} answered a read in {} ms", healthy.server_version, healthy.latency.as_millis()))
    }

    /// The cluster `c` on `data_dir` serves: the probe at its major, then a write through `at`
    /// (`None`: no write, in unit tests), retried until [`SERVE_DEADLINE`].
    pub async fn serves(
        &self,
        instance: &Instance,
        c: &Cluster,
        data_dir: &Path,
        at: Option<&ServerAt>,
    ) -> Result<String, String> {
        let view = as_cluster(instance, c, data_dir);
        let until = Instant::now() + SERVE_DEADLINE;
        loop {
            let attempt = async {
                let read = self.check_once(&view, c.major).await?;
                if let Some(at) = at {
                    at.accepts_write().await?;
                }
                Ok::<_, String>(read)
            };
            match attempt.await {
                Ok(h) => return Ok(h),
                Err(e) if Instant::now() >= until => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::memory::MemoryProber;
    use crate::health::{Healthy, ProbeError};
    use crate::instances::fixtures::spec;

    #[test]
    fn the_major_is_read_from_what_the_server_reports() {
        assert_eq!(major_of("17.2 (Debian 17.2-1.pgdg120+1)"), Some(17));
        assert_eq!(major_of("15.10"), Some(15));
        assert_eq!(major_of("memory"), None);
    }

    /// Answers as a server of `version` would.
    struct Answers(&'static str);
    #[async_trait::async_trait]
    impl Prober for Answers {
        async fn check(&self, _i: &Instance, _d: Duration) -> Result<Healthy, ProbeError> {
            Ok(Healthy { server_version: self.0.into(), latency: Duration::from_millis(2) })
        }
    }

    fn instance() -> Instance {
        let now = std::time::SystemTime::now();
        Instance { id: "pg-1".into(), spec: spec("pg-1"), created: now, updated: now, generation: 1 }
    }

    #[tokio::test]
    async fn a_server_of_another_major_fails_the_check_and_the_expected_one_passes() {
        let health = |p: Arc<dyn Prober>| UpgradeHealth { prober: p, probe_deadline: Duration::from_secs(1) };
        let c17 = Cluster { major: 17, name: "main".into() };
        let view = as_cluster(&instance(), &c17, Path::new("/srv/db/pg-1/17/main"));
        assert_eq!(view.spec.data_dir, Path::new("/srv/db/pg-1/17/main"));
        assert_eq!(view.spec.systemd_unit, "postgresql@17-main.service");
        let e = health(Arc::new(Answers("15.10"))).check_once(&view, 17).await.unwrap_err();
        assert!(e.contains("\"15.10\", not PostgreSQL 17"), "{e}");
        let ok = health(Arc::new(Answers("17.2 (Debian 17.2-1)"))).check_once(&view, 17).await.unwrap();
        assert!(ok.contains("17.2"), "{ok}");
        // A probe that fails says why (the prober's own message).
        let down = MemoryProber::default();
        down.set_down("pg-1", Some("connection refused"));
        let e = health(Arc::new(down)).check_once(&view, 17).await.unwrap_err();
        assert!(e.contains("connection refused"), "{e}");
    }
}
