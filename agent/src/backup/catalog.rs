//! What exists where: the merged view of the manifests on every destination. Destinations are
//! the source of truth; the agent keeps no separate catalog that could drift from them.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::BackupError;
use super::destination::Destination;
use super::manifest::{Manifest, manifest_key};

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

/// Every backup of `instance` found on any destination, oldest first.
pub async fn list(destinations: &[Arc<dyn Destination>], instance: &str) -> Vec<BackupInfo> {
    let mut found: BTreeMap<String, (Option<Manifest>, BTreeMap<String, DestinationStatus>)> = BTreeMap::new();
    let mut unreachable: Vec<(String, String)> = Vec::new();
    for dest in destinations {
        let ids = match dest.list_children(instance).await {
            Ok(ids) => ids,
            Err(e) => {
                unreachable.push((dest.name().to_owned(), e.to_string()));
                continue;
            }
        };
        for id in ids {
            let status = match read_manifest(dest.as_ref(), instance, &id).await {
                Ok(Some(m)) => {
                    let entry = found.entry(id.clone()).or_default();
                    let bytes = m.stored_bytes;
                    entry.0.get_or_insert(m);
                    DestinationStatus { name: dest.name().to_owned(), state: DestinationState::Complete, bytes }
                }
                // Data without a manifest is an unfinished or half-deleted backup: it does not exist.
                Ok(None) => continue,
                Err(e) => DestinationStatus {
                    name: dest.name().to_owned(),
                    state: DestinationState::Failed(e.to_string()),
                    bytes: 0,
                },
            };
            found.entry(id).or_default().1.insert(status.name.clone(), status);
        }
    }
    let configured = destinations;
    let mut out: Vec<BackupInfo> = found
        .into_values()
        .filter_map(|(manifest, statuses)| {
            let manifest = manifest?;
            let mut destinations = Vec::new();
            for dest in destinations_of(&manifest, configured) {
                let status = statuses.get(&dest).cloned().unwrap_or_else(|| {
                    match unreachable.iter().find(|(n, _)| *n == dest) {
                        Some((_, e)) => DestinationStatus {
                            name: dest.clone(),
                            state: DestinationState::Failed(e.clone()),
                            bytes: 0,
                        },
                        None => DestinationStatus { name: dest.clone(), state: DestinationState::Missing, bytes: 0 },
                    }
                });
                destinations.push(status);
            }
            let state = if destinations.iter().all(|d| d.state == DestinationState::Complete) {
                BackupState::Complete
            } else {
                BackupState::Degraded
            };
            Some(BackupInfo { manifest, state, destinations })
        })
        .collect();
    out.sort_by(|a, b| {
        a.manifest.started.cmp(&b.manifest.started).then_with(|| a.manifest.backup_id.cmp(&b.manifest.backup_id))
    });
    out
}

/// The destinations a backup should be on: the configured ones now.
fn destinations_of(_manifest: &Manifest, configured: &[Arc<dyn Destination>]) -> Vec<String> {
    configured.iter().map(|d| d.name().to_owned()).collect()
}

pub async fn read_manifest(
    dest: &dyn Destination,
    instance: &str,
    backup: &str,
) -> Result<Option<Manifest>, BackupError> {
    let Some(bytes) = dest.get(&manifest_key(instance, backup)).await? else { return Ok(None) };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| BackupError::dest(dest.name(), format!("manifest of {instance}/{backup} is not valid: {e}")))
}

/// Writes the manifest of a backup: the last step on a destination, after which the backup exists there.
pub async fn write_manifest(dest: &dyn Destination, manifest: &Manifest) -> Result<(), BackupError> {
    let bytes = serde_json::to_vec_pretty(manifest)
        .map_err(|e| BackupError::io("encode manifest", std::io::Error::other(e)))?;
    dest.put(&manifest_key(&manifest.instance_id, &manifest.backup_id), bytes::Bytes::from(bytes)).await
}
