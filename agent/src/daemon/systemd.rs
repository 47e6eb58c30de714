//! systemd notifications. Outside systemd (no NOTIFY_SOCKET) every call is a no-op.

use sd_notify::NotifyState;
use std::time::Duration;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::JoinHandle;

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

/// Pets the systemd watchdog until dropped. It is not tied to the root token: the drain after
/// SIGTERM can take the whole `api.shutdown_grace_secs`, and systemd must not kill the agent for
/// silence meanwhile. The daemon holds it until it returns.
pub struct Watchdog {
    task: JoinHandle<()>,
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts petting at half the interval systemd asked for (`WATCHDOG_USEC`); `None` without one.
///
/// `fault_switch` (config `testing.fault_switches`, test-only): SIGUSR2 stops the petting for good,
/// as a hung runtime would, so tests can prove that systemd restarts a hung agent.
pub fn start_watchdog(fault_switch: bool) -> Option<Watchdog> {
    let interval = sd_notify::watchdog_enabled()? / 2;
    let hang = if fault_switch {
        tracing::warn!("testing.fault_switches is on: SIGUSR2 stops the watchdog (test hosts only)");
        match signal(SignalKind::user_defined2()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!("install the SIGUSR2 fault switch: {e}");
                None
            }
        }
    } else {
        None
    };
    Some(Watchdog::start(interval, || send(&[NotifyState::Watchdog]), hang))
}

impl Watchdog {
    /// The pet comes from a tokio task on purpose: a wedged runtime stops petting and systemd
    /// restarts us.
    fn start(interval: Duration, pet: impl Fn() + Send + 'static, mut hang: Option<Signal>) -> Self {
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tokio::select! {
                    _ = tick.tick() => pet(),
                    Some(()) = async { hang.as_mut()?.recv().await } => {
                        tracing::error!("SIGUSR2 fault switch: no more watchdog pets; systemd will restart the agent");
                        return;
                    }
                }
            }
        });
        Self { task }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn pets_until_dropped_and_not_after() {
        let pets = Arc::new(AtomicUsize::new(0));
        let counter = pets.clone();
        let watchdog = Watchdog::start(
            Duration::from_millis(10),
            move || {
                counter.fetch_add(1, Ordering::SeqCst);
            },
            None,
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let while_held = pets.load(Ordering::SeqCst);
        assert!(while_held >= 5, "only {while_held} pets in 200 ms at a 10 ms interval");

        drop(watchdog);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let at_drop = pets.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(pets.load(Ordering::SeqCst), at_drop, "the watchdog pets after it was dropped");
    }
}
