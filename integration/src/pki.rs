//! Certificates for tests that bring their own PKI: a CA, server and client certificates, CRLs.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
    date_time_ymd,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A certificate with its private key, both PEM, and the serial it was issued with.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub serial: SerialNumber,
}

impl IssuedCert {
    /// Writes `<dir>/<name>.crt` and `<dir>/<name>.key`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        write_file(&cert, &self.cert_pem);
        write_file(&key, &self.key_pem);
        (cert, key)
    }
}

/// When a client certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From 2020 to 2099.
    Current,
    /// 2020 to 2021: long expired.
    Expired,
}

/// A self-signed CA that can sign certificates and CRLs.
pub struct CertAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    next_serial: AtomicU64,
}

impl CertAuthority {
    pub fn new(common_name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2099, 1, 1);
        let key = KeyPair::generate().expect("generate the CA key");
        let cert = params.self_signed(&key).expect("self-sign the CA");
        Self { issuer: Issuer::new(params, key), cert_pem: cert.pem(), next_serial: AtomicU64::new(1) }
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Writes the CA certificate to `path`.
    pub fn write(&self, path: &Path) {
        write_file(path, &self.cert_pem);
    }

    /// A server certificate for localhost and 127.0.0.1.
    pub fn server(&self) -> IssuedCert {
        let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("server subject alt names");
        params.distinguished_name = name("localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, Validity::Current)
    }

    /// A server certificate for `names` (DNS names or IP addresses), with a new ECDSA P-256 key.
    pub fn server_for(&self, names: &[&str]) -> IssuedCert {
        self.server_for_key(names, KeyPair::generate().expect("generate a leaf key"))
    }

    /// A server certificate for `names` with the given key (e.g. an RSA key made by openssl).
    pub fn server_for_key(&self, names: &[&str], key: KeyPair) -> IssuedCert {
        let mut params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .expect("server subject alt names");
        params.distinguished_name = name(names.first().copied().unwrap_or("server"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue_with_key(params, Validity::Current, key)
    }

    /// A client certificate whose subject CN is `common_name`.
    pub fn client(&self, common_name: &str, validity: Validity) -> IssuedCert {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, validity)
    }

    /// A current client certificate with subject CN `common_name` and DNS subject alternative
    /// names `dns_names`.
    pub fn client_with_names(&self, common_name: &str, dns_names: &[&str]) -> IssuedCert {
        let mut params = CertificateParams::new(dns_names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .expect("client subject alt names");
        params.distinguished_name = name(common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, Validity::Current)
    }

    fn issue(&self, params: CertificateParams, validity: Validity) -> IssuedCert {
        self.issue_with_key(params, validity, KeyPair::generate().expect("generate a leaf key"))
    }

    fn issue_with_key(&self, mut params: CertificateParams, validity: Validity, key: KeyPair) -> IssuedCert {
        let serial = SerialNumber::from(self.next_serial.fetch_add(1, Ordering::Relaxed));
        params.serial_number = Some(serial.clone());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.use_authority_key_identifier_extension = true;
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = match validity {
            Validity::Current => date_time_ymd(2099, 1, 1),
            Validity::Expired => date_time_ymd(2021, 1, 1),
        };
        let cert = params.signed_by(&key, &self.issuer).expect("sign a leaf certificate");
        IssuedCert { cert_pem: cert.pem(), key_pem: key.serialize_pem(), serial }
    }

    /// A PEM "X509 CRL" revoking `revoked`, valid from 2020 to 2099.
    pub fn crl(&self, revoked: &[&IssuedCert]) -> String {
        self.signed_crl(revoked, 2099).pem().expect("encode the CRL as PEM")
    }

    /// A DER CRL revoking `revoked`, valid from 2020 to January 1st of `next_update_year` (a year
    /// in the past gives a stale CRL).
    pub fn crl_der(&self, revoked: &[&IssuedCert], next_update_year: i32) -> Vec<u8> {
        self.signed_crl(revoked, next_update_year).der().to_vec()
    }

    fn signed_crl(&self, revoked: &[&IssuedCert], next_update_year: i32) -> rcgen::CertificateRevocationList {
        let params = CertificateRevocationListParams {
            this_update: date_time_ymd(2020, 1, 1),
            next_update: date_time_ymd(next_update_year, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|c| RevokedCertParams {
                    serial_number: c.serial.clone(),
                    revocation_time: date_time_ymd(2020, 6, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer).expect("sign the CRL")
    }
}

/// A CA and a server certificate for localhost: what a custom-config agent needs.
pub struct ServerPki {
    pub ca: CertAuthority,
    pub server: IssuedCert,
}

/// Where [`ServerPki::write`] put the files.
#[derive(Debug, Clone)]
pub struct PkiFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ServerPki {
    pub fn new() -> Self {
        let ca = CertAuthority::new("dbagent test CA");
        let server = ca.server();
        Self { ca, server }
    }

    /// Writes `ca.crt`, `server.crt` and `server.key` under `dir` (created if missing).
    pub fn write(&self, dir: &Path) -> PkiFiles {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let ca = dir.join("ca.crt");
        self.ca.write(&ca);
        let (cert, key) = self.server.write(dir, "server");
        PkiFiles { ca, cert, key }
    }

    /// Writes a CRL revoking `revoked` to `path`.
    pub fn write_crl(&self, path: &Path, revoked: &[&IssuedCert]) {
        write_file(path, &self.ca.crl(revoked));
    }
}

impl Default for ServerPki {
    fn default() -> Self {
        Self::new()
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn write_file(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
