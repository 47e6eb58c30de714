//! `dbagent`: the node agent daemon. Thin: arguments, configuration, logging, then `daemon::run`.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use dbagent::config::{Config, DEFAULT_CONFIG_PATH};
use dbagent::daemon::{self, RunMode, tracing_setup};
use dbagent::volume::setup::VolumeBackend;

/// Node agent of a managed-database platform: encrypted volumes, metrics, logs, backups, upgrades,
/// driven by the orchestrator over gRPC with mutual TLS.
#[derive(Debug, Parser)]
#[command(name = "dbagent", version)]
struct Args {
    /// Configuration file (TOML). See docs/configuration.md.
    #[arg(long, env = "DBAGENT_CONFIG", conflicts_with = "dev")]
    config: Option<PathBuf>,

    /// Development mode: embedded defaults, a generated development CA and client identities,
    /// all state under --state-dir (default ./dbagent-dev), the test operation kind enabled.
    #[arg(long)]
    dev: bool,

    /// With --dev: simulated volumes. The Volumes API works without root or device-mapper, on
    /// in-memory backends; nothing is encrypted and the volumes are gone when the agent stops.
    /// For developing against the full API on a laptop; no configuration key can turn it on.
    #[arg(long, requires = "dev")]
    sim: bool,

    /// Overrides `state_dir`.
    #[arg(long, env = "DBAGENT_STATE_DIR")]
    state_dir: Option<PathBuf>,

    /// Overrides `api.listen`, e.g. 127.0.0.1:7443.
    #[arg(long, env = "DBAGENT_LISTEN")]
    listen: Option<SocketAddr>,

    /// Overrides `keys.recovery_recipients` (repeat for several): the operator's age public keys
    /// (`age1...`) that volume keys are escrowed to. Works with --dev too.
    #[arg(long = "recovery-recipient", value_name = "AGE1...")]
    recovery_recipients: Vec<String>,

    /// Validate the configuration, print the effective configuration and exit.
    #[arg(long)]
    check_config: bool,
}

fn load(args: &Args) -> Result<Config, String> {
    let mut config = if args.dev {
        let dir = args.state_dir.clone().unwrap_or_else(daemon::dev::default_dev_state_dir);
        let dir = if dir.is_absolute() { dir } else { std::env::current_dir().map_err(|e| e.to_string())?.join(dir) };
        Config::dev(&dir, args.listen)
    } else {
        let path = args.config.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
        Config::load(&path).map_err(|e| e.to_string())?
    };
    if let Some(dir) = &args.state_dir {
        config.state_dir.clone_from(dir);
    }
    if let Some(listen) = args.listen {
        config.api.listen = listen;
    }
    if !args.recovery_recipients.is_empty() {
        config.keys.recovery_recipients.clone_from(&args.recovery_recipients);
    }
    config.validate(std::path::Path::new("command line")).map_err(|e| e.to_string())?;
    Ok(config)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dbagent: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        print!("{}", toml::to_string(&config).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    // Keys pass through this process: no core dumps, no ptrace by other users.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        eprintln!("dbagent: prctl(PR_SET_DUMPABLE, 0): {e}");
        return ExitCode::FAILURE;
    }
    tracing_setup::init(&config.logging);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mode = match (args.dev, args.sim) {
        (false, _) => RunMode::Production,
        (true, false) => RunMode::Dev { volumes: VolumeBackend::System },
        (true, true) => RunMode::Dev { volumes: VolumeBackend::Simulated },
    };
    match daemon::run(config, mode) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("dbagent: {e}");
            ExitCode::FAILURE
        }
    }
}
