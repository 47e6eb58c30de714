//! systemd notifications. Outside systemd (no NOTIFY_SOCKET) every call is a no-op.

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("notify systemd: {e}");
    }
}

/// Pets the watchdog at half its interval while the runtime is healthy. The pet comes from a tokio
/// task on purpose: a wedged runtime stops petting and systemd restarts us.
///
/// `fault_switch` (config `testing.fault_switches`, test-only): SIGUSR2 stops the petting for good,
/// as a hung runtime would, so tests can prove that systemd restarts a hung agent.
pub fn spawn_watchdog(token: CancellationToken, fault_switch: bool) -> Option<tokio::task::JoinHandle<()>> {
    let interval = sd_notify::watchdog_enabled()? / 2;
    let mut hang = if fault_switch {
        tracing::warn!("testing.fault_switches is on: SIGUSR2 stops the watchdog (test hosts only)");
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!("install the SIGUSR2 fault switch: {e}");
                None
            }
        }
    } else {
        None
    };
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = tick.tick() => send(&[NotifyState::Watchdog]),
                Some(()) = async { hang.as_mut()?.recv().await } => {
                    tracing::error!("SIGUSR2 fault switch: no more watchdog pets; systemd will restart the agent");
                    token.cancelled().await;
                    return;
                }
                () = token.cancelled() => return,
            }
        }
    }))
}
