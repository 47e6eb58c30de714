//! Backups: one streaming pass from the engine's dump command through zstd and
//! AES-256-GCM chunks to every destination at once, with a manifest written last per destination.
//!
//! `docs/backups.md` describes the stored format, the configuration and the restore procedure.
//!
//! Layering (no module imports one that imports it back): [`service::BackupService`] is what the
//! API and the scheduler call; it turns each request into an [`action::BackupAction`] and runs it
//! as an operation. An action's body (`backup_job`, `verify_repair`, `deletion`, `restore_job`)
//! gets [`resources::BackupResources`] (destinations, key wrapper, settings, in-flight records),
//! never the service.

pub mod action;
pub mod backup_id;
pub mod backup_job;
pub mod catalog;
pub mod chunks;
pub mod decode;
pub mod deletion;
pub mod destination;
pub mod discovery;
pub mod drill;
pub mod drill_engine;
pub mod drill_scratch;
pub mod drill_store;
pub mod engine_commands;
pub mod health;
pub mod inflight;
pub mod keys;
pub mod keywrap;
pub mod manifest;
pub mod manifest_mac;
pub mod pipeline;
pub mod resources;
pub mod restore_dir;
pub mod restore_job;
pub mod restore_server;
pub mod retention;
pub mod scheduler;
pub mod server_check;
pub mod service;
pub mod settings;
pub mod verify_repair;
pub mod zones;

pub use catalog::{BackupInfo, BackupState, DestinationState, DestinationStatus};
pub use keys::BackupKeys;
pub use keywrap::{KekWrapper, KeyWrapper};
pub use manifest::{BackupKind, BackupMethod, Manifest};
pub use service::BackupService;
pub use settings::BackupConfig;

use std::path::PathBuf;
use thiserror::Error;

use crate::command::CommandError;

/// Every way a backup call can fail. The API maps each variant to one gRPC code
/// ([`crate::error::HasErrorCode`] below); operations carry the code and the message.
#[derive(Debug, Error)]
pub enum BackupError {
    #[error(transparent)]
    Invalid(#[from] crate::ids::InvalidField),
    #[error("backup {backup} of instance {instance} does not exist on any reachable destination")]
    NotFound { instance: String, backup: String },
    #[error(
        "the manual backup quota of plan {plan} ({limit} backups) is reached for instance {instance}; delete a manual backup first (the oldest is {oldest})"
    )]
    QuotaExhausted { instance: String, plan: &'static str, limit: usize, oldest: String },
    #[error(
        "backups of instance {instance} are refused: {shortfall}; at least two must be off the host for its backups to survive its loss (configure S3 or network-file-system destinations, or set backup.accept_on_host_destinations = true to accept that backups die with this host)"
    )]
    NotOffHost { instance: String, shortfall: String },
    #[error(
        "backup {backup} is the newest complete backup of instance {instance}, its last good copy; delete it with delete_last_good_copy set (dbagentctl backups delete --last-good-copy) if that is meant"
    )]
    LastGoodCopy { instance: String, backup: String },

    // Which copy to read.
    #[error(
        "backup {backup} is not complete on destination {destination}; name a destination GetBackup lists as complete, or repair the backup first"
    )]
    NotOnDestination { backup: String, destination: String },
    #[error(
        "no reachable destination holds a complete copy of backup {backup}; bring a destination back first{}",
        if reasons.is_empty() { String::new() } else { format!(" ({})", reasons.join("; ")) }
    )]
    NoCompleteCopy { backup: String, reasons: Vec<String> },
    #[error("the copy of backup {backup} on destination {destination} cannot be used: {reason}")]
    CopyUnusable { backup: String, destination: String, reason: String },

    // Manifests, read from storage that is not trusted.
    #[error(
        "manifest not authenticated: backup {backup} on destination {destination} is refused, {reason}; repair it from another destination or delete it"
    )]
    ManifestNotAuthenticated { backup: String, destination: String, reason: String },
    #[error(
        "the manifest at backup {backup} of instance {instance} on destination {destination} names another instance or backup ({names}); it is refused"
    )]
    ManifestForeign { backup: String, instance: String, destination: String, names: String },
    #[error(
        "backup id {backup} is already used on destination {destination}; a backup id is never reused, retry the request"
    )]
    BackupIdInUse { backup: String, destination: String },

    // Where a restore may go.
    #[error(
        "instance {instance} is running; stop {unit} before restoring in place, or restore into a new data directory"
    )]
    InstanceRunning { instance: String, unit: String },
    #[error("target_data_dir {} is not empty; restore into a new or empty folder", dir.display())]
    RestoreTargetNotEmpty { dir: PathBuf },
    #[error(
        "{} holds the data set aside by an earlier restore that did not finish; move it back or remove it first",
        aside.display()
    )]
    RestoreLeftoverFound { aside: PathBuf },
    #[error(
        "target_data_dir {} lies below none of the data roots {}; restore into a folder below a data root",
        dir.display(), roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    RestoreDirOutsideRoots { dir: PathBuf, roots: Vec<PathBuf> },
    /// The restore folder (or something in it) is a link, leaves its data root, or cannot be used.
    #[error(transparent)]
    Beneath(#[from] crate::beneath::BeneathError),
    #[error("a physical backup restores into a data directory, not into a running server; give target_data_dir")]
    PhysicalRestoreNeedsDataDir,
    #[error("a logical backup restores into a running server (a new database), not into a data directory")]
    LogicalRestoreNeedsServer,
    #[error("system user {user:?} of the instance does not exist; create it or fix the instance's os_user")]
    UnknownOsUser { user: String },

    // Whose server a dump or a logical restore talks to.
    #[error(
        "the {engine} server at {at} serves data directory {served:?}, not {} of instance {instance}; point [backup.{engine}] at the instance's own server",
        data_dir.display()
    )]
    WrongServer { engine: &'static str, at: String, served: String, data_dir: PathBuf, instance: String },
    #[error(
        "the {engine} server at {at} did not say which data directory it serves ({source}); start the instance's server, or point [backup.{engine}] at it"
    )]
    ServerNotAnswering { engine: &'static str, at: String, source: CommandError },

    // Keys.
    #[error("backups need the host key-encryption key (KEK), which is unavailable: {reason}")]
    KekUnavailable { reason: String },
    #[error("the host key-encryption key must be 32 bytes, found {found}")]
    KekLength { found: usize },
    #[error(
        "backup {backup} was encrypted under key-encryption key {backup_key}, this host's is {host_key}; restore it on an agent holding the KEK that wrote it"
    )]
    WrongKek { backup: String, backup_key: String, host_key: String },
    #[error(
        "the data key of backup {backup} cannot be unwrapped with this host's key-encryption key {host_key}: it was wrapped under another KEK, or the manifest's wrapped key was altered or copied from another backup"
    )]
    KeyUnwrap { backup: String, host_key: String },
    #[error("the manifest of backup {backup} holds no valid wrapped key (not hex)")]
    WrappedKeyInvalid { backup: String },
    #[error(
        "backup {backup} was wrapped under the retired backup host key (host.key, key {key_id}); since data keys are wrapped by the host KEK such backups are no longer readable"
    )]
    RetiredHostKey { backup: String, key_id: String },
    #[error("backup {backup} names an unknown key wrapper {wrapper:?}; it was written by another agent build")]
    UnknownKeyWrapper { backup: String, wrapper: String },
    #[error("a backup data key must be 32 bytes, found {found}")]
    DataKeyLength { found: usize },
    #[error("the system random number generator failed: {0}")]
    Random(getrandom::Error),
    #[error("sealing the backup data key under the host KEK failed")]
    WrapFailed,
    #[error(
        "backups in production need a key held off this host: set keys.recovery_recipients (age public keys, from `dbagentctl recovery-key generate`) or keys.provider = \"remote\" with [keys.remote]; or set backup.allow_host_only_keys = true to accept that these backups die with this host's KEK"
    )]
    HostOnlyKeys,
    /// Sealing to the recovery recipients, or the recipients themselves.
    #[error(transparent)]
    Recovery(#[from] crate::recovery_key::RecoveryKeyError),
    #[error(
        "no recovery key was given; this wrap opens with the identity of one of the recipients {recipients} (RestoreBackup/VerifyBackup recovery_key, dbagentctl --recovery-key FILE)"
    )]
    RecoveryKeyNeeded { recipients: String },
    #[error("the recovery key given (public key {given}) does not open it (sealed to {recipients}): {source}")]
    RecoveryKey {
        given: String,
        recipients: String,
        #[source]
        source: crate::recovery_key::RecoveryKeyError,
    },
    #[error("set up the KeyService client: {0}")]
    KeyServiceSetup(String),
    /// The status message is the KeyService's own; it never carries key bytes.
    #[error("KeyService {call}: {code:?}: {message}")]
    KeyService { call: &'static str, code: tonic::Code, message: String },
    #[error("this agent has no KeyService configured (keys.provider = \"remote\" with [keys.remote])")]
    KeyServiceNotConfigured,
    #[error("no key this agent was given opens the data key of backup {backup}: {}", attempts.join("; "))]
    NoKeyOpens { backup: String, denied: bool, attempts: Vec<String> },

    // Tools and storage.
    #[error(transparent)]
    Tool(CommandError),
    #[error("destination {destination}: {message}")]
    Destination { destination: String, message: String },
    #[error("every destination failed: {}", reasons.join("; "))]
    AllDestinationsFailed { reasons: Vec<String> },
    #[error(
        "backup {backup} could not be removed everywhere ({}); run the delete again once the destinations are back",
        reasons.join("; ")
    )]
    DeleteIncomplete { backup: String, reasons: Vec<String> },
    #[error("backup {backup} is corrupt on {destination}: {message}")]
    Corrupt { backup: String, destination: String, message: String },
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] crate::json_store::JsonStoreError),
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Ops(#[from] crate::ops::OpsError),
    #[error(transparent)]
    Drill(#[from] drill::DrillError),
}

impl BackupError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        BackupError::Io { context: context.into(), source }
    }

    pub(crate) fn dest(destination: &str, message: impl std::fmt::Display) -> Self {
        BackupError::Destination { destination: destination.to_owned(), message: message.to_string() }
    }
}

/// A tool that cannot run as the instance's user is the instance's problem, not the tool's.
impl From<CommandError> for BackupError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::UnknownUser(user) => BackupError::UnknownOsUser { user },
            other => BackupError::Tool(other),
        }
    }
}

impl crate::error::HasErrorCode for BackupError {
    fn code(&self) -> crate::error::ErrorCode {
        use crate::error::ErrorCode;
        match self {
            BackupError::Invalid(_) => ErrorCode::InvalidArgument,
            BackupError::NotFound { .. } => ErrorCode::NotFound,
            BackupError::QuotaExhausted { .. } => ErrorCode::ResourceExhausted,
            BackupError::BackupIdInUse { .. } => ErrorCode::Aborted,
            BackupError::NotOnDestination { .. }
            | BackupError::NoCompleteCopy { .. }
            | BackupError::CopyUnusable { .. }
            | BackupError::ManifestNotAuthenticated { .. }
            | BackupError::ManifestForeign { .. }
            | BackupError::InstanceRunning { .. }
            | BackupError::RestoreTargetNotEmpty { .. }
            | BackupError::RestoreLeftoverFound { .. }
            | BackupError::RestoreDirOutsideRoots { .. }
            | BackupError::PhysicalRestoreNeedsDataDir
            | BackupError::LogicalRestoreNeedsServer
            | BackupError::UnknownOsUser { .. }
            | BackupError::WrongServer { .. }
            | BackupError::ServerNotAnswering { .. }
            | BackupError::KekUnavailable { .. }
            | BackupError::KekLength { .. }
            | BackupError::WrongKek { .. }
            | BackupError::KeyUnwrap { .. }
            | BackupError::WrappedKeyInvalid { .. }
            | BackupError::RetiredHostKey { .. }
            | BackupError::UnknownKeyWrapper { .. }
            | BackupError::DataKeyLength { .. }
            | BackupError::HostOnlyKeys
            | BackupError::RecoveryKeyNeeded { .. }
            | BackupError::KeyServiceSetup(_)
            | BackupError::KeyServiceNotConfigured
            | BackupError::Corrupt { .. }
            | BackupError::NotOffHost { .. }
            | BackupError::LastGoodCopy { .. } => ErrorCode::FailedPrecondition,
            BackupError::Recovery(e) | BackupError::RecoveryKey { source: e, .. } => e.code(),
            BackupError::KeyService { code, .. } => match code {
                tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => ErrorCode::PermissionDenied,
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown => {
                    ErrorCode::Unavailable
                }
                _ => ErrorCode::FailedPrecondition,
            },
            BackupError::NoKeyOpens { denied: true, .. } => ErrorCode::PermissionDenied,
            BackupError::NoKeyOpens { denied: false, .. } => ErrorCode::FailedPrecondition,
            BackupError::Destination { .. }
            | BackupError::AllDestinationsFailed { .. }
            | BackupError::DeleteIncomplete { .. } => ErrorCode::Unavailable,
            BackupError::Cancelled => ErrorCode::Cancelled,
            BackupError::Ops(e) => e.code(),
            BackupError::Drill(e) => e.code(),
            BackupError::Beneath(e) => e.code(),
            BackupError::Tool(e) => e.code(),
            BackupError::Store(e) => e.code(),
            BackupError::Random(_) | BackupError::WrapFailed | BackupError::Io { .. } => ErrorCode::Internal,
        }
    }
}

#[cfg(test)]
mod last_copy_tests;
#[cfg(test)]
mod refusal_tests;
#[cfg(test)]
mod service_tests;
#[cfg(test)]
mod tamper_tests;
#[cfg(test)]
mod test_fixture;
