//! The RestoreBackup operation: where a restore may go, and streaming the backup into a data
//! directory (through `restore_dir`, which opens it beneath its data root and gives it back
//! unchanged on failure) or into a running server (through `restore_server`: checked whole first,
//! and for PostgreSQL as the database's owner, in one transaction).

use std::path::{Path, PathBuf};

use super::BackupError;
use super::catalog::{BackupInfo, read_authentic};
use super::decode::StoredCopy;
use super::engine_commands::{self, RestorePlan, RestoreSink, RestoreTarget};
use super::keys::BackupKeys;
use super::resources::BackupResources;
use super::restore_dir::{RestoreDir, RestoreInto};
use super::restore_server;
use super::server_check::check_serves;
use super::settings::read_postmaster_pid;
use crate::beneath::DirHandle;
use crate::command::ToolCommand;
use crate::ids::InvalidField;
use crate::instances::{Engine, Instance};
use crate::ops::{JobContext, Progress};

/// A data directory to restore into must be new or empty; the instance's own one only while it is stopped.
pub async fn check_restore_dir(instance: &Instance, dir: &Path, data_roots: &[PathBuf]) -> Result<(), BackupError> {
    if !dir.is_absolute() {
        return Err(InvalidField::new("target_data_dir", format!("{} must be absolute", dir.display())).into());
    }
    if dir == instance.spec.data_dir {
        if instance_running(instance, data_roots).await {
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
/// its unit); for every engine the instance's systemd unit being active counts. The file is read
/// as [`read_postmaster_pid`] does (a link or a FIFO planted in its place is neither followed nor
/// waited on), off the async workers.
async fn instance_running(instance: &Instance, data_roots: &[PathBuf]) -> bool {
    if instance.spec.engine == Engine::Postgresql {
        let (roots, data_dir) = (data_roots.to_vec(), instance.spec.data_dir.clone());
        if let Ok(Some(_)) = tokio::task::spawn_blocking(move || read_postmaster_pid(&roots, &data_dir)).await {
            return true;
        }
    }
    ToolCommand::new("systemctl").args(["is-active", "--quiet", &instance.spec.systemd_unit]).succeeds().await
}

pub async fn run(
    res: &BackupResources,
    keys: &BackupKeys,
    instance: &Instance,
    info: &BackupInfo,
    source: &str,
    target: &RestoreTarget,
    ctx: &JobContext,
) -> Result<serde_json::Value, BackupError> {
    run_beneath(res, keys, &res.data_roots, instance, info, source, target, ctx).await
}

/// [`run`] with the folders a data directory may be restored beneath given: the configured data
/// roots for a restore, a drill's scratch folder for a drill.
#[allow(clippy::too_many_arguments)]
pub async fn run_beneath(
    res: &BackupResources,
    keys: &BackupKeys,
    roots: &[PathBuf],
    instance: &Instance,
    info: &BackupInfo,
    source: &str,
    target: &RestoreTarget,
    ctx: &JobContext,
) -> Result<serde_json::Value, BackupError> {
    let dest = res.destination(source)?;
    // Refuse before touching the target: a manifest that does not authenticate (rewritten, naming
    // another instance) or a wrong key must not leave a half-made data directory. `info` only
    // lists manifests that name this instance and backup id; the one acted on is read again.
    let backup = read_authentic(keys, dest.as_ref(), &instance.id, &info.manifest.backup_id).await?;
    let (engine, method) = (backup.manifest.engine, backup.manifest.method);
    let copy = StoredCopy { destination: dest.as_ref(), source, backup };
    let plan = engine_commands::restore_plan(engine, method, target)?;
    let user = &instance.spec.os_user;
    let dir = match target {
        RestoreTarget::DataDir(dir) => dir,
        RestoreTarget::Server { connection, database, instance_server } => {
            if *instance_server {
                check_serves(instance, connection).await?;
            }
            // All or nothing: nothing reaches the server before the whole copy has been checked.
            restore_server::verify_whole(&copy, ctx).await?;
            let plan = match engine {
                Engine::Postgresql => {
                    restore_server::as_database_owner(plan, connection, database.as_deref(), user).await?
                }
                Engine::Mariadb | Engine::Redis => plan,
            };
            return fill_target(&copy, plan, user, None, ctx).await;
        }
    };
    // Checked again here, right before the work: the request's check was minutes ago, maybe.
    let into = if *dir == instance.spec.data_dir {
        if instance_running(instance, &res.data_roots).await {
            return Err(BackupError::InstanceRunning {
                instance: instance.id.clone(),
                unit: instance.spec.systemd_unit.clone(),
            });
        }
        RestoreInto::InPlace
    } else {
        RestoreInto::NewFolder
    };
    // Replacing the instance's own data is ordered downtime: a failed probe meanwhile is planned.
    let _disruption = matches!(into, RestoreInto::InPlace).then(|| ctx.disrupts_instance());
    let owner = os_user_ids(user)?;
    let (roots, path) = (roots.to_vec(), dir.clone());
    let guard = blocking(move || RestoreDir::prepare(&roots, &path, into)).await?;
    let chowned = match owner {
        Some((uid, gid)) => guard.handle().chown(uid, gid).map_err(BackupError::from),
        None => Ok(()),
    };
    let result = match chowned {
        Ok(()) => fill_target(&copy, plan, user, Some(guard.handle()), ctx).await,
        Err(e) => Err(e),
    };
    // Removing a half-restored data directory can take a while: off the async workers.
    let succeeded = result.is_ok();
    let _ = tokio::task::spawn_blocking(move || if succeeded { guard.commit() } else { guard.rollback() }).await;
    result
}

/// Runs blocking file work (directory handles) off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BackupError> + Send + 'static,
) -> Result<T, BackupError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| BackupError::io("join a blocking task", std::io::Error::other(e)))?
}

/// Runs the restore plan: its `before` tool, the backup streamed into its file or tool, its `after` tool.
async fn fill_target(
    copy: &StoredCopy<'_>,
    plan: RestorePlan,
    user: &str,
    dir: Option<&DirHandle>,
    ctx: &JobContext,
) -> Result<serde_json::Value, BackupError> {
    let (m, source) = (&copy.backup.manifest, copy.source);
    ctx.progress(Progress {
        done: 0,
        total: m.raw_bytes,
        unit: "bytes".into(),
        message: format!("restoring from {source}"),
    });
    if let Some(before) = plan.before {
        before.run_as(user)?.output().await?;
    }
    let out = match plan.into {
        RestoreSink::File(name) => {
            let dir = dir.ok_or(BackupError::PhysicalRestoreNeedsDataDir)?;
            let path = dir.path().join(&name);
            // Created new beneath the held folder, never through a name the tenant planted.
            let mut file = tokio::fs::File::from_std(dir.create_file(&name, 0o600)?);
            let out = copy.decode_into(&mut file, &ctx.cancel).await?;
            file.sync_all().await.map_err(|e| BackupError::io(format!("fsync {}", path.display()), e))?;
            if let Some((uid, gid)) = os_user_ids(user)? {
                crate::beneath::fchown(&file, uid, gid)
                    .map_err(|e| BackupError::io(format!("chown {}", path.display()), e.into()))?;
            }
            out
        }
        RestoreSink::Tool(tool) => {
            let (mut stdin, exit) = tool.run_as(user)?.spawn_writing()?;
            let decoded = copy.decode_into(&mut stdin, &ctx.cancel).await;
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
        serde_json::json!({ "backup_id": copy.backup.backup_id, "source": source, "raw_bytes": out.raw_bytes, "chunks": out.chunk_count }),
    )
}

/// The uid and gid files restored for `user` get; `None` when the agent is not root (tests) or
/// the instance names no user.
pub(crate) fn os_user_ids(user: &str) -> Result<Option<(u32, u32)>, BackupError> {
    if !nix::unistd::geteuid().is_root() || user.is_empty() {
        return Ok(None);
    }
    let u = nix::unistd::User::from_name(user)
        .ok()
        .flatten()
        .ok_or_else(|| BackupError::UnknownOsUser { user: user.to_owned() })?;
    Ok(Some((u.uid.as_raw(), u.gid.as_raw())))
}
