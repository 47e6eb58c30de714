//! Idle connections: a connection with no call open for `api.idle_timeout_secs` is closed, so
//! clients that connect and wait cannot hold `api.max_connections` slots forever. HTTP/2 pings
//! keep a quiet connection busy at the byte level, so idleness is counted in calls: one begins
//! when the permission layer sees its request and ends when its response body ends (a stream
//! counts for as long as it is open).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The calls of one connection.
#[derive(Debug)]
pub struct CallActivity {
    open: AtomicUsize,
    /// When the last call ended (or the connection began).
    last_end: Mutex<Instant>,
}

impl Default for CallActivity {
    fn default() -> Self {
        Self { open: AtomicUsize::new(0), last_end: Mutex::new(Instant::now()) }
    }
}

/// One open call; dropping it ends the call.
pub struct CallGuard(Arc<CallActivity>);

impl CallActivity {
    pub fn begin(self: &Arc<Self>) -> CallGuard {
        self.open.fetch_add(1, Ordering::SeqCst);
        CallGuard(self.clone())
    }

    /// How long the connection has had no call open; `None` while one is.
    fn idle_for(&self) -> Option<Duration> {
        if self.open.load(Ordering::SeqCst) > 0 {
            return None;
        }
        Some(self.last_end.lock().unwrap_or_else(|p| p.into_inner()).elapsed())
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        // The time first: a watcher that sees no open call must see this call's end.
        *self.0.last_end.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Cancels `close` once the connection has been without calls for `idle`; returns when it did,
/// or when `close` was cancelled otherwise (the connection ended or was revoked).
pub async fn close_when_idle(activity: Arc<CallActivity>, idle: Duration, close: CancellationToken) {
    loop {
        let wait = match activity.idle_for() {
            Some(quiet) if quiet >= idle => {
                tracing::debug!("closing a connection without calls for {idle:?} (api.idle_timeout_secs)");
                close.cancel();
                return;
            }
            Some(quiet) => idle - quiet,
            None => idle,
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = close.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn a_connection_is_closed_after_idle_time_without_calls_but_not_while_a_call_is_open() {
        let activity = Arc::new(CallActivity::default());
        let close = CancellationToken::new();
        let call = activity.begin();
        let watcher = tokio::spawn(close_when_idle(activity.clone(), IDLE, close.clone()));
        tokio::time::sleep(IDLE * 3).await;
        assert!(!close.is_cancelled(), "a call open for three idle periods is not idle");
        drop(call);
        let ended = Instant::now();
        tokio::time::timeout(IDLE * 10, close.cancelled()).await.expect("closed once idle");
        assert!(ended.elapsed() >= IDLE, "closed {:?} after the last call ended", ended.elapsed());
        watcher.await.unwrap();
    }

    #[tokio::test]
    async fn the_watcher_ends_with_its_connection() {
        let close = CancellationToken::new();
        let watcher = tokio::spawn(close_when_idle(Arc::default(), Duration::from_secs(3600), close.clone()));
        close.cancel();
        tokio::time::timeout(Duration::from_secs(5), watcher).await.expect("the watcher ended").unwrap();
    }
}
