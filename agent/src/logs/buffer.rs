//! A drain's bounded on-disk buffer: segment files of frames, each frame holding the drain's wire
//! bytes for a batch of records and the source checkpoint just after that batch.
//!
//! `state.json` holds the acknowledgement cursor, the dropped-record count and the checkpoints of
//! everything acknowledged: it is rewritten atomically (fsync + rename) after every acknowledgement.
//! On open, the resume position of each source is the committed checkpoint overlaid with those of the
//! frames still buffered, so buffered data is neither lost nor read twice from the source. A torn
//! frame at the end (crash during a write) fails its CRC and is cut off; its data is read again from
//! the source, whose checkpoint did not include it. A bad frame with valid frames after it (a
//! damaged block) is skipped and counted: its records are lost, the rest of its segment is not.
//!
//! An append that fails (ENOSPC) cuts its partial frame off again, so the segment ends where the
//! last whole frame does and the caller can retry the same batch later.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::checkpoint::Checkpoint;
use super::error::LogsError;
use crate::fsutil;

const MAGIC: u8 = 0xB1;
const HEADER: u64 = 9;

#[derive(Debug, Clone, Copy)]
pub struct BufferLimits {
    pub max_bytes: u64,
    pub segment_bytes: u64,
    /// Appended frames are fsynced at most this long after they were written.
    pub sync_interval: Duration,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    ack_segment: u64,
    ack_offset: u64,
    dropped_records: u64,
    #[serde(default, with = "crate::timefmt::option")]
    last_ack: Option<SystemTime>,
    positions: BTreeMap<String, Checkpoint>,
}

struct Frame {
    id: u64,
    segment: u64,
    start: u64,
    data_start: u64,
    end: u64,
    records: u32,
    key: Arc<str>,
    checkpoint: Checkpoint,
}

/// What the sender got from `read_batch`: pass `last_frame` back to `ack` once delivered.
#[derive(Debug)]
pub struct ReadBatch {
    pub data: Vec<u8>,
    pub records: u64,
    pub last_frame: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufferStatus {
    pub buffered_bytes: u64,
    pub buffered_records: u64,
    pub dropped_records: u64,
    pub last_ack: Option<SystemTime>,
    /// Damaged frames skipped when the buffer was opened (their records are lost).
    pub corrupt_frames: u64,
}

pub struct DrainBuffer {
    dir: PathBuf,
    limits: BufferLimits,
    state: State,
    /// (sequence number, length) of every segment on disk, oldest first; the last one is appended to.
    segments: VecDeque<(u64, u64)>,
    writer: File,
    frames: VecDeque<Frame>,
    next_frame: u64,
    synced_at: Instant,
    dirty: bool,
    corrupt_frames: u64,
}

fn io_err(context: String) -> impl FnOnce(io::Error) -> LogsError {
    move |source| LogsError::Io { context, source }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016}.seg"))
}

impl DrainBuffer {
    /// Opens (or creates) the buffer in `dir`; returns it with the position each source resumes at.
    pub fn open(dir: &Path, limits: BufferLimits) -> Result<(Self, BTreeMap<String, Checkpoint>), LogsError> {
        fsutil::ensure_private_dir(dir).map_err(io_err(format!("create drain buffer {}", dir.display())))?;
        let state_path = dir.join("state.json");
        let state: State = match fs::read(&state_path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|source| LogsError::BufferStateCorrupt { path: state_path.clone(), source })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(io_err(format!("read {}", state_path.display()))(e)),
        };
        let mut seqs: Vec<u64> = fs::read_dir(dir)
            .map_err(io_err(format!("list drain buffer {}", dir.display())))?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".seg")?.parse().ok())
            .collect();
        seqs.sort_unstable();
        let mut positions = state.positions.clone();
        let mut segments = VecDeque::new();
        let mut frames = VecDeque::new();
        let mut next_frame = 0;
        let mut corrupt_frames = 0;
        for seq in seqs {
            let path = segment_path(dir, seq);
            if seq < state.ack_segment {
                fs::remove_file(&path).map_err(io_err(format!("remove delivered segment {}", path.display())))?;
                continue;
            }
            let bytes = fs::read(&path).map_err(io_err(format!("read segment {}", path.display())))?;
            let from = if seq == state.ack_segment { state.ack_offset } else { 0 };
            let mut skipped = 0;
            let valid = scan(&bytes, seq, from, &mut next_frame, &mut frames, &mut skipped);
            if skipped > 0 {
                tracing::error!(segment = %path.display(), "skipped {skipped} damaged frames; their records are lost, the frames after them are kept");
                corrupt_frames += skipped;
            }
            if valid < bytes.len() as u64 {
                tracing::warn!(segment = %path.display(), "cutting a torn frame at offset {valid} (crash during a write)");
                let f =
                    OpenOptions::new().write(true).open(&path).map_err(io_err(format!("open {}", path.display())))?;
                f.set_len(valid).map_err(io_err(format!("truncate {}", path.display())))?;
            }
            segments.push_back((seq, valid));
        }
        for f in &frames {
            positions.insert(f.key.to_string(), f.checkpoint.clone());
        }
        let current = segments.back().map_or(state.ack_segment.max(1), |s| s.0);
        if segments.is_empty() {
            segments.push_back((current, 0));
        }
        let path = segment_path(dir, current);
        let writer = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(format!("open {}", path.display())))?;
        let buffer = Self {
            dir: dir.to_path_buf(),
            limits,
            state,
            segments,
            writer,
            frames,
            next_frame,
            synced_at: Instant::now(),
            dirty: false,
            corrupt_frames,
        };
        Ok((buffer, positions))
    }

    /// Appends one frame. When the buffer is over its limit, whole segments are dropped, oldest first,
    /// and their records counted as dropped.
    pub fn append(
        &mut self,
        key: &Arc<str>,
        checkpoint: &Checkpoint,
        records: u32,
        data: &[u8],
    ) -> Result<(), LogsError> {
        let ckpt = serde_json::to_vec(checkpoint).map_err(|source| LogsError::Encode { what: "checkpoint", source })?;
        let mut payload = Vec::with_capacity(data.len() + ckpt.len() + key.len() + 10);
        payload.extend_from_slice(&u16::try_from(key.len()).unwrap_or(u16::MAX).to_le_bytes());
        payload.extend_from_slice(&key.as_bytes()[..key.len().min(u16::MAX as usize)]);
        payload.extend_from_slice(&u32::try_from(ckpt.len()).unwrap_or(u32::MAX).to_le_bytes());
        payload.extend_from_slice(&ckpt);
        payload.extend_from_slice(&records.to_le_bytes());
        let data_offset = payload.len() as u64;
        payload.extend_from_slice(data);
        let mut frame = Vec::with_capacity(payload.len() + HEADER as usize);
        frame.push(MAGIC);
        frame.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(u32::MAX).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);

        let (seq, len) = *self.segments.back().unwrap_or(&(1, 0));
        let (seq, start) = if len > 0 && len + frame.len() as u64 > self.limits.segment_bytes {
            self.roll(seq + 1)?;
            (seq + 1, 0)
        } else {
            (seq, len)
        };
        if let Err(e) = self.writer.write_all(&frame) {
            // A partial frame left here would sit before every later frame (the writer appends):
            // cut it, so a retry starts where this frame did. Shrinking needs no free space.
            if let Err(cut) = self.writer.set_len(start) {
                tracing::error!(buffer = %self.dir.display(), "cut a partly written frame: {cut}");
            }
            return Err(io_err(format!("append to drain buffer {}", self.dir.display()))(e));
        }
        if let Some(last) = self.segments.back_mut() {
            last.1 = start + frame.len() as u64;
        }
        self.frames.push_back(Frame {
            id: self.next_frame,
            segment: seq,
            start,
            data_start: start + HEADER + data_offset,
            end: start + frame.len() as u64,
            records,
            key: key.clone(),
            checkpoint: checkpoint.clone(),
        });
        self.next_frame += 1;
        self.dirty = true;
        if self.synced_at.elapsed() >= self.limits.sync_interval {
            self.sync()?;
        }
        self.enforce_limit()
    }

    fn roll(&mut self, seq: u64) -> Result<(), LogsError> {
        self.sync()?;
        let path = segment_path(&self.dir, seq);
        self.writer = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(format!("create {}", path.display())))?;
        self.segments.push_back((seq, 0));
        crate::fsutil::sync_dir(&self.dir).map_err(io_err(format!("sync {}", self.dir.display())))
    }

    pub fn sync(&mut self) -> Result<(), LogsError> {
        if self.dirty {
            self.writer.sync_data().map_err(io_err(format!("sync drain buffer {}", self.dir.display())))?;
            self.dirty = false;
        }
        self.synced_at = Instant::now();
        Ok(())
    }

    fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.1).sum()
    }

    fn enforce_limit(&mut self) -> Result<(), LogsError> {
        let mut dropped = 0u64;
        while self.disk_bytes() > self.limits.max_bytes && self.segments.len() > 1 {
            let Some((seq, _)) = self.segments.pop_front() else { break };
            while self.frames.front().is_some_and(|f| f.segment == seq) {
                if let Some(f) = self.frames.pop_front() {
                    dropped += u64::from(f.records);
                    // Dropped data is never read again from the source either.
                    self.state.positions.insert(f.key.to_string(), f.checkpoint);
                }
            }
            let path = segment_path(&self.dir, seq);
            fs::remove_file(&path).map_err(io_err(format!("remove segment {}", path.display())))?;
        }
        if dropped > 0 {
            self.state.dropped_records += dropped;
            tracing::warn!(
                buffer = %self.dir.display(),
                "drain buffer full ({} bytes): dropped the oldest {dropped} records ({} dropped in total)",
                self.limits.max_bytes,
                self.state.dropped_records
            );
            self.move_ack_cursor();
            self.write_state()?;
        }
        Ok(())
    }

    /// Up to `max_bytes` (at least one frame) of the oldest unacknowledged data.
    pub fn read_batch(&self, max_bytes: usize) -> Result<Option<ReadBatch>, LogsError> {
        let mut data = Vec::new();
        let mut records = 0u64;
        let mut last_frame = None;
        let mut segment: Option<(u64, File)> = None;
        for f in &self.frames {
            let len = (f.end - f.data_start) as usize;
            if last_frame.is_some() && data.len() + len > max_bytes {
                break;
            }
            if segment.as_ref().is_none_or(|s| s.0 != f.segment) {
                let path = segment_path(&self.dir, f.segment);
                segment = Some((f.segment, File::open(&path).map_err(io_err(format!("open {}", path.display())))?));
            }
            let Some((_, file)) = &segment else { break };
            let at = data.len();
            data.resize(at + len, 0);
            file.read_exact_at(&mut data[at..], f.data_start)
                .map_err(io_err(format!("read drain buffer {}", self.dir.display())))?;
            records += u64::from(f.records);
            last_frame = Some(f.id);
        }
        Ok(last_frame.map(|last_frame| ReadBatch { data, records, last_frame }))
    }

    /// The drain acknowledged every frame up to `last_frame`: commit their checkpoints.
    pub fn ack(&mut self, last_frame: u64) -> Result<(), LogsError> {
        let mut any = false;
        while self.frames.front().is_some_and(|f| f.id <= last_frame) {
            if let Some(f) = self.frames.pop_front() {
                self.state.positions.insert(f.key.to_string(), f.checkpoint);
                any = true;
            }
        }
        if !any {
            return Ok(());
        }
        self.state.last_ack = Some(SystemTime::now());
        self.move_ack_cursor();
        self.write_state()?;
        while self.segments.len() > 1 && self.segments.front().is_some_and(|s| s.0 < self.state.ack_segment) {
            if let Some((seq, _)) = self.segments.pop_front() {
                let path = segment_path(&self.dir, seq);
                fs::remove_file(&path).map_err(io_err(format!("remove delivered segment {}", path.display())))?;
            }
        }
        Ok(())
    }

    fn move_ack_cursor(&mut self) {
        let (seg, off) = match self.frames.front() {
            Some(f) => (f.segment, f.start),
            None => *self.segments.back().unwrap_or(&(1, 0)),
        };
        self.state.ack_segment = seg;
        self.state.ack_offset = off;
    }

    fn write_state(&self) -> Result<(), LogsError> {
        let path = self.dir.join("state.json");
        let bytes =
            serde_json::to_vec(&self.state).map_err(|source| LogsError::Encode { what: "buffer state", source })?;
        fsutil::atomic_write(&path, &bytes).map_err(io_err(format!("write {}", path.display())))
    }

    pub fn status(&self) -> BufferStatus {
        BufferStatus {
            buffered_bytes: self.frames.iter().map(|f| f.end - f.data_start).sum(),
            buffered_records: self.frames.iter().map(|f| u64::from(f.records)).sum(),
            dropped_records: self.state.dropped_records,
            last_ack: self.state.last_ack,
            corrupt_frames: self.corrupt_frames,
        }
    }

    /// Frames appended since the buffer was opened: an append that failed after its frame was
    /// stored (a later fsync, say) shows here and must not be repeated.
    pub fn appended_frames(&self) -> u64 {
        self.next_frame
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

/// Parses frames of one segment from `from`; returns the end of the last valid frame. Bytes that
/// are not a frame but have a valid frame after them are a damaged frame: skipped, and counted in
/// `skipped`; with none after them they are the torn end of the segment.
fn scan(bytes: &[u8], seq: u64, from: u64, next: &mut u64, out: &mut VecDeque<Frame>, skipped: &mut u64) -> u64 {
    let mut at = from as usize;
    if at > bytes.len() {
        return bytes.len() as u64;
    }
    loop {
        let Some(frame) = parse_frame(&bytes[at..]) else {
            match next_valid_frame(bytes, at) {
                Some(resume) => {
                    *skipped += 1;
                    at = resume;
                    continue;
                }
                None => break,
            }
        };
        let (len, key, checkpoint, records, data_offset) = frame;
        out.push_back(Frame {
            id: *next,
            segment: seq,
            start: at as u64,
            data_start: (at + HEADER as usize + data_offset) as u64,
            end: (at + len) as u64,
            records,
            key: Arc::from(key),
            checkpoint,
        });
        *next += 1;
        at += len;
    }
    at as u64
}

/// The start of the first whole, valid frame after `at`. A frame's CRC covers its payload, so a
/// stray magic byte inside damaged data is not taken for a frame.
fn next_valid_frame(bytes: &[u8], at: usize) -> Option<usize> {
    let from = at + 1;
    memchr::memchr_iter(MAGIC, bytes.get(from..)?).map(|i| from + i).find(|&p| parse_frame(&bytes[p..]).is_some())
}

type Parsed<'a> = (usize, &'a str, Checkpoint, u32, usize);

fn parse_frame(b: &[u8]) -> Option<Parsed<'_>> {
    let header = b.get(..HEADER as usize)?;
    if header[0] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(header[1..5].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[5..9].try_into().ok()?);
    let payload = b.get(HEADER as usize..HEADER as usize + len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let key_len = u16::from_le_bytes(payload.get(..2)?.try_into().ok()?) as usize;
    let key = std::str::from_utf8(payload.get(2..2 + key_len)?).ok()?;
    let mut at = 2 + key_len;
    let ckpt_len = u32::from_le_bytes(payload.get(at..at + 4)?.try_into().ok()?) as usize;
    at += 4;
    let checkpoint = serde_json::from_slice(payload.get(at..at + ckpt_len)?).ok()?;
    at += ckpt_len;
    let records = u32::from_le_bytes(payload.get(at..at + 4)?.try_into().ok()?);
    at += 4;
    Some((HEADER as usize + len, key, checkpoint, records, at))
}
