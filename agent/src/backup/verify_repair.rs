//! The VerifyBackup and RepairBackup operations. Both first read the manifest from storage again
//! and authenticate it (`catalog::read_authentic`): the copy listed when the request came in may
//! have been rewritten since. Verify decrypts and decodes one destination's copy to nothing;
//! repair copies a copy whose manifest authenticates (checking size and SHA-256) to every
//! destination that lacks one or whose manifest does not authenticate.

use std::sync::Arc;

use super::BackupError;
use super::catalog::{BackupInfo, DestinationState, read_authentic, write_manifest};
use super::decode::{self, StoredCopy};
use super::destination::Destination;
use super::keys::BackupKeys;
use super::manifest_mac::AuthenticManifest;
use super::resources::BackupResources;
use crate::ops::{JobContext, Progress};

/// `keys`: the service's keys with the request's recovery identity, if it carried one.
pub async fn verify(
    res: &BackupResources,
    keys: &BackupKeys,
    instance_id: &str,
    backup_id: &str,
    source: &str,
    ctx: &JobContext,
) -> Result<serde_json::Value, BackupError> {
    let dest = res.destination(source)?;
    let backup = read_authentic(keys, dest.as_ref(), instance_id, backup_id).await?;
    ctx.progress(Progress {
        done: 0,
        total: backup.manifest.stored_bytes,
        unit: "bytes".into(),
        message: format!("verifying on {source}"),
    });
    let copy = StoredCopy { destination: dest.as_ref(), source, backup };
    let out = copy.decode_into(&mut tokio::io::sink(), &ctx.cancel).await?;
    Ok(serde_json::json!({
        "backup_id": backup_id, "destination": source, "chunks": out.chunk_count,
        "stored_bytes": out.stored_bytes, "raw_bytes": out.raw_bytes, "sha256": copy.backup.manifest.sha256, "ok": true,
    }))
}

/// `source` is read from if its manifest authenticates, else the first destination whose does.
pub async fn repair(
    res: &BackupResources,
    instance_id: &str,
    info: &BackupInfo,
    source: &str,
    ctx: &JobContext,
) -> Result<serde_json::Value, BackupError> {
    // `info` only lists manifests that name this instance and this backup id.
    let backup_id = info.manifest.backup_id.as_str();
    let mut good: Vec<(&Arc<dyn Destination>, AuthenticManifest)> = Vec::new();
    let mut lacking = Vec::new();
    let mut refusals = Vec::new();
    for status in &info.destinations {
        let Ok(dest) = res.destination(&status.name) else { continue };
        if status.state != DestinationState::Complete {
            lacking.push(dest);
            continue;
        }
        match read_authentic(res.keys.as_ref(), dest.as_ref(), instance_id, backup_id).await {
            Ok(a) => good.push((dest, a)),
            Err(e) => {
                // This copy is bad, not the operation: it is replaced like a missing one.
                tracing::warn!(backup = backup_id, destination = %status.name, "repair: {e:#}");
                refusals.push(e.to_string());
                lacking.push(dest);
            }
        }
    }
    let from = good.iter().position(|(d, _)| d.name() == source).unwrap_or(0);
    let Some((from, backup)) = good.get(from) else {
        return Err(BackupError::NoCompleteCopy { backup: backup_id.to_owned(), reasons: refusals });
    };
    let mut manifest = backup.manifest.clone();
    manifest.failed_destinations.clear();
    let object = backup.data_object();
    let mut repaired = Vec::new();
    for to in lacking {
        ctx.progress(Progress {
            done: 0,
            total: manifest.stored_bytes,
            unit: "bytes".into(),
            message: format!("copying {} -> {}", from.name(), to.name()),
        });
        let upload = to.create(&object).await?;
        let stream = from.stream(&object).await?;
        decode::copy_verified(stream, upload, &manifest, &ctx.cancel).await?;
        write_manifest(to.as_ref(), instance_id, backup_id, &manifest).await?;
        repaired.push(to.name().to_owned());
    }
    // Refresh the manifests elsewhere so none still lists a failed destination (the destination
    // lists are outside the MAC, so the manifest stays authentic).
    for (dest, _) in &good {
        write_manifest(dest.as_ref(), instance_id, backup_id, &manifest).await?;
    }
    Ok(serde_json::json!({ "backup_id": backup_id, "source": from.name(), "repaired": repaired }))
}
