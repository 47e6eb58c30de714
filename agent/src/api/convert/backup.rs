//! Backups: domain <-> proto.

use dbagent_proto::v1 as pb;

use super::timestamp;
use crate::backup::discovery::{BackupsFound, FoundBackup, FoundState, InstancesFound};
use crate::backup::drill_store::DrillRecord;
use crate::backup::{BackupInfo, BackupKind, BackupMethod, BackupState, DestinationState, DestinationStatus, Manifest};
use crate::ids::InvalidField;

pub fn method_from_proto(value: i32) -> Result<BackupMethod, InvalidField> {
    match pb::BackupMethod::try_from(value) {
        Ok(pb::BackupMethod::Physical | pb::BackupMethod::Unspecified) => Ok(BackupMethod::Physical),
        Ok(pb::BackupMethod::Logical) => Ok(BackupMethod::Logical),
        Err(_) => Err(InvalidField::new("method", format!("{value} is not a BackupMethod"))),
    }
}

impl From<&BackupInfo> for pb::Backup {
    fn from(b: &BackupInfo) -> Self {
        let state = match b.state {
            BackupState::Complete => pb::BackupState::Complete,
            BackupState::Degraded => pb::BackupState::Degraded,
        };
        let mut out = from_manifest(&b.manifest, state);
        out.destinations = b.destinations.iter().map(destination_status).collect();
        out
    }
}

/// A backup listed from the destinations: as [`BackupInfo`] when a copy has a manifest of a sane
/// shape, else only its ids, FAILED, with each copy's refusal; plus what authenticated.
impl From<&FoundBackup> for pb::Backup {
    fn from(f: &FoundBackup) -> Self {
        let state = match f.state {
            FoundState::Complete => pb::BackupState::Complete,
            FoundState::Degraded => pb::BackupState::Degraded,
            FoundState::Refused => pb::BackupState::Failed,
        };
        let mut out = match &f.manifest {
            Some(m) => from_manifest(m, state),
            None => pb::Backup {
                id: f.backup_id.clone(),
                instance_id: f.instance_id.clone(),
                state: state as i32,
                ..Default::default()
            },
        };
        out.destinations = f
            .copies
            .iter()
            .map(|c| {
                let mut d = destination_status(&c.status);
                match &c.authentication {
                    Some(Ok(())) => d.authenticated = true,
                    Some(Err(e)) => d.authentication_error = e.clone(),
                    None => {}
                }
                d
            })
            .collect();
        match &f.authentication {
            Ok(()) => out.authenticated = true,
            Err(e) => out.authentication_error = e.clone(),
        }
        out.key_wraps =
            f.key_wraps.iter().map(|k| pb::KeyWrap { wrapper: k.wrapper.clone(), key_id: k.key_id.clone() }).collect();
        out
    }
}

impl From<&BackupsFound> for pb::ListBackupsResponse {
    fn from(found: &BackupsFound) -> Self {
        pb::ListBackupsResponse {
            backups: found.backups.iter().map(Into::into).collect(),
            destination_errors: unreachable(&found.unreachable),
            truncated: found.truncated,
            ..Default::default()
        }
    }
}

impl From<&InstancesFound> for pb::ListBackupsResponse {
    fn from(found: &InstancesFound) -> Self {
        pb::ListBackupsResponse {
            instance_ids: found.instance_ids.clone(),
            destination_errors: unreachable(&found.unreachable),
            truncated: found.truncated,
            ..Default::default()
        }
    }
}

fn unreachable(list: &[(String, String)]) -> Vec<String> {
    list.iter().map(|(name, e)| format!("{name}: {e}")).collect()
}

fn destination_status(d: &DestinationStatus) -> pb::DestinationStatus {
    let (state, error) = match &d.state {
        DestinationState::Complete => ("complete", String::new()),
        DestinationState::Missing => ("missing", String::new()),
        DestinationState::Failed(e) => ("failed", e.clone()),
    };
    pb::DestinationStatus { name: d.name.clone(), state: state.into(), bytes: d.bytes, error, ..Default::default() }
}

fn from_manifest(m: &Manifest, state: pb::BackupState) -> pb::Backup {
    pb::Backup {
        id: m.backup_id.clone(),
        instance_id: m.instance_id.clone(),
        kind: match m.kind {
            BackupKind::Scheduled => pb::BackupKind::Scheduled,
            BackupKind::Manual => pb::BackupKind::Manual,
        } as i32,
        method: match m.method {
            BackupMethod::Physical => pb::BackupMethod::Physical,
            BackupMethod::Logical => pb::BackupMethod::Logical,
        } as i32,
        state: state as i32,
        size_bytes: m.raw_bytes,
        stored_bytes: m.stored_bytes,
        sha256: m.sha256.clone(),
        created: Some(timestamp(m.started)),
        expires: m.expires.map(timestamp),
        engine_version: m.engine_version.clone(),
        ..Default::default()
    }
}

impl From<&DrillRecord> for pb::BackupDrill {
    fn from(r: &DrillRecord) -> Self {
        let last = &r.last;
        pb::BackupDrill {
            operation_id: last.operation_id.clone(),
            backup_id: last.backup_id.clone(),
            ok: last.ok,
            reason: last.reason.clone(),
            database: last.database.clone(),
            table: last.table.clone(),
            rows: last.rows,
            duration_ms: last.duration_ms,
            finished: Some(timestamp(last.finished)),
            last_success: r.last_success.map(timestamp),
            failures_total: r.failures_total,
        }
    }
}
