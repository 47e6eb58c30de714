//! The one place where domain errors become gRPC statuses. Each domain error says its own code
//! (`crate::error::HasErrorCode`); [`to_status`] maps that code and keeps the domain's message, which
//! says what was wrong and what to do. Handlers just use `?`.

use tonic::{Code, Status};

use crate::error::{ErrorCode, HasErrorCode};

pub type ApiResult<T> = Result<tonic::Response<T>, Status>;

/// The gRPC status of a domain error. Client mistakes are the client's to read; only our own
/// failures (INTERNAL) go to the agent's log.
pub fn to_status<E: HasErrorCode + ?Sized>(e: &E) -> Status {
    let code = grpc_code(e.code());
    if code == Code::Internal {
        tracing::error!("{e:#}");
    }
    Status::new(code, e.to_string())
}

pub fn grpc_code(code: ErrorCode) -> Code {
    match code {
        ErrorCode::InvalidArgument => Code::InvalidArgument,
        ErrorCode::NotFound => Code::NotFound,
        ErrorCode::AlreadyExists => Code::AlreadyExists,
        ErrorCode::FailedPrecondition => Code::FailedPrecondition,
        ErrorCode::ResourceExhausted => Code::ResourceExhausted,
        ErrorCode::PermissionDenied => Code::PermissionDenied,
        ErrorCode::Unavailable => Code::Unavailable,
        ErrorCode::Aborted => Code::Aborted,
        ErrorCode::Cancelled => Code::Cancelled,
        ErrorCode::Internal => Code::Internal,
    }
}

/// `?` in handlers: every domain error converts through [`to_status`]. (A blanket impl over
/// `HasErrorCode` is not allowed for a foreign type, hence one line per error enum.)
macro_rules! into_status {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for Status {
            fn from(e: $t) -> Self {
                to_status(&e)
            }
        }
    )*};
}

into_status!(
    crate::ids::InvalidField,
    crate::ops::OpsError,
    crate::requests::LedgerError,
    crate::instances::registry::RegistryError,
    crate::volume::VolumeError,
    crate::logs::LogsError,
    crate::backup::BackupError,
    crate::dbtls::DbTlsError,
    crate::metrics::MetricsError,
    crate::upgrade::UpgradeError,
    crate::plan::PlanError,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_to_its_own_grpc_code() {
        use ErrorCode as E;
        let all = [
            E::InvalidArgument,
            E::NotFound,
            E::AlreadyExists,
            E::FailedPrecondition,
            E::ResourceExhausted,
            E::PermissionDenied,
            E::Unavailable,
            E::Aborted,
            E::Cancelled,
            E::Internal,
        ];
        let mapped: std::collections::HashSet<_> = all.iter().map(|c| grpc_code(*c) as i32).collect();
        assert_eq!(mapped.len(), all.len(), "two domain codes share a gRPC code");
        // Only INTERNAL becomes INTERNAL: no domain code is swallowed by a catch-all.
        assert!(all.iter().filter(|c| grpc_code(**c) == Code::Internal).eq([&E::Internal]));
    }
}
