//! A live feed of one owner's snapshots for StreamMetrics.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::{MetricsHub, Owner, Snapshot};

/// The owner's latest snapshot now (if any), then after sampling rounds at least `every` apart.
/// Ends on `shutdown`; the feeding task ends when the receiver is dropped.
pub fn snapshots(
    hub: Arc<MetricsHub>,
    owner: Owner,
    every: Duration,
    shutdown: CancellationToken,
) -> ReceiverStream<Arc<Snapshot>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut rounds = hub.subscribe();
    tokio::spawn(async move {
        let mut last_sent: Option<(Instant, std::time::SystemTime)> = None;
        loop {
            if let Some(s) = hub.history.latest(&owner) {
                let due = last_sent.is_none_or(|(at, time)| s.time != time && at.elapsed() + hub.interval / 2 >= every);
                if due {
                    last_sent = Some((Instant::now(), s.time));
                    if tx.send(s).await.is_err() {
                        return;
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tx.closed() => return,
                r = rounds.changed() => if r.is_err() { return },
            }
        }
    });
    ReceiverStream::new(rx)
}
