//! End-to-end test support for dbagent: start the real binary as an RAII fixture, make certificates,
//! and connect over mutual TLS the way an orchestrator or a monitor does.
//!
//! Every fixture owns its temporary directory and kills its process on drop, so a failing test
//! leaves neither a daemon nor files behind. All traffic goes to 127.0.0.1.
//!
//! The tests run the binary, they do not build it:
//!
//! ```text
//! cargo build -p dbagent --bins && cargo test -p dbagent-integration
//! ```
//!
//! `DBAGENT_BIN` picks another binary (e.g. a release build for `loadbench`); otherwise the debug
//! build under `$CARGO_TARGET_DIR` (or `<workspace>/target`) is used.

pub mod agent;
pub mod backup_config;
pub mod backup_harness;
pub mod bench_stats;
pub mod client;
pub mod config;
pub mod garage;
pub mod guest;
pub mod https_sink;
pub mod keyservice;
pub mod logship;
pub mod ops;
pub mod pki;
pub mod prometheus;
mod ready;
pub mod rsyslog;
pub mod servers;
pub mod tenant;
pub mod vm;

pub use agent::{Agent, AgentBuilder, LaunchContext};
pub use client::{CallFailure, ClientIdentity, connect, first_get_status};
pub use pki::{CertAuthority, IssuedCert, Validity};

/// Installs rustls' ring provider as the process default; tonic and the readiness probe both use it.
/// Safe to call many times: only the first call can win, later ones are ignored.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
