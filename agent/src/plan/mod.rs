//! Plan changes (issue 14): a new plan's CPU, memory and I/O limits applied to the instance's
//! systemd unit at runtime (`limits`, through `systemd::ServiceManager`), disk growth through the
//! volume service, and the engine settings that follow the plan's memory (`engine_settings`):
//! set in the running server where the engine allows, written for a restart inside the
//! maintenance window where it does not (`job`).

pub mod engine;
pub mod engine_settings;
pub mod job;
pub mod limits;
pub mod volumes;

pub use engine::{EngineControl, InMemoryEngineControl, ToolEngineControl};
pub use job::PlanChanges;

use thiserror::Error;

use crate::command::CommandError;
use crate::error::{ErrorCode, HasErrorCode};

/// The operation kinds, as the journal stores them (never rename one).
pub const CHANGE_KIND: &str = "plan.change";
pub const RESTART_KIND: &str = "plan.restart";

#[derive(Debug, Error)]
pub enum PlanError {
    #[error(transparent)]
    Invalid(#[from] crate::ids::InvalidField),
    #[error(transparent)]
    Registry(#[from] crate::instances::RegistryError),
    #[error(transparent)]
    Ops(#[from] crate::ops::OpsError),
    #[error(transparent)]
    Volume(#[from] crate::volume::VolumeError),
    #[error(transparent)]
    Systemd(#[from] crate::systemd::SystemdError),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(
        "instance {instance}: plan.disk_bytes is {requested} but {used} bytes are in use on its volume; \
         a disk smaller than what is used is refused (free space first)"
    )]
    DiskBelowUsed { instance: String, requested: u64, used: u64 },
    #[error(
        "instance {instance}: plan.memory_bytes is {requested} but the running server's {setting} is {configured} \
         bytes; a memory limit below the engine's buffers would have it killed. Lower {setting} first, or set \
         force to apply the plan anyway"
    )]
    MemoryBelowBuffers { instance: String, requested: u64, setting: String, configured: u64 },
    #[error(
        "instance {instance}: the plan limits I/O, which is applied on the volume's dm-crypt mapping, and the \
         volume is not open; open it first"
    )]
    VolumeNotOpen { instance: String },
    #[error(
        "instance {instance}: the plan grows the disk, and the instance has no volume; create it first \
         (CreateVolume)"
    )]
    NoVolume { instance: String },
    #[error("instance {instance}: ask the server for {what}: {source}; set force to skip the check")]
    Engine { instance: String, what: String, source: CommandError },
    #[error(
        "instance {instance}: the server is not answering, so its {setting} cannot be read; set force to skip the check"
    )]
    EngineDown { instance: String, setting: String },
    #[error("instance {instance}: the server answered {answer:?} for {setting}, not a number")]
    EngineAnswer { instance: String, setting: String, answer: String },
    #[error(
        "instance {instance}: unit {unit} is not a Debian PostgreSQL cluster unit (postgresql@<version>-<cluster>), \
         so the agent has no settings file to write for it"
    )]
    NoSettingsFile { instance: String, unit: String },
    #[error("instance {instance}: write the plan's settings file: {message}")]
    SettingsFile { instance: String, message: String },
    #[error("instance {instance}: after the restart {setting} is {running}, not {wanted}")]
    NotTaken { instance: String, setting: String, running: u64, wanted: u64 },
    #[error(
        "instance {instance}: the settings are set in the running server but could not be kept for its next start \
         ({message}); they would be lost at a restart: change the plan again once that is fixed"
    )]
    NotKept { instance: String, message: String },
}

impl HasErrorCode for PlanError {
    fn code(&self) -> ErrorCode {
        match self {
            PlanError::Invalid(_) => ErrorCode::InvalidArgument,
            PlanError::Registry(e) => e.code(),
            PlanError::Ops(e) => e.code(),
            PlanError::Volume(e) => e.code(),
            PlanError::Systemd(e) => e.code(),
            PlanError::Command(e) => e.code(),
            PlanError::DiskBelowUsed { .. }
            | PlanError::MemoryBelowBuffers { .. }
            | PlanError::VolumeNotOpen { .. }
            | PlanError::NoVolume { .. }
            | PlanError::Engine { .. }
            | PlanError::EngineDown { .. }
            | PlanError::EngineAnswer { .. }
            | PlanError::NoSettingsFile { .. }
            | PlanError::NotTaken { .. }
            | PlanError::NotKept { .. } => ErrorCode::FailedPrecondition,
            PlanError::SettingsFile { .. } => ErrorCode::Internal,
        }
    }
}
