//! What an engine serves right now: the agent's own TLS client connects the way the engine's
//! clients do (PostgreSQL's SSLRequest, MySQL's SSL request packet, Redis's TLS port), lets the
//! server prove it holds the key of the certificate it sends (the handshake signature is
//! checked), and returns that certificate. It trusts nothing else about it: the caller compares
//! it with the certificate it just installed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::instances::Engine;

/// Records the certificate the server sent, and checks only that the server signs with its key.
#[derive(Debug)]
struct Recorder {
    provider: Arc<CryptoProvider>,
    seen: Mutex<Option<Vec<u8>>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(end_entity.as_ref().to_vec());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// PostgreSQL's SSLRequest: length 8, code 80877103.
const PG_SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
/// MySQL capability flags: CLIENT_PROTOCOL_41 | CLIENT_SSL | CLIENT_SECURE_CONNECTION.
const MYSQL_CLIENT_SSL: u32 = 0x0800;
const MYSQL_CAPS: u32 = 0x0200 | MYSQL_CLIENT_SSL | 0x8000;
/// The largest greeting packet read from a MySQL server.
const MYSQL_MAX_GREETING: usize = 4096;

/// The leaf certificate (DER) the server at `addr` serves to a client of `engine`.
pub async fn served_certificate(engine: Engine, addr: SocketAddr, within: Duration) -> Result<Vec<u8>, String> {
    match tokio::time::timeout(within, fetch(engine, addr)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no TLS handshake with {addr} within {}s", within.as_secs())),
    }
}

async fn fetch(engine: Engine, addr: SocketAddr) -> Result<Vec<u8>, String> {
    let mut tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect to {addr}: {e}"))?;
    match engine {
        Engine::Postgresql => pg_starttls(&mut tcp).await?,
        Engine::Mariadb => mysql_starttls(&mut tcp).await?,
        Engine::Redis => {}
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let recorder = Arc::new(Recorder { provider: provider.clone(), seen: Mutex::new(None) });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::IpAddress(addr.ip().into());
    let handshake = connector.connect(name, tcp).await;
    let seen = recorder.seen.lock().unwrap_or_else(|p| p.into_inner()).take();
    match (handshake, seen) {
        (Ok(_), Some(cert)) => Ok(cert),
        // A server that asks for a client certificate (Redis's tls-auth-clients) ends the
        // handshake after it has sent and signed for its own: what it serves is known.
        (Err(_), Some(cert)) => Ok(cert),
        (Err(e), None) => Err(format!("TLS handshake with {addr}: {e}")),
        (Ok(_), None) => Err(format!("TLS handshake with {addr}: no certificate")),
    }
}

async fn pg_starttls(tcp: &mut TcpStream) -> Result<(), String> {
    tcp.write_all(&PG_SSL_REQUEST).await.map_err(|e| format!("send SSLRequest: {e}"))?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.map_err(|e| format!("read the SSLRequest answer: {e}"))?;
    match answer[0] {
        b'S' => Ok(()),
        b'N' => Err("the server does not offer TLS (ssl is off)".into()),
        other => Err(format!("unexpected answer {other:#x} to SSLRequest")),
    }
}

async fn mysql_starttls(tcp: &mut TcpStream) -> Result<(), String> {
    let mut header = [0u8; 4];
    tcp.read_exact(&mut header).await.map_err(|e| format!("read the server greeting: {e}"))?;
    let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    if len > MYSQL_MAX_GREETING {
        return Err(format!("server greeting of {len} bytes is larger than expected"));
    }
    let mut greeting = vec![0u8; len];
    tcp.read_exact(&mut greeting).await.map_err(|e| format!("read the server greeting: {e}"))?;
    if greeting.first() == Some(&0xff) {
        return Err(format!("the server refused the connection: {}", String::from_utf8_lossy(&greeting[3.min(len)..])));
    }
    // protocol version, NUL-terminated server version, connection id (4), scramble (8), filler (1),
    // then the low 16 bits of the capabilities.
    let version_end = greeting.iter().skip(1).position(|b| *b == 0).map(|p| p + 1).ok_or("malformed greeting")?;
    let caps_at = version_end + 1 + 4 + 8 + 1;
    let caps = greeting.get(caps_at..caps_at + 2).ok_or("short greeting")?;
    if u32::from(u16::from_le_bytes([caps[0], caps[1]])) & MYSQL_CLIENT_SSL == 0 {
        return Err("the server does not offer TLS (have_ssl is not YES)".into());
    }
    let mut request = vec![32, 0, 0, 1];
    request.extend_from_slice(&MYSQL_CAPS.to_le_bytes());
    request.extend_from_slice(&(16u32 << 20).to_le_bytes());
    request.push(33); // utf8_general_ci
    request.extend_from_slice(&[0u8; 23]);
    tcp.write_all(&request).await.map_err(|e| format!("send the SSL request: {e}"))
}
