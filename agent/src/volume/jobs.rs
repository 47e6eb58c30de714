//! Volume work as operations: kinds `volume.create`, `volume.open`, ..., exclusive per instance.
//! Parameters and results never carry keys: an open with the operator's recovery key records only
//! that one was given ([`crate::ops::IN_MEMORY_ONLY`]); the key lives in the job's memory until it ends.

use serde_json::json;

use super::{VolumeOutcome, Volumes};
use crate::error::ErrorCode;
use crate::ops::engine::JobFn;
use crate::ops::{NewOperation, OpError};
use crate::recovery_key::RecoveryIdentity;

#[derive(Debug)]
pub enum VolumeAction {
    Create {
        force: bool,
    },
    Open,
    /// Open with the key escrowed in the header, unsealed with the operator's identity.
    OpenWithRecoveryKey(RecoveryIdentity),
    Close,
    Grow {
        new_size_bytes: u64,
    },
    RotateKey,
    BackupHeader,
    Destroy,
}

impl VolumeAction {
    pub fn kind(&self) -> &'static str {
        match self {
            VolumeAction::Create { .. } => "volume.create",
            VolumeAction::Open | VolumeAction::OpenWithRecoveryKey(_) => "volume.open",
            VolumeAction::Close => "volume.close",
            VolumeAction::Grow { .. } => "volume.grow",
            VolumeAction::RotateKey => "volume.rotate_key",
            VolumeAction::BackupHeader => "volume.backup_header",
            VolumeAction::Destroy => "volume.destroy",
        }
    }

    fn params(&self) -> serde_json::Value {
        match self {
            VolumeAction::Create { force } => json!({ "force": force }),
            VolumeAction::Grow { new_size_bytes } => json!({ "new_size_bytes": new_size_bytes }),
            VolumeAction::OpenWithRecoveryKey(_) => json!({ "recovery_key": crate::ops::IN_MEMORY_ONLY }),
            _ => json!({}),
        }
    }
}

pub fn new_operation(request_id: String, instance: &str, action: &VolumeAction) -> NewOperation {
    NewOperation {
        request_id,
        kind: action.kind(),
        target: instance.to_owned(),
        params: action.params(),
        exclusive: true,
    }
}

/// Volume steps are not cancelled halfway: stopping inside a header change is worse than finishing
/// it. A cancel before the job starts is honoured.
pub fn job(volumes: Volumes, instance: String, action: VolumeAction) -> JobFn {
    Box::new(move |ctx| {
        Box::pin(async move {
            if ctx.cancel.is_cancelled() {
                return Err(OpError { code: ErrorCode::Cancelled, message: "cancelled before it started".into() });
            }
            let id = instance.as_str();
            let result = match action {
                VolumeAction::Create { force } => volumes.create(id, force).await.map(|d| json!({ "outcome": d })),
                VolumeAction::Open => volumes.open(id).await.map(|d| json!({ "outcome": d })),
                VolumeAction::OpenWithRecoveryKey(identity) => volumes
                    .open_with_recovery_key(id, identity)
                    .await
                    .map(|d| json!({ "outcome": d, "key_recovered_from_escrow": true })),
                VolumeAction::Close => volumes.close(id).await.map(|d| json!({ "outcome": d })),
                VolumeAction::Grow { new_size_bytes } => volumes
                    .grow(id, new_size_bytes)
                    .await
                    .map(|d| json!({ "outcome": d, "size_bytes": new_size_bytes })),
                VolumeAction::RotateKey => volumes.rotate_key(id).await.map(|d| json!({ "outcome": d })),
                VolumeAction::BackupHeader => volumes
                    .backup_header(id)
                    .await
                    .map(|p| json!({ "outcome": VolumeOutcome::BackedUp, "path": p.display().to_string() })),
                VolumeAction::Destroy => volumes.destroy(id).await.map(|d| json!({ "outcome": d })),
            };
            result.map(Some).map_err(|e| OpError::from_error(&e))
        })
    })
}
