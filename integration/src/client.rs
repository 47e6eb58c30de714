//! mTLS client side: who the test claims to be, and a tonic channel to the agent.

use crate::pki::IssuedCert;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The CA a client trusts and the certificate it presents (none for an anonymous client).
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    pub ca_pem: String,
    pub cert: Option<(String, String)>,
}

impl ClientIdentity {
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()));
        Ok(Self { ca_pem: read(ca)?, cert: Some((read(cert)?, read(key)?)) })
    }

    pub fn issued(ca_pem: &str, cert: &IssuedCert) -> Self {
        Self { ca_pem: ca_pem.to_owned(), cert: Some((cert.cert_pem.clone(), cert.key_pem.clone())) }
    }

    /// Trusts the server but presents no client certificate.
    pub fn anonymous(ca_pem: &str) -> Self {
        Self { ca_pem: ca_pem.to_owned(), cert: None }
    }
}

/// The endpoint for `addr`, verifying the server as "localhost" against the identity's CA.
pub fn endpoint(addr: SocketAddr, identity: &ClientIdentity) -> Result<Endpoint, tonic::transport::Error> {
    crate::install_crypto_provider();
    let mut tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&identity.ca_pem)).domain_name("localhost");
    if let Some((cert, key)) = &identity.cert {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://{addr}"))?.connect_timeout(Duration::from_secs(10)).tls_config(tls)
}

/// Connects at once, so a refused handshake can surface here rather than on the first call.
pub async fn connect(addr: SocketAddr, identity: &ClientIdentity) -> Result<Channel, tonic::transport::Error> {
    endpoint(addr, identity)?.connect().await
}

/// Why a first call on a fresh connection did not succeed.
#[derive(Debug)]
pub enum CallFailure {
    /// The connection (TCP or TLS handshake) failed before any RPC.
    Connect(tonic::transport::Error),
    /// The connection came up but the call failed.
    Status(tonic::Status),
}

impl CallFailure {
    /// True when the failure is at the transport: the handshake was refused, or the call died with
    /// the connection (UNAVAILABLE/UNKNOWN, or CANCELLED when the server closed the connection
    /// right after a TLS 1.3 handshake that the client thought complete) rather than being answered
    /// by a handler.
    pub fn is_transport_refusal(&self) -> bool {
        match self {
            CallFailure::Connect(_) => true,
            CallFailure::Status(s) => {
                matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled)
            }
        }
    }
}

/// Connects with `identity` and calls Agent.GetStatus once.
pub async fn first_get_status(
    addr: SocketAddr,
    identity: &ClientIdentity,
) -> Result<dbagent_proto::v1::AgentStatus, CallFailure> {
    let channel = connect(addr, identity).await.map_err(CallFailure::Connect)?;
    let mut client = dbagent_proto::v1::agent_client::AgentClient::new(channel);
    client
        .get_status(dbagent_proto::v1::GetStatusRequest {})
        .await
        .map(tonic::Response::into_inner)
        .map_err(CallFailure::Status)
}
