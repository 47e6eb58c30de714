//! The agent's client of `dbagent.v1.KeyService` (served by the orchestrator) over mutual TLS:
//! one channel construction for both callers, the `remote` volume key provider
//! (`volume::remote`, `GetInstanceKey`) and the backup data key wrap (`backup::keys::keyservice`,
//! `WrapKey`/`UnwrapKey`). The orchestrator decides what a host may ask for; the agent only asks.

use dbagent_proto::v1 as pb;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::config::RemoteKeysConfig;

pub type KeyServiceClient = pb::key_service_client::KeyServiceClient<Channel>;

#[derive(Debug, thiserror::Error)]
pub enum KeyServiceChannelError {
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("set up the KeyService channel to {endpoint}: {source}; check [keys.remote]")]
    Endpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// Reads the TLS files and prepares a lazily connecting channel: the KeyService being down at
/// start-up is reported per call (per volume, per backup), not as a failed agent start.
pub fn connect(config: &RemoteKeysConfig) -> Result<KeyServiceClient, KeyServiceChannelError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p)
            .map_err(|source| KeyServiceChannelError::Io { context: format!("read {}", p.display()), source })
    };
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&config.ca)?))
        .identity(Identity::from_pem(read(&config.cert)?, read(&config.key)?));
    if !config.server_name.is_empty() {
        tls = tls.domain_name(config.server_name.clone());
    }
    let bad = |source| KeyServiceChannelError::Endpoint { endpoint: config.endpoint.clone(), source };
    let channel = Endpoint::from_shared(config.endpoint.clone())
        .map_err(bad)?
        .tls_config(tls)
        .map_err(bad)?
        .timeout(Duration::from_secs(config.timeout_secs))
        .connect_timeout(Duration::from_secs(config.timeout_secs))
        .connect_lazy();
    Ok(pb::key_service_client::KeyServiceClient::new(channel))
}

/// The `host` the agent names in its KeyService requests: the system's host name.
pub fn host_name() -> String {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default()
}

/// An in-process KeyService on 127.0.0.1 with mutual TLS (the dev PKI), for the unit tests of the
/// volume key provider and the backup wrapper. Returns the client config that reaches it (as the
/// `orchestrator` certificate), the folder holding the PKI, and the server task.
#[cfg(test)]
pub(crate) async fn serve_for_tests<S: pb::key_service_server::KeyService>(
    service: S,
) -> (RemoteKeysConfig, tempfile::TempDir, tokio::task::JoinHandle<Result<(), tonic::transport::Error>>) {
    use tonic::transport::{Server, ServerTlsConfig};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    crate::tls::devpki::ensure(&tls).unwrap();
    let read = |f: &str| std::fs::read(tls.join(f)).unwrap();
    let server_tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(read("server.crt"), read("server.key")))
        .client_ca_root(Certificate::from_pem(read("ca.crt")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(
        Server::builder()
            .tls_config(server_tls)
            .unwrap()
            .add_service(pb::key_service_server::KeyServiceServer::new(service))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let config = RemoteKeysConfig {
        endpoint: format!("https://127.0.0.1:{port}"),
        ca: tls.join("ca.crt"),
        cert: tls.join("orchestrator.crt"),
        key: tls.join("orchestrator.key"),
        server_name: "localhost".into(),
        timeout_secs: 5,
    };
    (config, dir, server)
}
