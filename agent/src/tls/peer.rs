//! Who is calling: the names in the verified client certificate, and the role the config gives them.

use std::net::SocketAddr;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::config::AuthConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Orchestrator,
    /// Read-only: status, lists, metrics, logs.
    Monitor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Orchestrator => "orchestrator",
            Role::Monitor => "monitor",
        }
    }
}

/// Attached to every request of a connection (tonic puts it in the request extensions).
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote: Option<SocketAddr>,
    /// The certificate name that matched a role, or the CN if none matched.
    pub identity: String,
    pub role: Option<Role>,
}

/// Maps certificate names to roles.
#[derive(Debug, Clone)]
pub struct RoleMap {
    auth: AuthConfig,
}

impl RoleMap {
    pub fn new(auth: AuthConfig) -> Self {
        Self { auth }
    }

    /// Orchestrator wins over monitor if a certificate carries names of both.
    pub fn resolve(&self, leaf_der: &[u8], remote: Option<SocketAddr>) -> PeerInfo {
        let names = certificate_names(leaf_der);
        for (list, role) in [(&self.auth.orchestrators, Role::Orchestrator), (&self.auth.monitors, Role::Monitor)] {
            if let Some(name) = names.iter().find(|n| list.contains(n)) {
                return PeerInfo { remote, identity: name.clone(), role: Some(role) };
            }
        }
        let identity = names.into_iter().next().unwrap_or_else(|| "<certificate without names>".into());
        PeerInfo { remote, identity, role: None }
    }
}

/// CN first, then DNS and URI subject alternative names.
fn certificate_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> =
        cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok().map(str::to_owned)).collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) | GeneralName::URI(n) => names.push((*n).to_owned()),
                _ => {}
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, sans: &[&str]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn roles_from_cn_and_san() {
        let map =
            RoleMap::new(AuthConfig { orchestrators: vec!["orch".into()], monitors: vec!["dash.example".into()] });
        assert_eq!(map.resolve(&cert("orch", &[]), None).role, Some(Role::Orchestrator));
        let p = map.resolve(&cert("x", &["dash.example"]), None);
        assert_eq!((p.role, p.identity.as_str()), (Some(Role::Monitor), "dash.example"));
        let p = map.resolve(&cert("stranger", &[]), None);
        assert_eq!((p.role, p.identity.as_str()), (None, "stranger"));
        assert_eq!(map.resolve(b"garbage", None).role, None);
    }
}
