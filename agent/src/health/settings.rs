//! The `[health]` config section (docs/configuration.md). Where each engine's server is reached
//! (socket, port) is not here: it is the `[backup.<engine>]` connection the backups use, so one
//! setting points both at the server.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthSettings {
    /// Probe the registered instances and record their downtime. Off: nothing is probed, and the
    /// ledger records only the agent's own gaps.
    pub enabled: bool,
    /// Seconds between two probes of one instance (1..=3600). The recorded downtime is within
    /// one interval of the real one.
    pub interval_secs: u64,
    /// Seconds a probe may take, connection included (1..=interval_secs): a server that does not
    /// answer by then counts as down.
    pub deadline_secs: u64,
    /// Probes in flight at once, across instances (1..=256).
    pub max_concurrent: u32,
    /// The PostgreSQL and MariaDB role the probes log in as: a login with no privilege beyond
    /// connecting (docs/operations.md, "Monitoring role"). Never a superuser.
    pub monitor_user: String,
    /// The PostgreSQL database the probe connects to and reads `pg_database` in.
    pub postgresql_database: String,
    /// A root-only file holding the MariaDB monitoring user's password (first line). Empty: no
    /// password (a user admitted another way).
    pub mariadb_password_file: PathBuf,
    /// The Redis ACL user of the probe; empty = the default user.
    pub redis_user: String,
    /// A root-only file holding the Redis user's password (first line); empty = none.
    pub redis_password_file: PathBuf,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_secs: 10,
            deadline_secs: 5,
            max_concurrent: 8,
            monitor_user: "dbagent_monitor".into(),
            postgresql_database: "postgres".into(),
            mariadb_password_file: PathBuf::new(),
            redis_user: String::new(),
            redis_password_file: PathBuf::new(),
        }
    }
}

impl HealthSettings {
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs)
    }

    pub fn deadline(&self) -> Duration {
        Duration::from_secs(self.deadline_secs)
    }

    /// `Err((key, message))` for the first invalid value.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(1..=3600).contains(&self.interval_secs) {
            return Err(("health.interval_secs", "must be between 1 and 3600 seconds".into()));
        }
        if !(1..=self.interval_secs).contains(&self.deadline_secs) {
            return Err(("health.deadline_secs", "must be between 1 and health.interval_secs".into()));
        }
        if !(1..=256).contains(&self.max_concurrent) {
            return Err(("health.max_concurrent", "must be between 1 and 256".into()));
        }
        let role_ok = |name: &str| {
            !name.is_empty()
                && name.len() <= 63
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if !role_ok(&self.monitor_user) {
            return Err(("health.monitor_user", "must be 1 to 63 of a-z, 0-9 and '_'".into()));
        }
        if matches!(self.monitor_user.as_str(), "postgres" | "root" | "mysql") {
            return Err((
                "health.monitor_user",
                format!("{:?} is a superuser; create a monitoring role without privileges", self.monitor_user),
            ));
        }
        if !role_ok(&self.postgresql_database) {
            return Err(("health.postgresql_database", "must be 1 to 63 of a-z, 0-9 and '_'".into()));
        }
        if !self.redis_user.is_empty() && !role_ok(&self.redis_user) {
            return Err(("health.redis_user", "must be empty or 1 to 63 of a-z, 0-9 and '_'".into()));
        }
        for (key, file) in [
            ("health.mariadb_password_file", &self.mariadb_password_file),
            ("health.redis_password_file", &self.redis_password_file),
        ] {
            if !file.as_os_str().is_empty() && !file.is_absolute() {
                return Err((key, format!("{file:?} must be an absolute path")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_pass_and_a_superuser_a_deadline_past_the_interval_or_a_relative_file_are_refused() {
        assert_eq!(HealthSettings::default().validate(), Ok(()));
        let refused = |s: HealthSettings| s.validate().unwrap_err().0;
        assert_eq!(
            refused(HealthSettings { monitor_user: "postgres".into(), ..Default::default() }),
            "health.monitor_user"
        );
        assert_eq!(
            refused(HealthSettings { monitor_user: "Bad-Name".into(), ..Default::default() }),
            "health.monitor_user"
        );
        assert_eq!(
            refused(HealthSettings { interval_secs: 2, deadline_secs: 3, ..Default::default() }),
            "health.deadline_secs"
        );
        assert_eq!(refused(HealthSettings { interval_secs: 0, ..Default::default() }), "health.interval_secs");
        assert_eq!(refused(HealthSettings { max_concurrent: 0, ..Default::default() }), "health.max_concurrent");
        assert_eq!(
            refused(HealthSettings { mariadb_password_file: "pw".into(), ..Default::default() }),
            "health.mariadb_password_file"
        );
        // The tests' settings: probes every 2 s within 1 s, a Redis ACL user with a password file.
        let fast = HealthSettings {
            interval_secs: 2,
            deadline_secs: 1,
            redis_user: "dbagent_monitor".into(),
            redis_password_file: "/etc/dbagent/redis-monitor.pw".into(),
            ..Default::default()
        };
        assert_eq!(fast.validate(), Ok(()));
    }
}
