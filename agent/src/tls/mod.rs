//! TLS for the agent's API: the server configuration (mTLS, CRLs, reload on SIGHUP), the accept loop
//! that turns TCP connections into authenticated peers, and the development PKI.

pub mod crl;
pub mod devpki;
pub mod handshake_limit;
pub mod idle;
pub mod listener;
pub mod peer;
mod pem_files;
pub mod server;
pub mod sessions;

use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("build TLS configuration: {0}")]
    Config(String),
    #[error("generate development certificates: {0}")]
    Generate(String),
}

impl TlsError {
    pub fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        TlsError::Io { action, path: path.to_path_buf(), source }
    }

    fn generate(e: rcgen::Error) -> Self {
        TlsError::Generate(e.to_string())
    }
}
