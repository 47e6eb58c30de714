//! The rustls server configuration: our certificate, client certificates required and verified
//! against the client CA and its CRLs, and the role map. Rebuilt on SIGHUP; a failed rebuild keeps
//! the old one. A rebuild that succeeds re-checks every open connection (see `sessions`).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::TlsError;
use super::crl::{self, LoadedCrl};
use super::peer::RoleMap;
use super::pem_files::{read, read_certs};
use super::sessions::{SessionCert, Sessions};
use crate::config::{AuthConfig, StaleCrlPolicy, TlsConfig};

/// One generation of the TLS configuration: what new handshakes use, and what open connections
/// are held to after a reload.
pub struct TlsSnapshot {
    pub generation: u64,
    pub acceptor: TlsAcceptor,
    pub roles: RoleMap,
    verifier: Arc<dyn ClientCertVerifier>,
}

impl TlsSnapshot {
    /// Why this configuration would not admit `cert` with the role it has, if it would not.
    pub fn refusal(&self, cert: &SessionCert) -> Option<String> {
        let (leaf, intermediates) = cert.chain.split_first()?;
        if let Err(e) = self.verifier.verify_client_cert(leaf, intermediates, UnixTime::now()) {
            return Some(format!("its certificate is no longer accepted: {e}"));
        }
        let now = self.roles.resolve(&cert.chain, Some(cert.remote)).role;
        (now != cert.role).then(|| format!("its role changed from {:?} to {now:?}", cert.role))
    }
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn build(tls: &TlsConfig, auth: &AuthConfig, generation: u64) -> Result<(TlsSnapshot, Vec<LoadedCrl>), TlsError> {
    let certs = read_certs(&tls.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&read(&tls.key)?)
        .map_err(|e| TlsError::Pem { path: tls.key.clone(), message: format!("no usable private key: {e}") })?;
    let mut roots = RootCertStore::empty();
    for ca in read_certs(&tls.client_ca)? {
        roots.add(ca).map_err(|e| TlsError::Pem {
            path: tls.client_ca.clone(),
            message: format!("not a usable CA certificate: {e}"),
        })?;
    }
    let crls = crl::load_crls(&tls.crls)?;
    let mut verifier = WebPkiClientVerifier::builder(Arc::new(roots));
    if !crls.is_empty() {
        verifier = verifier.with_crls(crls.iter().map(|c| c.der.clone())).only_check_end_entity_revocation();
        if tls.stale_crl == StaleCrlPolicy::Refuse {
            verifier = verifier.enforce_revocation_expiration();
        }
    }
    let verifier = verifier.build().map_err(|e| TlsError::Config(format!("client certificate verifier: {e}")))?;
    let mut config = ServerConfig::builder()
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(certs, key)
        .map_err(|e| {
        TlsError::Config(format!("server certificate {} and key {}: {e}", tls.cert.display(), tls.key.display()))
    })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let roles = RoleMap::load(auth)?;
    let snapshot = TlsSnapshot { generation, acceptor: TlsAcceptor::from(Arc::new(config)), roles, verifier };
    Ok((snapshot, crls))
}

/// Said loudly at every load: a stale CRL cannot tell about recent revocations.
fn report_stale(crls: &[LoadedCrl], policy: StaleCrlPolicy) {
    for stale in crl::stale(crls, unix_now()) {
        let consequence = match policy {
            StaleCrlPolicy::Report => "still used; clients it covers are served (tls.stale_crl = \"report\")",
            StaleCrlPolicy::Refuse => "every client certificate it covers is refused (tls.stale_crl = \"refuse\")",
        };
        tracing::error!(
            crl = %stale.path.display(),
            "CRL is past its nextUpdate, so revocations since are unknown; {consequence}. Install a fresh CRL and send SIGHUP"
        );
    }
    crl::publish(crls);
}

/// The TLS configuration in use and the connections admitted under it. New connections take the
/// current one; a reload re-checks the open ones against the new one.
pub struct ReloadableAcceptor {
    tls: TlsConfig,
    auth: AuthConfig,
    current: RwLock<Arc<TlsSnapshot>>,
    /// Held while `current` is replaced, so a handshake that began under the old configuration is
    /// either checked by the reload or checks itself against the new one when it registers.
    sessions: Mutex<Sessions>,
}

/// Keeps a connection registered; dropping it (the connection ended) unregisters it.
pub struct SessionGuard {
    owner: Arc<ReloadableAcceptor>,
    id: u64,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.owner.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(self.id);
    }
}

impl ReloadableAcceptor {
    pub fn new(tls: TlsConfig, auth: AuthConfig) -> Result<Self, TlsError> {
        let (snapshot, crls) = build(&tls, &auth, 1)?;
        report_stale(&crls, tls.stale_crl);
        Ok(Self { tls, auth, current: RwLock::new(Arc::new(snapshot)), sessions: Mutex::default() })
    }

    pub fn current(&self) -> Arc<TlsSnapshot> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads certificate, key, CA, CRLs and role CAs from disk, then closes the open
    /// connections the new configuration would refuse. Returns how many it closed.
    pub fn reload(&self) -> Result<usize, TlsError> {
        let generation = self.current().generation + 1;
        let (snapshot, crls) = build(&self.tls, &self.auth, generation)?;
        report_stale(&crls, self.tls.stale_crl);
        let snapshot = Arc::new(snapshot);
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = snapshot.clone();
        Ok(sessions.close_refused(|cert| snapshot.refusal(cert)))
    }

    /// Registers a connection whose handshake finished under `under`. `None` (the connection is to
    /// be dropped) when a reload since then refuses it.
    pub fn register(
        self: &Arc<Self>,
        under: &TlsSnapshot,
        cert: SessionCert,
        close: CancellationToken,
    ) -> Option<SessionGuard> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.current();
        if current.generation != under.generation
            && let Some(why) = current.refusal(&cert)
        {
            tracing::warn!(remote = %cert.remote, identity = %cert.identity, "dropping a new connection: {why}");
            return None;
        }
        let id = sessions.insert(cert, close);
        Some(SessionGuard { owner: self.clone(), id })
    }

    /// Connections open now.
    pub fn open_sessions(&self) -> usize {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
