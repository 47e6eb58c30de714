//! The real [`ClusterControl`]: postgresql-common's clusters and their systemd units, as the job
//! drives them, for the recovery after a crash ([`super::recover`]).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cluster::{self, Layout};
use super::plan::Cluster;
use super::recover::ClusterControl;
use super::server::{HealthCheck, ServerAt};
use crate::command::ToolCommand;

/// How long a started cluster has to pass the health check (as in the job).
const HEALTH_DEADLINE: Duration = Duration::from_secs(60);

pub struct PgCommonControl {
    pub layout: Layout,
    pub os_user: String,
    pub health: Arc<dyn HealthCheck>,
    /// Where the instance's server listens (the backup connection's socket folder and port).
    pub socket_dir: String,
    pub port: u16,
}

#[tonic::async_trait]
impl ClusterControl for PgCommonControl {
    async fn start(&self, c: &Cluster) -> Result<(), String> {
        cluster::systemctl("start", &c.unit()).await
    }

    async fn stop(&self, c: &Cluster) -> Result<(), String> {
        cluster::systemctl("stop", &c.unit()).await
    }

    async fn stop_stray_server(&self, major: u32, data_dir: &Path) {
        if let Ok(cmd) = ToolCommand::new(self.layout.bin(major).join("pg_ctl"))
            .args(["stop", "-m", "fast", "-w", "-D"])
            .arg(data_dir)
            .run_as(&self.os_user)
        {
            // "no server running" is the usual answer: nothing to do.
            let _ = cmd.output().await;
        }
    }

    async fn set_start(&self, c: &Cluster, mode: &str) -> Result<(), String> {
        cluster::set_start(&self.layout, c, mode, &self.os_user).await
    }

    fn exists(&self, c: &Cluster) -> bool {
        self.layout.conf_folder(c).exists()
    }

    async fn drop_cluster(&self, c: &Cluster) -> Result<(), String> {
        cluster::drop_cluster(c).await
    }

    async fn healthy(&self, c: &Cluster, data_dir: &Path) -> Result<String, String> {
        let at = ServerAt {
            os_user: self.os_user.clone(),
            socket_dir: self.socket_dir.clone(),
            port: self.port,
            psql: self.layout.bin(c.major).join("psql"),
        };
        let until = Instant::now() + HEALTH_DEADLINE;
        loop {
            match self.health.check(&at, c.major, data_dir).await {
                Ok(h) => return Ok(h),
                Err(e) if Instant::now() >= until => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
}
