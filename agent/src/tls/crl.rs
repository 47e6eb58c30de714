//! Client CRLs: read as PEM or DER, and checked for freshness. A CRL past its nextUpdate no longer
//! says whether a certificate was revoked since; `tls.stale_crl` says whether that refuses the
//! certificates it covers or is reported (an error in the log, the `dbagent_node_tls_stale_crls`
//! metric) while the agent keeps serving.

use rustls::pki_types::CertificateRevocationListDer;
use rustls::pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use super::TlsError;

/// One loaded CRL: its DER for the verifier, and when it stops being current.
pub struct LoadedCrl {
    pub der: CertificateRevocationListDer<'static>,
    pub path: PathBuf,
    /// Unix seconds of nextUpdate; `None` when the CRL has none (then it never goes stale).
    pub next_update: Option<i64>,
}

/// Reads every CRL of `paths`. A file that starts with a PEM header may hold several CRLs; any
/// other file is one DER CRL.
pub fn load_crls(paths: &[PathBuf]) -> Result<Vec<LoadedCrl>, TlsError> {
    let mut crls = Vec::new();
    for path in paths {
        let bytes = std::fs::read(path).map_err(|e| TlsError::io("read", path, e))?;
        let ders: Vec<CertificateRevocationListDer<'static>> = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
            CertificateRevocationListDer::pem_slice_iter(&bytes)
                .collect::<Result<_, _>>()
                .map_err(|e| pem_error(path, format!("not a PEM CRL: {e}")))?
        } else {
            vec![CertificateRevocationListDer::from(bytes)]
        };
        if ders.is_empty() {
            return Err(pem_error(path, "holds no CRL".into()));
        }
        for der in ders {
            let next_update = match CertificateRevocationList::from_der(der.as_ref()) {
                Ok((_, crl)) => crl.next_update().map(|t| t.timestamp()),
                Err(e) => return Err(pem_error(path, format!("not a CRL (PEM or DER): {e}"))),
            };
            crls.push(LoadedCrl { der, path: path.clone(), next_update });
        }
    }
    Ok(crls)
}

fn pem_error(path: &Path, message: String) -> TlsError {
    TlsError::Pem { path: path.to_path_buf(), message }
}

/// The CRLs whose nextUpdate is before `now` (Unix seconds).
pub fn stale(crls: &[LoadedCrl], now: i64) -> impl Iterator<Item = &LoadedCrl> {
    crls.iter().filter(move |c| c.next_update.is_some_and(|next| next < now))
}

/// The nextUpdate of every CRL in use, for the metric: it counts the stale ones at each sample,
/// so a CRL that goes stale while the agent runs shows without a reload.
/// One process, one TLS configuration: a global is the narrowest way to hand it to the collector.
/// `None` until a configuration is loaded; then the nextUpdate of each CRL that has one.
static IN_USE: Mutex<Option<Vec<i64>>> = Mutex::new(None);

pub(super) fn publish(crls: &[LoadedCrl]) {
    let next = (!crls.is_empty()).then(|| crls.iter().filter_map(|c| c.next_update).collect());
    *IN_USE.lock().unwrap_or_else(|p| p.into_inner()) = next;
}

/// How many CRLs in use are past their nextUpdate at `now` (Unix seconds); `None` when the API
/// uses no CRL (then there is nothing to report).
pub fn stale_in_use(now: i64) -> Option<u64> {
    let in_use = IN_USE.lock().unwrap_or_else(|p| p.into_inner());
    in_use.as_ref().map(|next| next.iter().filter(|&&next| next < now).count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateRevocationListParams, IsCa, KeyIdMethod, KeyPair, SerialNumber};

    fn crl(next_update_year: i32) -> rcgen::CertificateRevocationList {
        let key = KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::CrlSign, rcgen::KeyUsagePurpose::KeyCertSign];
        let issuer = rcgen::Issuer::new(params, key);
        CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2020, 1, 1),
            next_update: rcgen::date_time_ymd(next_update_year, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&issuer)
        .unwrap()
    }

    #[test]
    fn pem_and_der_crls_both_load() {
        let dir = tempfile::tempdir().unwrap();
        let (pem, der) = (dir.path().join("a.crl.pem"), dir.path().join("b.crl"));
        let (a, b) = (crl(2099), crl(2098));
        std::fs::write(&pem, a.pem().unwrap()).unwrap();
        std::fs::write(&der, a.der().as_ref()).unwrap();
        let loaded = load_crls(&[pem.clone(), der.clone()]).unwrap();
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded[0].der.as_ref(), a.der().as_ref(), "the PEM file gives the CRL's DER");
        assert_eq!(loaded[1].der.as_ref(), a.der().as_ref(), "the DER file is taken as is");
        assert!(loaded[0].next_update.is_some_and(|t| t > 4_000_000_000));
        // A PEM file may hold several CRLs.
        std::fs::write(&pem, format!("{}{}", a.pem().unwrap(), b.pem().unwrap())).unwrap();
        assert_eq!(load_crls(&[pem]).unwrap().len(), 2);
    }

    #[test]
    fn a_file_that_is_no_crl_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.crl");
        std::fs::write(&junk, b"\x30\x03\x02\x01\x01").unwrap();
        let e = load_crls(std::slice::from_ref(&junk)).err().unwrap().to_string();
        assert!(e.contains("junk.crl") && e.contains("not a CRL"), "{e}");
        std::fs::write(&junk, b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        let e = load_crls(&[junk]).err().unwrap().to_string();
        assert!(e.contains("holds no CRL"), "{e}");
    }

    #[test]
    fn stale_is_past_next_update() {
        let dir = tempfile::tempdir().unwrap();
        let (old, fresh) = (dir.path().join("old.crl"), dir.path().join("fresh.crl"));
        std::fs::write(&old, crl(2021).der().as_ref()).unwrap();
        std::fs::write(&fresh, crl(2099).der().as_ref()).unwrap();
        let loaded = load_crls(&[old.clone(), fresh]).unwrap();
        let now = 1_800_000_000; // 2027
        let names: Vec<_> = stale(&loaded, now).map(|c| c.path.clone()).collect();
        assert_eq!(names, vec![old]);
        assert_eq!(stale(&loaded, 1_600_000_000).count(), 0, "before 2021 nothing is stale");
    }
}
