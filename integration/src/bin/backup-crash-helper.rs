//! Starts one backup with the library-level BackupService and waits forever, so a test can SIGKILL
//! it mid-backup. Args: STATE_DIR CONFIG_JSON INSTANCE_JSON.

use std::path::PathBuf;

use dbagent::backup::{BackupConfig, BackupKind, BackupMethod};
use dbagent::instances::Instance;
use dbagent_integration::backup_harness::Harness;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let state = PathBuf::from(&args[1]);
    let config: BackupConfig = serde_json::from_slice(&std::fs::read(&args[2])?)?;
    let instance: Instance = serde_json::from_slice(&std::fs::read(&args[3])?)?;
    let harness = Harness::at(&state);
    let svc = harness.service(config);
    let op = svc.start(&instance, BackupMethod::Physical, BackupKind::Manual, "crash-1").await?;
    println!("{}", op.id);
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    }
}
