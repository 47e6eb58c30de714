//! Runs one dbagent drain pipeline (the library code the agent runs) for one file glob, until
//! SIGTERM/SIGINT. Tests SIGKILL it to check at-least-once delivery; the benchmark times it.
//!
//! logship-test --state DIR --glob GLOB --address HOST:PORT [--tls-ca FILE] [--batch BYTES]
//!              [--format postgresql|mariadb|redis|plain]

use anyhow::{Context, bail};
use dbagent::instances::LogSource;
use dbagent::logs::LogsConfig;
use dbagent::logs::drain::{DrainSpec, DrainTarget};
use dbagent::logs::lines::LineFormat;
use dbagent::logs::pipeline::{DrainPipeline, PipelineContext};
use std::path::PathBuf;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let (mut state, mut glob, mut address, mut ca, mut batch, mut format) =
        (None, None, None, None, None, LineFormat::Postgresql);
    while let Some(a) = args.next() {
        let mut v = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--state" => state = Some(PathBuf::from(v()?)),
            "--glob" => glob = Some(v()?),
            "--address" => address = Some(v()?),
            "--tls-ca" => ca = Some(std::fs::read_to_string(v()?)?),
            "--batch" => batch = Some(v()?.parse::<u64>()?),
            "--format" => {
                format = match v()?.as_str() {
                    "postgresql" => LineFormat::Postgresql,
                    "mariadb" => LineFormat::Mariadb,
                    "redis" => LineFormat::Redis,
                    "plain" => LineFormat::Plain,
                    other => bail!("unknown format {other}"),
                }
            }
            other => bail!("unknown argument {other}"),
        }
    }
    let (Some(state), Some(glob), Some(address)) = (state, glob, address) else {
        bail!(
            "usage: logship-test --state DIR --glob GLOB --address HOST:PORT [--tls-ca FILE] [--batch BYTES] [--format F]"
        );
    };
    // The test receivers listen on 127.0.0.1, without TLS.
    let drain_policy = dbagent::logs::settings::DrainPolicyConfig::loopback();
    let mut cfg = LogsConfig { poll_interval_ms: 50, linger_ms: 50, drain_policy, ..LogsConfig::default() };
    if let Some(b) = batch {
        cfg.batch_max_bytes = b;
    }
    let spec = DrainSpec {
        name: "test".into(),
        target: DrainTarget::Syslog { address, tls: ca.is_some(), ca_pem: ca.unwrap_or_default() },
    };
    let glob_folder = std::path::Path::new(&glob).parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    let sources = [LogSource::FileGlob(glob)];
    let ctx = PipelineContext {
        instance: "inst-1".into(),
        format,
        sources: &sources,
        dir: state,
        cfg: &cfg,
        hostname: "testhost",
        // The glob's folder: the files it matches are opened beneath it.
        roots: std::sync::Arc::from(vec![glob_folder]),
        live: Default::default(),
    };
    let cancel = CancellationToken::new();
    let pipeline = DrainPipeline::start(&ctx, spec, &cancel)?;
    println!("ready");
    let (mut term, mut int) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    pipeline.stop().await;
    Ok(())
}
