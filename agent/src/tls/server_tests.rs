use super::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::tls::peer::Role;

/// A CA, a server certificate and the files of a `[tls]` section with one CRL.
struct Fixture {
    _dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    tls: TlsConfig,
    next_serial: u64,
}

impl Fixture {
    fn new() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::default();
        ca.distinguished_name.push(DnType::CommonName, "test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_pem = ca.self_signed(&key).unwrap().pem();
        let issuer = Issuer::new(ca, key);
        let server_key = KeyPair::generate().unwrap();
        let mut server = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_pem = server.signed_by(&server_key, &issuer).unwrap().pem();
        let path = |name: &str| -> PathBuf { dir.path().join(name) };
        std::fs::write(path("ca.crt"), ca_pem).unwrap();
        std::fs::write(path("server.crt"), server_pem).unwrap();
        std::fs::write(path("server.key"), server_key.serialize_pem()).unwrap();
        let tls = TlsConfig {
            cert: path("server.crt"),
            key: path("server.key"),
            client_ca: path("ca.crt"),
            crls: vec![path("client.crl")],
            stale_crl: StaleCrlPolicy::Report,
        };
        let fixture = Fixture { _dir: dir, issuer, tls, next_serial: 1 };
        fixture.write_crl(&[]);
        fixture
    }

    fn client(&mut self, cn: &str) -> (SessionCert, u64) {
        self.next_serial += 1;
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(SerialNumber::from(self.next_serial));
        let der: CertificateDer<'static> = params.signed_by(&key, &self.issuer).unwrap().der().clone();
        let cert = SessionCert {
            chain: vec![der],
            role: Ok(Role::Orchestrator),
            identity: cn.into(),
            remote: SocketAddr::from(([127, 0, 0, 1], 1)),
        };
        (cert, self.next_serial)
    }

    /// A DER CRL revoking `serials`.
    fn write_crl(&self, serials: &[u64]) {
        let crl = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2020, 1, 1),
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|&s| RevokedCertParams {
                    serial_number: SerialNumber::from(s),
                    revocation_time: rcgen::date_time_ymd(2021, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer)
        .unwrap();
        std::fs::write(&self.tls.crls[0], crl.der().as_ref()).unwrap();
    }
}

#[test]
fn a_reload_closes_exactly_the_connections_whose_certificate_it_revokes() {
    let mut f = Fixture::new();
    let acceptor = Arc::new(ReloadableAcceptor::new(f.tls.clone(), AuthConfig::default()).unwrap());
    let (revoked, revoked_serial) = f.client("orchestrator");
    let (kept, _) = f.client("orchestrator");
    let snapshot = acceptor.current();
    let (revoked_close, kept_close) = (CancellationToken::new(), CancellationToken::new());
    let _a = acceptor.register(&snapshot, revoked, revoked_close.clone()).unwrap();
    let _b = acceptor.register(&snapshot, kept, kept_close.clone()).unwrap();

    f.write_crl(&[revoked_serial]);
    assert_eq!(acceptor.reload().unwrap(), 1);
    assert!(revoked_close.is_cancelled(), "the revoked connection is closed");
    assert!(!kept_close.is_cancelled(), "the other one stays");
    assert_eq!(acceptor.open_sessions(), 1);
}

#[test]
fn a_handshake_finished_under_the_old_files_is_checked_against_the_new_ones() {
    let mut f = Fixture::new();
    let acceptor = Arc::new(ReloadableAcceptor::new(f.tls.clone(), AuthConfig::default()).unwrap());
    let (revoked, revoked_serial) = f.client("orchestrator");
    let (kept, _) = f.client("orchestrator");
    // The handshake began before the reload, and registers after it.
    let before = acceptor.current();
    f.write_crl(&[revoked_serial]);
    assert_eq!(acceptor.reload().unwrap(), 0, "nothing was registered yet");
    assert!(acceptor.register(&before, revoked, CancellationToken::new()).is_none(), "it slipped past the reload");
    let guard = acceptor.register(&before, kept, CancellationToken::new());
    assert!(guard.is_some(), "a certificate the new files accept is registered");
    assert_eq!(acceptor.open_sessions(), 1);
    drop(guard);
    assert_eq!(acceptor.open_sessions(), 0, "a connection that ends is forgotten");
}

#[test]
fn a_reload_that_fails_keeps_the_open_connections_and_the_old_files() {
    let mut f = Fixture::new();
    let acceptor = Arc::new(ReloadableAcceptor::new(f.tls.clone(), AuthConfig::default()).unwrap());
    let (cert, _) = f.client("orchestrator");
    let close = CancellationToken::new();
    let _guard = acceptor.register(&acceptor.current(), cert, close.clone()).unwrap();
    std::fs::write(&f.tls.crls[0], b"not a CRL").unwrap();
    let e = acceptor.reload().err().unwrap().to_string();
    assert!(e.contains("client.crl"), "{e}");
    assert!(!close.is_cancelled());
    assert_eq!(acceptor.current().generation, 1, "the previous configuration stays in use");
}
