//! Development PKI for `dbagent --dev`: a CA, a server certificate and two client identities
//! (orchestrator, monitor), generated once into `<state>/tls` and reused on later starts.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::TlsError;
use crate::fsutil;

/// File names under the dev TLS folder.
pub const CA_CERT: &str = "ca.crt";
pub const CLIENT_NAMES: [&str; 2] = ["orchestrator", "monitor"];

/// Generates the dev PKI in `dir` unless `dir/ca.crt` already exists. Returns true when it generated.
pub fn ensure(dir: &Path) -> Result<bool, TlsError> {
    if dir.join(CA_CERT).exists() {
        return Ok(false);
    }
    fsutil::ensure_private_dir(dir).map_err(|e| TlsError::io("create dev TLS folder", dir, e))?;
    let year = current_year();

    let ca_key = KeyPair::generate().map_err(TlsError::generate)?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = name("dbagent development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    ca_params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    ca_params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
    let ca_cert = ca_params.self_signed(&ca_key).map_err(TlsError::generate)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let host = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
    let mut sans = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    if !host.is_empty() && host != "localhost" {
        sans.push(host);
    }
    let server = leaf(&issuer, "dbagent", sans, ExtendedKeyUsagePurpose::ServerAuth, year)?;
    write(dir, "server", &server)?;
    for client in CLIENT_NAMES {
        let id = leaf(&issuer, client, vec![client.to_owned()], ExtendedKeyUsagePurpose::ClientAuth, year)?;
        write(dir, client, &id)?;
    }
    // The CA key is kept (0600) so an operator can issue more dev identities with openssl.
    fsutil::atomic_write(&dir.join("ca.key"), issuer.key().serialize_pem().as_bytes())
        .map_err(|e| TlsError::io("write", &dir.join("ca.key"), e))?;
    fsutil::atomic_write(&dir.join(CA_CERT), ca_cert.pem().as_bytes())
        .map_err(|e| TlsError::io("write", &dir.join(CA_CERT), e))?;
    Ok(true)
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    cn: &str,
    sans: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
    year: i32,
) -> Result<Leaf, TlsError> {
    let key = KeyPair::generate().map_err(TlsError::generate)?;
    let mut params = CertificateParams::new(sans).map_err(TlsError::generate)?;
    params.distinguished_name = name(cn);
    params.extended_key_usages = vec![usage];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 5, 1, 1);
    let cert = params.signed_by(&key, issuer).map_err(TlsError::generate)?;
    Ok(Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

fn write(dir: &Path, stem: &str, leaf: &Leaf) -> Result<(), TlsError> {
    for (ext, body) in [("crt", &leaf.cert_pem), ("key", &leaf.key_pem)] {
        let path = dir.join(format!("{stem}.{ext}"));
        fsutil::atomic_write(&path, body.as_bytes()).map_err(|e| TlsError::io("write", &path, e))?;
    }
    Ok(())
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn current_year() -> i32 {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    1970 + i32::try_from(secs / 31_556_952).unwrap_or(0)
}

/// Client config for `dbagentctl`, pointing at this agent with one of the dev identities.
pub fn client_toml(dir: &Path, identity: &str, endpoint: &str) -> String {
    let p = |f: String| -> PathBuf { dir.join(f) };
    format!(
        "# Written by `dbagent --dev`: use with `dbagentctl --config <this file> status`.\n\
         endpoint = {endpoint:?}\nserver_name = \"localhost\"\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
        p(CA_CERT.into()),
        p(format!("{identity}.crt")),
        p(format!("{identity}.key")),
    )
}
