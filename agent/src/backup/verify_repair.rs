//! The VerifyBackup and RepairBackup operations: both read one destination's copy and check it
//! against the manifest; verify decrypts and decodes it to nothing, repair copies it (checking
//! size and SHA-256, no key needed) to the destinations that lack it.

use super::BackupError;
use super::catalog::{BackupInfo, DestinationState, write_manifest};
use super::decode;
use super::keywrap::unwrap_data_key;
use super::manifest::data_key;
use super::resources::BackupResources;
use crate::ops::{JobContext, Progress};

pub async fn verify(
    res: &BackupResources,
    info: &BackupInfo,
    source: &str,
    ctx: &JobContext,
) -> Result<serde_json::Value, BackupError> {
    let m = &info.manifest;
    let dest = res.destination(source)?;
    let key = unwrap_data_key(res.keys.as_ref(), m)?;
    ctx.progress(Progress {
        done: 0,
        total: m.stored_bytes,
        unit: "bytes".into(),
        message: format!("verifying on {source}"),
    });
    let stream = dest.stream(&data_key(&m.instance_id, &m.backup_id)).await?;
    let mut sink = tokio::io::sink();
    let out = decode::decode(stream, key, m, source, &mut sink, &ctx.cancel).await?;
    Ok(serde_json::json!({
        "backup_id": m.backup_id, "destination": source, "chunks": out.chunk_count,
        "stored_bytes": out.stored_bytes, "raw_bytes": out.raw_bytes, "sha256": m.sha256, "ok": true,
    }))
}

pub async fn repair(
    res: &BackupResources,
    info: &BackupInfo,
    source: &str,
    ctx: &JobContext,
) -> Result<serde_json::Value, BackupError> {
    let m = &info.manifest;
    let from = res.destination(source)?;
    let mut repaired = Vec::new();
    let mut manifest = m.clone();
    manifest.failed_destinations.clear();
    for status in &info.destinations {
        if status.state == DestinationState::Complete {
            continue;
        }
        let Ok(to) = res.destination(&status.name) else { continue };
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
        if let Ok(d) = res.destination(name) {
            write_manifest(d.as_ref(), &manifest).await?;
        }
    }
    Ok(serde_json::json!({ "backup_id": m.backup_id, "source": source, "repaired": repaired }))
}
