//! Encrypted volumes: LUKS2 aes-xts-plain64 per instance, keys from a key provider
//! (docs/volumes.md).
//!
//! The OS sits behind two traits, [`crypt::CryptBackend`] and [`host::HostOps`], each with a real
//! implementation and an in-memory one, so [`manager::Volumes`] is tested without root.

pub mod crypt;
pub mod host;
pub mod jobs;
pub mod key;
pub mod keystore;
pub mod libcrypt;
pub mod manager;
mod manager_maintain;
pub mod remote;
pub mod setup;
pub mod sim;
pub mod store;
pub mod system_host;

#[cfg(test)]
mod leak_tests;

pub use key::{KeyError, KeyProvider, VolumeKey};
pub use manager::{VolumeSettings, VolumeStatus, Volumes};

use crate::ids::InvalidField;

/// `/dev/mapper/<name>` of an instance's open volume.
pub fn mapper_name(instance: &str) -> String {
    format!("dbagent-{instance}")
}

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    #[error("instance {0} is not registered")]
    InstanceNotFound(String),
    #[error("instance {0} has no volume; create it with CreateVolume")]
    NoVolume(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error(
        "the key from the {provider} key provider does not open the volume of instance {instance}; nothing was changed"
    )]
    WrongKey { provider: &'static str, instance: String },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Crypt(#[from] crypt::CryptError),
    #[error(transparent)]
    Host(#[from] host::HostError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("{error}; undoing it failed too: {rollback}")]
    RolledBack { error: Box<VolumeError>, rollback: String },
    #[error("internal task failed: {0}")]
    Task(String),
}

impl crate::error::HasErrorCode for VolumeError {
    fn code(&self) -> crate::error::ErrorCode {
        use crate::error::ErrorCode as C;
        match self {
            VolumeError::Invalid(_) => C::InvalidArgument,
            VolumeError::InstanceNotFound(_) => C::NotFound,
            VolumeError::NoVolume(_) | VolumeError::FailedPrecondition(_) | VolumeError::WrongKey { .. } => {
                C::FailedPrecondition
            }
            VolumeError::Key(KeyError::Missing { .. } | KeyError::Kek(_)) => C::FailedPrecondition,
            VolumeError::Key(KeyError::Unavailable(_)) => C::Unavailable,
            VolumeError::Key(_) => C::Internal,
            VolumeError::Host(host::HostError::NoUser(_)) => C::FailedPrecondition,
            VolumeError::RolledBack { error, .. } => error.code(),
            VolumeError::Crypt(_) | VolumeError::Host(_) | VolumeError::Store(_) | VolumeError::Task(_) => C::Internal,
        }
    }
}
