//! Following the files of one glob across rotation.
//!
//! Files are tracked by (device, inode). Rotation by rename: the old inode stays open and is read to
//! its end; it is closed once it no longer matches the glob and has been quiet for `rotate_wait` (or
//! was deleted), so a writer that reopens late loses nothing. Rotation by copytruncate: the size drops
//! below our offset; the bytes we had not read yet are recovered from the copy when one is found in
//! the same folder (its bytes before our offset match what we read last), then reading restarts at 0.
//! New files matching the glob are read from their start.
//!
//! The folders belong to the databases' users, and the agent reads as root: every file is opened
//! through [`LogRoots`] (beneath a log root, no link followed in any component, regular files only),
//! and once open it is read through that descriptor only. Holes (a sparse file) are skipped, not
//! read as NUL bytes.

use memchr::memchr_iter;
use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::checkpoint::{Checkpoint, FilePos};
use super::lines::{Joined, Joiner, LineFormat};
use super::open_beneath::{self, LogRoots, OpenRefused, OpenedLog};

/// A line longer than this without a newline is handed on in pieces.
const MAX_LINE_BYTES: usize = 1024 * 1024;
/// How much of the last bytes read is kept to recognise the copy made by copytruncate.
const TAIL_KEEP: usize = 256;
/// Paths whose refusal was logged are remembered up to this many, so a tenant who flips a name in a
/// loop gets one warning per name, not one per scan, and cannot grow the set without bound.
const WARNED_KEEP: usize = 256;

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
    roots: LogRoots,
    /// Opens refused (links, FIFOs, files outside the roots, replaced files) since the start.
    refused: u64,
    warned: HashSet<PathBuf>,
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
    fn new(opened: OpenedLog, path: PathBuf, format: LineFormat, read_pos: u64) -> Self {
        Self {
            dev: opened.meta.dev(),
            ino: opened.meta.ino(),
            name: Arc::from(path.to_string_lossy().as_ref()),
            path,
            file: opened.file,
            read_pos,
            partial: Vec::new(),
            joiner: Joiner::new(format),
            matched: true,
            last_data: Instant::now(),
            tail: Vec::new(),
            skip_first_line: false,
        }
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
    /// Follows the files matching `glob` that open beneath `roots` (see [`LogRoots`]).
    pub fn new(glob: String, roots: LogRoots, format: LineFormat, settings: FollowSettings, start: StartAt) -> Self {
        Self {
            glob,
            format,
            settings,
            start,
            files: Vec::new(),
            scanned_at: None,
            chunk: vec![0; 1024 * 1024],
            roots,
            refused: 0,
            warned: HashSet::new(),
        }
    }

    /// How many opens were refused so far (links, FIFOs, replaced files, paths outside the roots).
    pub fn refused_opens(&self) -> u64 {
        self.refused
    }

    /// Counts a refused open; warns once per path.
    fn refuse(&mut self, path: &Path, why: &OpenRefused) {
        if matches!(why, OpenRefused::Gone) {
            return;
        }
        self.refused += 1;
        if self.warned.len() < WARNED_KEEP && self.warned.insert(path.to_path_buf()) {
            tracing::warn!(
                path = %path.display(),
                refused_total = self.refused,
                "log file not read: {why} (further refusals of this path are counted, not logged)"
            );
        }
    }

    /// Resumes from a checkpoint: every file found again (at its path, or renamed in its folder)
    /// continues at its offset; files that match the glob but are not in it start at 0.
    pub fn restore(&mut self, files: &[FilePos]) {
        for pos in files {
            let Some((path, opened)) = find_inode(&self.roots, pos) else {
                tracing::info!(path = %pos.path.display(), "log file is gone since the last run; reading its successor from the start");
                continue;
            };
            let offset = if opened.meta.len() < pos.offset {
                tracing::warn!(path = %path.display(), "log file was truncated while the agent was stopped; reading it from the start");
                0
            } else {
                pos.offset
            };
            self.files.push(Tracked::new(opened, path, self.format, offset));
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
                recover_truncated(t, &self.roots, &mut chunk, out);
            }
            if len > t.read_pos {
                skip_hole(t, len, out);
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
            // The open is the check: what is read is the descriptor that passed it.
            let opened = match self.roots.open_file(&path) {
                Ok(o) => o,
                Err(why) => {
                    self.refuse(&path, &why);
                    continue;
                }
            };
            let meta = &opened.meta;
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
            let mut t = Tracked::new(opened, path, self.format, pos);
            t.skip_first_line = skip;
            self.files.push(t);
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
fn recover_truncated(t: &mut Tracked, roots: &LogRoots, chunk: &mut [u8], out: &mut Vec<(Arc<str>, Joined)>) {
    match find_copy(t, roots) {
        Some(copy) => {
            tracing::info!(path = %t.path.display(), "log file was truncated after a copy; reading the rest from the copy");
            // Up to the copy's size when it was vetted: a copy that keeps growing is not followed.
            let end = copy.meta.len();
            while t.read_pos < end {
                let want = chunk.len().min(usize::try_from(end - t.read_pos).unwrap_or(usize::MAX));
                match copy.file.read_at(&mut chunk[..want], t.read_pos) {
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

/// A hole (a sparse file, or the gap a writer leaves after copytruncate) holds no log text: reading
/// starts again at the next data, or at the end when there is none. A planted terabyte of holes
/// costs one `lseek`, not a terabyte of NUL bytes shipped to a drain.
fn skip_hole(t: &mut Tracked, len: u64, out: &mut Vec<(Arc<str>, Joined)>) {
    let data = match rustix::fs::seek(&t.file, rustix::fs::SeekFrom::Data(t.read_pos)) {
        Ok(at) => at.min(len),
        Err(rustix::io::Errno::NXIO) => len,
        // A file system without SEEK_DATA reports everything as data.
        Err(_) => return,
    };
    if data > t.read_pos {
        tracing::debug!(path = %t.path.display(), "skipped a hole of {} bytes", data - t.read_pos);
        t.flush_all(out);
        t.read_pos = data;
        t.tail.clear();
        t.skip_first_line = false;
    }
}

/// A file in the same folder, not the truncated one, that holds the bytes we read last at the same
/// offset: the copy that copytruncate made. The folder and each candidate are opened beneath the
/// roots like the followed files: a link planted as a copy is never opened.
fn find_copy(t: &Tracked, roots: &LogRoots) -> Option<OpenedLog> {
    if t.tail.is_empty() {
        return None;
    }
    let dir = roots.open_dir(t.path.parent()?).ok()?;
    let tail_start = t.read_pos - t.tail.len() as u64;
    for name in dir.entries().unwrap_or_default() {
        let Ok(c) = open_beneath::open_entry(&dir, &name) else { continue };
        if c.meta.ino() == t.ino || c.meta.len() < t.read_pos {
            continue;
        }
        let mut probe = vec![0; t.tail.len()];
        if c.file.read_exact_at(&mut probe, tail_start).is_ok() && probe == t.tail {
            return Some(c);
        }
    }
    None
}

/// The checkpointed file again: at its path, or renamed within its folder; only the same (device,
/// inode), opened beneath the roots.
fn find_inode(roots: &LogRoots, pos: &FilePos) -> Option<(PathBuf, OpenedLog)> {
    if let Ok(o) = roots.reopen(&pos.path, pos.dev, pos.ino) {
        return Some((pos.path.clone(), o));
    }
    let parent = pos.path.parent()?;
    let dir = roots.open_dir(parent).ok()?;
    dir.entries().unwrap_or_default().into_iter().find_map(|name| {
        let o = open_beneath::open_entry(&dir, &name).ok()?;
        (o.meta.dev() == pos.dev && o.meta.ino() == pos.ino).then(|| (parent.join(name), o))
    })
}
