//! Delivering one batch of wire bytes, and knowing that it arrived.
//!
//! syslog has no application-level acknowledgement. A batch counts as delivered when, after writing
//! it, we half-close the connection (FIN; with TLS close_notify first) and the receiver closes its side
//! in turn (EOF). A receiver that closes with unread data makes its kernel answer with a reset instead,
//! so EOF means its process read every byte of the batch. One connection per batch is the price; a
//! batch is up to `batch_max_bytes`, so it is small next to the data. What this cannot see: the
//! receiver losing data it already read (its own queue, its crash) — that is the receiver's guarantee.
//!
//! HTTPS: one POST per batch; any 2xx answer is the acknowledgement.

use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{DrainSpec, DrainTarget};
use crate::logs::LogsError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// For writing a batch and for the receiver to close after it.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

pub struct Transport {
    kind: Kind,
}

enum Kind {
    Syslog { address: String, tls: Option<(TlsConnector, ServerName<'static>)> },
    Https { url: HttpsUrl, tls: TlsConnector, server_name: ServerName<'static> },
}

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

/// `host:port` or `[v6]:port`.
pub fn split_host_port(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    (!host.is_empty() && !host.contains(':') || address.starts_with('[')).then(|| (host.to_owned(), port))
}

pub fn roots_from_pem(pem: &str) -> Result<rustls::RootCertStore, LogsError> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| LogsError::Tls(format!("read CA PEM: {e}")))?;
    if certs.is_empty() {
        return Err(LogsError::Tls("no certificate found in the CA PEM".into()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in certs {
        roots.add(c).map_err(|e| LogsError::Tls(format!("use CA certificate: {e}")))?;
    }
    Ok(roots)
}

fn connector(ca_pem: &str) -> Result<TlsConnector, LogsError> {
    let roots = if ca_pem.is_empty() {
        let pem = std::fs::read_to_string(SYSTEM_CA_BUNDLE).map_err(|e| {
            LogsError::Tls(format!("no ca_pem given and the system CA bundle {SYSTEM_CA_BUNDLE} is unreadable: {e}"))
        })?;
        roots_from_pem(&pem)?
    } else {
        roots_from_pem(ca_pem)?
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| LogsError::Tls(format!("TLS versions: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

fn server_name(host: &str) -> Result<ServerName<'static>, LogsError> {
    ServerName::try_from(host.to_owned()).map_err(|e| LogsError::Tls(format!("server name {host:?}: {e}")))
}

impl Transport {
    pub fn new(spec: &DrainSpec) -> Result<Self, LogsError> {
        let kind = match &spec.target {
            DrainTarget::Syslog { address, tls, ca_pem } => {
                let tls = if *tls {
                    let (host, _) = split_host_port(address)
                        .ok_or_else(|| LogsError::Drain(format!("address {address:?} is not HOST:PORT")))?;
                    Some((connector(ca_pem)?, server_name(&host)?))
                } else {
                    None
                };
                Kind::Syslog { address: address.clone(), tls }
            }
            DrainTarget::Https { url, ca_pem } => {
                let url = HttpsUrl::parse(url).map_err(LogsError::Drain)?;
                let server_name = server_name(&url.host)?;
                Kind::Https { tls: connector(ca_pem)?, server_name, url }
            }
        };
        Ok(Self { kind })
    }

    /// Sends `data` and returns once the receiver acknowledged it (see the module docs).
    pub async fn deliver(&self, data: &[u8]) -> Result<(), LogsError> {
        match &self.kind {
            Kind::Syslog { address, tls } => {
                let tcp = connect(address).await?;
                match tls {
                    None => write_and_await_close(tcp, data, address).await,
                    Some((connector, name)) => {
                        let stream = timed(address, "TLS handshake", connector.connect(name.clone(), tcp)).await?;
                        write_and_await_close(stream, data, address).await
                    }
                }
            }
            Kind::Https { url, tls, server_name } => {
                let address = url.authority();
                let tcp = connect(&address).await?;
                let mut stream = timed(&address, "TLS handshake", tls.connect(server_name.clone(), tcp)).await?;
                let head = format!(
                    "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: dbagent/{}\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    url.path,
                    address,
                    env!("CARGO_PKG_VERSION"),
                    data.len()
                );
                timed(&address, "send", async {
                    stream.write_all(head.as_bytes()).await?;
                    stream.write_all(data).await?;
                    stream.flush().await
                })
                .await?;
                let mut answer = Vec::new();
                let read = timed(&address, "read the answer", async {
                    let mut buf = [0u8; 4096];
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) => return Ok(()),
                            Ok(n) if answer.len() < 65536 => answer.extend_from_slice(&buf[..n]),
                            Ok(_) => return Ok(()),
                            // Servers often skip close_notify after `Connection: close`.
                            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                            Err(e) => return Err(e),
                        }
                    }
                })
                .await;
                check_http_answer(&address, &answer, read)
            }
        }
    }
}

fn check_http_answer(address: &str, answer: &[u8], read: Result<(), LogsError>) -> Result<(), LogsError> {
    let text = String::from_utf8_lossy(answer);
    let status = text.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok());
    match status {
        Some(200..=299) => Ok(()),
        Some(code) => {
            let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            Err(LogsError::Drain(format!(
                "HTTPS drain {address} answered {code}: {}",
                crate::ids::truncate_for_message(body.trim())
            )))
        }
        None => read.and(Err(LogsError::Drain(format!("HTTPS drain {address} sent no HTTP status line")))),
    }
}

async fn connect(address: &str) -> Result<TcpStream, LogsError> {
    let tcp = timed(address, "connect", TcpStream::connect(address)).await?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

async fn timed<T>(address: &str, what: &str, f: impl Future<Output = std::io::Result<T>>) -> Result<T, LogsError> {
    let limit = if what == "connect" || what == "TLS handshake" { CONNECT_TIMEOUT } else { IO_TIMEOUT };
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(LogsError::Drain(format!("{what} {address}: {e}"))),
        Err(_) => Err(LogsError::Drain(format!("{what} {address}: no progress in {limit:?}"))),
    }
}

/// Writes the batch, half-closes, and waits for the receiver to close: EOF is the acknowledgement.
async fn write_and_await_close<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    data: &[u8],
    address: &str,
) -> Result<(), LogsError> {
    timed(address, "send", async {
        s.write_all(data).await?;
        s.shutdown().await
    })
    .await?;
    timed(address, "await the receiver's close", async {
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                // TLS peers that close the TCP connection without close_notify: they still read to our FIN.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    })
    .await
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
    }

    #[test]
    fn http_answers() {
        assert!(check_http_answer("a", b"HTTP/1.1 204 No Content\r\n\r\n", Ok(())).is_ok());
        let e = check_http_answer("a", b"HTTP/1.1 503 Busy\r\n\r\ntry later", Ok(())).unwrap_err();
        assert!(e.to_string().contains("503") && e.to_string().contains("try later"), "{e}");
        assert!(check_http_answer("a", b"", Ok(())).is_err());
    }
}
