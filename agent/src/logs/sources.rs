//! Running an instance's sources: each sends batches of records with the checkpoint after them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::checkpoint::Checkpoint;
use super::file_source::{FileFollower, FollowSettings, StartAt};
use super::journald::{JournalSettings, JournalSource, run_journal_source};
use super::lines::LineFormat;
use super::open_beneath::LogRoots;
use super::record::{LogRecord, SourceBatch};
use super::settings::LogsConfig;
use crate::instances::LogSource;

/// Bytes read from files before a batch is handed on, at most: one source batch becomes one buffer
/// frame, and a frame is never split between deliveries, so frames stay well under a delivery batch
/// (wire data is larger than the input by its syslog header).
fn read_budget(cfg: &LogsConfig) -> usize {
    usize::try_from(cfg.batch_max_bytes / 2).unwrap_or(usize::MAX).clamp(2048, 1024 * 1024)
}

fn follow_settings(cfg: &LogsConfig) -> FollowSettings {
    FollowSettings {
        rotate_wait: Duration::from_millis(cfg.rotate_wait_ms),
        flush_after: Duration::from_millis(cfg.flush_after_ms),
        // Expanding a glob is a directory listing: not more often than 20 times a second.
        rescan: Duration::from_millis(cfg.poll_interval_ms.max(50)),
    }
}

fn journal_settings(cfg: &LogsConfig) -> JournalSettings {
    JournalSettings { command: cfg.journalctl.clone(), extra_args: cfg.journalctl_args.clone() }
}

/// Names a source in checkpoints; stable across restarts.
pub fn source_key(s: &LogSource) -> String {
    match s {
        LogSource::FileGlob(g) => format!("file:{g}"),
        LogSource::JournaldUnit(u) => format!("journald:{u}"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// For a drain: resume at the checkpoints, else read everything there is.
    Ship,
    /// For TailLogs: start near the end.
    Tail,
}

/// How many sources run now, across every instance and drain: each source task holds a
/// [`LiveSource`] while it runs. A start that failed and left its sources running shows here.
#[derive(Debug, Clone, Default)]
pub struct LiveSources(Arc<AtomicUsize>);

impl LiveSources {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    fn enter(&self) -> LiveSource {
        self.0.fetch_add(1, Ordering::Relaxed);
        LiveSource(self.0.clone())
    }
}

/// One running source; counted out when its task ends (or is dropped).
struct LiveSource(Arc<AtomicUsize>);

impl Drop for LiveSource {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct SourceSet<'a> {
    pub instance: Arc<str>,
    pub format: LineFormat,
    pub sources: &'a [LogSource],
    /// Folders files may be read from: files are opened beneath them, never through a link.
    pub roots: Arc<[PathBuf]>,
    pub live: LiveSources,
    /// Adds up the matched files the file sources refused to open (links, FIFOs, replaced files).
    pub refused: Arc<AtomicU64>,
}

pub fn spawn_sources(
    set: &SourceSet<'_>,
    positions: &BTreeMap<String, Checkpoint>,
    mode: Mode,
    cfg: &LogsConfig,
    tx: &mpsc::Sender<SourceBatch>,
    cancel: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for source in set.sources {
        let key: Arc<str> = Arc::from(source_key(source).as_str());
        let position = positions.get(&*key);
        let (tx, cancel, instance) = (tx.clone(), cancel.clone(), set.instance.clone());
        let live = set.live.enter();
        match source {
            LogSource::FileGlob(glob) => {
                let refused = set.refused.clone();
                let start = if mode == Mode::Tail { StartAt::Tail(64 * 1024) } else { StartAt::Beginning };
                let roots = LogRoots::new(set.roots.clone());
                let mut follower = FileFollower::new(glob.clone(), roots, set.format, follow_settings(cfg), start);
                if let Some(Checkpoint::Files { files }) = position {
                    follower.restore(files);
                }
                let idle = Duration::from_millis(cfg.poll_interval_ms);
                let budget = read_budget(cfg);
                tasks.push(tokio::task::spawn_blocking(move || {
                    let _live = live;
                    follow_files(key, follower, instance, (idle, budget), (&tx, &refused), &cancel);
                }));
            }
            LogSource::JournaldUnit(unit) => {
                let cursor = match position {
                    Some(Checkpoint::Journal { cursor }) => Some(cursor.clone()),
                    _ => None,
                };
                let tail = (mode == Mode::Tail).then_some(200);
                let src = JournalSource {
                    key,
                    unit: unit.clone(),
                    cursor,
                    tail_lines: tail,
                    settings: journal_settings(cfg),
                    instance,
                };
                tasks.push(tokio::spawn(async move {
                    let _live = live;
                    run_journal_source(src, tx, cancel).await;
                }));
            }
        }
    }
    tasks
}

/// The blocking loop of one file glob: read, hand on, sleep when there is nothing new.
fn follow_files(
    key: Arc<str>,
    mut follower: FileFollower,
    instance: Arc<str>,
    (idle, budget): (Duration, usize),
    (tx, refused): (&mpsc::Sender<SourceBatch>, &AtomicU64),
    cancel: &CancellationToken,
) {
    let mut joined = Vec::new();
    let mut counted = 0;
    while !cancel.is_cancelled() {
        let read = follower.poll(budget, &mut joined);
        refused.fetch_add(follower.refused_opens() - counted, Ordering::Relaxed);
        counted = follower.refused_opens();
        if !joined.is_empty() {
            let time = SystemTime::now();
            let records = joined
                .drain(..)
                .map(|(source, j)| LogRecord {
                    time,
                    instance: instance.clone(),
                    source,
                    severity: j.severity,
                    message: j.message,
                })
                .collect();
            let batch = SourceBatch { key: key.clone(), records, checkpoint: follower.checkpoint() };
            if tx.blocking_send(batch).is_err() {
                return;
            }
        }
        if read == 0 {
            std::thread::sleep(idle);
        }
    }
}
