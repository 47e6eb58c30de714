//! Database TLS (issue 15): InstallCertificate checks a certificate, key and CA bundle
//! (`validate`), writes them into the instance's data directory through directory handles
//! (`files`), makes the engine serve them without a restart (`reload`), checks with a TLS client
//! that the new certificate is what the server now serves (`served`), and puts the old files back
//! if it is not (`install`). `service` submits it as an operation and reads what is installed
//! (`tls show`, the expiry metric, GetStatus's warning).

pub mod files;
pub mod install;
pub mod reload;
pub mod served;
pub mod service;
pub mod settings;
pub mod validate;

pub use service::DbTlsService;
pub use settings::DbTlsConfig;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum DbTlsError {
    #[error(transparent)]
    Invalid(#[from] crate::ids::InvalidField),
    #[error("{field} is larger than {max} bytes")]
    TooLarge { field: &'static str, max: usize },
    #[error("{field} is required")]
    Missing { field: &'static str },
    #[error("{field} is not valid PEM: {reason}")]
    BadPem { field: &'static str, reason: String },
    #[error("{field} holds more than {max} certificates")]
    TooManyCertificates { field: &'static str, max: usize },
    #[error("key_pem: unsupported key type (RSA 2048..8192, ECDSA P-256/P-384 or Ed25519 are accepted)")]
    KeyUnsupported,
    #[error("key_pem does not match the certificate ({subject}): its public key is another one")]
    KeyMismatch { subject: String },
    #[error("the certificate expired at {not_after}")]
    Expired { not_after: String },
    #[error("the certificate is not valid yet: it starts at {not_before}")]
    NotYetValid { not_before: String },
    #[error("the certificate chain does not verify to ca_pem: a certificate of the chain has expired ({reason})")]
    ChainExpired { reason: String },
    #[error("the certificate chain does not verify to ca_pem: {reason}")]
    ChainDoesNotVerify { reason: String },
    #[error("the certificate is not for TLS servers (its extended key usage leaves out serverAuth)")]
    NotForServers,
    #[error("the certificate is not valid for {name:?}, a name this instance is reached by; it names {has:?}")]
    NameMismatch { name: String, has: Vec<String> },
    #[error("database_tls.names gives {name:?}, which is not a DNS name or IP address; fix the agent's config")]
    BadRequiredName { name: String },
    #[error(transparent)]
    Registry(#[from] crate::instances::registry::RegistryError),
    #[error("{0}")]
    Files(#[from] crate::beneath::BeneathError),
    #[error("{} is not beneath any of instances.data_roots", .0.display())]
    NotBeneathDataRoot(std::path::PathBuf),
    #[error(transparent)]
    Tool(#[from] crate::command::CommandError),
    #[error(transparent)]
    Server(#[from] crate::backup::BackupError),
    #[error("{engine} at {at}: {reason}")]
    Engine { engine: &'static str, at: String, reason: String },
    #[error(
        "{engine} did not serve the new certificate ({reason}); the previous certificate files were put back and the \
         server reloaded"
    )]
    NotServed { engine: &'static str, reason: String },
    #[error(
        "{engine} did not serve the new certificate ({reason}), and putting the previous files back failed too: {restore}"
    )]
    RestoreFailed { engine: &'static str, reason: String, restore: String },
    #[error(transparent)]
    Operations(crate::ops::OpsError),
}

impl crate::error::HasErrorCode for DbTlsError {
    fn code(&self) -> crate::error::ErrorCode {
        use crate::error::ErrorCode as C;
        match self {
            DbTlsError::Invalid(_)
            | DbTlsError::TooLarge { .. }
            | DbTlsError::Missing { .. }
            | DbTlsError::BadPem { .. }
            | DbTlsError::TooManyCertificates { .. }
            | DbTlsError::KeyUnsupported
            | DbTlsError::KeyMismatch { .. }
            | DbTlsError::Expired { .. }
            | DbTlsError::NotYetValid { .. }
            | DbTlsError::ChainExpired { .. }
            | DbTlsError::ChainDoesNotVerify { .. }
            | DbTlsError::NotForServers
            | DbTlsError::NameMismatch { .. } => C::InvalidArgument,
            DbTlsError::Registry(e) => e.code(),
            DbTlsError::Files(e) => e.code(),
            DbTlsError::Tool(e) => e.code(),
            DbTlsError::Server(e) => e.code(),
            DbTlsError::BadRequiredName { .. }
            | DbTlsError::NotBeneathDataRoot(_)
            | DbTlsError::Engine { .. }
            | DbTlsError::NotServed { .. } => C::FailedPrecondition,
            DbTlsError::Operations(e) => e.code(),
            DbTlsError::RestoreFailed { .. } => C::Internal,
        }
    }
}
