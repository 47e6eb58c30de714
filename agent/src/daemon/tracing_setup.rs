//! Tracing: to journald when started by systemd, else to stderr (text or JSON).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, LoggingConfig};

/// `RUST_LOG`, when set, overrides `logging.level`.
pub fn init(config: &LoggingConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
        // Transport internals are noise at info and would echo every connection.
        .add_directive("h2=warn".parse().unwrap_or_default())
        .add_directive("hyper=warn".parse().unwrap_or_default())
        .add_directive("rustls=warn".parse().unwrap_or_default());
    // systemd sets JOURNAL_STREAM when stderr is connected to the journal.
    if std::env::var_os("JOURNAL_STREAM").is_some()
        && let Ok(journald) = tracing_journald::layer()
    {
        tracing_subscriber::registry().with(filter).with(journald).init();
        return;
    }
    // Colours only on a terminal: stderr redirected to a file (a test, `systemd-run -p
    // StandardError=file:`) must stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    match config.format {
        LogFormat::Json => tracing_subscriber::registry().with(filter).with(fmt.json()).init(),
        LogFormat::Text => tracing_subscriber::registry().with(filter).with(fmt).init(),
    }
}
