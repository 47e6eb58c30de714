//! One drain of one instance: its sources (with their own read positions) -> its on-disk buffer ->
//! its transport. Each drain reads the sources itself, so a drain that is down never holds back
//! another drain or TailLogs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::buffer::{BufferLimits, BufferStatus, DrainBuffer};
use super::drain::policy::DrainPolicy;
use super::drain::transport::Transport;
use super::drain::wire::WireFormat;
use super::drain::{DrainSpec, DrainTarget};
use super::error::LogsError;
use super::lines::LineFormat;
use super::record::SourceBatch;
use super::settings::LogsConfig;
use super::sources::{LiveSources, Mode, SourceSet, spawn_sources};
use crate::instances::LogSource;

/// An in-flight batch gets this long to be acknowledged after shutdown began.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// A batch the buffer could not take (a full disk) is tried again after this long, doubling up to
/// [`WRITE_RETRY_MAX`]. Meanwhile the sources wait: nothing is lost, nothing is read twice.
const WRITE_RETRY: Duration = Duration::from_secs(1);
const WRITE_RETRY_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainStatus {
    pub name: String,
    pub buffer: BufferStatus,
    pub delivered_records: u64,
    pub last_error: String,
    /// Why the last batch could not be written to the buffer (a full disk); empty once writing
    /// works again.
    pub buffer_error: String,
    /// Failed buffer writes since the drain started (each retried).
    pub buffer_write_failures: u64,
    /// Matched files this drain's sources refused to open (links, FIFOs, replaced files).
    pub refused_files: u64,
}

#[derive(Default)]
pub(crate) struct Live {
    delivered_records: u64,
    last_error: String,
    buffer_error: String,
    buffer_write_failures: u64,
}

pub struct DrainPipeline {
    pub spec: DrainSpec,
    buffer: Arc<Mutex<DrainBuffer>>,
    live: Arc<Mutex<Live>>,
    refused: Arc<AtomicU64>,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

fn buffer_limits(cfg: &LogsConfig) -> BufferLimits {
    BufferLimits {
        max_bytes: cfg.buffer_max_bytes,
        segment_bytes: cfg.segment_bytes,
        sync_interval: Duration::from_millis(cfg.sync_interval_ms),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub struct PipelineContext<'a> {
    pub instance: Arc<str>,
    pub format: LineFormat,
    pub sources: &'a [LogSource],
    pub dir: PathBuf,
    pub cfg: &'a LogsConfig,
    pub hostname: &'a str,
    /// See [`SourceSet::roots`].
    pub roots: Arc<[PathBuf]>,
    pub live: LiveSources,
}

impl DrainPipeline {
    pub fn start(ctx: &PipelineContext<'_>, spec: DrainSpec, parent: &CancellationToken) -> Result<Self, LogsError> {
        let (buffer, positions) = DrainBuffer::open(&ctx.dir, buffer_limits(ctx.cfg))?;
        let buffer = Arc::new(Mutex::new(buffer));
        let live = Arc::new(Mutex::new(Live::default()));
        let refused = Arc::new(AtomicU64::new(0));
        let cancel = parent.child_token();
        let transport = Transport::new(&spec, DrainPolicy::new(&ctx.cfg.drain_policy));
        let wire = match spec.target {
            DrainTarget::Syslog { .. } => WireFormat::Syslog { hostname: ctx.hostname.to_owned() },
            DrainTarget::Https { .. } => WireFormat::JsonLines { hostname: ctx.hostname.to_owned() },
        };
        let (tx, rx) = mpsc::channel(4);
        let set = SourceSet {
            instance: ctx.instance.clone(),
            format: ctx.format,
            sources: ctx.sources,
            roots: ctx.roots.clone(),
            live: ctx.live.clone(),
            refused: refused.clone(),
        };
        let mut tasks = spawn_sources(&set, &positions, Mode::Ship, ctx.cfg, &tx, &cancel);
        drop(tx);
        let wake = Arc::new(Notify::new());
        let writer = BatchWriter {
            wire,
            sink: buffer.clone(),
            wake: wake.clone(),
            live: live.clone(),
            retry: (WRITE_RETRY, WRITE_RETRY_MAX),
            cancel: cancel.clone(),
            name: format!("{}/{}", ctx.instance, spec.name),
        };
        tasks.push(tokio::task::spawn_blocking(move || writer.run(rx)));
        let sender = Sender {
            buffer: buffer.clone(),
            live: live.clone(),
            wake,
            batch_max: usize::try_from(ctx.cfg.batch_max_bytes).unwrap_or(usize::MAX),
            linger: Duration::from_millis(ctx.cfg.linger_ms),
            name: format!("{}/{}", ctx.instance, spec.name),
        };
        match transport {
            Ok(t) => tasks.push(tokio::spawn(sender.run(t, cancel.clone()))),
            Err(e) => {
                tracing::error!(drain = %sender.name, "set up drain: {e:#}; records are buffered until it is fixed");
                lock(&live).last_error = e.to_string();
            }
        }
        Ok(Self { spec, buffer, live, refused, cancel, tasks })
    }

    pub fn status(&self) -> DrainStatus {
        let live = lock(&self.live);
        DrainStatus {
            name: self.spec.name.clone(),
            buffer: lock(&self.buffer).status(),
            delivered_records: live.delivered_records,
            last_error: live.last_error.clone(),
            buffer_error: live.buffer_error.clone(),
            buffer_write_failures: live.buffer_write_failures,
            refused_files: self.refused.load(Ordering::Relaxed),
        }
    }

    /// Stops sources and sender (an in-flight batch gets a short grace to be acknowledged) and
    /// syncs the buffer.
    pub async fn stop(self) {
        self.cancel.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        let buffer = self.buffer.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = lock(&buffer).sync() {
                tracing::error!("{e:#}");
            }
        })
        .await;
    }
}

/// Where the writer puts encoded batches: the drain's buffer. A trait so that the retry on a full
/// disk is tested without filling one.
pub(crate) trait BatchSink: Send + Sync {
    fn append(&self, batch: &SourceBatch, data: &[u8]) -> Result<(), LogsError>;
    /// Frames stored so far: an append that failed after storing its frame is not repeated.
    fn appended_frames(&self) -> u64;
}

impl BatchSink for Mutex<DrainBuffer> {
    fn append(&self, batch: &SourceBatch, data: &[u8]) -> Result<(), LogsError> {
        let count = u32::try_from(batch.records.len()).unwrap_or(u32::MAX);
        lock(self).append(&batch.key, &batch.checkpoint, count, data)
    }

    fn appended_frames(&self) -> u64 {
        lock(self).appended_frames()
    }
}

/// Encodes each batch in the drain's wire format and appends it to the buffer with its checkpoint.
pub(crate) struct BatchWriter<S: BatchSink + ?Sized> {
    pub wire: WireFormat,
    pub sink: Arc<S>,
    pub wake: Arc<Notify>,
    pub live: Arc<Mutex<Live>>,
    /// First and longest wait before a failed append is tried again.
    pub retry: (Duration, Duration),
    pub cancel: CancellationToken,
    pub name: String,
}

impl<S: BatchSink + ?Sized> BatchWriter<S> {
    pub fn run(&self, mut rx: mpsc::Receiver<SourceBatch>) {
        let mut data = Vec::new();
        while let Some(batch) = rx.blocking_recv() {
            data.clear();
            for r in &batch.records {
                self.wire.encode(r, &mut data);
            }
            if !self.store(&batch, &data) {
                return;
            }
            self.wake.notify_one();
        }
    }

    /// Appends one batch, retrying until it is stored; false if cancelled meanwhile. Its source
    /// waits on the channel, so no checkpoint moves past what is not stored.
    fn store(&self, batch: &SourceBatch, data: &[u8]) -> bool {
        let mut wait = self.retry.0;
        loop {
            let before = self.sink.appended_frames();
            let result = self.sink.append(batch, data);
            let stored = self.sink.appended_frames() > before;
            match result {
                Ok(()) => {}
                // Stored, then a later step (an fsync) failed: repeating would store it twice.
                Err(e) if stored => tracing::warn!(drain = %self.name, "after a buffer write: {e:#}"),
                Err(e) => {
                    let first = {
                        let mut live = lock(&self.live);
                        live.buffer_write_failures += 1;
                        let first = live.buffer_error.is_empty();
                        live.buffer_error = format!("{e} (at {})", crate::timefmt::format(SystemTime::now()));
                        first
                    };
                    if first {
                        tracing::error!(drain = %self.name, "write to the drain buffer: {e:#}; reading is paused and the write retried");
                    }
                    if !sleep_unless_cancelled(wait, &self.cancel) {
                        return false;
                    }
                    wait = (wait * 2).min(self.retry.1);
                    continue;
                }
            }
            let mut live = lock(&self.live);
            if !live.buffer_error.is_empty() {
                tracing::info!(drain = %self.name, "drain buffer writable again");
                live.buffer_error.clear();
            }
            return true;
        }
    }
}

/// Sleeps on a blocking thread for `d`, waking early when cancelled; false if cancelled.
fn sleep_unless_cancelled(d: Duration, cancel: &CancellationToken) -> bool {
    let until = std::time::Instant::now() + d;
    while !cancel.is_cancelled() {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
    false
}

struct Sender {
    buffer: Arc<Mutex<DrainBuffer>>,
    live: Arc<Mutex<Live>>,
    wake: Arc<Notify>,
    batch_max: usize,
    linger: Duration,
    name: String,
}

impl Sender {
    async fn run(self, transport: Transport, cancel: CancellationToken) {
        let mut backoff = Duration::from_millis(250);
        let mut last_full = false;
        loop {
            let empty = lock(&self.buffer).is_empty();
            if empty {
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = cancel.cancelled() => return,
                }
                if !last_full && !self.linger.is_zero() {
                    tokio::select! {
                        () = tokio::time::sleep(self.linger) => {}
                        () = cancel.cancelled() => return,
                    }
                }
            }
            if cancel.is_cancelled() {
                return;
            }
            let read = {
                let buffer = self.buffer.clone();
                let max = self.batch_max;
                tokio::task::spawn_blocking(move || lock(&buffer).read_batch(max)).await
            };
            let batch = match read {
                Ok(Ok(Some(b))) => b,
                Ok(Ok(None)) => continue,
                Ok(Err(e)) => {
                    self.failed(&e, &mut backoff, &cancel).await;
                    continue;
                }
                Err(_) => return,
            };
            last_full = batch.data.len() >= self.batch_max / 2;
            let delivery = transport.deliver(&batch.data);
            tokio::pin!(delivery);
            let result = tokio::select! {
                r = &mut delivery => r,
                () = cancel.cancelled() => match tokio::time::timeout(STOP_GRACE, &mut delivery).await {
                    Ok(r) => r,
                    Err(_) => return,
                },
            };
            match result {
                Ok(()) => {
                    let buffer = self.buffer.clone();
                    let last = batch.last_frame;
                    match tokio::task::spawn_blocking(move || lock(&buffer).ack(last)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::error!(drain = %self.name, "commit delivered position: {e:#}"),
                        Err(_) => return,
                    }
                    let mut live = lock(&self.live);
                    live.delivered_records += batch.records;
                    if !live.last_error.is_empty() {
                        tracing::info!(drain = %self.name, "drain reachable again");
                        live.last_error.clear();
                    }
                    backoff = Duration::from_millis(250);
                }
                Err(e) => self.failed(&e, &mut backoff, &cancel).await,
            }
        }
    }

    async fn failed(&self, e: &LogsError, backoff: &mut Duration, cancel: &CancellationToken) {
        let first = {
            let mut live = lock(&self.live);
            let first = live.last_error.is_empty();
            live.last_error = format!("{} (at {})", e, crate::timefmt::format(SystemTime::now()));
            first
        };
        if first {
            tracing::warn!(drain = %self.name, "deliver logs: {e:#}; buffering on disk and retrying");
        } else {
            tracing::debug!(drain = %self.name, "deliver logs: {e:#}");
        }
        tokio::select! {
            () = tokio::time::sleep(*backoff) => {}
            () = cancel.cancelled() => {}
        }
        *backoff = (*backoff * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
