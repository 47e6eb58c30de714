//! The catalog rebuilt from the destinations, for an agent that may never have known an instance
//! (a new host after the old one was lost): which instances the destinations hold, and every
//! backup of one with whether this agent can open it now and which keys could.
//!
//! Everything here is read from storage that is not trusted. A folder name counts only if it is a
//! valid instance or backup id; a manifest is shown only if it passes `check_shape` (sizes, ids),
//! and counts as authenticated only if it passes the one gate, `catalog::read_authentic`. A copy
//! that fails either is reported with its reason and never acted on. Both lists are bounded, so a
//! bucket filled with folders cannot make the agent build an answer of any size.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::BackupError;
use super::backup_id::check_backup_id;
use super::catalog::{self, DestinationState, DestinationStatus};
use super::destination::Destination;
use super::keys::BackupKeys;
use super::manifest::Manifest;
use crate::ids::{self, truncate_for_message};

/// The most instance ids one discovery returns.
pub const MAX_INSTANCES: usize = 10_000;
/// The most backups of one instance one listing returns (the newest ids are kept: ids sort by time).
pub const MAX_BACKUPS: usize = 2_000;

/// The instance folders found on the destinations.
#[derive(Debug, Default)]
pub struct InstancesFound {
    /// Valid instance ids, sorted, at most [`MAX_INSTANCES`].
    pub instance_ids: Vec<String>,
    /// Destinations that could not be listed: (name, error).
    pub unreachable: Vec<(String, String)>,
    /// More than [`MAX_INSTANCES`] were found.
    pub truncated: bool,
}

/// The backups of one instance found on the destinations.
#[derive(Debug, Default)]
pub struct BackupsFound {
    /// Oldest first, at most [`MAX_BACKUPS`].
    pub backups: Vec<FoundBackup>,
    /// Destinations that could not be listed: (name, error).
    pub unreachable: Vec<(String, String)>,
    /// More than [`MAX_BACKUPS`] were found; the oldest are left out.
    pub truncated: bool,
}

/// A key that can open a backup's data key, as the manifest names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyWrapName {
    pub wrapper: String,
    pub key_id: String,
}

/// One copy of a backup: its status as listed, and whether its manifest authenticates now.
#[derive(Debug, Clone)]
pub struct FoundCopy {
    pub status: DestinationStatus,
    /// `None` when there is no manifest of a sane shape to authenticate (missing, refused, unreachable).
    pub authentication: Option<Result<(), String>>,
}

/// How a backup found on the destinations stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoundState {
    Complete,
    Degraded,
    /// No copy holds a manifest of a sane shape for this instance and backup.
    Refused,
}

/// One backup found on the destinations.
#[derive(Debug, Clone)]
pub struct FoundBackup {
    pub instance_id: String,
    pub backup_id: String,
    pub state: FoundState,
    /// The manifest of an authenticated copy if there is one, else the first of a sane shape (as
    /// stored, not trusted); `None` when [`FoundState::Refused`].
    pub manifest: Option<Manifest>,
    pub copies: Vec<FoundCopy>,
    /// `Ok` when at least one copy authenticates; else the first reason.
    pub authentication: Result<(), String>,
    pub key_wraps: Vec<KeyWrapName>,
}

/// Every folder on every destination named like an instance id. Fails only when no destination
/// can be listed.
pub async fn instances(destinations: &[Arc<dyn Destination>]) -> Result<InstancesFound, BackupError> {
    let mut found = InstancesFound::default();
    let mut ids: BTreeSet<String> = BTreeSet::new();
    for dest in destinations {
        match dest.list_children("").await {
            Ok(names) => {
                let (valid, ignored): (Vec<String>, Vec<String>) =
                    names.into_iter().partition(|n| ids::instance_id("instance_id", n).is_ok());
                if !ignored.is_empty() {
                    tracing::warn!(
                        destination = dest.name(),
                        count = ignored.len(),
                        example = %truncate_for_message(&ignored[0]),
                        "folders that are not instance ids are ignored"
                    );
                }
                ids.extend(valid);
            }
            Err(e) => found.unreachable.push((dest.name().to_owned(), e.to_string())),
        }
    }
    if found.unreachable.len() == destinations.len() && !destinations.is_empty() {
        return Err(BackupError::AllDestinationsFailed {
            reasons: found.unreachable.iter().map(|(n, e)| format!("{n}: {e}")).collect(),
        });
    }
    found.truncated = ids.len() > MAX_INSTANCES;
    found.instance_ids = ids.into_iter().take(MAX_INSTANCES).collect();
    Ok(found)
}

/// Every backup of `instance` on the destinations, oldest first, each copy authenticated with
/// `keys` (what this agent can use now). Fails only when no destination can be listed.
pub async fn backups(
    destinations: &[Arc<dyn Destination>],
    keys: &BackupKeys,
    instance: &str,
) -> Result<BackupsFound, BackupError> {
    ids::instance_id("instance_id", instance)?;
    let mut ids: BTreeSet<String> = BTreeSet::new();
    let mut unreachable: Vec<(String, String)> = Vec::new();
    for dest in destinations {
        match dest.list_children(instance).await {
            Ok(found) => ids.extend(found.into_iter().filter(|id| check_backup_id(id).is_ok())),
            Err(e) => unreachable.push((dest.name().to_owned(), e.to_string())),
        }
    }
    if unreachable.len() == destinations.len() && !destinations.is_empty() {
        return Err(BackupError::AllDestinationsFailed {
            reasons: unreachable.iter().map(|(n, e)| format!("{n}: {e}")).collect(),
        });
    }
    let truncated = ids.len() > MAX_BACKUPS;
    let skip = ids.len().saturating_sub(MAX_BACKUPS);
    let mut out = Vec::new();
    for id in ids.into_iter().skip(skip) {
        out.push(backup(destinations, keys, instance, &id, &unreachable).await);
    }
    out.sort_by(|a, b| {
        let started = |f: &FoundBackup| f.manifest.as_ref().map(|m| m.started);
        started(a).cmp(&started(b)).then_with(|| a.backup_id.cmp(&b.backup_id))
    });
    Ok(BackupsFound { backups: out, unreachable, truncated })
}

async fn backup(
    destinations: &[Arc<dyn Destination>],
    keys: &BackupKeys,
    instance: &str,
    backup_id: &str,
    unreachable: &[(String, String)],
) -> FoundBackup {
    let gathered = catalog::gather_copies(destinations, instance, backup_id, unreachable).await;
    let state = match &gathered.manifest {
        None => FoundState::Refused,
        Some(_) if gathered.destinations.iter().all(|d| d.state == DestinationState::Complete) => FoundState::Complete,
        Some(_) => FoundState::Degraded,
    };
    let mut authentic: Option<Manifest> = None;
    let mut first_failure: Option<String> = None;
    let mut copies = Vec::new();
    for status in gathered.destinations {
        let checked = match (&status.state, destinations.iter().find(|d| d.name() == status.name)) {
            (DestinationState::Complete, Some(dest)) => {
                Some(match catalog::read_authentic(keys, dest.as_ref(), instance, backup_id).await {
                    Ok(a) => {
                        authentic.get_or_insert(a.manifest);
                        Ok(())
                    }
                    Err(e) => Err(first_failure.get_or_insert(e.to_string()).clone()),
                })
            }
            _ => None,
        };
        copies.push(FoundCopy { status, authentication: checked });
    }
    // The reason shown: why the first copy of a sane shape did not authenticate, else why no
    // copy had a sane shape.
    let authentication = match (&authentic, first_failure, gathered.refusal) {
        (Some(_), _, _) => Ok(()),
        (None, Some(failure), _) => Err(failure),
        (None, None, Some(refusal)) => Err(refusal.to_string()),
        (None, None, None) => Err("no destination holds a manifest of it".to_owned()),
    };
    let manifest = authentic.or(gathered.manifest);
    let key_wraps = manifest.as_ref().map(key_wraps).unwrap_or_default();
    FoundBackup {
        instance_id: instance.to_owned(),
        backup_id: backup_id.to_owned(),
        state,
        manifest,
        copies,
        authentication,
        key_wraps,
    }
}

/// The most key wraps shown per backup (a manifest holds a few; the storage could write many).
pub const MAX_KEY_WRAPS_SHOWN: usize = 16;

/// The keys that can open `m`'s data key, as the manifest names them (not authenticated; names
/// cut to a readable length, at most [`MAX_KEY_WRAPS_SHOWN`]).
pub fn key_wraps(m: &Manifest) -> Vec<KeyWrapName> {
    m.wraps()
        .iter()
        .take(MAX_KEY_WRAPS_SHOWN)
        .map(|w| KeyWrapName { wrapper: truncate_for_message(&w.wrapper), key_id: truncate_for_message(&w.key_id) })
        .collect()
}

#[cfg(test)]
#[path = "discovery_tests.rs"]
mod tests;
