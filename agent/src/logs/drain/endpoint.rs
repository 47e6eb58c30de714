//! Where a drain sends: `HOST:PORT` addresses, `https://` URLs, and the CA certificates that
//! authenticate the receiver. Validation of a drain and its transport both read them here.

use rustls::pki_types::CertificateDer;

use crate::logs::error::PemProblem;

/// `https://HOST[:PORT][/PATH]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsUrl {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl HttpsUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("https://").ok_or("must start with https://")?;
        let (authority, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
        if authority.contains('@') {
            // The transport sends no user-info; a credential there would only be shown back.
            return Err("must not carry user:password@ (a token belongs in the path or query)".into());
        }
        let (host, port) = match split_host_port(authority) {
            Some((h, p)) => (h, p),
            None => (authority.trim_start_matches('[').trim_end_matches(']').to_owned(), 443),
        };
        if host.is_empty() || path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err("must be https://HOST[:PORT]/PATH".into());
        }
        Ok(Self { host, port, path })
    }

    /// `host:port` for connecting and for the `Host` header; an IPv6 host in brackets.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// `url` with what may be a credential replaced: the user-info and the query. For callers who may
/// read a drain's configuration but not its secrets (the monitor role).
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").map_or(("", url), |(s, r)| (s, r));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host = authority.rsplit_once('@').map_or(authority.to_owned(), |(_, h)| format!("REDACTED@{h}"));
    let tail = tail.split('#').next().unwrap_or("");
    let tail = tail.split_once('?').map_or(tail.to_owned(), |(path, _)| format!("{path}?REDACTED"));
    let scheme = if scheme.is_empty() { String::new() } else { format!("{scheme}://") };
    format!("{scheme}{host}{tail}")
}

/// `host:port` or `[v6]:port`.
pub fn split_host_port(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    (!host.is_empty() && !host.contains(':') || address.starts_with('[')).then(|| (host.to_owned(), port))
}

/// The CA certificates of a PEM bundle, for verifying a drain's server certificate.
pub fn roots_from_pem(pem: &str) -> Result<rustls::RootCertStore, PemProblem> {
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut pem.as_bytes()).collect::<Result<_, _>>().map_err(PemProblem::Unreadable)?;
    if certs.is_empty() {
        return Err(PemProblem::NoCertificate);
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in certs {
        roots.add(c).map_err(PemProblem::Refused)?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_urls() {
        assert_eq!(split_host_port("127.0.0.1:514"), Some(("127.0.0.1".into(), 514)));
        assert_eq!(split_host_port("[::1]:6514"), Some(("::1".into(), 6514)));
        assert_eq!(split_host_port("logs.example:0"), None);
        assert_eq!(split_host_port("::1:514"), None);
        let u = HttpsUrl::parse("https://logs.example:8443/v1/ingest?x=1").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("logs.example", 8443, "/v1/ingest?x=1"));
        assert_eq!(HttpsUrl::parse("https://logs.example").unwrap().path, "/");
        assert_eq!(u.authority(), "logs.example:8443");
        let v6 = HttpsUrl::parse("https://[::1]:8443/in").unwrap();
        assert_eq!((v6.host.as_str(), v6.authority().as_str()), ("::1", "[::1]:8443"));
        assert!(HttpsUrl::parse("http://x/").is_err());
        assert!(HttpsUrl::parse("https://user:pw@logs.example/").unwrap_err().contains("user:password@"));
    }

    #[test]
    fn redaction_hides_user_info_and_query_and_keeps_the_rest() {
        assert_eq!(
            redact_url("https://logs.example:8443/v1/ingest?token=s3cret&x=1"),
            "https://logs.example:8443/v1/ingest?REDACTED"
        );
        assert_eq!(redact_url("https://user:pw@logs.example/in"), "https://REDACTED@logs.example/in");
        assert_eq!(redact_url("https://u:p@h?k=v#frag"), "https://REDACTED@h?REDACTED");
        assert_eq!(redact_url("https://logs.example/in"), "https://logs.example/in", "nothing secret, unchanged");
    }

    #[test]
    fn a_pem_without_certificates_is_named_as_such() {
        assert!(matches!(roots_from_pem("garbage"), Err(PemProblem::NoCertificate)));
        let cert = rcgen::generate_simple_self_signed(vec!["logs.example".into()]).unwrap().cert.pem();
        assert_eq!(roots_from_pem(&cert).unwrap().len(), 1);
    }
}
