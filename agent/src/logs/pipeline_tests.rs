//! The drain's buffer writer on a full disk: it reports, waits, retries the same batch, and goes on.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::{BatchSink, BatchWriter, Live, lock};
use crate::logs::checkpoint::Checkpoint;
use crate::logs::drain::wire::WireFormat;
use crate::logs::error::LogsError;
use crate::logs::record::{LogRecord, Severity, SourceBatch};

/// A buffer on a disk that is full for the next `full_for` appends; `fail_after_store` makes
/// every append store its frame and then fail (as a failing fsync would).
#[derive(Default)]
struct FullDisk {
    full_for: AtomicU32,
    fail_after_store: bool,
    stored: Mutex<Vec<String>>,
}

fn enospc() -> LogsError {
    LogsError::Io { context: "append to drain buffer /b".into(), source: std::io::Error::from_raw_os_error(28) }
}

impl BatchSink for FullDisk {
    fn append(&self, batch: &SourceBatch, _data: &[u8]) -> Result<(), LogsError> {
        if self.full_for.load(Ordering::SeqCst) > 0 {
            self.full_for.fetch_sub(1, Ordering::SeqCst);
            return Err(enospc());
        }
        lock(&self.stored).push(batch.records[0].message.clone());
        if self.fail_after_store { Err(enospc()) } else { Ok(()) }
    }

    fn appended_frames(&self) -> u64 {
        lock(&self.stored).len() as u64
    }
}

fn batch(message: &str) -> SourceBatch {
    let record = LogRecord {
        time: SystemTime::now(),
        instance: "pg-1".into(),
        source: "f".into(),
        severity: Severity::Info,
        message: message.into(),
    };
    SourceBatch { key: "file:f".into(), records: vec![record], checkpoint: Checkpoint::Journal { cursor: "c".into() } }
}

fn writer(sink: Arc<FullDisk>) -> (BatchWriter<FullDisk>, Arc<Mutex<Live>>) {
    let live = Arc::new(Mutex::new(Live::default()));
    let w = BatchWriter {
        wire: WireFormat::Syslog { hostname: "h".into() },
        sink,
        wake: Arc::new(Notify::new()),
        live: live.clone(),
        retry: (Duration::from_millis(10), Duration::from_millis(40)),
        cancel: CancellationToken::new(),
        name: "pg-1/a".into(),
    };
    (w, live)
}

#[test]
fn a_full_disk_is_reported_and_the_same_batch_retried_until_it_is_stored_then_writing_goes_on() {
    let sink = Arc::new(FullDisk { full_for: AtomicU32::new(u32::MAX), ..FullDisk::default() });
    let (w, live) = writer(sink.clone());
    let (tx, rx) = mpsc::channel(4);
    tx.try_send(batch("one")).unwrap();
    tx.try_send(batch("two")).unwrap();
    drop(tx);
    let running = std::thread::spawn(move || w.run(rx));

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while lock(&live).buffer_write_failures < 3 {
        assert!(std::time::Instant::now() < deadline, "the writer stopped retrying");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(lock(&live).buffer_error.contains("No space left on device"), "{}", lock(&live).buffer_error);
    assert!(lock(&sink.stored).is_empty());
    assert!(!running.is_finished(), "the writer did not die on ENOSPC");

    sink.full_for.store(0, Ordering::SeqCst);
    running.join().unwrap();
    assert_eq!(*lock(&sink.stored), ["one", "two"], "each batch stored once, in order, once space came back");
    assert!(lock(&live).buffer_error.is_empty(), "the error clears once writing works");
}

#[test]
fn a_batch_stored_before_its_write_failed_is_not_stored_twice() {
    let sink = Arc::new(FullDisk { fail_after_store: true, ..FullDisk::default() });
    let (w, live) = writer(sink.clone());
    let (tx, rx) = mpsc::channel(4);
    tx.try_send(batch("one")).unwrap();
    tx.try_send(batch("two")).unwrap();
    drop(tx);
    w.run(rx);
    assert_eq!(*lock(&sink.stored), ["one", "two"]);
    assert_eq!(lock(&live).buffer_write_failures, 0, "a stored frame is no failed write");
}

#[test]
fn a_writer_waiting_on_a_full_disk_stops_when_cancelled() {
    let sink = Arc::new(FullDisk { full_for: AtomicU32::new(u32::MAX), ..FullDisk::default() });
    let (w, _live) = writer(sink);
    let cancel = w.cancel.clone();
    let (tx, rx) = mpsc::channel(4);
    tx.try_send(batch("one")).unwrap();
    let running = std::thread::spawn(move || w.run(rx));
    std::thread::sleep(Duration::from_millis(50));
    cancel.cancel();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !running.is_finished() {
        assert!(std::time::Instant::now() < deadline, "the writer ignored the cancellation");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(tx);
}
