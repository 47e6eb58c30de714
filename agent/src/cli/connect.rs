//! Opens the mutual-TLS channel to the agent.

use super::config::ClientConfig;
use super::error::{CliError, error_chain};
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Where to connect and with which credentials, after `--endpoint` has overridden the config.
pub struct Target {
    pub endpoint: String,
    pub config: ClientConfig,
}

fn read_pem(what: &str, path: &std::path::Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| CliError::Config(format!("read {what} {}: {e}", path.display())))
}

/// Connects eagerly so that an unreachable agent or a rejected certificate is reported once, clearly,
/// instead of as the first RPC's failure.
pub async fn connect(target: &Target, timeout: Duration) -> Result<Channel, CliError> {
    // tonic's tls-ring feature still needs a process-wide provider; an Err only means one is installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = &target.config;
    let ca = read_pem("CA certificate", &config.ca)?;
    let cert = read_pem("client certificate", &config.cert)?;
    let key = read_pem("client key", &config.key)?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key))
        .domain_name(config.server_name.clone());
    let connect_error = |reason: String| CliError::Connect {
        endpoint: target.endpoint.clone(),
        server_name: config.server_name.clone(),
        reason,
    };
    let endpoint = Endpoint::from_shared(target.endpoint.clone())
        .map_err(|e| CliError::Usage(format!("endpoint {:?} is not a URL: {}", target.endpoint, error_chain(&e))))?
        .connect_timeout(timeout)
        .tls_config(tls)
        // Fails before any network traffic, so the cause is our own files (e.g. a v1 certificate,
        // a key that does not match), whatever rustls calls it.
        .map_err(|e| {
            CliError::Config(format!(
                "load TLS credentials (ca {}, cert {}, key {}): {}",
                config.ca.display(),
                config.cert.display(),
                config.key.display(),
                error_chain(&e)
            ))
        })?;
    endpoint.connect().await.map_err(|e| connect_error(error_chain(&e)))
}
