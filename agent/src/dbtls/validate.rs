//! Everything InstallCertificate checks before a byte is written: sizes, PEM, the key against the
//! certificate, the chain against the CA bundle, the dates and the names the instance is reached
//! by. Pure: the clock and the names are given, so every refusal is tested without an engine.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::DbTlsError;

/// A leaf with a few intermediates fits easily; more is a mistake or an attack on memory.
pub const MAX_CERT_PEM: usize = 64 * 1024;
pub const MAX_KEY_PEM: usize = 16 * 1024;
pub const MAX_CA_PEM: usize = 256 * 1024;
/// Certificates in `cert_pem` (leaf + intermediates) and in `ca_pem`.
pub const MAX_CERTS: usize = 10;

/// What the request carries. The key lives in a zeroizing buffer and is never printed (`Debug`
/// leaves it out).
pub struct CertificateInput {
    pub cert_pem: String,
    pub key_pem: Zeroizing<String>,
    pub ca_pem: String,
}

impl std::fmt::Debug for CertificateInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateInput").field("cert_pem", &self.cert_pem.len()).finish_non_exhaustive()
    }
}

/// A bundle that passed every check, ready to be written.
pub struct ValidBundle {
    pub input: CertificateInput,
    /// The leaf, DER: what the engine must serve once reloaded.
    pub leaf_der: Vec<u8>,
    /// SHA-256 of the leaf's DER, hex: the operation's parameter in place of the key.
    pub fingerprint: String,
    pub not_after: i64,
    pub subject: String,
}

fn certs(field: &'static str, pem: &str, max: usize) -> Result<Vec<CertificateDer<'static>>, DbTlsError> {
    if pem.len() > max {
        return Err(DbTlsError::TooLarge { field, max });
    }
    if pem.trim().is_empty() {
        return Err(DbTlsError::Missing { field });
    }
    let mut out = Vec::new();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| DbTlsError::BadPem { field, reason: e.to_string() })?;
        out.push(cert);
        if out.len() > MAX_CERTS {
            return Err(DbTlsError::TooManyCertificates { field, max: MAX_CERTS });
        }
    }
    if out.is_empty() {
        return Err(DbTlsError::BadPem { field, reason: "no CERTIFICATE block".into() });
    }
    Ok(out)
}

/// The key's public half as SubjectPublicKeyInfo DER, through the crypto provider the agent uses.
fn key_spki(key_pem: &str) -> Result<Vec<u8>, DbTlsError> {
    let field = "key_pem";
    if key_pem.len() > MAX_KEY_PEM {
        return Err(DbTlsError::TooLarge { field, max: MAX_KEY_PEM });
    }
    if key_pem.trim().is_empty() {
        return Err(DbTlsError::Missing { field });
    }
    // The parser's own error could quote the input: only its kind is kept.
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| DbTlsError::BadPem {
        field,
        reason: "no readable PRIVATE KEY block (PKCS#8, PKCS#1 or SEC1)".into(),
    })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|_| DbTlsError::KeyUnsupported)?;
    let spki = signing.public_key().ok_or(DbTlsError::KeyUnsupported)?;
    Ok(spki.as_ref().to_vec())
}

fn when(t: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(t).unwrap_or(0));
    crate::timefmt::format(t)
}

/// Checks `input` for an instance reached by `names` at `now`; returns the bundle to install.
pub fn validate(input: CertificateInput, names: &[String], now: UnixTime) -> Result<ValidBundle, DbTlsError> {
    let chain = certs("cert_pem", &input.cert_pem, MAX_CERT_PEM)?;
    let cas = certs("ca_pem", &input.ca_pem, MAX_CA_PEM)?;
    let spki = key_spki(&input.key_pem)?;
    let leaf = &chain[0];
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| DbTlsError::BadPem { field: "cert_pem", reason: format!("the first certificate: {e}") })?;
    if parsed.public_key().raw != spki.as_slice() {
        return Err(DbTlsError::KeyMismatch { subject: parsed.subject().to_string() });
    }
    let not_before = parsed.validity().not_before.timestamp();
    let not_after = parsed.validity().not_after.timestamp();
    let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    if now_secs > not_after {
        return Err(DbTlsError::Expired { not_after: when(not_after) });
    }
    if now_secs < not_before {
        return Err(DbTlsError::NotYetValid { not_before: when(not_before) });
    }
    let anchors = cas
        .iter()
        .map(|ca| webpki::anchor_from_trusted_cert(ca).map(|a| a.to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| DbTlsError::BadPem { field: "ca_pem", reason: format!("not a usable CA certificate: {e}") })?;
    let end_entity = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| DbTlsError::BadPem { field: "cert_pem", reason: format!("the first certificate: {e}") })?;
    let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms.all;
    end_entity
        .verify_for_usage(algs, &anchors, &chain[1..], now, webpki::KeyUsage::server_auth(), None, None)
        .map_err(|e| match e {
            webpki::Error::CertExpired { .. } => DbTlsError::ChainExpired { reason: e.to_string() },
            webpki::Error::RequiredEkuNotFoundContext(_) => DbTlsError::NotForServers,
            other => DbTlsError::ChainDoesNotVerify { reason: chain_reason(&other) },
        })?;
    for name in names {
        let server_name =
            ServerName::try_from(name.as_str()).map_err(|_| DbTlsError::BadRequiredName { name: name.clone() })?;
        if end_entity.verify_is_valid_for_subject_name(&server_name).is_err() {
            return Err(DbTlsError::NameMismatch { name: name.clone(), has: subject_alt_names(&parsed) });
        }
    }
    let fingerprint = crate::hex::encode(&Sha256::digest(leaf.as_ref()));
    let subject = parsed.subject().to_string();
    let leaf_der = leaf.as_ref().to_vec();
    Ok(ValidBundle { input, leaf_der, fingerprint, not_after, subject })
}

fn chain_reason(e: &webpki::Error) -> String {
    match e {
        webpki::Error::UnknownIssuer => {
            "no path from the certificate through cert_pem's intermediates to a CA in ca_pem \
                                         (unknown issuer)"
                .into()
        }
        webpki::Error::CertNotValidYet { .. } => "a certificate of the chain is not valid yet".into(),
        other => format!("{other:?}"),
    }
}

/// The DNS names and IP addresses the certificate carries, for the refusal's message.
fn subject_alt_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok(Some(san)) = cert.subject_alternative_name() else { return Vec::new() };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some((*d).to_owned()),
            GeneralName::IPAddress(ip) => Some(format!("{ip:?}")),
            _ => None,
        })
        .collect()
}

/// The names a certificate of `instance_id` must carry: the configured templates with `{host}`
/// and `{instance}` filled in.
pub fn required_names(templates: &[String], host: &str, instance_id: &str) -> Vec<String> {
    templates.iter().map(|t| t.replace("{host}", host).replace("{instance}", instance_id)).collect()
}

/// What an installed certificate says about itself, for `tls show`, the metric and GetStatus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    pub subject: String,
    pub fingerprint: String,
    pub not_after: i64,
    pub names: Vec<String>,
}

/// Reads the leaf of an installed certificate file (PEM).
pub fn summarize(pem: &[u8]) -> Option<CertSummary> {
    let leaf = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    Some(CertSummary {
        subject: parsed.subject().to_string(),
        fingerprint: crate::hex::encode(&Sha256::digest(leaf.as_ref())),
        not_after: parsed.validity().not_after.timestamp(),
        names: subject_alt_names(&parsed),
    })
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
