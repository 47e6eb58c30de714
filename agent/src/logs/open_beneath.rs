//! Opening log files as root beneath the vetted log roots without following any link.
//!
//! The log folders belong to the databases' users, who may swap a matched `*.log` for a link to the
//! agent's keys at any moment. Checking a path and then opening it by name leaves that moment open,
//! so every open here resolves relative to a handle on the root through [`crate::beneath`]
//! (`openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`): a link in any component fails the open
//! itself. Files are opened `O_NOFOLLOW | O_NONBLOCK` (a FIFO answers at once instead of hanging
//! the reader) and `fstat`ed on the opened descriptor. What is the log reader's own lives here:
//! only a regular file with one name is read. A second hard link could be a file outside the roots
//! (where `fs.protected_hardlinks` is off, a tenant may link any file on the same file system), and
//! log files are never hard-linked by the engines or by logrotate.
//!
//! The roots themselves come from the agent's configuration and their ancestors belong to root, so
//! they are opened by path ([`DirHandle::open_configured_root`]); each call opens them again, which
//! is one cheap `O_PATH` open and follows an administrator who recreates a root folder.

use rustix::fs::{FileType, Stat};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::beneath::{BeneathError, DirHandle};

/// Why a matched log file was not opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenRefused {
    #[error("it lies outside the log and data roots")]
    OutsideRoots,
    #[error("a symbolic link is in its path")]
    Link,
    #[error("it is not a regular file ({0})")]
    NotRegular(&'static str),
    #[error("it has {0} hard links; another name of it may lie outside the roots")]
    HardLinked(u64),
    #[error("it is no longer the file that was vetted (device {dev}, inode {ino})")]
    Replaced { dev: u64, ino: u64 },
    #[error("it is gone")]
    Gone,
    #[error("open failed: {0}")]
    Io(#[source] std::io::Error),
}

/// A regular file opened beneath a root, with its `fstat`.
pub struct OpenedLog {
    pub file: File,
    pub meta: std::fs::Metadata,
}

/// The folders log files may be read from (`Registry::log_read_roots`).
#[derive(Debug, Clone)]
pub struct LogRoots {
    roots: Arc<[PathBuf]>,
}

impl LogRoots {
    pub fn new(roots: Arc<[PathBuf]>) -> Self {
        Self { roots }
    }

    /// Opens the regular file at `path`, which must lie strictly below a root, without following a
    /// link anywhere below that root.
    pub fn open_file(&self, path: &Path) -> Result<OpenedLog, OpenRefused> {
        let (root, rel) = self.split(path).ok_or(OpenRefused::OutsideRoots)?;
        if rel.as_os_str().is_empty() {
            return Err(OpenRefused::OutsideRoots);
        }
        let root = DirHandle::open_configured_root(root).map_err(refusal)?;
        let (file, stat) = root.open_for_reading(rel).map_err(refusal)?;
        regular(file, &stat)
    }

    /// Opens `path` only if it is still the file (device, inode) that was vetted before.
    pub fn reopen(&self, path: &Path, dev: u64, ino: u64) -> Result<OpenedLog, OpenRefused> {
        let opened = self.open_file(path)?;
        if opened.meta.dev() == dev && opened.meta.ino() == ino {
            Ok(opened)
        } else {
            Err(OpenRefused::Replaced { dev, ino })
        }
    }

    /// Opens the folder `path` (the root itself or a folder below it) for listing, links refused.
    pub fn open_dir(&self, path: &Path) -> Result<DirHandle, OpenRefused> {
        let (root, rel) = self.split(path).ok_or(OpenRefused::OutsideRoots)?;
        let root = DirHandle::open_configured_root(root).map_err(refusal)?;
        root.open_dir(rel).map_err(refusal)
    }

    /// The deepest root `path` lies below (compared component by component), and the rest.
    fn split<'a>(&'a self, path: &'a Path) -> Option<(&'a Path, &'a Path)> {
        self.roots
            .iter()
            .filter_map(|root| path.strip_prefix(root).ok().map(|rest| (root.as_path(), rest)))
            .max_by_key(|(root, _)| root.components().count())
    }
}

/// Opens the entry `name` of the folder `dir` (one name, no slash) as a regular file, not
/// following a link.
pub fn open_entry(dir: &DirHandle, name: &OsStr) -> Result<OpenedLog, OpenRefused> {
    if name.as_encoded_bytes().contains(&b'/') {
        return Err(OpenRefused::OutsideRoots);
    }
    let (file, stat) = dir.open_for_reading(Path::new(name)).map_err(refusal)?;
    regular(file, &stat)
}

fn regular(file: File, stat: &Stat) -> Result<OpenedLog, OpenRefused> {
    let kind = match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => None,
        FileType::Directory => Some("a folder"),
        FileType::Fifo => Some("a FIFO"),
        FileType::Socket => Some("a socket"),
        FileType::CharacterDevice | FileType::BlockDevice => Some("a device"),
        _ => Some("not a file"),
    };
    if let Some(kind) = kind {
        return Err(OpenRefused::NotRegular(kind));
    }
    if stat.st_nlink > 1 {
        return Err(OpenRefused::HardLinked(stat.st_nlink));
    }
    let meta = file.metadata().map_err(OpenRefused::Io)?;
    Ok(OpenedLog { file, meta })
}

fn refusal(e: BeneathError) -> OpenRefused {
    match e.errno() {
        // ELOOP: a link where RESOLVE_NO_SYMLINKS or O_NOFOLLOW met one; EXDEV: `..` or an absolute
        // link tried to leave the root.
        Some(Errno::LOOP | Errno::XDEV) => OpenRefused::Link,
        Some(Errno::NOENT | Errno::NOTDIR) => OpenRefused::Gone,
        // A socket cannot be opened like a file.
        Some(Errno::NXIO) => OpenRefused::NotRegular("a socket"),
        _ => OpenRefused::Io(e.to_io()),
    }
}
