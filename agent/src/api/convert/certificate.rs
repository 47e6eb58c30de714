//! Database certificates: InstallCertificate's request in, GetCertificate's answer out.

use dbagent_proto::v1 as pb;
use zeroize::Zeroizing;

use super::timestamp;
use crate::dbtls::service::{Installed, unix_time};
use crate::dbtls::validate::CertificateInput;

/// The request's PEM texts; the key moves into a zeroizing buffer and out of the request.
pub fn certificate_input(mut req: pb::InstallCertificateRequest) -> CertificateInput {
    CertificateInput {
        cert_pem: std::mem::take(&mut req.cert_pem),
        key_pem: Zeroizing::new(std::mem::take(&mut req.key_pem)),
        ca_pem: std::mem::take(&mut req.ca_pem),
    }
}

pub fn certificate_info(instance_id: &str, installed: Option<&Installed>) -> pb::CertificateInfo {
    let Some(i) = installed else {
        return pb::CertificateInfo { instance_id: instance_id.to_owned(), ..Default::default() };
    };
    pb::CertificateInfo {
        instance_id: instance_id.to_owned(),
        installed: true,
        subject: i.summary.subject.clone(),
        fingerprint_sha256: i.summary.fingerprint.clone(),
        not_after: Some(timestamp(unix_time(i.summary.not_after))),
        seconds_left: i.seconds_left,
        names: i.summary.names.clone(),
        expires_soon: i.warn,
    }
}
