//! Encrypted volumes: LUKS2 aes-xts-plain64 per instance, keys from a key provider
//! (docs/volumes.md).
//!
//! The OS sits behind two traits, each with a real implementation and an in-memory one beside it:
//! [`crypt::CryptBackend`] (`crypt/libcryptsetup.rs`, `crypt/sim.rs`) and [`host::HostOps`]
//! (`host/system.rs`, `host/sim.rs`), so the [`Volumes`] service is tested without root.
//!
//! The service is split by what its operations do: `service.rs` (the handle, its settings and the
//! steps every operation shares), `provisioning.rs` (create, destroy), `unlocking.rs` (open, close,
//! start-up), `growth.rs`, `key_rotation.rs`, `header_backups.rs` and `status.rs` (GetVolume,
//! ListVolumes).

use std::path::PathBuf;

pub mod crypt;
pub mod escrow_token;
mod growth;
mod header_backups;
pub mod host;
pub mod jobs;
pub mod key;
mod key_rotation;
pub mod keystore;
mod leftovers;
mod provisioning;
mod recovery_open;
pub mod remote;
mod service;
pub mod setup;
mod status;
pub mod store;
mod unlocking;

#[cfg(test)]
mod leak_tests;
#[cfg(test)]
pub(crate) mod test_fixture;

pub use key::{KeyError, KeyProvider, VolumeKey};
pub use leftovers::VolumeLeftovers;
pub use service::{VolumeOutcome, VolumeSettings, Volumes};
pub use status::{VolumeEscrow, VolumeStatus};
pub use unlocking::StartupOpen;

use crate::error::{ErrorCode, HasErrorCode};
use crate::ids::InvalidField;
use crate::instances::RegistryError;

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
    /// The volume record (or the instance record) could not be read at start-up: nothing may be
    /// done to the volume until an operator repairs the file, or it could be formatted over or
    /// its keys forgotten.
    #[error(
        "the volume of instance {instance} is quarantined: its record {} is unreadable ({reason}); repair or restore the file and restart the agent. Nothing was changed",
        file.display()
    )]
    Quarantined { instance: String, file: PathBuf, reason: String },
    #[error("the volume of instance {0} is not open; growing is online: open it with OpenVolume first")]
    NotOpen(String),
    /// Simulated and real volume records never share a state folder: a simulated DestroyVolume
    /// would forget a real volume's keys.
    #[error(
        "{} holds records of {} volumes{}; use another state folder (--state-dir){}",
        records_dir.display(),
        if *simulated_records { "simulated" } else { "real" },
        if *simulated_records { format!(" (written by dbagent --dev --sim, see {})", marker.display()) } else { String::new() },
        if *simulated_records { " or start with --dev --sim again" } else { ": --sim would forget their keys on DestroyVolume" }
    )]
    StateFolderKind { records_dir: PathBuf, simulated_records: bool, marker: PathBuf },
    #[error(
        "{} holds the volume of instance {owner}; destroy that volume first. Nothing was touched",
        backing.display()
    )]
    BackingInUse { backing: PathBuf, owner: String },
    #[error(
        "device {} cannot be opened ({source}); attach the disk or correct spec.volume.device. Nothing was touched",
        device.display()
    )]
    DeviceUnavailable {
        device: PathBuf,
        #[source]
        source: host::HostError,
    },
    /// The device is partitioned, held (device-mapper, RAID) or mounted: refused even with force.
    #[error(
        "device {} is in use ({}); the agent formats only whole, unused disks: pick another device, or free this one (unmount it, remove its holders, wipe its partition table). Nothing was touched",
        device.display(),
        users.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    DeviceInUse { device: PathBuf, users: Vec<host::DeviceUser> },
    #[error(
        "{} already carries a {signature} signature and may hold data; pass force=true to overwrite it. Nothing was touched",
        device.display()
    )]
    SignaturePresent { device: PathBuf, signature: String },
    #[error(
        "{} is already mounted at {}; unmount it so the volume can be mounted there",
        mounted.display(),
        data_dir.display()
    )]
    DataDirOccupied { data_dir: PathBuf, mounted: PathBuf },
    /// The data_dir is below none of the configured data roots (they changed since registration).
    #[error(
        "data_dir {} is below none of the data roots ({}); the agent mounts only beneath them",
        data_dir.display(),
        data_roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    DataDirOutsideRoots { data_dir: PathBuf, data_roots: Vec<PathBuf> },
    /// The data_dir leads out of the data roots: mounting there would put the volume elsewhere.
    #[error(transparent)]
    UnsafeDataDir(RegistryError),
    #[error(
        "the volume of instance {instance} is {current} bytes; shrinking to {requested} is not supported (the filesystem and its data would be cut): ask for at least {current}"
    )]
    ShrinkRefused { instance: String, current: u64, requested: u64 },
    #[error(
        "device {} is {size} bytes, less than the requested {requested}; grow the disk first, then grow the volume",
        device.display()
    )]
    DeviceTooSmall { device: PathBuf, size: u64, requested: u64 },
    #[error(
        "the key from the {provider} key provider does not open the volume of instance {instance}; nothing was changed"
    )]
    WrongKey { provider: &'static str, instance: String },
    /// A rotation would destroy the only keyslot that opens the volume.
    #[error(
        "the {provider} key provider gave instance {instance} the same key for versions {from} and {to}; the rotation was refused and nothing was changed"
    )]
    RotationKeyUnchanged { provider: &'static str, instance: String, from: u32, to: u32 },
    #[error(
        "after rotation the old key still opens {}; the pre-rotation header backup is kept at {}",
        device.display(),
        backup.display()
    )]
    OldKeyStillOpens { device: PathBuf, backup: PathBuf },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Escrow(#[from] escrow_token::EscrowError),
    #[error(transparent)]
    Crypt(#[from] crypt::CryptError),
    #[error(transparent)]
    Host(#[from] host::HostError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("{error}; undoing it failed too: {rollback}")]
    RolledBack { error: Box<VolumeError>, rollback: Box<VolumeError> },
    /// A step on a blocking thread panicked or was cancelled at shutdown.
    #[error("a volume step on a blocking thread did not finish: {0}")]
    BlockingTask(#[from] tokio::task::JoinError),
}

impl HasErrorCode for VolumeError {
    fn code(&self) -> ErrorCode {
        match self {
            VolumeError::Invalid(_) => ErrorCode::InvalidArgument,
            VolumeError::InstanceNotFound(_) => ErrorCode::NotFound,
            VolumeError::NoVolume(_)
            | VolumeError::Quarantined { .. }
            | VolumeError::NotOpen(_)
            | VolumeError::StateFolderKind { .. }
            | VolumeError::BackingInUse { .. }
            | VolumeError::DeviceUnavailable { .. }
            | VolumeError::SignaturePresent { .. }
            | VolumeError::DeviceInUse { .. }
            | VolumeError::DataDirOccupied { .. }
            | VolumeError::DataDirOutsideRoots { .. }
            | VolumeError::ShrinkRefused { .. }
            | VolumeError::DeviceTooSmall { .. }
            | VolumeError::WrongKey { .. }
            | VolumeError::RotationKeyUnchanged { .. } => ErrorCode::FailedPrecondition,
            VolumeError::UnsafeDataDir(e) => e.code(),
            VolumeError::Key(e) => e.code(),
            VolumeError::Escrow(e) => e.code(),
            VolumeError::Crypt(e) => e.code(),
            VolumeError::Host(e) => e.code(),
            VolumeError::RolledBack { error, .. } => error.code(),
            VolumeError::OldKeyStillOpens { .. } | VolumeError::Store(_) | VolumeError::BlockingTask(_) => {
                ErrorCode::Internal
            }
        }
    }
}
