//! The operations engine: long work as durable, idempotent, cancellable operations (docs/api.md,
//! "Operations").

pub mod disruptions;
pub mod engine;
pub mod journal;
pub mod model;
pub mod sleep;

pub use engine::{Disruptive, JobContext, JobResult, NewOperation, OperationEngine, OpsSettings, Outcome};
pub use model::{OpError, OpState, OperationRecord, Progress, Submitter};

use thiserror::Error;

/// The stored value of a parameter that was given but is kept in memory only (a secret such as a
/// recovery key): the journal says it was given, never what it was. An operation with such a
/// parameter cannot be resumed after a restart: it is reported interrupted with a note to submit
/// it again.
pub const IN_MEMORY_ONLY: &str = "given, kept in memory for this operation only";

#[derive(Debug, Error)]
pub enum OpsError {
    #[error(transparent)]
    Invalid(#[from] crate::ids::InvalidField),
    #[error("operation {0} does not exist (finished operations are kept for operations.retention_hours)")]
    NotFound(String),
    #[error(
        "request_id {request_id:?} was already used for a different request (operation {existing}); choose a new request_id"
    )]
    RequestIdReused { request_id: String, existing: String },
    #[error("operation {id} already finished ({state}); there is nothing to cancel")]
    AlreadyFinished { id: String, state: &'static str },
    #[error("the agent is shutting down; retry when it is back")]
    ShuttingDown,
    #[error("test operation kinds are disabled; set operations.enable_test_kinds = true or run with --dev")]
    TestKindsDisabled,
    #[error("{context}: {source}")]
    Journal { context: String, source: std::io::Error },
}

impl OpsError {
    pub(crate) fn journal(context: String, source: std::io::Error) -> Self {
        OpsError::Journal { context, source }
    }
}

impl crate::error::HasErrorCode for OpsError {
    fn code(&self) -> crate::error::ErrorCode {
        use crate::error::ErrorCode as C;
        match self {
            OpsError::Invalid(_) => C::InvalidArgument,
            OpsError::NotFound(_) => C::NotFound,
            OpsError::RequestIdReused { .. } => C::AlreadyExists,
            OpsError::AlreadyFinished { .. } | OpsError::TestKindsDisabled => C::FailedPrecondition,
            OpsError::ShuttingDown => C::Unavailable,
            OpsError::Journal { .. } => C::Internal,
        }
    }
}
