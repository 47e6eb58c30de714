//! The rustls server configuration: our certificate, client certificates required and verified
//! against the client CA and its CRLs. Rebuilt on SIGHUP; a failed rebuild keeps the old one.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::{Arc, RwLock};
use tokio_rustls::TlsAcceptor;

use super::TlsError;
use crate::config::TlsConfig;

pub fn server_config(tls: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
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
    let mut crls = Vec::new();
    for path in &tls.crls {
        for crl in CertificateRevocationListDer::pem_slice_iter(&read(path)?) {
            crls.push(crl.map_err(|e| TlsError::Pem { path: path.clone(), message: format!("not a PEM CRL: {e}") })?);
        }
    }
    let mut verifier = WebPkiClientVerifier::builder(Arc::new(roots));
    if !crls.is_empty() {
        verifier = verifier.with_crls(crls).only_check_end_entity_revocation();
    }
    let verifier = verifier.build().map_err(|e| TlsError::Config(format!("client certificate verifier: {e}")))?;
    let mut config =
        ServerConfig::builder().with_client_cert_verifier(verifier).with_single_cert(certs, key).map_err(|e| {
            TlsError::Config(format!("server certificate {} and key {}: {e}", tls.cert.display(), tls.key.display()))
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::io("read", path, e))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { path: path.to_path_buf(), message: format!("not PEM certificates: {e}") })?;
    if certs.is_empty() {
        return Err(TlsError::Pem { path: path.to_path_buf(), message: "holds no certificate".into() });
    }
    Ok(certs)
}

/// The acceptor in use; new connections take the current one, open connections keep theirs.
pub struct ReloadableAcceptor {
    tls: TlsConfig,
    current: RwLock<TlsAcceptor>,
}

impl ReloadableAcceptor {
    pub fn new(tls: TlsConfig) -> Result<Self, TlsError> {
        let acceptor = TlsAcceptor::from(server_config(&tls)?);
        Ok(Self { tls, current: RwLock::new(acceptor) })
    }

    pub fn current(&self) -> TlsAcceptor {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads certificate, key, CA and CRLs from disk.
    pub fn reload(&self) -> Result<(), TlsError> {
        let acceptor = TlsAcceptor::from(server_config(&self.tls)?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = acceptor;
        Ok(())
    }
}
