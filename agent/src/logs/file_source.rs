//! Following the files of one glob across rotation.
//!
//! Files are tracked by (device, inode). Rotation by rename: the old inode stays open and is read to
//! its end; it is closed once it no longer matches the glob and has been quiet for `rotate_wait` (or
//! was deleted), so a writer that reopens late loses nothing. Rotation by copytruncate: the size drops
//! below our offset; the bytes we had not read yet are recovered from the copy when one is found in
//! the same folder (its bytes before our offset match what we read last), then reading restarts at 0.
//! New files matching the glob are read from their start.

use memchr::memchr_iter;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::checkpoint::{Checkpoint, FilePos};
use super::lines::{Joined, Joiner, LineFormat};

/// A line longer than this without a newline is handed on in pieces.
const MAX_LINE_BYTES: usize = 1024 * 1024;
/// How much of the last bytes read is kept to recognise the copy made by copytruncate.
const TAIL_KEEP: usize = 256;

#[derive(Debug, Clone, Copy)]
pub struct FollowSettings {
    /// Quiet time after which a rotated-away file is closed.
    pub rotate_wait: Duration,
    /// Quiet time after which a record still being joined is handed on.
    pub flush_after: Duration,
    /// How often the glob is expanded again.
    pub rescan: Duration,
}

impl Default for FollowSettings {
    fn default() -> Self {
        Self {
            rotate_wait: Duration::from_secs(5),
            flush_after: Duration::from_millis(500),
            rescan: Duration::from_millis(250),
        }
    }
}

/// Where files present at the first scan start, when there is no checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Beginning,
    /// About this many bytes before the end, from the next line start (for tailing).
    Tail(u64),
}

pub struct FileFollower {
    glob: String,
    format: LineFormat,
    settings: FollowSettings,
    start: StartAt,
    files: Vec<Tracked>,
    scanned_at: Option<Instant>,
    chunk: Vec<u8>,
    /// When set, a matched path whose links resolve outside these folders is never opened.
    roots: Option<Arc<[PathBuf]>>,
}

struct Tracked {
    dev: u64,
    ino: u64,
    path: PathBuf,
    name: Arc<str>,
    file: File,
    read_pos: u64,
    partial: Vec<u8>,
    joiner: Joiner,
    matched: bool,
    last_data: Instant,
    tail: Vec<u8>,
    skip_first_line: bool,
}

impl Tracked {
    fn open(path: &Path, meta: &std::fs::Metadata, format: LineFormat, read_pos: u64) -> io::Result<Self> {
        let file = File::open(path)?;
        Ok(Self {
            dev: meta.dev(),
            ino: meta.ino(),
            path: path.to_path_buf(),
            name: Arc::from(path.to_string_lossy().as_ref()),
            file,
            read_pos,
            partial: Vec::new(),
            joiner: Joiner::new(format),
            matched: true,
            last_data: Instant::now(),
            tail: Vec::new(),
            skip_first_line: false,
        })
    }

    fn commit_pos(&self) -> u64 {
        self.joiner.pending_start().unwrap_or(self.read_pos - self.partial.len() as u64)
    }

    /// Splits `data` (read at `read_pos`) into lines and feeds the joiner.
    fn consume(&mut self, data: &[u8], out: &mut Vec<(Arc<str>, Joined)>) {
        let mut joined = Vec::new();
        let mut line_start = self.read_pos - self.partial.len() as u64;
        let mut i = 0;
        for nl in memchr_iter(b'\n', data) {
            let end = self.read_pos + nl as u64 + 1;
            if self.skip_first_line {
                self.skip_first_line = false;
            } else if self.partial.is_empty() {
                self.joiner.push(&data[i..nl], line_start, end, &mut joined);
            } else {
                self.partial.extend_from_slice(&data[i..nl]);
                self.joiner.push(&self.partial, line_start, end, &mut joined);
            }
            self.partial.clear();
            line_start = end;
            i = nl + 1;
        }
        self.partial.extend_from_slice(&data[i..]);
        self.read_pos += data.len() as u64;
        if self.partial.len() > MAX_LINE_BYTES {
            self.joiner.push(&self.partial, line_start, self.read_pos, &mut joined);
            self.partial.clear();
        }
        let keep = data.len().min(TAIL_KEEP);
        self.tail.extend_from_slice(&data[data.len() - keep..]);
        let excess = self.tail.len().saturating_sub(TAIL_KEEP);
        self.tail.drain(..excess);
        out.extend(joined.into_iter().map(|j| (self.name.clone(), j)));
    }

    /// Hands on whatever is held: the last line without newline and the record being joined.
    fn flush_all(&mut self, out: &mut Vec<(Arc<str>, Joined)>) {
        let mut joined = Vec::new();
        if !self.partial.is_empty() {
            let start = self.read_pos - self.partial.len() as u64;
            self.joiner.push(&self.partial, start, self.read_pos, &mut joined);
            self.partial.clear();
        }
        self.joiner.flush(&mut joined);
        out.extend(joined.into_iter().map(|j| (self.name.clone(), j)));
    }
}

impl FileFollower {
    pub fn new(glob: String, format: LineFormat, settings: FollowSettings, start: StartAt) -> Self {
        Self {
            glob,
            format,
            settings,
            start,
            files: Vec::new(),
            scanned_at: None,
            chunk: vec![0; 1024 * 1024],
            roots: None,
        }
    }

    /// Opens only files that resolve (symbolic links followed) below `roots`. The log folders
    /// belong to the databases' users, and the agent reads as root: a link planted there must not
    /// ship the host's secrets (the KEK, /etc/shadow) to a drain.
    pub fn confine_to(&mut self, roots: Arc<[PathBuf]>) {
        self.roots = Some(roots);
    }

    /// Resumes from a checkpoint: every file found again (at its path, or renamed in its folder)
    /// continues at its offset; files that match the glob but are not in it start at 0.
    pub fn restore(&mut self, files: &[FilePos]) {
        for pos in files {
            let Some((path, meta)) = find_inode(pos) else {
                tracing::info!(path = %pos.path.display(), "log file is gone since the last run; reading its successor from the start");
                continue;
            };
            let offset = if meta.len() < pos.offset {
                tracing::warn!(path = %path.display(), "log file was truncated while the agent was stopped; reading it from the start");
                0
            } else {
                pos.offset
            };
            match Tracked::open(&path, &meta, self.format, offset) {
                Ok(t) => self.files.push(t),
                Err(e) => tracing::warn!("open log file {}: {e:#}", path.display()),
            }
        }
        self.start = StartAt::Beginning;
    }

    pub fn checkpoint(&self) -> Checkpoint {
        let files = self
            .files
            .iter()
            .map(|t| FilePos { dev: t.dev, ino: t.ino, path: t.path.clone(), offset: t.commit_pos() })
            .collect();
        Checkpoint::Files { files }
    }

    /// Reads what is new, up to about `budget` bytes; joined records go to `out` with their file's
    /// name. Returns the number of bytes read.
    pub fn poll(&mut self, budget: usize, out: &mut Vec<(Arc<str>, Joined)>) -> usize {
        let now = Instant::now();
        if self.scanned_at.is_none_or(|t| now.duration_since(t) >= self.settings.rescan) {
            self.rescan();
            self.scanned_at = Some(now);
        }
        let mut read = 0;
        let mut chunk = std::mem::take(&mut self.chunk);
        for t in &mut self.files {
            if read >= budget {
                break;
            }
            let len = match t.file.metadata() {
                Ok(m) => m.len(),
                Err(e) => {
                    tracing::warn!("stat log file {}: {e:#}", t.path.display());
                    continue;
                }
            };
            if len < t.read_pos || (len > t.read_pos && !tail_still_there(t)) {
                recover_truncated(t, &mut chunk, out);
            }
            while read < budget {
                let want = chunk.len().min(budget - read);
                match t.file.read_at(&mut chunk[..want], t.read_pos) {
                    Ok(0) => break,
                    // Truncated and rewritten between the check above and this read: what we got
                    // is from the new content at the old offset. Leave it to the recovery.
                    Ok(_) if !tail_still_there(t) => break,
                    Ok(n) => {
                        t.consume(&chunk[..n], out);
                        t.last_data = now;
                        read += n;
                    }
                    Err(e) => {
                        tracing::warn!("read log file {}: {e:#}", t.path.display());
                        break;
                    }
                }
            }
            // A rotated-away file read to its end: its last record is complete, and must not wait
            // behind the new file's records.
            let rotated_at_end = !t.matched && read < budget;
            if t.joiner.has_pending()
                && (rotated_at_end || now.duration_since(t.last_data) >= self.settings.flush_after)
            {
                let mut joined = Vec::new();
                t.joiner.flush(&mut joined);
                out.extend(joined.into_iter().map(|j| (t.name.clone(), j)));
            }
        }
        self.chunk = chunk;
        if read < budget {
            self.close_rotated(now, out);
        }
        read
    }

    fn rescan(&mut self) {
        for t in &mut self.files {
            t.matched = false;
        }
        let paths = match glob::glob(&self.glob) {
            Ok(paths) => paths,
            Err(e) => {
                tracing::warn!("expand log glob {}: {e}", self.glob);
                return;
            }
        };
        let first_scan = self.scanned_at.is_none();
        for path in paths.flatten() {
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            if !meta.is_file() {
                continue;
            }
            if let Some(roots) = &self.roots
                && !crate::fsutil::resolves_below(&path, roots)
            {
                if !self.files.iter().any(|t| t.path == path) {
                    tracing::warn!(path = %path.display(), "log file leads out of the log and data roots through a symbolic link; not read");
                }
                continue;
            }
            if let Some(t) = self.files.iter_mut().find(|t| t.dev == meta.dev() && t.ino == meta.ino()) {
                t.matched = true;
                if t.path != path {
                    t.name = Arc::from(path.to_string_lossy().as_ref());
                    t.path = path;
                }
                continue;
            }
            let (pos, skip) = match self.start {
                StartAt::Tail(n) if first_scan && meta.len() > n => (meta.len() - n, true),
                _ => (0, false),
            };
            match Tracked::open(&path, &meta, self.format, pos) {
                Ok(mut t) => {
                    t.skip_first_line = skip;
                    self.files.push(t);
                }
                Err(e) => tracing::warn!("open log file {}: {e:#}", path.display()),
            }
        }
    }

    /// Closes files that no longer match the glob once they are read to the end and quiet.
    fn close_rotated(&mut self, now: Instant, out: &mut Vec<(Arc<str>, Joined)>) {
        let wait = self.settings.rotate_wait;
        let mut i = 0;
        while i < self.files.len() {
            let t = &mut self.files[i];
            let meta = t.file.metadata();
            let done = !t.matched
                && meta.as_ref().is_ok_and(|m| m.len() <= t.read_pos)
                && (meta.as_ref().is_ok_and(|m| m.nlink() == 0) || now.duration_since(t.last_data) >= wait);
            if done {
                t.flush_all(out);
                tracing::debug!(path = %t.path.display(), "closed rotated log file");
                self.files.remove(i);
            } else {
                i += 1;
            }
        }
    }
}

/// The file was truncated below what we read (copytruncate). Reads the rest from the copy if one is
/// found, then restarts at 0.
fn recover_truncated(t: &mut Tracked, chunk: &mut [u8], out: &mut Vec<(Arc<str>, Joined)>) {
    match find_copy(t) {
        Some(copy) => {
            tracing::info!(path = %t.path.display(), "log file was truncated after a copy; reading the rest from the copy");
            loop {
                match copy.read_at(chunk, t.read_pos) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => t.consume(&chunk[..n], out),
                }
            }
        }
        None => tracing::warn!(
            path = %t.path.display(),
            "log file was truncated (copytruncate) and no copy with the unread rest was found; lines written just before the truncation may be missing"
        ),
    }
    t.flush_all(out);
    t.read_pos = 0;
    t.tail.clear();
    t.skip_first_line = false;
}

/// A file truncated and written again past our offset before we looked has a size that hides the
/// truncation; the bytes we read last no longer being where we read them gives it away.
fn tail_still_there(t: &Tracked) -> bool {
    if t.tail.is_empty() {
        return true;
    }
    let mut probe = vec![0; t.tail.len()];
    t.file.read_exact_at(&mut probe, t.read_pos - t.tail.len() as u64).is_ok() && probe == t.tail
}

/// A file in the same folder, not the truncated one, that holds the bytes we read last at the same
/// offset: the copy that copytruncate made.
fn find_copy(t: &Tracked) -> Option<File> {
    if t.tail.is_empty() {
        return None;
    }
    let dir = t.path.parent()?;
    let tail_start = t.read_pos - t.tail.len() as u64;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() || meta.ino() == t.ino || meta.len() < t.read_pos {
            continue;
        }
        let Ok(f) = File::open(entry.path()) else { continue };
        let mut probe = vec![0; t.tail.len()];
        if f.read_exact_at(&mut probe, tail_start).is_ok() && probe == t.tail {
            return Some(f);
        }
    }
    None
}

fn find_inode(pos: &FilePos) -> Option<(PathBuf, std::fs::Metadata)> {
    let same = |m: &std::fs::Metadata| m.dev() == pos.dev && m.ino() == pos.ino;
    if let Ok(m) = std::fs::metadata(&pos.path)
        && same(&m)
    {
        return Some((pos.path.clone(), m));
    }
    let dir = pos.path.parent()?;
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let m = e.metadata().ok()?;
        (m.is_file() && same(&m)).then(|| (e.path(), m))
    })
}
