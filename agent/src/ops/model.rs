//! The operation record: what the journal stores and the API reports.

use serde::{Deserialize, Serialize};
use std::time::SystemTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpState {
    Queued,
    /// A disruptive operation waiting for its instance's maintenance window
    /// (`OperationRecord::window_start`).
    WaitingForWindow,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// The agent stopped while the operation was queued or running; its work was not finished.
    Interrupted,
}

impl OpState {
    pub fn is_finished(self) -> bool {
        !matches!(self, OpState::Queued | OpState::WaitingForWindow | OpState::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OpState::Queued => "queued",
            OpState::WaitingForWindow => "waiting_for_window",
            OpState::Running => "running",
            OpState::Succeeded => "succeeded",
            OpState::Failed => "failed",
            OpState::Cancelled => "cancelled",
            OpState::Interrupted => "interrupted",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpError {
    pub code: crate::error::ErrorCode,
    pub message: String,
}

impl OpError {
    /// The record of a domain error: its own code and message.
    pub fn from_error<E: crate::error::HasErrorCode + ?Sized>(e: &E) -> Self {
        OpError { code: e.code(), message: e.to_string() }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub done: u64,
    /// 0 when unknown.
    pub total: u64,
    pub unit: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationRecord {
    pub id: String,
    pub request_id: String,
    /// SHA-256 of kind, target and parameters: the same request_id with another request is refused.
    pub request_digest: String,
    pub kind: String,
    pub target: String,
    /// Kind-specific parameters, kept so an interrupted operation can be cleaned up. Never secrets.
    pub params: serde_json::Value,
    pub state: OpState,
    pub progress: Progress,
    #[serde(with = "crate::timefmt")]
    pub created: SystemTime,
    #[serde(with = "crate::timefmt::option", default)]
    pub started: Option<SystemTime>,
    #[serde(with = "crate::timefmt::option", default)]
    pub finished: Option<SystemTime>,
    #[serde(default)]
    pub error: Option<OpError>,
    #[serde(default)]
    pub result: Option<serde_json::Value>,
    #[serde(default)]
    pub cancel_requested: bool,
    /// Who asked for it: the audit trail. `None` for work the agent started itself (the backup
    /// scheduler) and for records written before the agent kept it.
    #[serde(default)]
    pub submitted_by: Option<Submitter>,
    /// Disruptive operations only (`ops::Disruptive`): while waiting, the window it will start in;
    /// once running, the end of the window it runs in, and whether it has run past it. Skipped
    /// when unset, so other records stay what earlier builds wrote.
    #[serde(with = "crate::timefmt::option", default, skip_serializing_if = "Option::is_none")]
    pub window_start: Option<SystemTime>,
    #[serde(with = "crate::timefmt::option", default, skip_serializing_if = "Option::is_none")]
    pub window_end: Option<SystemTime>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overrunning: bool,
}

/// The API caller an operation was submitted by, as its client certificate named it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitter {
    /// The certificate name that gave the role.
    pub identity: String,
    /// The certificate's subject distinguished name.
    pub subject: String,
    /// "orchestrator" or "monitor".
    pub role: String,
}

tokio::task_local! {
    static SUBMITTER: Submitter;
}

impl Submitter {
    /// Runs `work` (an API handler) with `self` as the submitter of any operation it starts. The
    /// permission layer sets it for every call, so no domain service needs to pass the caller
    /// along for the record to name them.
    pub async fn scope<F: std::future::Future>(self, work: F) -> F::Output {
        SUBMITTER.scope(self, work).await
    }

    /// The caller of the API handler this runs in, if any.
    pub fn current() -> Option<Submitter> {
        SUBMITTER.try_with(Clone::clone).ok()
    }
}
