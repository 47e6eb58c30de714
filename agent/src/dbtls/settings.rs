//! The `[database_tls]` config section (docs/configuration.md).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DbTlsConfig {
    /// Names every instance certificate must be valid for (DNS SAN or IP SAN), with `{host}` (the
    /// host's name) and `{instance}` (the instance id) filled in, e.g. `"{instance}.db.example.com"`.
    pub names: Vec<String>,
    /// Where the agent's own TLS client connects to check what the engine serves after a reload
    /// (the engine's port is read from the server). Loopback by default.
    pub connect_host: String,
    /// How long the agent waits for the engine to serve the new certificate after the reload
    /// before it puts the old one back (1..=120 seconds).
    pub served_timeout_secs: u64,
    /// GetStatus warns this many days before an installed certificate expires (1..=365).
    pub warn_days: u64,
}

impl Default for DbTlsConfig {
    fn default() -> Self {
        Self { names: vec!["{host}".into()], connect_host: "127.0.0.1".into(), served_timeout_secs: 15, warn_days: 30 }
    }
}

impl DbTlsConfig {
    /// `Err((key, message))` for the first invalid value.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.names.len() > 16 {
            return Err(("database_tls.names", "at most 16 names".into()));
        }
        for name in &self.names {
            let sample = name.replace("{host}", "host.example").replace("{instance}", "pg-1");
            if rustls::pki_types::ServerName::try_from(sample.as_str()).is_err() {
                return Err(("database_tls.names", format!("{name:?} is not a DNS name or IP address template")));
            }
        }
        if self.connect_host.parse::<std::net::IpAddr>().is_err() {
            return Err(("database_tls.connect_host", format!("{:?} must be an IP address", self.connect_host)));
        }
        if !(1..=120).contains(&self.served_timeout_secs) {
            return Err(("database_tls.served_timeout_secs", "must be between 1 and 120".into()));
        }
        if !(1..=365).contains(&self.warn_days) {
            return Err(("database_tls.warn_days", "must be between 1 and 365".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates_from_toml() {
        let c: DbTlsConfig =
            toml::from_str("names = [\"{instance}.db.example.com\"]\nconnect_host = \"127.0.0.1\"").unwrap();
        assert_eq!(c.names, ["{instance}.db.example.com"]);
        assert_eq!(c.served_timeout_secs, 15, "unset keys keep their defaults");
        c.validate().unwrap();
        let bad: DbTlsConfig = toml::from_str("names = [\"not a name\"]").unwrap();
        assert_eq!(bad.validate().unwrap_err().0, "database_tls.names");
        let bad: DbTlsConfig = toml::from_str("connect_host = \"localhost\"").unwrap();
        assert_eq!(bad.validate().unwrap_err().0, "database_tls.connect_host");
        assert!(toml::from_str::<DbTlsConfig>("nmes = []").is_err(), "unknown keys are refused");
    }
}
