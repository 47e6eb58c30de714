//! Database instances on this host: their domain model, validation and the persisted registry.

pub mod model;
pub mod registry;
pub mod validate;

#[cfg(test)]
pub(crate) mod fixtures;

pub use model::{
    BackupPolicy, Engine, Filesystem, Instance, InstanceSpec, LogSource, MaintenanceWindow, Plan, PlanName, VolumeSpec,
    Weekday,
};
pub use registry::{InstanceLeftovers, Outcome, Registry, RegistryError};
pub use validate::{ValidationRules, validate_spec};
