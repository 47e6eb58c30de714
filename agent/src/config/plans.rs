//! `[plans]`: how plan changes reach the engines (docs/operations.md, "Plan changes").

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlansConfig {
    /// A unit's restart (for settings that need one) that has not finished by then fails the
    /// operation. 10..=3600.
    pub restart_timeout_secs: u64,
    /// Debian's PostgreSQL cluster configurations: the agent writes
    /// `<this>/<version>/<cluster>/conf.d/90-dbagent-plan.conf`. Absolute.
    pub postgresql_config_dir: PathBuf,
    /// MariaDB's option folder (read by every server on the host): the agent writes
    /// `<this>/90-dbagent-plan-<instance>.cnf` with the instance's unit's option group, so the
    /// settings a plan change sets at runtime survive the server's restart. Absolute.
    pub mariadb_config_dir: PathBuf,
}

impl Default for PlansConfig {
    fn default() -> Self {
        Self {
            restart_timeout_secs: 300,
            postgresql_config_dir: PathBuf::from("/etc/postgresql"),
            mariadb_config_dir: PathBuf::from("/etc/mysql/mariadb.conf.d"),
        }
    }
}

impl PlansConfig {
    /// `Err((key, message))` for the first invalid value.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(10..=3600).contains(&self.restart_timeout_secs) {
            return Err((
                "plans.restart_timeout_secs",
                format!("is {}; it must be from 10 to 3600", self.restart_timeout_secs),
            ));
        }
        if !self.mariadb_config_dir.is_absolute() {
            return Err((
                "plans.mariadb_config_dir",
                format!("{:?} must be an absolute path", self.mariadb_config_dir),
            ));
        }
        if !self.postgresql_config_dir.is_absolute() {
            return Err((
                "plans.postgresql_config_dir",
                format!("{:?} must be an absolute path", self.postgresql_config_dir),
            ));
        }
        Ok(())
    }
}
