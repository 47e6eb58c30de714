//! Helper of `integration/bench/backups.sh`: one physical backup through the library-level
//! BackupService at the shipped defaults (run under /usr/bin/time for CPU time and peak RSS), the
//! removal of those backups between runs, and a Garage with three buckets for the script.
//!
//!   backup-bench garage                      start Garage (buckets bench-az1..3), print S3_* lines, run until SIGTERM
//!   backup-bench backup STATE PGPORT DATA DEST   one backup; DEST = s3:<garage port> or dir:<folder>
//!   backup-bench clean  STATE PGPORT DATA DEST   delete every backup the previous runs left

use anyhow::{Context, bail, ensure};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use dbagent::backup::settings::{DestinationConfig, EngineConnection};
use dbagent::backup::{BackupConfig, BackupKind, BackupMethod, BackupService};
use dbagent::instances::{Engine, Instance};
use dbagent::ops::OpState;
use dbagent_integration::backup_harness::{Harness, instance};
use dbagent_integration::garage::{self, Garage};

const BUCKETS: [&str; 3] = ["bench-az1", "bench-az2", "bench-az3"];
const INSTANCE: &str = "bench";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("garage") => serve_garage().await,
        Some(cmd @ ("backup" | "clean")) => {
            ensure!(args.len() == 5, "usage: backup-bench {cmd} STATE PGPORT DATA_DIR s3:PORT|dir:FOLDER");
            let state = PathBuf::from(&args[1]);
            let port: u16 = args[2].parse().context("PGPORT")?;
            let data = PathBuf::from(&args[3]);
            let harness = Harness::at(&state);
            let svc = harness.service(config(port, &args[4])?);
            let inst = instance(INSTANCE, Engine::Postgresql, "postgres", &data);
            if cmd == "backup" { backup(&harness, &svc, &inst).await } else { clean(&harness, &svc).await }
        }
        _ => bail!("usage: backup-bench garage | backup ... | clean ... (see the file's header)"),
    }
}

/// Shipped defaults except where the benchmark must point: the destinations and the server.
fn config(pg_port: u16, dest: &str) -> anyhow::Result<BackupConfig> {
    let destinations = if let Some(port) = dest.strip_prefix("s3:") {
        BUCKETS
            .iter()
            .enumerate()
            .map(|(i, b)| DestinationConfig::S3 {
                name: format!("az{}", i + 1),
                bucket: (*b).into(),
                endpoint: format!("http://127.0.0.1:{port}"),
                region: garage::REGION.into(),
                access_key_id: garage::KEY_ID.into(),
                secret_access_key: garage::SECRET.into(),
                prefix: String::new(),
                allow_http: true,
            })
            .collect()
    } else if let Some(folder) = dest.strip_prefix("dir:") {
        (1..=3)
            .map(|i| DestinationConfig::Dir { name: format!("az{i}"), path: Path::new(folder).join(format!("az{i}")) })
            .collect()
    } else {
        bail!("destination must be s3:PORT or dir:FOLDER, not {dest}");
    };
    Ok(BackupConfig {
        destinations,
        postgresql: EngineConnection {
            host: "127.0.0.1".into(),
            port: pg_port,
            user: "postgres".into(),
            database: "postgres".into(),
            bin_dir: "/usr/lib/postgresql/15/bin".into(),
        },
        ..BackupConfig::default()
    })
}

async fn backup(harness: &Harness, svc: &Arc<BackupService>, inst: &Instance) -> anyhow::Result<()> {
    let start = Instant::now();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
    let request = format!("bench-{nanos}");
    // Scheduled, not manual: a manual backup counts against the plan's quota over many runs.
    let op = svc.start(inst, BackupMethod::Physical, BackupKind::Scheduled, &request).await?;
    let done = harness.wait(&op).await;
    if let Some(e) = done.error {
        bail!("backup failed: {}", e.message);
    }
    let result = done.result.unwrap_or_default();
    println!(
        "wall_s={:.2} raw_bytes={} stored_bytes={}",
        start.elapsed().as_secs_f64(),
        result["raw_bytes"],
        result["stored_bytes"]
    );
    Ok(())
}

async fn clean(harness: &Harness, svc: &Arc<BackupService>) -> anyhow::Result<()> {
    for (i, b) in svc.list(INSTANCE).await.into_iter().enumerate() {
        let op =
            svc.delete(INSTANCE, &b.manifest.backup_id, &format!("clean-{}-{i}", std::process::id()), true).await?;
        let done = harness.wait(&op).await;
        ensure!(done.state == OpState::Succeeded, "delete {}: {:?}", b.manifest.backup_id, done.error);
    }
    Ok(())
}

/// Garage keeps running until SIGTERM or SIGINT; its folder goes with it (TMPDIR decides where).
async fn serve_garage() -> anyhow::Result<()> {
    let g = tokio::task::spawn_blocking(|| Garage::start(&BUCKETS)).await?;
    println!(
        "S3_PORT={}\nS3_KEY={}\nS3_SECRET={}\nS3_REGION={}",
        g.s3_port,
        garage::KEY_ID,
        garage::SECRET,
        garage::REGION
    );
    println!("READY");
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    drop(g);
    Ok(())
}
