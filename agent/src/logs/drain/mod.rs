//! Log drains: where an instance's logs are shipped. Their configuration, its validation and storage,
//! the wire formats, and delivery with an acknowledgement.

pub mod endpoint;
pub mod policy;
pub mod transport;
pub mod wire;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use super::error::LogsError;
use crate::fsutil;
use crate::ids::InvalidField;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainSpec {
    pub name: String,
    pub target: DrainTarget,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DrainTarget {
    /// RFC 5424 messages with octet counting (RFC 6587 over TCP, RFC 5425 over TLS).
    Syslog { address: String, tls: bool, ca_pem: String },
    /// Batches of JSON lines POSTed to the URL.
    Https { url: String, ca_pem: String },
}

impl DrainTarget {
    /// Drains whose buffered wire bytes stay valid across a change of this target.
    pub fn wire_kind(&self) -> &'static str {
        match self {
            DrainTarget::Syslog { .. } => "syslog",
            DrainTarget::Https { .. } => "https",
        }
    }
}

pub const MAX_DRAINS: usize = 8;

/// Checks the drains' shape and their destinations against `policy` (a host name's addresses are
/// checked again on every connection).
pub fn validate_drains(drains: &[DrainSpec], policy: &policy::DrainPolicy) -> Result<(), InvalidField> {
    if drains.len() > MAX_DRAINS {
        return Err(InvalidField::new(
            "drains",
            format!("has {} entries; at most {MAX_DRAINS} per instance", drains.len()),
        ));
    }
    for (i, d) in drains.iter().enumerate() {
        let field = format!("drains[{i}]");
        let name_ok = (1..=63).contains(&d.name.len())
            && d.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            && d.name.as_bytes()[0].is_ascii_alphanumeric();
        if !name_ok {
            return Err(InvalidField::new(
                format!("{field}.name"),
                "must be 1 to 63 of a-z 0-9 - _, starting with a letter or digit",
            ));
        }
        if drains[..i].iter().any(|o| o.name == d.name) {
            return Err(InvalidField::new(
                format!("{field}.name"),
                format!("{:?} is used twice; drain names must be unique", d.name),
            ));
        }
        match &d.target {
            DrainTarget::Syslog { address, tls, ca_pem } => {
                let (host, _) = endpoint::split_host_port(address)
                    .ok_or_else(|| InvalidField::new(format!("{field}.syslog.address"), "must be HOST:PORT"))?;
                policy
                    .check_host(&host, !*tls)
                    .map_err(|r| InvalidField::new(format!("{field}.syslog.address"), r.to_string()))?;
                if *tls && !ca_pem.is_empty() {
                    endpoint::roots_from_pem(ca_pem)
                        .map_err(|e| InvalidField::new(format!("{field}.syslog.ca_pem"), e.to_string()))?;
                }
                if !*tls && !ca_pem.is_empty() {
                    return Err(InvalidField::new(format!("{field}.syslog.ca_pem"), "is only used with tls = true"));
                }
            }
            DrainTarget::Https { url, ca_pem } => {
                let parsed =
                    endpoint::HttpsUrl::parse(url).map_err(|m| InvalidField::new(format!("{field}.https.url"), m))?;
                policy
                    .check_host(&parsed.host, false)
                    .map_err(|r| InvalidField::new(format!("{field}.https.url"), r.to_string()))?;
                if !ca_pem.is_empty() {
                    endpoint::roots_from_pem(ca_pem)
                        .map_err(|e| InvalidField::new(format!("{field}.https.ca_pem"), e.to_string()))?;
                }
            }
        }
    }
    Ok(())
}

/// `<logs dir>/<instance>/drains.json`.
pub fn drains_file(instance_dir: &Path) -> PathBuf {
    instance_dir.join("drains.json")
}

pub fn load_drains(instance_dir: &Path) -> Result<Vec<DrainSpec>, LogsError> {
    let path = drains_file(instance_dir);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|source| LogsError::DrainListCorrupt { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(LogsError::Io { context: format!("read {}", path.display()), source }),
    }
}

pub fn store_drains(instance_dir: &Path, drains: &[DrainSpec]) -> Result<(), LogsError> {
    fsutil::ensure_private_dir(instance_dir)
        .map_err(|source| LogsError::Io { context: format!("create {}", instance_dir.display()), source })?;
    let path = drains_file(instance_dir);
    let bytes = serde_json::to_vec_pretty(drains).map_err(|source| LogsError::Encode { what: "drain list", source })?;
    fsutil::atomic_write(&path, &bytes)
        .map_err(|source| LogsError::Io { context: format!("write {}", path.display()), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syslog(name: &str, address: &str) -> DrainSpec {
        DrainSpec {
            name: name.into(),
            target: DrainTarget::Syslog { address: address.into(), tls: false, ca_pem: String::new() },
        }
    }

    fn loopback() -> policy::DrainPolicy {
        policy::DrainPolicy::new(&crate::logs::settings::DrainPolicyConfig::loopback())
    }

    fn validate_drains(drains: &[DrainSpec]) -> Result<(), InvalidField> {
        super::validate_drains(drains, &loopback())
    }

    #[test]
    fn a_destination_the_policy_refuses_is_invalid_naming_the_field() {
        let strict = policy::DrainPolicy::default();
        let e = super::validate_drains(&[syslog("a", "127.0.0.1:514")], &strict).unwrap_err();
        assert!(e.to_string().contains("drains[0].syslog.address") && e.to_string().contains("loopback"), "{e}");
        let e = super::validate_drains(&[syslog("a", "192.0.2.1:514")], &strict).unwrap_err();
        assert!(e.to_string().contains("plaintext syslog"), "plaintext needs a listed network: {e}");
        let tls = DrainSpec {
            name: "t".into(),
            target: DrainTarget::Syslog { address: "192.0.2.1:6514".into(), tls: true, ca_pem: String::new() },
        };
        assert!(super::validate_drains(&[tls], &strict).is_ok(), "TLS syslog to a public address is allowed");
        let metadata = DrainSpec {
            name: "h".into(),
            target: DrainTarget::Https { url: "https://169.254.169.254/latest".into(), ca_pem: String::new() },
        };
        let e = super::validate_drains(std::slice::from_ref(&metadata), &loopback()).unwrap_err();
        assert!(e.to_string().contains("drains[0].https.url") && e.to_string().contains("link-local"), "{e}");
        let e = crate::logs::LogsError::from(e);
        assert_eq!(crate::error::HasErrorCode::code(&e), crate::error::ErrorCode::InvalidArgument);
        assert!(validate_drains(&[syslog("a", "127.0.0.1:514")]).is_ok(), "the dev policy allows loopback");
    }

    #[test]
    fn validation_names_the_field() {
        assert!(validate_drains(&[syslog("a", "127.0.0.1:514")]).is_ok());
        let e = validate_drains(&[syslog("A b", "127.0.0.1:514")]).unwrap_err();
        assert!(e.to_string().contains("drains[0].name"), "{e}");
        let e = validate_drains(&[syslog("a", "127.0.0.1:514"), syslog("a", "127.0.0.1:515")]).unwrap_err();
        assert!(e.to_string().contains("drains[1].name"), "{e}");
        let e = validate_drains(&[syslog("a", "nohost")]).unwrap_err();
        assert!(e.to_string().contains("address"), "{e}");
        let https = DrainSpec {
            name: "h".into(),
            target: DrainTarget::Https { url: "http://x/".into(), ca_pem: String::new() },
        };
        assert!(validate_drains(&[https]).unwrap_err().to_string().contains("https.url"));
        let bad_ca = DrainSpec {
            name: "t".into(),
            target: DrainTarget::Syslog { address: "h:6514".into(), tls: true, ca_pem: "garbage".into() },
        };
        assert!(validate_drains(&[bad_ca]).unwrap_err().to_string().contains("ca_pem"));
    }

    #[test]
    fn drains_round_trip_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let inst = dir.path().join("pg-1");
        assert!(load_drains(&inst).unwrap().is_empty());
        let drains = vec![syslog("a", "127.0.0.1:514")];
        store_drains(&inst, &drains).unwrap();
        assert_eq!(load_drains(&inst).unwrap(), drains);
    }

    #[test]
    fn a_corrupt_drain_list_is_internal_and_names_its_file() {
        use crate::error::{ErrorCode, HasErrorCode};
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(drains_file(dir.path()), b"{ not json").unwrap();
        let e = load_drains(dir.path()).unwrap_err();
        assert!(matches!(&e, LogsError::DrainListCorrupt { path, .. } if *path == drains_file(dir.path())), "{e}");
        assert_eq!(e.code(), ErrorCode::Internal);
    }
}
