//! The bodies of the backup operations. Each checks its cancellation token at every await (the
//! pipeline stages do) and reports progress as bytes.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};
use tokio::io::AsyncReadExt;

use super::BackupError;
use super::catalog::BackupInfo;
use super::decode;
use super::destination::{Destination, Upload};
use super::engine_commands;
use super::manifest::{self, BackupKind, BackupMethod, Manifest, data_key, manifest_key};
use super::pipeline::{self, Counters, DumpSource, EncodeSettings};
use super::service::BackupService;
use super::settings::EngineConnection;
use crate::instances::Instance;
use crate::ops::{JobContext, JobResult, Progress};

const STDERR_TAIL: usize = 2048;

/// Uploads a running backup has open: written before data flows, so a crash can be cleaned up.
#[derive(Debug, Serialize, Deserialize)]
struct Inflight {
    instance_id: String,
    backup_id: String,
    uploads: Vec<InflightUpload>,
}

#[derive(Debug, Serialize, Deserialize)]
struct InflightUpload {
    destination: String,
    key: String,
    handle: String,
}

fn inflight_path(svc: &BackupService, backup_id: &str) -> PathBuf {
    svc.inflight_dir.join(format!("{backup_id}.json"))
}

fn save_inflight(svc: &BackupService, record: &Inflight) -> Result<(), BackupError> {
    let path = inflight_path(svc, &record.backup_id);
    let text = serde_json::to_vec_pretty(record)
        .map_err(|e| BackupError::io("encode in-flight record", std::io::Error::other(e)))?;
    crate::fsutil::atomic_write(&path, &text).map_err(|e| BackupError::io(format!("write {}", path.display()), e))
}

pub(crate) async fn backup(
    svc: Arc<BackupService>,
    instance: Instance,
    method: BackupMethod,
    kind: BackupKind,
    backup_id: String,
    ctx: JobContext,
) -> JobResult {
    run_backup(&svc, &instance, method, kind, &backup_id, &ctx)
        .await
        .map(Some)
        .map_err(|e| crate::ops::OpError::from_error(&e))
}

async fn run_backup(
    svc: &Arc<BackupService>,
    instance: &Instance,
    method: BackupMethod,
    kind: BackupKind,
    backup_id: &str,
    ctx: &JobContext,
) -> Result<serde_json::Value, BackupError> {
    let engine = instance.spec.engine;
    let method = engine_commands::effective_method(engine, method);
    let conn = svc.connection_for(instance);
    check_serves(instance, &conn).await?;
    let tool = engine_commands::dump_tool(engine, method, &conn)?;
    let tool_version = tool.version().await;
    let started = SystemTime::now();
    let data_key = super::chunks::new_data_key().map_err(BackupError::Key)?;
    let wrapped = svc.keys.wrap(backup_id, &data_key)?;

    // Open every destination's upload first; one that cannot even start is failed from the outset.
    let key = data_key_path(instance, backup_id);
    let mut record =
        Inflight { instance_id: instance.id.clone(), backup_id: backup_id.to_owned(), uploads: Vec::new() };
    let mut uploads: Vec<(String, Box<dyn Upload>)> = Vec::new();
    let mut failed: Vec<(String, String)> = Vec::new();
    for dest in &svc.destinations {
        match dest.create(&key).await {
            Ok(up) => {
                record.uploads.push(InflightUpload {
                    destination: dest.name().to_owned(),
                    key: key.clone(),
                    handle: up.handle(),
                });
                save_inflight(svc, &record)?;
                uploads.push((dest.name().to_owned(), up));
            }
            Err(e) => {
                tracing::warn!(backup = backup_id, "{e:#}");
                failed.push((dest.name().to_owned(), e.to_string()));
            }
        }
    }
    if uploads.is_empty() {
        let _ = std::fs::remove_file(inflight_path(svc, backup_id));
        return Err(BackupError::AllDestinationsFailed(
            failed.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>().join("; "),
        ));
    }

    let mut child = tool
        .command(&instance.spec.os_user)?
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BackupError::Command { command: tool.name(), message: format!("start: {e}") })?;
    let stdout =
        child.stdout.take().ok_or_else(|| BackupError::io("dump stdout", std::io::Error::other("not piped")))?;
    let stderr = child.stderr.take();
    let name = tool.name();
    let done = Box::pin(async move {
        let tail = tokio::spawn(read_tail(stderr));
        let status = child
            .wait()
            .await
            .map_err(|e| BackupError::Command { command: name.clone(), message: format!("wait: {e}") })?;
        let tail = tail.await.unwrap_or_default();
        if status.success() {
            Ok(())
        } else {
            Err(BackupError::Command { command: name, message: format!("{status}: {}", tail.trim()) })
        }
    });
    let source = DumpSource { reader: Box::new(stdout), done };

    let names: Vec<String> = uploads.iter().map(|(n, _)| n.clone()).collect();
    let counters = Counters::new(&names);
    let data_dir = instance.spec.data_dir.clone();
    let estimate = match method {
        BackupMethod::Physical => tokio::task::spawn_blocking(move || estimate_size(&data_dir)).await.unwrap_or(0),
        // A dump's size has little to do with the files behind it.
        BackupMethod::Logical => 0,
    };
    let settings = EncodeSettings {
        zstd_level: svc.config.zstd_level,
        zstd_workers: svc.config.zstd_workers,
        chunk_size: svc.config.chunk_size,
        rate_limit: svc.config.rate_limit_bytes_per_sec,
    };
    let encode =
        pipeline::encode(source, data_key, backup_id, &settings, uploads, counters.clone(), ctx.cancel.clone());
    tokio::pin!(encode);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let outcome = loop {
        tokio::select! {
            r = &mut encode => break r,
            _ = tick.tick() => report_progress(ctx, &counters, estimate),
        }
    };
    report_progress(ctx, &counters, estimate);
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            // The pipeline aborted its uploads; take away whatever might still be visible.
            clean_record(svc, &record).await;
            return Err(e);
        }
    };
    for (name, r) in &outcome.destinations {
        if let Err(e) = r {
            tracing::warn!(backup = backup_id, destination = %name, "destination failed: {e:#}");
            failed.push((name.clone(), e.to_string()));
        }
    }
    let expires = match (kind, &instance.spec.backup_policy) {
        (BackupKind::Scheduled, Some(p)) => Some(started + Duration::from_secs(u64::from(p.keep_daily) * 86_400)),
        (BackupKind::Scheduled, None) => Some(started + Duration::from_secs(7 * 86_400)),
        (BackupKind::Manual, _) => None,
    };
    let manifest = Manifest {
        format: manifest::FORMAT_VERSION,
        backup_id: backup_id.to_owned(),
        instance_id: instance.id.clone(),
        engine,
        engine_version: instance.spec.engine_version.clone(),
        tool: tool.name(),
        tool_version,
        agent_version: env!("CARGO_PKG_VERSION").into(),
        method,
        kind,
        started,
        finished: SystemTime::now(),
        expires,
        raw_bytes: outcome.raw_bytes,
        stored_bytes: outcome.stored_bytes,
        sha256: outcome.sha256.clone(),
        compression: "zstd".into(),
        zstd_level: settings.zstd_level,
        cipher: "AES-256-GCM".into(),
        chunk_size: settings.chunk_size,
        chunk_count: outcome.chunk_count,
        wrapped_key: crate::hex::encode(&wrapped),
        key_wrapper: svc.keys.scheme().into(),
        key_id: svc.keys.key_id(),
        destinations: svc.destination_names(),
        failed_destinations: failed.iter().map(|(n, _)| n.clone()).collect(),
    };
    let mut complete = Vec::new();
    for (name, r) in &outcome.destinations {
        if r.is_err() {
            continue;
        }
        let Some(dest) = svc.destination(name) else { continue };
        match write_manifest(dest.as_ref(), &manifest).await {
            Ok(()) => complete.push(name.clone()),
            Err(e) => {
                tracing::warn!(backup = backup_id, destination = %name, "write manifest: {e:#}");
                let _ = dest.delete(&key).await;
                failed.push((name.clone(), e.to_string()));
            }
        }
    }
    let _ = std::fs::remove_file(inflight_path(svc, backup_id));
    if complete.is_empty() {
        return Err(BackupError::AllDestinationsFailed(
            failed.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>().join("; "),
        ));
    }
    let state = if failed.is_empty() { "complete" } else { "degraded" };
    tracing::info!(backup = backup_id, instance = %instance.id, state, raw = outcome.raw_bytes, stored = outcome.stored_bytes, "backup finished");
    Ok(serde_json::json!({
        "backup_id": backup_id,
        "state": state,
        "raw_bytes": outcome.raw_bytes,
        "stored_bytes": outcome.stored_bytes,
        "sha256": outcome.sha256,
        "complete": complete,
        "failed": failed.iter().map(|(n, e)| serde_json::json!({ "destination": n, "error": e })).collect::<Vec<_>>(),
    }))
}

fn data_key_path(instance: &Instance, backup_id: &str) -> String {
    data_key(&instance.id, backup_id)
}

async fn write_manifest(dest: &dyn Destination, manifest: &Manifest) -> Result<(), BackupError> {
    let bytes = serde_json::to_vec_pretty(manifest)
        .map_err(|e| BackupError::io("encode manifest", std::io::Error::other(e)))?;
    dest.put(&manifest_key(&manifest.instance_id, &manifest.backup_id), Bytes::from(bytes)).await
}

pub(super) async fn read_tail(stderr: Option<tokio::process::ChildStderr>) -> String {
    let Some(mut stderr) = stderr else { return String::new() };
    let mut tail = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stderr.read(&mut buf).await {
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > STDERR_TAIL {
            tail.drain(..tail.len() - STDERR_TAIL);
        }
    }
    String::from_utf8_lossy(&tail).into_owned()
}

/// Refuses to dump unless the server at `conn` serves the instance's own data directory.
pub(super) async fn check_serves(instance: &Instance, conn: &EngineConnection) -> Result<(), BackupError> {
    let tool = engine_commands::data_dir_query(instance.spec.engine, conn);
    let out = tool
        .command(&instance.spec.os_user)?
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| BackupError::Command { command: tool.name(), message: format!("start: {e}") })?;
    let said = String::from_utf8_lossy(&out.stdout);
    let served = said.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or_default();
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let where_ = format!("{} port {}", conn.host, conn.port);
    if !out.status.success() {
        return Err(BackupError::Command {
            command: tool.name(),
            message: format!(
                "asking {where_} for its data directory: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    if served.is_empty() || canonical(Path::new(served)) != canonical(&instance.spec.data_dir) {
        return Err(BackupError::FailedPrecondition(format!(
            "the {} server at {where_} serves data directory {served:?}, not {} of instance {}; point [backup.{}] at the instance's own server",
            instance.spec.engine.as_str(),
            instance.spec.data_dir.display(),
            instance.id,
            instance.spec.engine.as_str(),
        )));
    }
    Ok(())
}

/// `estimate`: the expected raw size, 0 when unknown. The dump may outgrow it (WAL written
/// meanwhile), so the total never falls below what was read: the percentage stops at 100.
fn report_progress(ctx: &JobContext, counters: &Counters, estimate: u64) {
    let raw = counters.raw_in.load(Ordering::Relaxed);
    let outs: Vec<String> =
        counters.out.iter().map(|(n, c)| format!("{n} {} bytes", c.load(Ordering::Relaxed))).collect();
    let (total, of) = match estimate {
        0 => (0, String::new()),
        e => (e.max(raw), format!(" of about {e}")),
    };
    ctx.progress(Progress {
        done: raw,
        total,
        unit: "bytes".into(),
        message: format!("in {raw} bytes{of}; out: {}", outs.join(", ")),
    });
}

/// Walking more entries than this costs more than the estimate is worth: the size stays unknown.
const ESTIMATE_MAX_ENTRIES: usize = 1_000_000;

/// Bytes in the regular files below `dir` (symbolic links not followed), which is about what a
/// physical backup reads; 0 (unknown) if the folder cannot be read or is too large to walk.
pub(crate) fn estimate_size(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut seen = 0usize;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            return 0;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > ESTIMATE_MAX_ENTRIES {
                return 0;
            }
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(entry.path()),
                Ok(t) if t.is_file() => total += entry.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

/// Removes a backup from every destination, manifest first so it stops existing before its data goes.
pub(crate) async fn delete_everywhere(
    destinations: &[Arc<dyn Destination>],
    instance: &str,
    backup: &str,
) -> Result<(), BackupError> {
    let mut errors = Vec::new();
    for dest in destinations {
        if let Err(e) = dest.delete(&manifest_key(instance, backup)).await {
            errors.push(e.to_string());
        }
    }
    for dest in destinations {
        if let Err(e) = dest.delete(&data_key(instance, backup)).await {
            errors.push(e.to_string());
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(BackupError::AllDestinationsFailed(errors.join("; "))) }
}

pub(crate) async fn delete(svc: Arc<BackupService>, instance: String, backup: String, _ctx: JobContext) -> JobResult {
    delete_everywhere(&svc.destinations, &instance, &backup).await.map_err(|e| crate::ops::OpError::from_error(&e))?;
    Ok(Some(serde_json::json!({ "backup_id": backup, "deleted": true })))
}

pub(super) fn unwrap_key(svc: &BackupService, m: &Manifest) -> Result<Vec<u8>, BackupError> {
    let wrapped = crate::hex::decode(&m.wrapped_key)
        .ok_or_else(|| BackupError::Key(format!("manifest of backup {} holds no valid wrapped key", m.backup_id)))?;
    if m.key_wrapper == super::keywrap::RETIRED_HOST_KEY_WRAPPER {
        return Err(BackupError::Key(format!(
            "backup {} was wrapped under the retired backup host key (host.key, key {}); since data keys are wrapped by the host KEK such backups are no longer readable",
            m.backup_id, m.key_id
        )));
    }
    if m.key_wrapper != svc.keys.scheme() {
        return Err(BackupError::Key(format!(
            "backup {} names an unknown key wrapper {:?}",
            m.backup_id, m.key_wrapper
        )));
    }
    svc.keys.unwrap(&m.backup_id, &wrapped).map_err(|e| match e {
        BackupError::Key(msg) => BackupError::Key(format!(
            "backup {} was encrypted under key-encryption key {}: {msg}",
            m.backup_id, m.key_id
        )),
        other => other,
    })
}

pub(crate) async fn verify(svc: Arc<BackupService>, info: BackupInfo, source: String, ctx: JobContext) -> JobResult {
    let run = async {
        let dest = svc.destination(&source).ok_or_else(|| BackupError::dest(&source, "not configured"))?;
        let key = unwrap_key(&svc, &info.manifest)?;
        let m = &info.manifest;
        ctx.progress(Progress {
            done: 0,
            total: m.stored_bytes,
            unit: "bytes".into(),
            message: format!("verifying on {source}"),
        });
        let stream = dest.stream(&data_key(&m.instance_id, &m.backup_id)).await?;
        let mut sink = tokio::io::sink();
        let out = decode::decode(stream, key, m, &source, &mut sink, &ctx.cancel).await?;
        Ok::<_, BackupError>(serde_json::json!({
            "backup_id": m.backup_id, "destination": source, "chunks": out.chunk_count,
            "stored_bytes": out.stored_bytes, "raw_bytes": out.raw_bytes, "sha256": m.sha256, "ok": true,
        }))
    };
    run.await.map(Some).map_err(|e| crate::ops::OpError::from_error(&e))
}

pub(crate) async fn repair(svc: Arc<BackupService>, info: BackupInfo, source: String, ctx: JobContext) -> JobResult {
    let run = async {
        let m = &info.manifest;
        let from = svc.destination(&source).ok_or_else(|| BackupError::dest(&source, "not configured"))?;
        let mut repaired = Vec::new();
        let mut manifest = m.clone();
        manifest.failed_destinations.clear();
        for status in &info.destinations {
            if status.state == super::catalog::DestinationState::Complete {
                continue;
            }
            let Some(to) = svc.destination(&status.name) else { continue };
            ctx.progress(Progress {
                done: 0,
                total: m.stored_bytes,
                unit: "bytes".into(),
                message: format!("copying {source} -> {}", to.name()),
            });
            let key = data_key(&m.instance_id, &m.backup_id);
            let upload = to.create(&key).await?;
            let stream = from.stream(&key).await?;
            decode::copy_verified(stream, upload, m, &ctx.cancel).await?;
            write_manifest(to.as_ref(), &manifest).await?;
            repaired.push(to.name().to_owned());
        }
        // Refresh the manifests elsewhere so none still lists a failed destination.
        for name in info.healthy_destinations() {
            if let Some(d) = svc.destination(name) {
                write_manifest(d.as_ref(), &manifest).await?;
            }
        }
        Ok::<_, BackupError>(serde_json::json!({ "backup_id": m.backup_id, "source": source, "repaired": repaired }))
    };
    run.await.map(Some).map_err(|e| crate::ops::OpError::from_error(&e))
}

/// Aborts the uploads and removes the partial objects of every backup that was running when the
/// agent stopped. Nothing of them has a manifest; afterwards nothing of them is left at all.
pub(crate) async fn clean_inflight(svc: &BackupService) -> Vec<String> {
    let Ok(files) = crate::fsutil::json_files(&svc.inflight_dir) else { return Vec::new() };
    let mut cleaned = Vec::new();
    for path in files {
        let record: Inflight = match std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()) {
            Some(r) => r,
            None => {
                tracing::warn!("unreadable in-flight backup record {}; removing it", path.display());
                let _ = std::fs::remove_file(&path);
                continue;
            }
        };
        if clean_record(svc, &record).await {
            cleaned.push(record.backup_id.clone());
        }
    }
    cleaned
}

/// True when everything was cleaned (the in-flight record is then removed).
async fn clean_record(svc: &BackupService, record: &Inflight) -> bool {
    let mut ok = true;
    for dest in &svc.destinations {
        if let Err(e) = dest.delete(&manifest_key(&record.instance_id, &record.backup_id)).await {
            tracing::warn!("clean interrupted backup {}: {e:#}", record.backup_id);
            ok = false;
        }
    }
    for up in &record.uploads {
        let Some(dest) = svc.destination(&up.destination) else { continue };
        let results = [dest.abort_leftover(&up.key, &up.handle).await, dest.delete(&up.key).await];
        for r in results {
            if let Err(e) = r {
                tracing::warn!("clean interrupted backup {}: {e:#}", record.backup_id);
                ok = false;
            }
        }
    }
    if ok {
        let _ = std::fs::remove_file(inflight_path(svc, &record.backup_id));
        tracing::info!(backup = %record.backup_id, instance = %record.instance_id, "cleaned up interrupted backup");
    }
    ok
}
