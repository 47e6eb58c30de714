//! The client config file (`/etc/dbagent/client.toml`): where the agent is and which certificates prove
//! who we are.

use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const DEFAULT_PATH: &str = "/etc/dbagent/client.toml";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Default `https://127.0.0.1:7443`: the agent's default listen address on the same host.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// Default `localhost`: the name in the agent's certificate, checked instead of the endpoint's
    /// host because operators usually connect by IP address.
    #[serde(default = "default_server_name")]
    pub server_name: String,
    /// CA bundle that signed the agent's certificate.
    pub ca: PathBuf,
    /// Client certificate and key; the certificate's identity decides what we may do.
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn default_endpoint() -> String {
    "https://127.0.0.1:7443".to_owned()
}

fn default_server_name() -> String {
    "localhost".to_owned()
}

impl ClientConfig {
    /// Reads and parses `path`; every error names the file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (create it, or point --config / DBAGENTCTL_CONFIG at another file)"
            } else {
                ""
            };
            format!("read client config {}: {e}{hint}", path.display())
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).map_err(|e| format!("parse client config {}: {e}", path.display()))
    }

    /// Parses config text; relative certificate paths are taken relative to `base`, the config file's
    /// folder, so a config and its certificates can be moved together.
    pub fn parse(text: &str, base: &Path) -> Result<Self, String> {
        let mut config: Self = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())?;
        for path in [&mut config.ca, &mut config.cert, &mut config.key] {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        if !config.endpoint.starts_with("https://") {
            return Err(format!(
                "endpoint {:?} must start with https:// (the agent only speaks mutual TLS)",
                config.endpoint
            ));
        }
        if config.server_name.is_empty() {
            return Err("server_name must not be empty: it is the name checked in the agent's certificate".to_owned());
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_config() {
        let text = r#"
            endpoint = "https://10.0.0.5:7443"
            server_name = "node-7.db.internal"
            ca = "/etc/dbagent/ca.crt"
            cert = "/etc/dbagent/client.crt"
            key = "/etc/dbagent/client.key"
        "#;
        let c = ClientConfig::parse(text, Path::new("/elsewhere")).unwrap();
        assert_eq!(c.endpoint, "https://10.0.0.5:7443");
        assert_eq!(c.server_name, "node-7.db.internal");
        assert_eq!(c.ca, PathBuf::from("/etc/dbagent/ca.crt"));
        assert_eq!(c.key, PathBuf::from("/etc/dbagent/client.key"));
    }

    #[test]
    fn defaults_and_relative_paths() {
        let text = "ca = \"ca.crt\"\ncert = \"certs/client.crt\"\nkey = \"/abs/client.key\"\n";
        let c = ClientConfig::parse(text, Path::new("/etc/dbagent")).unwrap();
        assert_eq!(c.endpoint, "https://127.0.0.1:7443");
        assert_eq!(c.server_name, "localhost");
        assert_eq!(c.ca, PathBuf::from("/etc/dbagent/ca.crt"));
        assert_eq!(c.cert, PathBuf::from("/etc/dbagent/certs/client.crt"));
        assert_eq!(c.key, PathBuf::from("/abs/client.key"));
    }

    #[test]
    fn unknown_key_is_named() {
        let text = "ca = \"a\"\ncert = \"b\"\nkey = \"c\"\nendpont = \"https://x\"\n";
        let e = ClientConfig::parse(text, Path::new("/")).unwrap_err();
        assert!(e.contains("endpont"), "{e}");
    }

    #[test]
    fn missing_key_and_bad_values() {
        let e = ClientConfig::parse("ca = \"a\"\ncert = \"b\"\n", Path::new("/")).unwrap_err();
        assert!(e.contains("key"), "{e}");
        let e = ClientConfig::parse("ca = 1\ncert = \"b\"\nkey = \"c\"\n", Path::new("/")).unwrap_err();
        assert!(e.contains("ca"), "{e}");
        let e = ClientConfig::parse("endpoint = \"http://x\"\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n", Path::new("/"))
            .unwrap_err();
        assert!(e.contains("https://"), "{e}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let e = ClientConfig::load(Path::new("/nonexistent/dbagent/client.toml")).unwrap_err();
        assert!(e.starts_with("read client config /nonexistent/dbagent/client.toml: "), "{e}");
        assert!(e.contains("--config"), "{e}");
    }
}
