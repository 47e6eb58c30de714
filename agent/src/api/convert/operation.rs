use dbagent_proto::v1 as pb;

use super::timestamp;
use crate::ops::{OpState, OperationRecord};

fn state(s: OpState) -> pb::OperationState {
    match s {
        OpState::Queued => pb::OperationState::Queued,
        OpState::WaitingForWindow => pb::OperationState::WaitingForWindow,
        OpState::Running => pb::OperationState::Running,
        OpState::Succeeded => pb::OperationState::Succeeded,
        OpState::Failed => pb::OperationState::Failed,
        OpState::Cancelled => pb::OperationState::Cancelled,
        OpState::Interrupted => pb::OperationState::Interrupted,
    }
}

impl From<&OperationRecord> for pb::Operation {
    fn from(r: &OperationRecord) -> Self {
        pb::Operation {
            id: r.id.clone(),
            request_id: r.request_id.clone(),
            kind: r.kind.clone(),
            target: r.target.clone(),
            state: state(r.state).into(),
            progress: Some(pb::Progress {
                done: r.progress.done,
                total: r.progress.total,
                unit: r.progress.unit.clone(),
                message: r.progress.message.clone(),
            }),
            created: Some(timestamp(r.created)),
            started: r.started.map(timestamp),
            finished: r.finished.map(timestamp),
            error: r
                .error
                .as_ref()
                .map(|e| pb::OperationError { code: e.code.as_str().into(), message: e.message.clone() }),
            result_json: r.result.as_ref().map(|v| v.to_string()).unwrap_or_default(),
            cancel_requested: r.cancel_requested,
            submitted_by: r.submitted_by.as_ref().map(|s| pb::OperationSubmitter {
                identity: s.identity.clone(),
                subject: s.subject.clone(),
                role: s.role.clone(),
            }),
            window_start: r.window_start.map(timestamp),
            window_end: r.window_end.map(timestamp),
            overrunning: r.overrunning,
        }
    }
}
