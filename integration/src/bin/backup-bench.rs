//! One backup through the library-level BackupService, for `integration/bench/backup-bench.sh`
//! (run under /usr/bin/time for CPU time and peak RSS). Args: STATE_DIR CONFIG_JSON INSTANCE_JSON METHOD.

use std::path::PathBuf;
use std::time::Instant;

use dbagent::backup::{BackupConfig, BackupKind, BackupMethod};
use dbagent::instances::Instance;
use dbagent_integration::backup_harness::Harness;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() == 5, "usage: backup-bench STATE_DIR CONFIG_JSON INSTANCE_JSON physical|logical");
    let state = PathBuf::from(&args[1]);
    let config: BackupConfig = serde_json::from_slice(&std::fs::read(&args[2])?)?;
    let instance: Instance = serde_json::from_slice(&std::fs::read(&args[3])?)?;
    let method = if args[4] == "logical" { BackupMethod::Logical } else { BackupMethod::Physical };
    let harness = Harness::at(&state);
    let svc = harness.service(config);
    let start = Instant::now();
    let request = format!("bench-{}", std::process::id());
    let op = svc.start(&instance, method, BackupKind::Manual, &request).await?;
    let done = harness.wait(&op).await;
    let wall = start.elapsed();
    println!(
        "state={} wall_s={:.2} result={}",
        done.state.as_str(),
        wall.as_secs_f64(),
        done.result.unwrap_or_default()
    );
    if let Some(e) = done.error {
        anyhow::bail!("backup failed: {}", e.message);
    }
    Ok(())
}
