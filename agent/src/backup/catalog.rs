//! What exists where: the merged view of the manifests on every destination. Destinations are
//! the source of truth; the agent keeps no separate catalog that could drift from them.

use serde::Serialize;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use super::BackupError;
use super::backup_id::check_backup_id;
use super::destination::Destination;
use super::keys::BackupKeys;
use super::manifest::{Manifest, manifest_key};
use super::manifest_mac::{AuthenticManifest, authenticate, check_shape};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupState {
    Complete,
    Degraded,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "state", content = "error")]
pub enum DestinationState {
    Complete,
    Missing,
    /// Could not be asked (unreachable, unreadable manifest).
    Failed(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct DestinationStatus {
    pub name: String,
    #[serde(flatten)]
    pub state: DestinationState,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupInfo {
    pub manifest: Manifest,
    pub state: BackupState,
    pub destinations: Vec<DestinationStatus>,
}

impl BackupInfo {
    pub fn healthy_destinations(&self) -> impl Iterator<Item = &str> {
        self.destinations.iter().filter(|d| d.state == DestinationState::Complete).map(|d| d.name.as_str())
    }

    pub fn created(&self) -> SystemTime {
        self.manifest.started
    }
}

/// Every backup of `instance` found on any destination, oldest first. Only folders named like a
/// backup id are looked at, and only manifests that pass [`check_shape`] for that instance and id
/// count; a backup none of whose manifests does is left out (`find` names why). Listing needs no
/// key: the MAC is checked by each operation before it acts (`manifest_mac::authenticate`).
pub async fn list(destinations: &[Arc<dyn Destination>], instance: &str) -> Vec<BackupInfo> {
    list_checked(destinations, instance).await.0
}

/// [`list`], and each destination's answer to the listing (`Err` with the reason when it could not
/// be listed): the scheduler's reachability check, at no extra request.
pub async fn list_checked(
    destinations: &[Arc<dyn Destination>],
    instance: &str,
) -> (Vec<BackupInfo>, Vec<(String, Result<(), String>)>) {
    let mut ids: BTreeSet<String> = BTreeSet::new();
    let mut unreachable: Vec<(String, String)> = Vec::new();
    let mut checks = Vec::new();
    for dest in destinations {
        match dest.list_children(instance).await {
            Ok(found) => {
                ids.extend(found.into_iter().filter(|id| check_backup_id(id).is_ok()));
                checks.push((dest.name().to_owned(), Ok(())));
            }
            Err(e) => {
                unreachable.push((dest.name().to_owned(), e.to_string()));
                checks.push((dest.name().to_owned(), Err(e.to_string())));
            }
        }
    }
    let mut out = Vec::new();
    for id in ids {
        if let Ok(info) = gather(destinations, instance, &id, &unreachable).await {
            out.push(info);
        }
    }
    out.sort_by(|a, b| {
        a.manifest.started.cmp(&b.manifest.started).then_with(|| a.manifest.backup_id.cmp(&b.manifest.backup_id))
    });
    (out, checks)
}

/// Backup `backup` of `instance`: NotFound when no destination holds a manifest for it, the first
/// refusal (names another instance, not authenticated) when none of its manifests is acceptable.
pub async fn find(
    destinations: &[Arc<dyn Destination>],
    instance: &str,
    backup: &str,
) -> Result<BackupInfo, BackupError> {
    gather(destinations, instance, backup, &[]).await
}

/// What the destinations hold for one backup: each copy's status, and the first manifest of a sane
/// shape (`None` with the first refusal when no copy has one).
pub struct Gathered {
    pub manifest: Option<Manifest>,
    pub refusal: Option<BackupError>,
    pub destinations: Vec<DestinationStatus>,
}

impl Gathered {
    /// The merged view, or why there is none (NotFound when no destination holds a manifest).
    pub fn into_info(self, instance: &str, backup: &str) -> Result<BackupInfo, BackupError> {
        let Some(manifest) = self.manifest else {
            return Err(self.refusal.unwrap_or_else(|| BackupError::NotFound {
                instance: instance.to_owned(),
                backup: backup.to_owned(),
            }));
        };
        let state = if self.destinations.iter().all(|d| d.state == DestinationState::Complete) {
            BackupState::Complete
        } else {
            BackupState::Degraded
        };
        Ok(BackupInfo { manifest, state, destinations: self.destinations })
    }
}

async fn gather(
    destinations: &[Arc<dyn Destination>],
    instance: &str,
    backup: &str,
    unreachable: &[(String, String)],
) -> Result<BackupInfo, BackupError> {
    gather_copies(destinations, instance, backup, unreachable).await.into_info(instance, backup)
}

/// Reads the manifest of `instance`/`backup` (names from these ids only) on every destination;
/// `unreachable` names destinations already known to fail, with their error.
pub async fn gather_copies(
    destinations: &[Arc<dyn Destination>],
    instance: &str,
    backup: &str,
    unreachable: &[(String, String)],
) -> Gathered {
    let mut manifest = None;
    let mut refusal = None;
    let mut statuses = Vec::new();
    for dest in destinations {
        let name = dest.name().to_owned();
        let failed = |e: String| DestinationStatus { name: name.clone(), state: DestinationState::Failed(e), bytes: 0 };
        if let Some((_, e)) = unreachable.iter().find(|(n, _)| *n == name) {
            statuses.push(failed(e.clone()));
            continue;
        }
        let status = match read_manifest(dest.as_ref(), instance, backup).await {
            Ok(Some(m)) => match check_shape(&m, instance, backup, &name) {
                Ok(()) => {
                    let bytes = m.stored_bytes;
                    manifest.get_or_insert(m);
                    DestinationStatus { name: name.clone(), state: DestinationState::Complete, bytes }
                }
                Err(e) => {
                    let status = failed(e.to_string());
                    refusal.get_or_insert(e);
                    status
                }
            },
            // Data without a manifest is an unfinished or half-deleted backup: it does not exist.
            Ok(None) => DestinationStatus { name: name.clone(), state: DestinationState::Missing, bytes: 0 },
            Err(e) => failed(e.to_string()),
        };
        statuses.push(status);
    }
    Gathered { manifest, refusal, destinations: statuses }
}

/// A manifest is a few KiB; one larger than this is refused unread (it could exhaust memory).
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

pub async fn read_manifest(
    dest: &dyn Destination,
    instance: &str,
    backup: &str,
) -> Result<Option<Manifest>, BackupError> {
    let Some(bytes) = dest.get(&manifest_key(instance, backup), MAX_MANIFEST_BYTES).await? else { return Ok(None) };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| BackupError::dest(dest.name(), format!("manifest of {instance}/{backup} is not valid: {e}")))
}

/// Writes the manifest of backup `backup` of `instance`: the last step on a destination, after
/// which the backup exists there. The object name comes from the ids, not from the manifest.
pub async fn write_manifest(
    dest: &dyn Destination,
    instance: &str,
    backup: &str,
    manifest: &Manifest,
) -> Result<(), BackupError> {
    let bytes = serde_json::to_vec_pretty(manifest)
        .map_err(|e| BackupError::io("encode manifest", std::io::Error::other(e)))?;
    dest.put(&manifest_key(instance, backup), bytes::Bytes::from(bytes)).await
}

/// The manifest of `instance`/`backup` on `dest`, read now and authenticated
/// ([`authenticate`]): what an operation acts on, never the copy listed earlier.
pub async fn read_authentic(
    keys: &BackupKeys,
    dest: &dyn Destination,
    instance: &str,
    backup: &str,
) -> Result<AuthenticManifest, BackupError> {
    let m = read_manifest(dest, instance, backup).await?.ok_or_else(|| BackupError::NotOnDestination {
        backup: backup.to_owned(),
        destination: dest.name().to_owned(),
    })?;
    authenticate(keys, m, instance, backup, dest.name()).await
}
