//! The client's error type and the exit codes scripts can rely on.

use std::process::ExitCode;
use thiserror::Error;
use tonic::Code;

/// Exit codes, documented in `dbagentctl --help`; scripts branch on them, so they never change meaning.
pub mod exit {
    pub const OTHER: u8 = 1;
    /// Bad flags or a bad client config (clap also exits with 2 on usage errors).
    pub const USAGE: u8 = 2;
    /// UNAUTHENTICATED or PERMISSION_DENIED: wrong certificate or not the orchestrator identity.
    pub const DENIED: u8 = 3;
    pub const NOT_FOUND: u8 = 4;
    /// The agent could not be reached (connection, TLS handshake, UNAVAILABLE, deadline).
    pub const UNREACHABLE: u8 = 5;
    /// A watched operation finished as failed, cancelled or interrupted.
    pub const OPERATION_UNSUCCESSFUL: u8 = 6;
    /// Interrupted with Ctrl-C while watching or following.
    pub const INTERRUPTED: u8 = 130;
}

#[derive(Debug, Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Config(String),
    #[error("cannot connect to {endpoint} (TLS server name {server_name:?}): {reason}")]
    Connect { endpoint: String, server_name: String, reason: String },
    #[error("{}: {}", code_name(.0.code()), status_message(.0))]
    Rpc(tonic::Status),
    #[error("operation {id} ended {state}")]
    OperationUnsuccessful { id: String, state: String },
    #[error("interrupted; {0}")]
    Interrupted(String),
    #[error("{0}")]
    Other(String),
    /// stdout was closed by the reader (`| head`); not an error worth reporting.
    #[error("stdout closed")]
    StdoutClosed,
}

impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> Self {
        Self::Rpc(status)
    }
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) | Self::Config(_) => exit::USAGE,
            Self::Connect { .. } => exit::UNREACHABLE,
            Self::Rpc(status) => match status.code() {
                Code::Unauthenticated | Code::PermissionDenied => exit::DENIED,
                Code::NotFound => exit::NOT_FOUND,
                Code::Unavailable | Code::DeadlineExceeded => exit::UNREACHABLE,
                _ => exit::OTHER,
            },
            Self::OperationUnsuccessful { .. } => exit::OPERATION_UNSUCCESSFUL,
            Self::Interrupted(_) => exit::INTERRUPTED,
            Self::Other(_) => exit::OTHER,
            Self::StdoutClosed => 0,
        }
    }

    /// Prints `error: ...` on stderr and returns the matching exit code.
    pub fn report(&self) -> ExitCode {
        if !matches!(self, Self::StdoutClosed) {
            eprintln!("error: {self}");
        }
        ExitCode::from(self.exit_code())
    }
}

/// A server message can be empty (e.g. a bare UNIMPLEMENTED from a proxy); say so instead of printing nothing.
fn status_message(status: &tonic::Status) -> String {
    match (status.code(), status.message()) {
        // tonic's router answers this way for a service the agent does not serve at all.
        (Code::Unimplemented, "") => "the agent does not serve this call (older agent?)".to_owned(),
        (_, "") => "(no message from the server)".to_owned(),
        (_, message) => message.to_owned(),
    }
}

/// The canonical gRPC code names, as operators see them in server logs and docs.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Walks the source chain: tonic's transport errors say "transport error" at the top and the
/// useful part (connection refused, certificate unknown) only further down.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_errors_map_to_distinct_exit_codes() {
        let code = |c| CliError::Rpc(tonic::Status::new(c, "x")).exit_code();
        assert_eq!(code(Code::PermissionDenied), exit::DENIED);
        assert_eq!(code(Code::Unauthenticated), exit::DENIED);
        assert_eq!(code(Code::NotFound), exit::NOT_FOUND);
        assert_eq!(code(Code::Unimplemented), exit::OTHER);
        assert_eq!(CliError::Config("x".into()).exit_code(), exit::USAGE);
    }

    #[test]
    fn rpc_error_text_names_the_code() {
        let e = CliError::Rpc(tonic::Status::unimplemented("backups are not implemented yet"));
        assert_eq!(e.to_string(), "UNIMPLEMENTED: backups are not implemented yet");
    }
}
