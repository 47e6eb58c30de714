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

use rustls::pki_types::ServerName;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::endpoint::{HttpsUrl, roots_from_pem, split_host_port};
use super::policy::{DrainPolicy, ResolveError};
use super::{DrainSpec, DrainTarget};
use crate::logs::error::{LogsError, PemProblem};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// For writing a batch and for the receiver to close after it.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

pub struct Transport {
    kind: Kind,
    policy: DrainPolicy,
}

enum Kind {
    Syslog { address: String, host: String, port: u16, tls: Option<(TlsConnector, ServerName<'static>)> },
    Https { url: HttpsUrl, tls: TlsConnector, server_name: ServerName<'static> },
}

/// A TLS client trusting the drain's `ca_pem`, or the system CA bundle when it is empty.
fn connector(ca_pem: &str) -> Result<TlsConnector, LogsError> {
    let roots = if ca_pem.is_empty() {
        system_roots(Path::new(SYSTEM_CA_BUNDLE))?
    } else {
        roots_from_pem(ca_pem).map_err(LogsError::InvalidCaPem)?
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(LogsError::TlsSetup)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

fn system_roots(path: &Path) -> Result<rustls::RootCertStore, LogsError> {
    let unusable = |problem| LogsError::SystemCaBundle { path: path.to_owned(), problem };
    let pem = std::fs::read_to_string(path).map_err(|e| unusable(PemProblem::Unreadable(e)))?;
    roots_from_pem(&pem).map_err(unusable)
}

fn server_name(drain: &str, host: &str) -> Result<ServerName<'static>, LogsError> {
    ServerName::try_from(host.to_owned()).map_err(|e| LogsError::InvalidDrain {
        drain: drain.to_owned(),
        reason: format!("host {host:?} is not a TLS server name: {e}"),
    })
}

impl Transport {
    /// A transport for `spec` that connects only where `policy` allows, checked on every connection.
    pub fn new(spec: &DrainSpec, policy: DrainPolicy) -> Result<Self, LogsError> {
        let kind = match &spec.target {
            DrainTarget::Syslog { address, tls, ca_pem } => {
                let (host, port) = split_host_port(address).ok_or_else(|| LogsError::InvalidDrain {
                    drain: spec.name.clone(),
                    reason: format!("address {address:?} is not HOST:PORT"),
                })?;
                let tls = if *tls { Some((connector(ca_pem)?, server_name(&spec.name, &host)?)) } else { None };
                Kind::Syslog { address: address.clone(), host, port, tls }
            }
            DrainTarget::Https { url, ca_pem } => {
                let url = HttpsUrl::parse(url).map_err(|reason| LogsError::InvalidDrain {
                    drain: spec.name.clone(),
                    reason: format!("url {reason}"),
                })?;
                let server_name = server_name(&spec.name, &url.host)?;
                Kind::Https { tls: connector(ca_pem)?, server_name, url }
            }
        };
        Ok(Self { kind, policy })
    }

    /// Sends `data` and returns once the receiver acknowledged it (see the module docs).
    pub async fn deliver(&self, data: &[u8]) -> Result<(), LogsError> {
        match &self.kind {
            Kind::Syslog { address, host, port, tls } => {
                let tcp = self.connect(address, host, *port, tls.is_none()).await?;
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
                let tcp = self.connect(&address, &url.host, url.port, false).await?;
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
            Err(LogsError::DrainRefused {
                address: address.to_owned(),
                status: code,
                body: crate::ids::truncate_for_message(body.trim()),
            })
        }
        None => read.and(Err(LogsError::NoHttpStatus { address: address.to_owned() })),
    }
}

impl Transport {
    /// Resolves `host`, keeps the addresses the policy allows, and connects to one of those: the
    /// checked address is the one connected to, never a second resolution of the name.
    async fn connect(&self, address: &str, host: &str, port: u16, plaintext: bool) -> Result<TcpStream, LogsError> {
        let addrs = match self.policy.resolve(host, port, plaintext).await {
            Ok(a) => a,
            Err(ResolveError::Refused(reason)) => {
                return Err(LogsError::DestinationRefused { address: address.to_owned(), reason: reason.to_string() });
            }
            Err(ResolveError::Lookup(source)) => {
                return Err(LogsError::Delivery { address: address.to_owned(), step: "resolve", source });
            }
        };
        let tcp = timed(address, "connect", TcpStream::connect(&addrs[..])).await?;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }
}

async fn timed<T>(
    address: &str,
    step: &'static str,
    f: impl Future<Output = std::io::Result<T>>,
) -> Result<T, LogsError> {
    let limit = if step == "connect" || step == "TLS handshake" { CONNECT_TIMEOUT } else { IO_TIMEOUT };
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(LogsError::Delivery { address: address.to_owned(), step, source }),
        Err(_) => Err(LogsError::DeliveryTimedOut { address: address.to_owned(), step, limit }),
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

    use crate::error::{ErrorCode, HasErrorCode};

    #[test]
    fn http_answers() {
        assert!(check_http_answer("a", b"HTTP/1.1 204 No Content\r\n\r\n", Ok(())).is_ok());
        let e = check_http_answer("a", b"HTTP/1.1 503 Busy\r\n\r\ntry later", Ok(())).unwrap_err();
        assert!(matches!(&e, LogsError::DrainRefused { status: 503, body, .. } if body == "try later"), "{e}");
        assert_eq!(e.code(), ErrorCode::Unavailable);
        let e = check_http_answer("a", b"", Ok(())).unwrap_err();
        assert!(matches!(e, LogsError::NoHttpStatus { .. }), "{e}");
    }

    fn drain(target: DrainTarget) -> DrainSpec {
        DrainSpec { name: "d".into(), target }
    }

    /// A receiver on 127.0.0.1 that reads each connection to its end and closes it.
    async fn loopback_receiver() -> (u16, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            got
        });
        (port, task)
    }

    #[tokio::test]
    async fn delivery_connects_only_where_the_policy_allows_on_every_resolution() {
        use crate::logs::settings::DrainPolicyConfig;
        let (port, receiver) = loopback_receiver().await;
        let spec =
            drain(DrainTarget::Syslog { address: format!("localhost:{port}"), tls: false, ca_pem: String::new() });
        // "localhost" passes the name check; its addresses are loopback, refused on resolution.
        let strict = Transport::new(&spec, DrainPolicy::default()).unwrap();
        let e = strict.deliver(b"x").await.unwrap_err();
        assert!(matches!(&e, LogsError::DestinationRefused { reason, .. } if reason.contains("loopback")), "{e}");
        assert_eq!(e.code(), ErrorCode::FailedPrecondition);
        // Allowed path: the same drain under the loopback policy delivers.
        let allowed = Transport::new(&spec, DrainPolicy::new(&DrainPolicyConfig::loopback())).unwrap();
        allowed.deliver(b"<14>1 - h a - - - hello\n").await.unwrap();
        assert_eq!(receiver.await.unwrap(), b"<14>1 - h a - - - hello\n");
    }

    #[test]
    fn a_bad_ca_pem_is_invalid_and_an_unreadable_system_bundle_a_node_problem() {
        let bad_ca = drain(DrainTarget::Https { url: "https://logs.example/in".into(), ca_pem: "garbage".into() });
        let e =
            Transport::new(&bad_ca, DrainPolicy::default()).err().expect("a ca_pem without certificates is refused");
        assert!(matches!(e, LogsError::InvalidCaPem(PemProblem::NoCertificate)), "{e}");
        assert_eq!(e.code(), ErrorCode::InvalidArgument);

        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("ca-certificates.crt");
        let e = system_roots(&missing).unwrap_err();
        assert!(matches!(&e, LogsError::SystemCaBundle { problem: PemProblem::Unreadable(_), .. }), "{e}");
        assert_eq!(e.code(), ErrorCode::FailedPrecondition);
        std::fs::write(&missing, "no pem here").unwrap();
        let e = system_roots(&missing).unwrap_err();
        assert!(matches!(&e, LogsError::SystemCaBundle { problem: PemProblem::NoCertificate, .. }), "{e}");

        // The allowed path: a CA PEM with a certificate sets the transport up.
        let cert = rcgen::generate_simple_self_signed(vec!["logs.example".into()]).unwrap().cert.pem();
        let good = drain(DrainTarget::Https { url: "https://logs.example/in".into(), ca_pem: cert.clone() });
        assert!(Transport::new(&good, DrainPolicy::default()).is_ok());
        std::fs::write(&missing, &cert).unwrap();
        assert_eq!(system_roots(&missing).unwrap().len(), 1);
    }

    #[test]
    fn a_stored_drain_with_a_bad_address_names_the_drain() {
        let no_port = drain(DrainTarget::Syslog { address: "logs.example".into(), tls: true, ca_pem: String::new() });
        let e = Transport::new(&no_port, DrainPolicy::default()).err().expect("an address without a port is refused");
        assert!(matches!(&e, LogsError::InvalidDrain { drain, .. } if drain == "d"), "{e}");
        let plain = drain(DrainTarget::Syslog { address: "127.0.0.1:514".into(), tls: false, ca_pem: String::new() });
        assert!(Transport::new(&plain, DrainPolicy::default()).is_ok());
    }
}
