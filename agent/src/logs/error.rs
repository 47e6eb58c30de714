//! The logs module's error: one variant per thing that can go wrong, each with the code a client
//! gets for it. Most of these never reach a client: delivery and journal failures end up in a
//! drain's `last_error` and the agent's log, and are retried.

use std::path::PathBuf;
use std::time::Duration;

use crate::command::CommandError;
use crate::error::{ErrorCode, HasErrorCode};
use crate::ids::InvalidField;
use crate::instances::registry::RegistryError;

#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    /// Looking up the instance failed: a malformed id, an unknown instance. Answers the registry's code.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("instance {instance} has no drain named {drain:?}; ListDrains shows its drains")]
    DrainNotFound { instance: String, drain: String },
    #[error("the agent is shutting down; retry against the restarted agent")]
    ShuttingDown,

    /// A stored drain that cannot be set up (validation normally refuses it before it is stored).
    #[error("drain {drain}: {reason}")]
    InvalidDrain { drain: String, reason: String },
    /// A drain's `ca_pem` gives no usable CA certificate.
    #[error("ca_pem: {0}")]
    InvalidCaPem(#[source] PemProblem),
    /// No `ca_pem` was given and the node's CA bundle gives no usable certificate: the node needs
    /// fixing (or the drain a `ca_pem`), not the request.
    #[error("no ca_pem given and the system CA bundle {path} is unusable: {problem}")]
    SystemCaBundle { path: PathBuf, problem: PemProblem },
    /// rustls refused its own safe defaults: a build problem, not a configuration one.
    #[error("set up TLS: {0}")]
    TlsSetup(#[source] rustls::Error),

    /// Connecting to a drain, sending to it or awaiting its acknowledgement failed.
    #[error("{step} {address}: {source}")]
    Delivery { address: String, step: &'static str, source: std::io::Error },
    #[error("{step} {address}: no progress in {limit:?}")]
    DeliveryTimedOut { address: String, step: &'static str, limit: Duration },
    /// An HTTPS drain answered, but not with 2xx.
    #[error("HTTPS drain {address} answered {status}: {body}")]
    DrainRefused { address: String, status: u16, body: String },
    #[error("HTTPS drain {address} sent no HTTP status line")]
    NoHttpStatus { address: String },
    /// The drain's destination is refused by `[logs.drain_policy]` as it resolves now.
    #[error("drain destination {address}: {reason}")]
    DestinationRefused { address: String, reason: String },

    /// journalctl could not be started, or exited with a failure; the source retries with backoff.
    #[error("follow journald unit {unit}: {source}")]
    JournalUnavailable { unit: String, source: CommandError },
    /// A line of `journalctl -o json` that is not an entry; the line is skipped.
    #[error("journalctl output {problem}: {line}")]
    JournalOutput { problem: &'static str, line: String },

    /// The stored drain list of an instance does not parse.
    #[error("drain list {path}: {source}")]
    DrainListCorrupt { path: PathBuf, source: serde_json::Error },
    /// A drain buffer's `state.json` (acknowledgement cursor and committed source checkpoints) does
    /// not parse.
    #[error("drain buffer state {path}: {source}")]
    BufferStateCorrupt { path: PathBuf, source: serde_json::Error },
    #[error("encode {what}: {source}")]
    Encode { what: &'static str, source: serde_json::Error },
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
}

/// Why a CA PEM gives no usable certificate.
#[derive(Debug, thiserror::Error)]
pub enum PemProblem {
    #[error("unreadable: {0}")]
    Unreadable(#[source] std::io::Error),
    #[error("no certificate found")]
    NoCertificate,
    #[error("certificate refused: {0}")]
    Refused(#[source] rustls::Error),
}

impl HasErrorCode for LogsError {
    fn code(&self) -> ErrorCode {
        match self {
            LogsError::Invalid(_) | LogsError::InvalidDrain { .. } | LogsError::InvalidCaPem(_) => {
                ErrorCode::InvalidArgument
            }
            LogsError::Registry(e) => e.code(),
            LogsError::DrainNotFound { .. } => ErrorCode::NotFound,
            LogsError::SystemCaBundle { .. } | LogsError::DestinationRefused { .. } => ErrorCode::FailedPrecondition,
            LogsError::ShuttingDown
            | LogsError::Delivery { .. }
            | LogsError::DeliveryTimedOut { .. }
            | LogsError::DrainRefused { .. }
            | LogsError::NoHttpStatus { .. }
            | LogsError::JournalUnavailable { .. } => ErrorCode::Unavailable,
            LogsError::TlsSetup(_)
            | LogsError::JournalOutput { .. }
            | LogsError::DrainListCorrupt { .. }
            | LogsError::BufferStateCorrupt { .. }
            | LogsError::Encode { .. }
            | LogsError::Io { .. } => ErrorCode::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_errors_keep_the_registry_code() {
        let invalid = crate::ids::instance_id("instance_id", "").unwrap_err();
        assert_eq!(LogsError::from(RegistryError::from(invalid)).code(), ErrorCode::InvalidArgument);
        assert_eq!(LogsError::from(RegistryError::NotFound("pg-9".into())).code(), ErrorCode::NotFound);
        assert_eq!(LogsError::from(RegistryError::Busy { instance: "pg-1".into() }).code(), ErrorCode::Aborted);
    }

    #[test]
    fn a_bad_ca_is_the_request_s_fault_and_an_unusable_system_bundle_the_node_s() {
        assert_eq!(LogsError::InvalidCaPem(PemProblem::NoCertificate).code(), ErrorCode::InvalidArgument);
        let system = LogsError::SystemCaBundle { path: "/etc/ssl/x.crt".into(), problem: PemProblem::NoCertificate };
        assert_eq!(system.code(), ErrorCode::FailedPrecondition);
        assert!(system.to_string().contains("/etc/ssl/x.crt"), "{system}");
    }
}
