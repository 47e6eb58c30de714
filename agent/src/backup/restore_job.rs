//! The RestoreBackup operation: where a restore may go, and streaming the backup into a data
//! directory (through `restore_dir`, which gives the folder back unchanged on failure) or into a
//! running server.

use std::path::Path;

use super::BackupError;
use super::catalog::BackupInfo;
use super::decode;
use super::destination::Destination;
use super::engine_commands::{self, RestorePlan, RestoreSink, RestoreTarget};
use super::keywrap::unwrap_data_key;
use super::manifest::{Manifest, data_key};
use super::resources::BackupResources;
use super::restore_dir::RestoreDir;
use super::server_check::check_serves;
use crate::command::ToolCommand;
use crate::ids::InvalidField;
use crate::instances::{Engine, Instance};
use crate::ops::{JobContext, Progress};

/// A data directory to restore into must be new or empty; the instance's own one only while it is stopped.
pub async fn check_restore_dir(instance: &Instance, dir: &Path) -> Result<(), BackupError> {
    if !dir.is_absolute() {
        return Err(InvalidField::new("target_data_dir", format!("{} must be absolute", dir.display())).into());
    }
    if dir == instance.spec.data_dir {
        if instance_running(instance).await {
            return Err(BackupError::InstanceRunning {
                instance: instance.id.clone(),
                unit: instance.spec.systemd_unit.clone(),
            });
        }
        return Ok(());
    }
    let not_empty = std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
    match not_empty {
        true => Err(BackupError::RestoreTargetNotEmpty { dir: dir.to_owned() }),
        false => Ok(()),
    }
}

/// A PostgreSQL cluster leaves `postmaster.pid` while it runs (also when started by hand, outside
/// its unit); for every engine the instance's systemd unit being active counts.
async fn instance_running(instance: &Instance) -> bool {
    if instance.spec.engine == Engine::Postgresql && instance.spec.data_dir.join("postmaster.pid").exists() {
        return true;
    }
    ToolCommand::new("systemctl").args(["is-active", "--quiet", &instance.spec.systemd_unit]).succeeds().await
}

pub async fn run(
    res: &BackupResources,
    instance: &Instance,
    info: &BackupInfo,
    source: &str,
    target: &RestoreTarget,
    ctx: &JobContext,
) -> Result<serde_json::Value, BackupError> {
    let m = &info.manifest;
    let dest = res.destination(source)?;
    // Refuse before touching the target: a wrong key must not leave a half-made data directory.
    let key = unwrap_data_key(res.keys.as_ref(), m)?;
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

/// Runs the restore plan: its `before` tool, the backup streamed into its file or tool, its `after` tool.
async fn fill_target(
    dest: &dyn Destination,
    key: zeroize::Zeroizing<Vec<u8>>,
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
    if let Some(before) = plan.before {
        before.run_as(user)?.output().await?;
    }
    let out = match plan.into {
        RestoreSink::File(path) => {
            let mut file = tokio::fs::File::create(&path)
                .await
                .map_err(|e| BackupError::io(format!("create {}", path.display()), e))?;
            let out = decode::decode(stream, key, m, source, &mut file, &ctx.cancel).await?;
            file.sync_all().await.map_err(|e| BackupError::io(format!("fsync {}", path.display()), e))?;
            chown_to(&path, user)?;
            out
        }
        RestoreSink::Tool(tool) => {
            let (mut stdin, exit) = tool.run_as(user)?.spawn_writing()?;
            let decoded = decode::decode(stream, key, m, source, &mut stdin, &ctx.cancel).await;
            drop(stdin);
            match (decoded, exit.wait().await) {
                // The tool stopped reading: its own failure says why, the broken pipe does not.
                (Err(BackupError::Io { .. }), Err(tool_failed)) => return Err(tool_failed.into()),
                // Otherwise the stream's fault (a corrupt chunk, a cancel) is the cause of both.
                (decoded, exited) => {
                    let out = decoded?;
                    exited?;
                    out
                }
            }
        }
    };
    if let Some(after) = plan.after {
        after.run_as(user)?.output().await?;
    }
    Ok(
        serde_json::json!({ "backup_id": m.backup_id, "source": source, "raw_bytes": out.raw_bytes, "chunks": out.chunk_count }),
    )
}

fn chown_to(path: &Path, user: &str) -> Result<(), BackupError> {
    if !nix::unistd::geteuid().is_root() || user.is_empty() {
        return Ok(());
    }
    let u = nix::unistd::User::from_name(user)
        .ok()
        .flatten()
        .ok_or_else(|| BackupError::UnknownOsUser { user: user.to_owned() })?;
    nix::unistd::chown(path, Some(u.uid), Some(u.gid))
        .map_err(|e| BackupError::io(format!("chown {}", path.display()), e.into()))
}
