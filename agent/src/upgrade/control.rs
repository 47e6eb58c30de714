//! The real [`ClusterControl`]: postgresql-common's clusters and their systemd units, as the job
//! drives them, for the recovery after a crash ([`super::recover`]).

use std::path::Path;
use std::sync::Arc;

use super::cluster::{self, Layout};
use super::health::{UpgradeHealth, as_cluster};
use super::plan::Cluster;
use super::recover::ClusterControl;
use super::server::ServerAt;
use super::service::BackupFacts;
use crate::command::ToolCommand;
use crate::instances::Instance;

pub struct PgCommonControl {
    pub layout: Layout,
    /// As registered now (its OS user; the health check's view of each cluster starts from it).
    pub instance: Instance,
    pub health: UpgradeHealth,
    /// Where a cluster's server listens, asked once it runs (its port is read from the running
    /// server's `postmaster.pid`: after a crash nothing runs when recovery begins).
    pub backups: Arc<dyn BackupFacts>,
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
            .run_as(&self.instance.spec.os_user)
        {
            // "no server running" is the usual answer: nothing to do.
            let _ = cmd.output().await;
        }
    }

    async fn set_start(&self, c: &Cluster, mode: &str) -> Result<(), String> {
        cluster::set_start(&self.layout, c, mode, &self.instance.spec.os_user).await
    }

    fn exists(&self, c: &Cluster) -> bool {
        self.layout.conf_folder(c).exists()
    }

    async fn drop_cluster(&self, c: &Cluster) -> Result<(), String> {
        cluster::drop_cluster(c).await
    }

    async fn healthy(&self, c: &Cluster, data_dir: &Path) -> Result<String, String> {
        let (socket_dir, port) = self.backups.server_address(&as_cluster(&self.instance, c, data_dir)).await;
        let at = ServerAt {
            os_user: self.instance.spec.os_user.clone(),
            socket_dir,
            port,
            psql: self.layout.bin(c.major).join("psql"),
        };
        self.health.serves(&self.instance, c, data_dir, Some(&at)).await
    }
}
