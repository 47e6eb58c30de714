//! The RestoreBackup operation: where a restore may go, and streaming the backup into a data
//! directory (through `restore_dir`, which gives the folder back unchanged on failure) or into a
//! running server.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use super::BackupError;
use super::catalog::BackupInfo;
use super::decode;
use super::destination::Destination;
use super::engine_commands::{self, RestorePlan, RestoreTarget, Tool};
use super::jobs::{check_serves, read_tail, unwrap_key};
use super::manifest::{Manifest, data_key};
use super::restore_dir::RestoreDir;
use super::service::BackupService;
use crate::instances::{Engine, Instance};
use crate::ops::{JobContext, JobResult, Progress};

/// A data directory to restore into must be new or empty; the instance's own one only while it is stopped.
pub(crate) fn check_restore_dir(instance: &Instance, dir: &Path) -> Result<(), BackupError> {
    if !dir.is_absolute() {
        return Err(BackupError::FailedPrecondition(format!("target_data_dir {} must be absolute", dir.display())));
    }
    if dir == instance.spec.data_dir {
        if instance_running(instance) {
            return Err(BackupError::FailedPrecondition(format!(
                "instance {} is running; stop {} before restoring in place, or restore into a new data directory",
                instance.id, instance.spec.systemd_unit
            )));
        }
        return Ok(());
    }
    let not_empty = std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
    match not_empty {
        true => Err(BackupError::FailedPrecondition(format!(
            "target_data_dir {} is not empty; restore into a new or empty folder",
            dir.display()
        ))),
        false => Ok(()),
    }
}

fn instance_running(instance: &Instance) -> bool {
    let pid_file = match instance.spec.engine {
        Engine::Postgresql => Some(instance.spec.data_dir.join("postmaster.pid")),
        _ => None,
    };
    if pid_file.is_some_and(|p| p.exists()) {
        return true;
    }
    std::process::Command::new("systemctl")
        .args(["is-active", "--quiet", &instance.spec.systemd_unit])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub(crate) async fn restore(
    svc: Arc<BackupService>,
    instance: Instance,
    info: BackupInfo,
    source: String,
    target: RestoreTarget,
    ctx: JobContext,
) -> JobResult {
    run_restore(&svc, &instance, &info, &source, &target, &ctx)
        .await
        .map(Some)
        .map_err(|e| crate::ops::OpError::from_error(&e))
}

async fn run_restore(
    svc: &BackupService,
    instance: &Instance,
    info: &BackupInfo,
    source: &str,
    target: &RestoreTarget,
    ctx: &JobContext,
) -> Result<serde_json::Value, BackupError> {
    let m = &info.manifest;
    let dest = svc.destination(source).ok_or_else(|| BackupError::dest(source, "not configured"))?;
    // Refuse before touching the target: a wrong key must not leave a half-made data directory.
    let key = unwrap_key(svc, m)?;
    let plan = engine_commands::restore_plan(m.engine, m.method, target)?;
    let user = &instance.spec.os_user;
    if let RestoreTarget::Server { connection, instance_server: true, .. } = target {
        check_serves(instance, connection).await?;
    }
    let Some(dir) = (match target {
        RestoreTarget::DataDir(dir) => Some(dir),
        RestoreTarget::Server { .. } => None,
    }) else {
        return fill_target(dest.as_ref(), key, m, source, plan, user, ctx).await;
    };
    let guard = RestoreDir::prepare(dir)?;
    let result = match chown_to(dir, user) {
        Ok(()) => fill_target(dest.as_ref(), key, m, source, plan, user, ctx).await,
        Err(e) => Err(e),
    };
    // Removing a half-restored data directory can take a while: off the async workers.
    let succeeded = result.is_ok();
    let _ = tokio::task::spawn_blocking(move || if succeeded { guard.commit() } else { guard.rollback() }).await;
    result
}

/// Streams the backup into the restore plan's file or tool.
async fn fill_target(
    dest: &dyn Destination,
    key: Vec<u8>,
    m: &Manifest,
    source: &str,
    plan: RestorePlan,
    user: &str,
    ctx: &JobContext,
) -> Result<serde_json::Value, BackupError> {
    ctx.progress(Progress {
        done: 0,
        total: m.raw_bytes,
        unit: "bytes".into(),
        message: format!("restoring from {source}"),
    });
    let stream = dest.stream(&data_key(&m.instance_id, &m.backup_id)).await?;
    let out = match plan {
        RestorePlan::File(path) => {
            let mut file = tokio::fs::File::create(&path)
                .await
                .map_err(|e| BackupError::io(format!("create {}", path.display()), e))?;
            let out = decode::decode(stream, key, m, source, &mut file, &ctx.cancel).await?;
            file.sync_all().await.map_err(|e| BackupError::io(format!("fsync {}", path.display()), e))?;
            chown_to(&path, user)?;
            out
        }
        RestorePlan::Pipe { before, tool, after } => {
            if let Some(before) = before {
                run_tool(&before, user).await?;
            }
            let mut child = tool
                .command(user)?
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| BackupError::Command { command: tool.name(), message: format!("start: {e}") })?;
            let mut stdin = child
                .stdin
                .take()
                .ok_or_else(|| BackupError::io("restore stdin", std::io::Error::other("not piped")))?;
            let tail = tokio::spawn(read_tail(child.stderr.take()));
            let decoded = decode::decode(stream, key, m, source, &mut stdin, &ctx.cancel).await;
            drop(stdin);
            let status = child
                .wait()
                .await
                .map_err(|e| BackupError::Command { command: tool.name(), message: format!("wait: {e}") })?;
            let out = decoded?;
            if !status.success() {
                let tail = tail.await.unwrap_or_default();
                return Err(BackupError::Command {
                    command: tool.name(),
                    message: format!("{status}: {}", tail.trim()),
                });
            }
            if let Some(after) = after {
                run_tool(&after, user).await?;
            }
            out
        }
    };
    Ok(
        serde_json::json!({ "backup_id": m.backup_id, "source": source, "raw_bytes": out.raw_bytes, "chunks": out.chunk_count }),
    )
}

async fn run_tool(tool: &Tool, user: &str) -> Result<(), BackupError> {
    let out = tool
        .command(user)?
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| BackupError::Command { command: tool.name(), message: format!("start: {e}") })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(BackupError::Command {
            command: tool.name(),
            message: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
        })
    }
}

fn chown_to(path: &Path, user: &str) -> Result<(), BackupError> {
    if !nix::unistd::geteuid().is_root() || user.is_empty() {
        return Ok(());
    }
    let u = nix::unistd::User::from_name(user).ok().flatten().ok_or_else(|| {
        BackupError::FailedPrecondition(format!("system user {user:?} of the instance does not exist"))
    })?;
    nix::unistd::chown(path, Some(u.uid), Some(u.gid))
        .map_err(|e| BackupError::io(format!("chown {}", path.display()), e.into()))
}
