//! The StartBackup operation: check the server, open an upload on every destination (recorded for
//! crash cleanup), stream the dump through the pipeline, then write the manifest where the data
//! arrived. The pipeline stages check the cancellation token at every await; progress is bytes.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::BackupError;
use super::catalog::write_manifest;
use super::chunks;
use super::destination::{Destination, Upload};
use super::engine_commands;
use super::inflight::{InflightBackup, InflightUpload};
use super::manifest::{self, BackupKind, BackupMethod, Manifest};
use super::manifest_mac;
use super::pipeline::{self, Counters, DumpSource, EncodeOutcome};
use super::resources::BackupResources;
use super::server_check::check_serves;
use crate::instances::Instance;
use crate::ops::{JobContext, Progress};

/// A destination that failed, and why.
type Failure = (String, String);

pub async fn run(
    res: &BackupResources,
    instance: &Instance,
    method: BackupMethod,
    kind: BackupKind,
    backup_id: &str,
    keep_days: Option<u32>,
    ctx: &JobContext,
) -> Result<serde_json::Value, BackupError> {
    let engine = instance.spec.engine;
    let method = engine_commands::effective_method(engine, method);
    let conn = res.settings.connection_for(instance, &res.data_roots).await;
    check_serves(instance, &conn).await?;
    let tool = engine_commands::dump_tool(engine, method, &conn).run_as(&instance.spec.os_user)?;
    let tool_version = tool.version_line().await;
    let started = SystemTime::now();
    let data_key = chunks::new_data_key()?;
    // Before anything is dumped: a key that cannot wrap (a KeyService refusal) fails the backup.
    let key_wraps = res.keys.wrap_all(&instance.id, backup_id, data_key.as_slice()).await?;
    // The pipeline takes the data key; the manifest's MAC key derives from it at the end.
    let mac_source = data_key.clone();

    let estimate = estimate_raw_size(instance, method).await;

    let object_key = manifest::data_key(&instance.id, backup_id);
    let (usable, mut failed) = unused_on(res, &instance.id, backup_id).await?;
    let (record, uploads, more_failed) = open_uploads(res, &usable, &instance.id, backup_id, &object_key).await?;
    failed.extend(more_failed);
    if uploads.is_empty() {
        res.inflight.remove(backup_id);
        return Err(BackupError::AllDestinationsFailed { reasons: failed.into_iter().map(|(_, e)| e).collect() });
    }
    let encoded = match tool.spawn_reading() {
        Ok((stdout, exit)) => {
            let source = DumpSource { reader: Box::new(stdout), done: Box::pin(async move { Ok(exit.wait().await?) }) };
            encode(res, source, data_key, backup_id, uploads, estimate, ctx).await
        }
        Err(e) => {
            for (_, up) in uploads {
                let _ = up.abort().await;
            }
            Err(e.into())
        }
    };
    let outcome = match encoded {
        Ok(o) => o,
        Err(e) => {
            // The pipeline aborted its uploads; take away whatever might still be visible.
            res.inflight.clean(&res.destinations, &record).await;
            return Err(e);
        }
    };
    for (name, r) in &outcome.destinations {
        if let Err(e) = r {
            tracing::warn!(backup = backup_id, destination = %name, "destination failed: {e:#}");
            failed.push((name.clone(), e.to_string()));
        }
    }
    // A manual backup lives by its own rule; scheduled ones by the policy's GFS rule at each
    // retention pass (`retention.rs`), so their manifest names no expiry.
    let expires = match kind {
        BackupKind::Scheduled => None,
        BackupKind::Manual => {
            let days = keep_days.unwrap_or(super::retention::DEFAULT_MANUAL_KEEP_DAYS);
            Some(started + Duration::from_secs(u64::from(days) * 86_400))
        }
    };
    let mut manifest = Manifest {
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
        zstd_level: res.settings.zstd_level,
        cipher: "AES-256-GCM".into(),
        chunk_size: res.settings.chunk_size,
        chunk_count: outcome.chunk_count,
        key_wraps,
        wrapped_key: String::new(),
        key_wrapper: String::new(),
        key_id: String::new(),
        destinations: res.destination_names(),
        failed_destinations: failed.iter().map(|(n, _)| n.clone()).collect(),
        mac: String::new(),
    };
    manifest_mac::sign(&mut manifest, mac_source.as_slice());
    drop(mac_source);
    let complete = write_manifests(res, &outcome, &manifest, &object_key, &mut failed).await;
    res.inflight.remove(backup_id);
    if complete.is_empty() {
        return Err(BackupError::AllDestinationsFailed { reasons: failed.into_iter().map(|(_, e)| e).collect() });
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

/// The destinations that hold nothing under `backup_id` yet. Ids are never reused (`backup_id`),
/// so something there means an id came back: refused before anything is opened, since this run's
/// failure clean-up deletes what lies under its id, and that must never be a completed backup. A
/// destination that cannot be asked is failed from the outset: nothing is written where this
/// could not be checked.
async fn unused_on<'a>(
    res: &'a BackupResources,
    instance_id: &str,
    backup_id: &str,
) -> Result<(Vec<&'a Arc<dyn Destination>>, Vec<Failure>), BackupError> {
    let mut usable = Vec::new();
    let mut failed = Vec::new();
    for dest in &res.destinations {
        let mut held = false;
        let mut error = None;
        for key in [manifest::manifest_key(instance_id, backup_id), manifest::data_key(instance_id, backup_id)] {
            match dest.size(&key).await {
                Ok(found) => held |= found.is_some(),
                Err(e) => error = Some(e),
            }
        }
        if held {
            return Err(BackupError::BackupIdInUse {
                backup: backup_id.to_owned(),
                destination: dest.name().to_owned(),
            });
        }
        match error {
            Some(e) => {
                tracing::warn!(backup = backup_id, "{e:#}");
                failed.push((dest.name().to_owned(), e.to_string()));
            }
            None => usable.push(dest),
        }
    }
    Ok((usable, failed))
}

/// Opens every destination's upload, recording each in the in-flight record before data flows;
/// one that cannot even start is failed from the outset.
async fn open_uploads(
    res: &BackupResources,
    destinations: &[&Arc<dyn Destination>],
    instance_id: &str,
    backup_id: &str,
    key: &str,
) -> Result<(InflightBackup, Vec<(String, Box<dyn Upload>)>, Vec<Failure>), BackupError> {
    let mut record = InflightBackup::new(instance_id, backup_id);
    let mut uploads: Vec<(String, Box<dyn Upload>)> = Vec::new();
    let mut failed = Vec::new();
    for dest in destinations {
        match dest.create(key).await {
            Ok(up) => {
                record.uploads.push(InflightUpload {
                    destination: dest.name().to_owned(),
                    key: key.to_owned(),
                    handle: up.handle(),
                });
                uploads.push((dest.name().to_owned(), up));
                if let Err(e) = res.inflight.save(&record) {
                    // Without a record a crash would leave these uploads behind: do not go on.
                    for (_, up) in uploads {
                        let _ = up.abort().await;
                    }
                    res.inflight.remove(backup_id);
                    return Err(e);
                }
            }
            Err(e) => {
                tracing::warn!(backup = backup_id, "{e:#}");
                failed.push((dest.name().to_owned(), e.to_string()));
            }
        }
    }
    Ok((record, uploads, failed))
}

/// Runs the pipeline from the dump to the uploads, reporting progress every half second.
async fn encode(
    res: &BackupResources,
    source: DumpSource,
    data_key: zeroize::Zeroizing<[u8; 32]>,
    backup_id: &str,
    uploads: Vec<(String, Box<dyn Upload>)>,
    estimate: u64,
    ctx: &JobContext,
) -> Result<EncodeOutcome, BackupError> {
    let names: Vec<String> = uploads.iter().map(|(n, _)| n.clone()).collect();
    let counters = Counters::new(&names);
    let settings = res.encode_settings();
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
    outcome
}

/// Writes the manifest on every destination the data reached; a destination whose manifest fails
/// loses its data object too. Returns the destinations that hold the complete backup.
async fn write_manifests(
    res: &BackupResources,
    outcome: &EncodeOutcome,
    manifest: &Manifest,
    key: &str,
    failed: &mut Vec<Failure>,
) -> Vec<String> {
    let mut complete = Vec::new();
    for (name, r) in &outcome.destinations {
        if r.is_err() {
            continue;
        }
        let Ok(dest) = res.destination(name) else { continue };
        match write_manifest(dest.as_ref(), &manifest.instance_id, &manifest.backup_id, manifest).await {
            Ok(()) => complete.push(name.clone()),
            Err(e) => {
                tracing::warn!(backup = %manifest.backup_id, destination = %name, "write manifest: {e:#}");
                let _ = dest.delete(key).await;
                failed.push((name.clone(), e.to_string()));
            }
        }
    }
    complete
}

/// The raw size a physical backup will read, for a progress percentage; 0 (unknown) for a dump,
/// whose size has little to do with the files behind it.
async fn estimate_raw_size(instance: &Instance, method: BackupMethod) -> u64 {
    let data_dir = instance.spec.data_dir.clone();
    match method {
        BackupMethod::Physical => tokio::task::spawn_blocking(move || estimate_size(&data_dir)).await.unwrap_or(0),
        BackupMethod::Logical => 0,
    }
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

/// Bytes in the regular files below `dir`, which is about what a physical backup reads; 0 (unknown)
/// if the folder cannot be read or is too large to walk.
///
/// The data directory belongs to the engine's user, who could swap a folder for a link while root
/// walks it: the walk goes through directory handles (`beneath`), opens every folder beneath the one
/// before it without following any link, and reads sizes with `fstatat(AT_SYMLINK_NOFOLLOW)`, so it
/// never leaves the data directory, even to count.
pub(crate) fn estimate_size(dir: &Path) -> u64 {
    use rustix::fs::FileType;
    let Ok(top) = crate::beneath::DirHandle::open_root(dir) else {
        return 0;
    };
    let mut total = 0u64;
    let mut seen = 0usize;
    let mut stack = vec![top];
    while let Some(d) = stack.pop() {
        let Ok(names) = d.entries() else {
            return 0;
        };
        for name in names {
            seen += 1;
            if seen > ESTIMATE_MAX_ENTRIES {
                return 0;
            }
            let Ok(st) = d.stat_entry(&name) else { continue };
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => stack.extend(d.open_dir(Path::new(&name)).ok()),
                FileType::RegularFile => total += u64::try_from(st.st_size).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}
