//! Who is calling: the names in the verified client certificate, and the role the config gives them.
//!
//! A role is bound to the names listed for it in `[auth]` and, when `auth.<role>_ca` is set, to
//! certificates that chain to that CA. A certificate carrying names of both roles gets no role:
//! giving it the stronger one would let whoever can put a monitor name and an orchestrator name
//! into one certificate act as the orchestrator.

use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::TlsError;
use super::idle::CallActivity;
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

/// Why a verified certificate has no role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoRole {
    /// None of its names is listed in `[auth]`.
    Unmapped,
    /// Its names are listed for both roles.
    Ambiguous { orchestrator: String, monitor: String },
    /// Its name is listed for `role`, but it does not chain to `auth.<role>_ca`.
    WrongIssuer { role: Role },
}

impl fmt::Display for NoRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoRole::Unmapped => f.write_str(
                "is not mapped to a role; add it to auth.orchestrators or auth.monitors in the agent config",
            ),
            NoRole::Ambiguous { orchestrator, monitor } => write!(
                f,
                "carries names of two roles ({orchestrator:?} is an orchestrator, {monitor:?} a monitor) and is given neither; issue one certificate per role"
            ),
            NoRole::WrongIssuer { role } => write!(
                f,
                "is named as {} but not issued by auth.{}_ca, so it has no role",
                role.as_str(),
                role.as_str()
            ),
        }
    }
}

/// Attached to every request of a connection (tonic puts it in the request extensions).
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote: Option<SocketAddr>,
    /// The certificate name that matched a role, or the first name if none matched.
    pub identity: String,
    /// The certificate's subject distinguished name, for the audit trail.
    pub subject: String,
    pub role: Result<Role, NoRole>,
    /// The connection's open calls, for closing it when idle.
    pub activity: Arc<CallActivity>,
}

/// Maps certificate names (and, when configured, issuing CAs) to roles.
#[derive(Clone)]
pub struct RoleMap {
    orchestrators: Vec<String>,
    monitors: Vec<String>,
    orchestrator_ca: Option<Arc<dyn ClientCertVerifier>>,
    monitor_ca: Option<Arc<dyn ClientCertVerifier>>,
}

impl RoleMap {
    /// Reads the per-role CAs, if configured.
    pub fn load(auth: &AuthConfig) -> Result<Self, TlsError> {
        let ca = |path: &Option<std::path::PathBuf>| path.as_deref().map(role_verifier).transpose();
        Ok(Self {
            orchestrators: auth.orchestrators.clone(),
            monitors: auth.monitors.clone(),
            orchestrator_ca: ca(&auth.orchestrator_ca)?,
            monitor_ca: ca(&auth.monitor_ca)?,
        })
    }

    /// The role of a verified chain (leaf first).
    pub fn resolve(&self, chain: &[CertificateDer<'_>], remote: Option<SocketAddr>) -> PeerInfo {
        let Some(leaf) = chain.first() else {
            return PeerInfo {
                remote,
                identity: "<no certificate>".into(),
                subject: String::new(),
                role: Err(NoRole::Unmapped),
                activity: Arc::default(),
            };
        };
        let (subject, names) = certificate_names(leaf.as_ref());
        let orchestrator = names.iter().find(|n| self.orchestrators.contains(n));
        let monitor = names.iter().find(|n| self.monitors.contains(n));
        let (identity, role) = match (orchestrator, monitor) {
            (Some(o), Some(m)) => (o.clone(), Err(NoRole::Ambiguous { orchestrator: o.clone(), monitor: m.clone() })),
            (Some(o), None) => (o.clone(), self.issued_for(Role::Orchestrator, chain)),
            (None, Some(m)) => (m.clone(), self.issued_for(Role::Monitor, chain)),
            (None, None) => (
                names.into_iter().next().unwrap_or_else(|| "<certificate without names>".into()),
                Err(NoRole::Unmapped),
            ),
        };
        PeerInfo { remote, identity, subject, role, activity: Arc::default() }
    }

    fn issued_for(&self, role: Role, chain: &[CertificateDer<'_>]) -> Result<Role, NoRole> {
        let ca = match role {
            Role::Orchestrator => &self.orchestrator_ca,
            Role::Monitor => &self.monitor_ca,
        };
        let Some(verifier) = ca else { return Ok(role) };
        match verifier.verify_client_cert(&chain[0], &chain[1..], UnixTime::now()) {
            Ok(_) => Ok(role),
            Err(_) => Err(NoRole::WrongIssuer { role }),
        }
    }
}

/// A verifier whose only trust anchors are the role's CA. Revocation is not its job: the
/// handshake's verifier checked the CRLs already.
fn role_verifier(path: &Path) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in super::pem_files::read_certs(path)? {
        roots.add(ca).map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            message: format!("not a usable CA certificate: {e}"),
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::new(rustls::crypto::ring::default_provider()))
        .build()
        .map_err(|e| TlsError::Config(format!("role CA {}: {e}", path.display())))
}

/// The subject, and the names roles are matched against: CN first, then DNS and URI subject
/// alternative names.
fn certificate_names(der: &[u8]) -> (String, Vec<String>) {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return (String::new(), Vec::new());
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
    (cert.subject().to_string(), names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair};

    fn auth(orchestrators: &[&str], monitors: &[&str]) -> AuthConfig {
        AuthConfig {
            orchestrators: orchestrators.iter().map(|s| s.to_string()).collect(),
            monitors: monitors.iter().map(|s| s.to_string()).collect(),
            orchestrator_ca: None,
            monitor_ca: None,
        }
    }

    fn params(cn: &str, sans: &[&str]) -> CertificateParams {
        let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
    }

    fn cert(cn: &str, sans: &[&str]) -> Vec<CertificateDer<'static>> {
        let key = KeyPair::generate().unwrap();
        vec![params(cn, sans).self_signed(&key).unwrap().der().clone()]
    }

    struct Ca {
        issuer: Issuer<'static, KeyPair>,
        pem: String,
    }

    fn ca(cn: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = params(cn, &[]);
        p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
        let pem = p.self_signed(&key).unwrap().pem();
        Ca { issuer: Issuer::new(p, key), pem }
    }

    fn issued(ca: &Ca, cn: &str) -> Vec<CertificateDer<'static>> {
        let key = KeyPair::generate().unwrap();
        let mut p = params(cn, &[]);
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        vec![p.signed_by(&key, &ca.issuer).unwrap().der().clone()]
    }

    #[test]
    fn roles_from_cn_and_san() {
        let map = RoleMap::load(&auth(&["orch"], &["dash.example"])).unwrap();
        let p = map.resolve(&cert("orch", &[]), None);
        assert_eq!((p.role, p.subject.as_str()), (Ok(Role::Orchestrator), "CN=orch"));
        let p = map.resolve(&cert("x", &["dash.example"]), None);
        assert_eq!((p.role, p.identity.as_str()), (Ok(Role::Monitor), "dash.example"));
        let p = map.resolve(&cert("stranger", &[]), None);
        assert_eq!((p.role, p.identity.as_str()), (Err(NoRole::Unmapped), "stranger"));
        assert_eq!(map.resolve(&[CertificateDer::from(b"garbage".to_vec())], None).role, Err(NoRole::Unmapped));
    }

    #[test]
    fn a_certificate_with_names_of_both_roles_gets_neither() {
        let map = RoleMap::load(&auth(&["orch"], &["dash"])).unwrap();
        for chain in [cert("dash", &["orch"]), cert("orch", &["dash"])] {
            let p = map.resolve(&chain, None);
            assert_eq!(
                p.role,
                Err(NoRole::Ambiguous { orchestrator: "orch".into(), monitor: "dash".into() }),
                "not the stronger role"
            );
        }
        // Beside it, each name alone still has its role.
        assert_eq!(map.resolve(&cert("orch", &["other"]), None).role, Ok(Role::Orchestrator));
        assert_eq!(map.resolve(&cert("dash", &["other"]), None).role, Ok(Role::Monitor));
    }

    #[test]
    fn a_role_bound_to_a_ca_refuses_certificates_of_another_ca() {
        let (orch_ca, mon_ca) = (ca("orchestrator CA"), ca("monitor CA"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orch-ca.pem");
        std::fs::write(&path, &orch_ca.pem).unwrap();
        let mut config = auth(&["orch"], &["dash"]);
        config.orchestrator_ca = Some(path);
        let map = RoleMap::load(&config).unwrap();
        // The monitor CA mints a certificate named like the orchestrator: no role.
        let forged = map.resolve(&issued(&mon_ca, "orch"), None);
        assert_eq!(forged.role, Err(NoRole::WrongIssuer { role: Role::Orchestrator }));
        assert!(forged.role.unwrap_err().to_string().contains("auth.orchestrator_ca"));
        // The orchestrator CA's certificate has the role; the monitor, without a CA bound, still
        // has its own from either CA.
        assert_eq!(map.resolve(&issued(&orch_ca, "orch"), None).role, Ok(Role::Orchestrator));
        assert_eq!(map.resolve(&issued(&mon_ca, "dash"), None).role, Ok(Role::Monitor));
    }
}
