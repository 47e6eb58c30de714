//! The one place where domain errors become gRPC statuses. Messages are the domain's own: they say
//! what was wrong and what to do. Handlers just use `?`.

use tonic::{Code, Status};

use crate::backup::BackupError;
use crate::ids::InvalidField;
use crate::instances::registry::RegistryError;
use crate::logs::LogsError;
use crate::ops::OpsError;
use crate::requests::LedgerError;

fn status(code: Code, e: &dyn std::error::Error) -> Status {
    // Client mistakes are the client's to read; only our own failures go to the agent's log.
    if code == Code::Internal {
        tracing::error!("{e:#}");
    }
    Status::new(code, e.to_string())
}

impl From<InvalidField> for Status {
    fn from(e: InvalidField) -> Self {
        status(Code::InvalidArgument, &e)
    }
}

impl From<OpsError> for Status {
    fn from(e: OpsError) -> Self {
        let code = match &e {
            OpsError::Invalid(_) => Code::InvalidArgument,
            OpsError::NotFound(_) => Code::NotFound,
            OpsError::RequestIdReused { .. } => Code::AlreadyExists,
            OpsError::AlreadyFinished { .. } | OpsError::TestKindsDisabled => Code::FailedPrecondition,
            OpsError::ShuttingDown => Code::Unavailable,
            OpsError::Journal { .. } => Code::Internal,
        };
        status(code, &e)
    }
}

impl From<LedgerError> for Status {
    fn from(e: LedgerError) -> Self {
        let code = match &e {
            LedgerError::Invalid(_) => Code::InvalidArgument,
            LedgerError::RequestIdReused { .. } => Code::AlreadyExists,
            LedgerError::Corrupt { .. } | LedgerError::Io { .. } => Code::Internal,
        };
        status(code, &e)
    }
}

impl From<RegistryError> for Status {
    fn from(e: RegistryError) -> Self {
        let code = match &e {
            RegistryError::Invalid(_) => Code::InvalidArgument,
            RegistryError::NotFound(_) => Code::NotFound,
            RegistryError::AlreadyExists(_) => Code::AlreadyExists,
            RegistryError::FailedPrecondition(_) => Code::FailedPrecondition,
            RegistryError::Conflict(_) | RegistryError::Busy(_) => Code::Aborted,
            RegistryError::Io { .. } | RegistryError::Corrupt { .. } => Code::Internal,
        };
        status(code, &e)
    }
}

impl From<crate::volume::VolumeError> for Status {
    fn from(e: crate::volume::VolumeError) -> Self {
        use crate::ops::ErrorCode as C;
        let code = match e.code() {
            C::InvalidArgument => Code::InvalidArgument,
            C::NotFound => Code::NotFound,
            C::AlreadyExists => Code::AlreadyExists,
            C::FailedPrecondition => Code::FailedPrecondition,
            C::ResourceExhausted => Code::ResourceExhausted,
            C::PermissionDenied => Code::PermissionDenied,
            C::Unavailable => Code::Unavailable,
            C::Aborted => Code::Aborted,
            C::Cancelled => Code::Cancelled,
            C::Internal => Code::Internal,
        };
        status(code, &e)
    }
}

impl From<LogsError> for Status {
    fn from(e: LogsError) -> Self {
        let code = match &e {
            LogsError::Invalid(_) => Code::InvalidArgument,
            LogsError::InstanceNotFound(_) | LogsError::DrainNotFound { .. } => Code::NotFound,
            LogsError::ShuttingDown | LogsError::Drain(_) | LogsError::Journal(_) | LogsError::Tls(_) => Code::Unavailable,
            LogsError::Io { .. } | LogsError::Corrupt(_) => Code::Internal,
        };
        status(code, &e)
    }
}

impl From<BackupError> for Status {
    fn from(e: BackupError) -> Self {
        let e = match e {
            BackupError::Ops(o) => return o.into(),
            other => other,
        };
        let code = match e.to_op_error().code {
                crate::ops::ErrorCode::InvalidArgument => Code::InvalidArgument,
                crate::ops::ErrorCode::NotFound => Code::NotFound,
                crate::ops::ErrorCode::ResourceExhausted => Code::ResourceExhausted,
                crate::ops::ErrorCode::FailedPrecondition => Code::FailedPrecondition,
                crate::ops::ErrorCode::Unavailable => Code::Unavailable,
                crate::ops::ErrorCode::Cancelled => Code::Cancelled,
                _ => Code::Internal,
        };
        status(code, &e)
    }
}

pub type ApiResult<T> = Result<tonic::Response<T>, Status>;

impl From<crate::metrics::MetricsError> for Status {
    fn from(e: crate::metrics::MetricsError) -> Self {
        use crate::metrics::MetricsError as E;
        let code = match &e {
            E::InvalidRange(_) | E::IntervalTooShort { .. } => Code::InvalidArgument,
            E::NoSampleYet(_) => Code::Unavailable,
            E::Bind { .. } | E::OtlpEndpoint { .. } | E::OtlpCa { .. } => Code::Internal,
        };
        status(code, &e)
    }
}
