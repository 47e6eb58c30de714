//! Every refusal of `validate`, each beside the allowed path it differs from by one thing.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, date_time_ymd,
};
use rustls::pki_types::UnixTime;
use std::time::Duration;
use zeroize::Zeroizing;

use super::*;

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca(cn: &str) -> Ca {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.not_before = date_time_ymd(2020, 1, 1);
    p.not_after = date_time_ymd(2099, 1, 1);
    let key = KeyPair::generate().unwrap();
    let pem = p.self_signed(&key).unwrap().pem();
    Ca { issuer: Issuer::new(p, key), pem }
}

impl Ca {
    fn intermediate(&self, cn: &str) -> Ca {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = date_time_ymd(2099, 1, 1);
        let key = KeyPair::generate().unwrap();
        let pem = p.signed_by(&key, &self.issuer).unwrap().pem();
        Ca { issuer: Issuer::new(p, key), pem }
    }

    /// A leaf for `names`, valid 2020..2099, serverAuth; `tweak` changes the params first.
    fn leaf(&self, names: &[&str], tweak: impl FnOnce(&mut CertificateParams)) -> (String, String) {
        let mut p = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = date_time_ymd(2099, 1, 1);
        tweak(&mut p);
        let key = KeyPair::generate().unwrap();
        (p.signed_by(&key, &self.issuer).unwrap().pem(), key.serialize_pem())
    }
}

fn input(cert: &str, key: &str, ca: &str) -> CertificateInput {
    CertificateInput { cert_pem: cert.into(), key_pem: Zeroizing::new(key.into()), ca_pem: ca.into() }
}

fn now() -> UnixTime {
    UnixTime::now()
}

fn at(year_secs: u64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(year_secs))
}

const NAMES: &[&str] = &["pg-1.db.example.com"];

fn names() -> Vec<String> {
    NAMES.iter().map(|n| (*n).to_owned()).collect()
}

#[test]
fn a_leaf_with_its_intermediate_chaining_to_the_ca_is_accepted() {
    let root = ca("root");
    let mid = root.intermediate("intermediate");
    let (leaf, key) = mid.leaf(NAMES, |_| {});
    let chain = format!("{leaf}{}", mid.pem);
    let ok = validate(input(&chain, &key, &root.pem), &names(), now()).unwrap();
    assert_eq!(ok.fingerprint.len(), 64);
    assert!(ok.subject.contains("pg-1.db.example.com"), "{}", ok.subject);
    assert_eq!(ok.not_after, 4_070_908_800, "2099-01-01");
    let summary = summarize(chain.as_bytes()).unwrap();
    assert_eq!(summary.fingerprint, ok.fingerprint, "the summary reads the leaf, the first certificate");
    assert_eq!(summary.names, NAMES);
}

#[test]
fn a_key_of_another_certificate_is_refused_by_name() {
    let root = ca("root");
    let (leaf, key) = root.leaf(NAMES, |_| {});
    let (_, other_key) = root.leaf(NAMES, |_| {});
    let e = validate(input(&leaf, &other_key, &root.pem), &names(), now()).err().unwrap();
    assert!(matches!(e, DbTlsError::KeyMismatch { .. }), "{e:?}");
    assert_eq!(crate::error::HasErrorCode::code(&e), crate::error::ErrorCode::InvalidArgument);
    assert!(e.to_string().contains("does not match the certificate"), "{e}");
    assert!(!e.to_string().contains("PRIVATE"), "the message never carries the key: {e}");
    validate(input(&leaf, &key, &root.pem), &names(), now()).unwrap();
}

#[test]
fn a_chain_to_another_ca_or_without_its_intermediate_is_refused() {
    let root = ca("root");
    let stranger = ca("stranger");
    let mid = root.intermediate("intermediate");
    let (leaf, key) = mid.leaf(NAMES, |_| {});
    let e = validate(input(&format!("{leaf}{}", mid.pem), &key, &stranger.pem), &names(), now()).err().unwrap();
    assert!(matches!(e, DbTlsError::ChainDoesNotVerify { .. }), "{e:?}");
    assert!(e.to_string().contains("unknown issuer"), "{e}");
    let e = validate(input(&leaf, &key, &root.pem), &names(), now()).err().unwrap();
    assert!(matches!(e, DbTlsError::ChainDoesNotVerify { .. }), "without its intermediate: {e:?}");
    validate(input(&format!("{leaf}{}", mid.pem), &key, &root.pem), &names(), now()).unwrap();
    // ca_pem holds trust anchors: an intermediate given there is trusted as one (the operator's choice).
    validate(input(&leaf, &key, &mid.pem), &names(), now()).unwrap();
}

#[test]
fn an_expired_or_not_yet_valid_certificate_is_refused_with_its_date() {
    let root = ca("root");
    let (leaf, key) = root.leaf(NAMES, |p| {
        p.not_before = date_time_ymd(2030, 1, 1);
        p.not_after = date_time_ymd(2031, 1, 1);
    });
    let e = validate(input(&leaf, &key, &root.pem), &names(), at(1_800_000_000)).err().unwrap();
    assert!(matches!(e, DbTlsError::NotYetValid { .. }), "2027 is before 2030: {e:?}");
    assert!(e.to_string().contains("2030-01-01"), "{e}");
    let e = validate(input(&leaf, &key, &root.pem), &names(), at(1_990_000_000)).err().unwrap();
    assert!(matches!(e, DbTlsError::Expired { .. }), "{e:?}");
    assert!(e.to_string().contains("2031-01-01"), "{e}");
    validate(input(&leaf, &key, &root.pem), &names(), at(1_920_000_000)).unwrap();
}

#[test]
fn a_certificate_for_another_name_is_refused_naming_both() {
    let root = ca("root");
    let (leaf, key) = root.leaf(&["pg-2.db.example.com"], |_| {});
    let e = validate(input(&leaf, &key, &root.pem), &names(), now()).err().unwrap();
    assert!(matches!(e, DbTlsError::NameMismatch { .. }), "{e:?}");
    assert!(e.to_string().contains("pg-1.db.example.com") && e.to_string().contains("pg-2.db.example.com"), "{e}");
    let (leaf, key) = root.leaf(&["pg-1.db.example.com", "db-host-7"], |_| {});
    let both = vec!["pg-1.db.example.com".to_owned(), "db-host-7".to_owned()];
    validate(input(&leaf, &key, &root.pem), &both, now()).unwrap();
    let (wild, wkey) = root.leaf(&["*.db.example.com"], |_| {});
    validate(input(&wild, &wkey, &root.pem), &names(), now()).expect("a wildcard covers the instance's name");
}

#[test]
fn a_client_only_certificate_is_refused() {
    let root = ca("root");
    let (leaf, key) = root.leaf(NAMES, |p| p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth]);
    let e = validate(input(&leaf, &key, &root.pem), &names(), now()).err().unwrap();
    assert!(matches!(e, DbTlsError::NotForServers), "{e:?}");
    let (leaf, key) = root.leaf(NAMES, |p| p.extended_key_usages = Vec::new());
    validate(input(&leaf, &key, &root.pem), &names(), now()).expect("no EKU at all allows every use");
}

#[test]
fn missing_oversized_and_malformed_fields_are_refused_by_field() {
    let root = ca("root");
    let (leaf, key) = root.leaf(NAMES, |_| {});
    let cases: Vec<(CertificateInput, &str)> = vec![
        (input("", &key, &root.pem), "cert_pem is required"),
        (input(&leaf, "", &root.pem), "key_pem is required"),
        (input(&leaf, &key, ""), "ca_pem is required"),
        (input(&"x".repeat(MAX_CERT_PEM + 1), &key, &root.pem), "cert_pem is larger than"),
        (input(&leaf, &"x".repeat(MAX_KEY_PEM + 1), &root.pem), "key_pem is larger than"),
        (input(&leaf, &key, &"x".repeat(MAX_CA_PEM + 1)), "ca_pem is larger than"),
        (input("not pem", &key, &root.pem), "cert_pem is not valid PEM"),
        (input(&leaf, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", &root.pem), "key_pem"),
        (input(&leaf.repeat(MAX_CERTS + 1), &key, &root.pem), "more than 10 certificates"),
        (input(&key, &key, &root.pem), "cert_pem is not valid PEM"),
    ];
    for (bad, expected) in cases {
        let e = validate(bad, &names(), now()).err().unwrap();
        assert!(e.to_string().contains(expected), "expected {expected:?}, got {e}");
        assert_eq!(crate::error::HasErrorCode::code(&e), crate::error::ErrorCode::InvalidArgument, "{e}");
    }
    validate(input(&leaf, &key, &root.pem), &names(), now()).unwrap();
}

#[test]
fn a_malformed_key_is_refused_without_quoting_it() {
    let root = ca("root");
    let (leaf, _) = root.leaf(NAMES, |_| {});
    let secret = "-----BEGIN PRIVATE KEY-----\nU0VDUkVUU0VDUkVU\n-----END PRIVATE KEY-----\n";
    let e = validate(input(&leaf, secret, &root.pem), &names(), now()).err().unwrap();
    assert!(!e.to_string().contains("U0VDUkVU"), "{e}");
    let debug = format!("{:?}", input(&leaf, secret, &root.pem));
    assert!(!debug.contains("U0VDUkVU"), "Debug leaves the key out: {debug}");
}

#[test]
fn required_names_fill_host_and_instance() {
    let t = vec!["{host}".to_owned(), "{instance}.db.example.com".to_owned()];
    assert_eq!(required_names(&t, "db-7", "pg-1"), ["db-7", "pg-1.db.example.com"]);
}
