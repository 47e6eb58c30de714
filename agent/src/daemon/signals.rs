//! SIGTERM and SIGINT begin the shutdown; SIGHUP reloads the TLS files.

use std::sync::Arc;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use super::DaemonError;
use crate::tls::server::ReloadableAcceptor;

/// Returns once shutdown began. Once installed, the handlers stay for the life of the process, so
/// a second SIGTERM during the drain does not cut it short: the deadline does.
pub(super) async fn handle_signals(
    root: CancellationToken,
    acceptor: Arc<ReloadableAcceptor>,
) -> Result<(), DaemonError> {
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break }
            _ = hup.recv() => match acceptor.reload() {
                Ok(closed) => tracing::info!(
                    "SIGHUP: reloaded TLS certificate, key, CAs and CRLs; closed {closed} of the open connections, whose certificates the new files refuse"
                ),
                Err(e) => tracing::error!("SIGHUP: reload TLS failed, keeping the previous configuration: {e:#}"),
            },
            // Shutdown began elsewhere (a critical task stopped).
            () = root.cancelled() => return Ok(()),
        }
    }
    root.cancel();
    Ok(())
}
