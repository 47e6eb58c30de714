//! Backups: domain <-> proto.

use dbagent_proto::v1 as pb;

use super::timestamp;
use crate::backup::drill_store::DrillRecord;
use crate::backup::{BackupInfo, BackupKind, BackupMethod, BackupState, DestinationState};
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
        let m = &b.manifest;
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
            state: match b.state {
                BackupState::Complete => pb::BackupState::Complete,
                BackupState::Degraded => pb::BackupState::Degraded,
            } as i32,
            size_bytes: m.raw_bytes,
            stored_bytes: m.stored_bytes,
            sha256: m.sha256.clone(),
            destinations: b
                .destinations
                .iter()
                .map(|d| {
                    let (state, error) = match &d.state {
                        DestinationState::Complete => ("complete", String::new()),
                        DestinationState::Missing => ("missing", String::new()),
                        DestinationState::Failed(e) => ("failed", e.clone()),
                    };
                    pb::DestinationStatus { name: d.name.clone(), state: state.into(), bytes: d.bytes, error }
                })
                .collect(),
            created: Some(timestamp(m.started)),
            expires: m.expires.map(timestamp),
            engine_version: m.engine_version.clone(),
        }
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
