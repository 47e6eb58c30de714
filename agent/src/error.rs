//! Error codes shared by every domain module. Each module keeps its own error enum and says, through
//! [`HasErrorCode`], which code each variant carries; the API turns that code into a gRPC status in
//! one function (`api::error::to_status`), and an operation record stores it as it is. A caller that
//! must branch on a failure matches the module's variant, never its message.

use serde::{Deserialize, Serialize};

/// gRPC-style error codes: what a failure means to the caller. The API maps them one to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    ResourceExhausted,
    PermissionDenied,
    Unavailable,
    Aborted,
    Cancelled,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::AlreadyExists => "ALREADY_EXISTS",
            ErrorCode::FailedPrecondition => "FAILED_PRECONDITION",
            ErrorCode::ResourceExhausted => "RESOURCE_EXHAUSTED",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Aborted => "ABORTED",
            ErrorCode::Cancelled => "CANCELLED",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

/// A domain error that knows its code. Implemented once per module error enum.
pub trait HasErrorCode: std::error::Error {
    fn code(&self) -> ErrorCode;
}

impl HasErrorCode for crate::ids::InvalidField {
    fn code(&self) -> ErrorCode {
        ErrorCode::InvalidArgument
    }
}
