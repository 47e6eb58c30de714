//! Shared by the drivers that run inside the VM guest (`volume-vm-check`, `metrics-vm-check`):
//! their argument lookup, their `PASS`/`FAIL` lines, and the orchestrator connection to the dev-mode
//! agent beside them.

use anyhow::{Context, Result};
use std::path::Path;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The value after `name` on the command line.
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

/// Prints `PASS <name> <ms>` or `FAIL <name> <ms> <why>` (the lines the harness parses) for a step
/// that started at `started`; gives back the value of a passed step.
pub fn report<T>(name: &str, started: std::time::Instant, r: Result<T>) -> Option<T> {
    let ms = started.elapsed().as_millis();
    match r {
        Ok(v) => {
            println!("PASS {name} {ms}");
            Some(v)
        }
        Err(e) => {
            println!("FAIL {name} {ms} {e:#}");
            None
        }
    }
}

/// mTLS channel with the dev orchestrator identity of the agent whose state is `state`;
/// `--endpoint` overrides the default 127.0.0.1:7443.
pub async fn connect(state: &Path) -> Result<Channel> {
    let tls = state.join("tls");
    let read = |f: &str| std::fs::read(tls.join(f)).with_context(|| format!("read {}", tls.join(f).display()));
    let cfg = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.crt")?))
        .identity(Identity::from_pem(read("orchestrator.crt")?, read("orchestrator.key")?))
        .domain_name("localhost");
    let endpoint = arg("--endpoint").unwrap_or_else(|| "https://127.0.0.1:7443".into());
    Ok(Endpoint::from_shared(endpoint)?.tls_config(cfg)?.connect().await?)
}
