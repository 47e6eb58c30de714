//! `dbagent --dev`: the development PKI, client configs for `dbagentctl`, and the help it prints.

use std::path::{Path, PathBuf};

use super::DaemonError;
use crate::config::Config;
use crate::fsutil;
use crate::tls::devpki;

/// `--dev` without `--state-dir`: a folder in the current directory, made absolute.
pub fn default_dev_state_dir() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/tmp")).join("dbagent-dev")
}

/// Dev PKI, client configs for `dbagentctl`, and the dev data root.
pub(super) fn prepare_dev(config: &Config) -> Result<(), DaemonError> {
    let dir = &config.state_dir;
    let tls = dir.join("tls");
    if devpki::ensure(&tls)? {
        tracing::info!("generated development CA and certificates in {}", tls.display());
    }
    let listen = config.api.listen;
    let host = if listen.ip().is_unspecified() { "127.0.0.1".to_owned() } else { listen.ip().to_string() };
    let endpoint = if listen.is_ipv6() && !listen.ip().is_unspecified() {
        format!("https://[{host}]:{}", listen.port())
    } else {
        format!("https://{host}:{}", listen.port())
    };
    for (file, identity) in [("client.toml", "orchestrator"), ("monitor.toml", "monitor")] {
        let path = dir.join(file);
        fsutil::atomic_write(&path, devpki::client_toml(&tls, identity, &endpoint).as_bytes())
            .map_err(|source| DaemonError::Io { context: format!("write {}", path.display()), source })?;
    }
    for root in &config.instances.data_roots {
        fsutil::ensure_private_dir(root)
            .map_err(|source| DaemonError::Io { context: format!("create {}", root.display()), source })?;
    }
    Ok(())
}

pub(super) fn print_dev_help(dir: &Path, volumes_simulated: bool) {
    let client = dir.join("client.toml");
    let monitor = dir.join("monitor.toml");
    let volumes = if volumes_simulated {
        "volumes are SIMULATED in memory (--sim): nothing is encrypted and they are gone at exit\n"
    } else {
        ""
    };
    eprintln!(
        "\ndbagent is running in development mode; state in {}\n{volumes}  \
         dbagentctl --config {} status       # orchestrator: full access\n  \
         dbagentctl --config {} status       # monitor: read-only\n",
        dir.display(),
        client.display(),
        monitor.display()
    );
}
