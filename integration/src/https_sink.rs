//! A real HTTPS log receiver on 127.0.0.1 for the agent's HTTPS drain: TLS with a certificate from
//! [`crate::pki`], one HTTP/1.1 POST per connection, the body kept as JSON lines. The first
//! `reject_first` requests are answered 503 (their bodies are kept apart), later ones 200. Its task
//! is aborted on drop.

use crate::pki::IssuedCert;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// One POST the sink read completely.
#[derive(Debug, Clone)]
pub struct Post {
    pub path: String,
    pub host: String,
    pub content_type: String,
    pub body: Vec<u8>,
    /// The status the sink answered with.
    pub status: u16,
}

impl Post {
    /// The body's JSON lines; panics on a line that is not JSON.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.body
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_slice(l)
                    .unwrap_or_else(|e| panic!("a POSTed line is not JSON ({e}): {}", String::from_utf8_lossy(l)))
            })
            .collect()
    }
}

#[derive(Default)]
struct Seen {
    posts: Vec<Post>,
    errors: Vec<String>,
}

pub struct HttpsSink {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
}

impl HttpsSink {
    /// Listens on 127.0.0.1 with `server` (a certificate for 127.0.0.1, e.g. `CertAuthority::server`).
    pub async fn start(server: &IssuedCert, reject_first: usize) -> Self {
        crate::install_crypto_provider();
        let certs = rustls_pemfile::certs(&mut server.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("parse the sink's certificate");
        let key = rustls_pemfile::private_key(&mut server.key_pem.as_bytes())
            .expect("parse the sink's key")
            .expect("the sink's key PEM holds a key");
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("build the sink's TLS config");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind the HTTPS sink on 127.0.0.1");
        let addr = listener.local_addr().expect("read the sink's address");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = seen.clone();
        let task = tokio::spawn(async move {
            let mut served = 0usize;
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let status = if served < reject_first { 503 } else { 200 };
                served += 1;
                let (acceptor, seen) = (acceptor.clone(), shared.clone());
                tokio::spawn(async move {
                    if let Err(e) = serve_one(&acceptor, tcp, status, &seen).await {
                        lock(&seen).errors.push(e);
                    }
                });
            }
        });
        Self { addr, seen, task }
    }

    /// `127.0.0.1:PORT`, what the `Host` header should say.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// Every POST read so far, in arrival order, whatever it was answered.
    pub fn posts(&self) -> Vec<Post> {
        lock(&self.seen).posts.clone()
    }

    /// What went wrong on connections (a client that hung up mid-request, a bad request).
    pub fn errors(&self) -> Vec<String> {
        lock(&self.seen).errors.clone()
    }

    /// The JSON lines of the POSTs answered 200.
    pub fn accepted_lines(&self) -> Vec<serde_json::Value> {
        self.posts().iter().filter(|p| p.status == 200).flat_map(Post::json_lines).collect()
    }

    /// Waits until `done` holds for the accepted lines, or `timeout`; returns them either way.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.accepted_lines();
            if done(&lines) || Instant::now() > deadline {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Drop for HttpsSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_one(
    acceptor: &TlsAcceptor,
    tcp: tokio::net::TcpStream,
    status: u16,
    seen: &Mutex<Seen>,
) -> Result<(), String> {
    let mut tls = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_owned())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let (head, mut body) = read_head(&mut tls).await?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let mut parts = request_line.split(' ');
    let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default().to_owned());
    if method != "POST" {
        return Err(format!("expected a POST, got {request_line:?}"));
    }
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|l| {
            l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_owned())
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no Content-Length in {head:?}"))?;
    let content_type = header("content-type").unwrap_or_default();
    let host = header("host").unwrap_or_default();
    while body.len() < length {
        let mut buf = [0u8; 16 * 1024];
        let n = tls.read(&mut buf).await.map_err(|e| format!("read the body: {e}"))?;
        if n == 0 {
            return Err(format!("the client closed after {} of {length} body bytes", body.len()));
        }
        body.extend_from_slice(&buf[..n]);
    }
    let reason = if status == 200 { "OK" } else { "Service Unavailable" };
    let answer_body = if status == 200 { "" } else { "busy, try later" };
    let answer = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer_body}",
        answer_body.len()
    );
    // Record before answering: once the client has its 200 the data counts as delivered.
    lock(seen).posts.push(Post { path, host, content_type, body, status });
    tls.write_all(answer.as_bytes()).await.map_err(|e| format!("write the answer: {e}"))?;
    let _ = tls.shutdown().await;
    Ok(())
}

/// Reads up to the end of the header block; returns it and the body bytes that came with it.
async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> Result<(String, Vec<u8>), String> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).into_owned();
            return Ok((head, data[end + 4..].to_vec()));
        }
        if data.len() > 64 * 1024 {
            return Err("the request head is over 64 KiB".into());
        }
        let n = s.read(&mut buf).await.map_err(|e| format!("read the request head: {e}"))?;
        if n == 0 {
            return Err(format!("the client closed before the end of the head ({} bytes)", data.len()));
        }
        data.extend_from_slice(&buf[..n]);
    }
}
