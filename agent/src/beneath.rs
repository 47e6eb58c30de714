//! Directory handles: file-system work as root beneath a folder that an untrusted user can write.
//!
//! The engines' OS users own the data roots. A path string checked once and used again later is a
//! hole: between the check and the use, that user can swap any component for a symbolic link and
//! aim root's create, chown, write or delete elsewhere on the host. So the work goes through
//! handles instead:
//!
//! - [`DirHandle::open_root`] opens a trusted root once, resolved from `/` without following any
//!   link (a root reached through a link is refused, not resolved). A root the agent's
//!   configuration names, whose ancestors belong to root, may instead be opened by its path
//!   ([`DirHandle::open_configured_root`]).
//! - Everything below is resolved *beneath* a handle with `openat2(RESOLVE_BENEATH |
//!   RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`: a `..` that climbs out, an absolute path or a
//!   link anywhere on the way fails (`ELOOP`/`EXDEV`), and the caller gets
//!   [`BeneathError::Refused`].
//! - Changes (create, rename, remove, chown) act on one name in a folder the caller holds open, or
//!   on an open file descriptor (`fchown`), so a swap after the open changes nothing: the handle is
//!   the folder that was opened, wherever its name now points.
//! - Files are created `O_CREAT | O_EXCL | O_NOFOLLOW` (a planted name, link or not, fails the
//!   create) and opened `O_NOFOLLOW | O_NONBLOCK`, then `fstat`ed (a FIFO neither blocks nor is read).
//!
//! This is the one place that resolves beneath a handle: the restore folder, the backup estimate,
//! the log files (`logs/open_beneath.rs`) and the mount points (`volume/host/mount_point.rs`) all
//! open through it and keep only their own checks.
//!
//! cap-std does much of this, but it follows links that stay inside its root; a data root holds
//! several instances, and a link from one tenant's folder into another's stays inside it. rustix's
//! `openat2` with `RESOLVE_NO_SYMLINKS` says exactly what is meant, so this module is written on it.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;
use thiserror::Error;

/// Deeper trees are refused by [`DirHandle::remove_tree`]: each level holds a descriptor open, and a
/// tenant could nest folders until the agent runs out of them. Real data directories are shallow.
pub const MAX_TREE_DEPTH: usize = 128;

#[derive(Debug, Error)]
pub enum BeneathError {
    /// A symbolic link, a path leaving the handle's folder, or (where a folder was expected) a file.
    #[error(
        "{}: refused, it is a symbolic link, leaves {}, or is not what was expected ({reason}); the agent does not follow links beneath a folder another user can write",
        path.display(), root.display()
    )]
    Refused { path: PathBuf, root: PathBuf, reason: Refusal },
    #[error("{} is nested more than {MAX_TREE_DEPTH} folders deep; remove it by hand", path.display())]
    TooDeep { path: PathBuf },
    #[error("{} must be a single file name beneath {}, not {name:?}", root.display(), root.display())]
    NotAName { root: PathBuf, name: OsString },
    #[error("{op} {}: {source}", path.display())]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
}

/// Why a name was refused. Callers with their own words for each case (the log reader, the mount
/// point) match on it instead of on a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A symbolic link on the way or at the end (`ELOOP`).
    Link,
    /// `..` or an absolute path that leaves the folder (`EXDEV`).
    LeavesRoot,
    /// A file, FIFO or link where a folder was expected (`ENOTDIR`).
    NotAFolder,
    /// Opened, but not a regular file.
    NotRegular,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Link => "a symbolic link",
            Refusal::LeavesRoot => "leaves the folder it is resolved beneath",
            Refusal::NotAFolder => "not a folder",
            Refusal::NotRegular => "not a regular file",
        })
    }
}

impl BeneathError {
    /// Whether the error is "the name does not exist" (as opposed to refused or failed).
    pub fn is_not_found(&self) -> bool {
        matches!(self, BeneathError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }

    /// The system error behind a refusal or a failed call, for callers that tell them apart
    /// (`ENOENT`, `EAGAIN`, ...); `None` for what no system call answered.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            BeneathError::Refused { reason: Refusal::Link, .. } => Some(Errno::LOOP),
            BeneathError::Refused { reason: Refusal::LeavesRoot, .. } => Some(Errno::XDEV),
            BeneathError::Refused { reason: Refusal::NotAFolder, .. } => Some(Errno::NOTDIR),
            BeneathError::Io { source, .. } => Errno::from_io_error(source),
            BeneathError::Refused { reason: Refusal::NotRegular, .. }
            | BeneathError::TooDeep { .. }
            | BeneathError::NotAName { .. } => None,
        }
    }

    /// The error as an `io::Error` for a caller that words its own context: the system error where
    /// there is one, else this error's message.
    pub fn to_io(&self) -> std::io::Error {
        self.errno().map_or_else(|| std::io::Error::other(self.to_string()), Into::into)
    }
}

impl crate::error::HasErrorCode for BeneathError {
    fn code(&self) -> crate::error::ErrorCode {
        use crate::error::ErrorCode;
        match self {
            BeneathError::Refused { .. } | BeneathError::TooDeep { .. } => ErrorCode::FailedPrecondition,
            BeneathError::NotAName { .. } => ErrorCode::InvalidArgument,
            BeneathError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => ErrorCode::NotFound,
            BeneathError::Io { .. } => ErrorCode::Internal,
        }
    }
}

/// What [`DirHandle::open_or_create_dir`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirOutcome {
    Created,
    Existing,
}

/// An open folder. Its `path` is only for messages: nothing is ever resolved through it again.
#[derive(Debug)]
pub struct DirHandle {
    fd: OwnedFd,
    path: PathBuf,
}

const NO_LINKS: ResolveFlags =
    ResolveFlags::BENEATH.union(ResolveFlags::NO_SYMLINKS).union(ResolveFlags::NO_MAGICLINKS);

impl DirHandle {
    /// Opens the trusted root `path` (absolute), following no link on the way from `/`.
    pub fn open_root(path: &Path) -> Result<Self, BeneathError> {
        if !path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(BeneathError::NotAName { root: PathBuf::from("/"), name: path.as_os_str().to_owned() });
        }
        let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let resolve = ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        match open_beneath(rustix::fs::CWD, path, flags, Mode::empty(), resolve) {
            Ok(fd) => Ok(Self { fd, path: path.to_owned() }),
            Err(e) => Err(classify("open", path, Path::new("/"), e)),
        }
    }

    /// Opens `path`, a root the agent's configuration names, by its path: a link on the way is
    /// followed, as for any path an administrator writes, because its ancestors belong to root and
    /// no tenant can swap them. Everything beneath it is resolved as beneath any handle. The handle
    /// is `O_PATH`: it anchors resolution, `mkdirat` and `fstat`, reads nothing, and is cheap to
    /// open again for each use (following an administrator who recreates the root); listing,
    /// `fchown` and `fsync` need a folder opened beneath it (`open_dir(".")`).
    pub fn open_configured_root(path: &Path) -> Result<Self, BeneathError> {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        match rustix::fs::open(path, flags, Mode::empty()) {
            Ok(fd) => Ok(Self { fd, path: path.to_owned() }),
            Err(e) => Err(classify("open", path, Path::new("/"), e)),
        }
    }

    /// The folder's path as it was opened (for messages only).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the folder `rel` (one or more components, relative) beneath this one. `O_DIRECTORY`
    /// refuses a FIFO or a device before it can block or act; no `O_NOFOLLOW`, which would report
    /// a last component that is a link as "not a folder": `RESOLVE_NO_SYMLINKS` refuses it as the
    /// link it is.
    pub fn open_dir(&self, rel: &Path) -> Result<DirHandle, BeneathError> {
        let path = self.path.join(rel);
        let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
        match open_beneath(self.fd.as_fd(), relative(rel), flags, Mode::empty(), NO_LINKS) {
            Ok(fd) => Ok(DirHandle { fd, path }),
            Err(e) => Err(classify("open", &path, &self.path, e)),
        }
    }

    /// Opens the folder `rel` beneath this one, creating each missing component (mode `mode`).
    /// Reports whether the last component was created. A link anywhere on the way is refused.
    pub fn open_or_create_dir(&self, rel: &Path, mode: u32) -> Result<(DirHandle, DirOutcome), BeneathError> {
        let mut names = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(n) => names.push(n),
                Component::CurDir => {}
                _ => return Err(BeneathError::NotAName { root: self.path.clone(), name: rel.as_os_str().to_owned() }),
            }
        }
        let mut current = self.open_dir(Path::new("."))?;
        let mut outcome = DirOutcome::Existing;
        for name in names {
            outcome = current.create_dir(name, mode)?;
            if outcome == DirOutcome::Created {
                // The new name must outlive a crash, or files written into it later could vanish with it.
                let _ = current.sync();
            }
            current = current.open_dir(Path::new(name))?;
        }
        Ok((current, outcome))
    }

    /// Makes the folder `name` in this folder (`mkdirat`, mode `mode` less the umask), or reports
    /// that the name exists, whatever it is: a link there is neither followed nor replaced, and
    /// [`DirHandle::open_dir`] then refuses it. Not made durable: see [`DirHandle::sync`].
    pub fn create_dir(&self, name: &OsStr, mode: u32) -> Result<DirOutcome, BeneathError> {
        let name = self.single(name)?;
        match rustix::fs::mkdirat(&self.fd, name, Mode::from_bits_truncate(mode)) {
            Ok(()) => Ok(DirOutcome::Created),
            Err(Errno::EXIST) => Ok(DirOutcome::Existing),
            Err(e) => Err(classify("create", &self.path.join(name), &self.path, e)),
        }
    }

    /// Creates the file `name` in this folder: `O_CREAT | O_EXCL | O_NOFOLLOW`, so a name that is
    /// already there (a planted link above all) fails instead of being opened.
    pub fn create_file(&self, name: &OsStr, mode: u32) -> Result<File, BeneathError> {
        let name = self.single(name)?;
        let path = self.path.join(name);
        let flags = OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::WRONLY | OFlags::CLOEXEC;
        match open_beneath(self.fd.as_fd(), Path::new(name), flags, Mode::from_bits_truncate(mode), NO_LINKS) {
            Ok(fd) => Ok(File::from(fd)),
            Err(e) => Err(classify("create", &path, &self.path, e)),
        }
    }

    /// Opens the regular file `rel` beneath this folder for reading: no link followed, a FIFO or a
    /// device refused without blocking (`O_NONBLOCK`, then `fstat`). Bound the read yourself.
    pub fn open_regular_file(&self, rel: &Path) -> Result<File, BeneathError> {
        let (file, stat) = self.open_for_reading(rel)?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            let path = self.path.join(rel);
            return Err(BeneathError::Refused { path, root: self.path.clone(), reason: Refusal::NotRegular });
        }
        Ok(file)
    }

    /// Opens `rel` beneath this folder for reading, whatever it is, and `fstat`s the descriptor:
    /// no link followed, `O_NONBLOCK` so a FIFO answers at once instead of hanging the reader,
    /// `O_NOCTTY` so a terminal never becomes the agent's. For a caller with checks of its own on
    /// the stat (the log reader's hard links); the others use [`DirHandle::open_regular_file`].
    pub fn open_for_reading(&self, rel: &Path) -> Result<(File, Stat), BeneathError> {
        let path = self.path.join(rel);
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let fd = open_beneath(self.fd.as_fd(), relative(rel), flags, Mode::empty(), NO_LINKS)
            .map_err(|e| classify("open", &path, &self.path, e))?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| io_error("stat", &path, e))?;
        Ok((File::from(fd), stat))
    }

    /// The status of `name` in this folder, not following it (`fstatat(AT_SYMLINK_NOFOLLOW)`): a
    /// link reports as a link, never as what it points at.
    pub fn stat_entry(&self, name: &OsStr) -> Result<Stat, BeneathError> {
        let name = self.single(name)?;
        rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| io_error("stat", &self.path.join(name), e))
    }

    /// Changes this folder's owner through its descriptor (`fchown`): the folder that was opened,
    /// never whatever its name points at now.
    pub fn chown(&self, uid: u32, gid: u32) -> Result<(), BeneathError> {
        fchown(&self.fd, uid, gid).map_err(|e| io_error("chown", &self.path, e))
    }

    /// The names in this folder (`.` and `..` left out), read through the handle.
    pub fn entries(&self) -> Result<Vec<OsString>, BeneathError> {
        let mut dir = rustix::fs::Dir::read_from(&self.fd).map_err(|e| io_error("list", &self.path, e))?;
        let mut names = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(|e| io_error("list", &self.path, e))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(name).to_owned());
            }
        }
        Ok(names)
    }

    /// Moves `name` in this folder to `to_name` in `to` (both folders held open; `renameat`, which
    /// never follows a link: a link is moved as the link it is). Fails if `to_name` exists.
    pub fn rename(&self, name: &OsStr, to: &DirHandle, to_name: &OsStr) -> Result<(), BeneathError> {
        let (name, to_name) = (self.single(name)?, to.single(to_name)?);
        rustix::fs::renameat_with(&self.fd, name, &to.fd, to_name, rustix::fs::RenameFlags::NOREPLACE)
            .map_err(|e| io_error("rename", &self.path.join(name), e))
    }

    /// Like [`DirHandle::rename`], but replaces what `to_name` is (a file or a link, never
    /// followed; an empty folder): for putting things back where someone else may have planted
    /// something in the meantime.
    pub fn rename_over(&self, name: &OsStr, to: &DirHandle, to_name: &OsStr) -> Result<(), BeneathError> {
        let (name, to_name) = (self.single(name)?, to.single(to_name)?);
        rustix::fs::renameat(&self.fd, name, &to.fd, to_name).map_err(|e| io_error("rename", &self.path.join(name), e))
    }

    /// Whether `name` in this folder is, right now, the folder `other` holds open (same device and
    /// inode, not through a link): used before removing a name one created.
    pub fn holds(&self, name: &OsStr, other: &DirHandle) -> bool {
        let Ok(theirs) = rustix::fs::fstat(&other.fd) else { return false };
        self.stat_entry(name).is_ok_and(|mine| mine.st_dev == theirs.st_dev && mine.st_ino == theirs.st_ino)
    }

    /// Removes the file `name` in this folder (a link is removed as the link it is, never
    /// followed); a folder there is an error, not removed. A missing `name` is not an error.
    pub fn remove_file(&self, name: &OsStr) -> Result<(), BeneathError> {
        let name = self.single(name)?;
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(io_error("remove", &self.path.join(name), e)),
        }
    }

    /// Removes the empty folder `name` in this folder (a link or a file there is left alone).
    pub fn remove_dir(&self, name: &OsStr) -> Result<(), BeneathError> {
        let name = self.single(name)?;
        rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR)
            .map_err(|e| classify("remove", &self.path.join(name), &self.path, e))
    }

    /// Removes `name` in this folder and, if it is a folder, everything beneath it. No link is
    /// followed: a link is removed as a link, and a folder swapped for a link half-way is refused
    /// (its contents stay) rather than entered. A missing `name` is not an error.
    pub fn remove_tree(&self, name: &OsStr) -> Result<(), BeneathError> {
        self.remove_tree_at(self.single(name)?, 0)
    }

    /// Removes everything in this folder, nothing outside it.
    pub fn clear(&self) -> Result<(), BeneathError> {
        self.clear_at(0)
    }

    fn clear_at(&self, depth: usize) -> Result<(), BeneathError> {
        for name in self.entries()? {
            self.remove_tree_at(&name, depth)?;
        }
        Ok(())
    }

    fn remove_tree_at(&self, name: &OsStr, depth: usize) -> Result<(), BeneathError> {
        let path = self.path.join(name);
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => return Ok(()),
            // Linux answers EISDIR for a folder (POSIX allows EPERM).
            Err(Errno::ISDIR | Errno::PERM) => {}
            Err(e) => return Err(io_error("remove", &path, e)),
        }
        if depth >= MAX_TREE_DEPTH {
            return Err(BeneathError::TooDeep { path });
        }
        let child = self.open_dir(Path::new(name))?;
        child.clear_at(depth + 1)?;
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(classify("remove", &path, &self.path, e)),
        }
    }

    /// Makes creations, renames and removals in this folder durable.
    pub fn sync(&self) -> Result<(), BeneathError> {
        rustix::fs::fsync(&self.fd).map_err(|e| io_error("fsync", &self.path, e))
    }

    /// `name` as one plain component: no `/`, not `.` or `..`, not empty.
    fn single<'a>(&self, name: &'a OsStr) -> Result<&'a OsStr, BeneathError> {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') || bytes.contains(&0) {
            return Err(BeneathError::NotAName { root: self.path.clone(), name: name.to_owned() });
        }
        Ok(name)
    }
}

impl AsFd for DirHandle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The root of `roots` that `path` lies strictly below (the innermost, if roots nest), and the rest
/// of `path` beneath it (compared component by component, no file-system access): where to open a
/// root and what to resolve beneath it.
pub fn split_below<'a>(roots: &'a [PathBuf], path: &'a Path) -> Option<(&'a Path, &'a Path)> {
    roots
        .iter()
        .filter_map(|root| {
            let rest = path.strip_prefix(root).ok().filter(|r| !r.as_os_str().is_empty())?;
            Some((root.as_path(), rest))
        })
        .max_by_key(|(root, _)| root.components().count())
}

/// Changes the owner of an open file or folder through its descriptor.
pub fn fchown(fd: impl AsFd, uid: u32, gid: u32) -> Result<(), Errno> {
    let (uid, gid) = (rustix::fs::Uid::from_raw(uid), rustix::fs::Gid::from_raw(gid));
    rustix::fs::fchown(fd, Some(uid), Some(gid))
}

/// An empty relative path means the folder itself.
/// `openat2(dir, path, flags, mode, resolve)`, or, where the kernel or a seccomp filter answers
/// ENOSYS, the same resolution done one component at a time: systemd's `RestrictSUIDSGID=`, which
/// the shipped unit sets, makes `openat2` fail with ENOSYS on purpose (seccomp cannot read the mode
/// inside `struct open_how`, so callers are meant to fall back to `openat`). The walk keeps the
/// same promises for the flags this module uses (`NO_SYMLINKS`, `NO_MAGICLINKS`, `BENEATH`): no
/// `..` and no absolute path beneath a handle (EXDEV), every component checked with
/// `fstatat(AT_SYMLINK_NOFOLLOW)` and opened with `O_NOFOLLOW` (ELOOP for a link, also one swapped
/// in between the two), each folder opened relative to the one before it.
fn open_beneath(
    dir: BorrowedFd<'_>,
    path: &Path,
    flags: OFlags,
    mode: Mode,
    resolve: ResolveFlags,
) -> Result<OwnedFd, Errno> {
    use std::sync::atomic::{AtomicBool, Ordering};
    static NO_OPENAT2: AtomicBool = AtomicBool::new(false);
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        match rustix::fs::openat2(dir, path, flags, mode, resolve) {
            Err(Errno::NOSYS) => NO_OPENAT2.store(true, Ordering::Relaxed),
            other => return other,
        }
    }
    walk_beneath(dir, path, flags, mode, resolve.contains(ResolveFlags::BENEATH))
}

/// The component-by-component resolution behind [`open_beneath`] (also run directly by the tests).
fn walk_beneath(dir: BorrowedFd<'_>, path: &Path, flags: OFlags, mode: Mode, beneath: bool) -> Result<OwnedFd, Errno> {
    let mut names = Vec::new();
    let mut from_root = false;
    for c in path.components() {
        match c {
            Component::Normal(n) => names.push(n),
            Component::CurDir => {}
            Component::RootDir if !beneath => from_root = true,
            Component::RootDir | Component::ParentDir | Component::Prefix(_) => return Err(Errno::XDEV),
        }
    }
    let folder = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut current: Option<OwnedFd> =
        if from_root { Some(rustix::fs::open("/", folder, Mode::empty())?) } else { None };
    let Some((last, parents)) = names.split_last() else {
        let at = current.as_ref().map_or(dir, |fd| fd.as_fd());
        return rustix::fs::openat(at, ".", flags, mode);
    };
    for name in parents {
        let at = current.as_ref().map_or(dir, |fd| fd.as_fd());
        refuse_link(at, name)?;
        current = Some(rustix::fs::openat(at, *name, folder, Mode::empty())?);
    }
    let at = current.as_ref().map_or(dir, |fd| fd.as_fd());
    if !flags.contains(OFlags::CREATE) || !flags.contains(OFlags::EXCL) {
        refuse_link(at, last)?;
    }
    rustix::fs::openat(at, *last, flags | OFlags::NOFOLLOW, mode)
}

/// ELOOP if `name` in `at` is a symbolic link (magic links of /proc included); a missing name is
/// left to the open that follows, which reports it.
fn refuse_link(at: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    match rustix::fs::statat(at, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => Err(Errno::LOOP),
        Ok(_) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

fn relative(rel: &Path) -> &Path {
    if rel.as_os_str().is_empty() { Path::new(".") } else { rel }
}

/// ELOOP (a link under RESOLVE_NO_SYMLINKS or O_NOFOLLOW), EXDEV (the path leaves the handle) and
/// ENOTDIR (a file or a link where a folder was expected) are refusals; the rest is plain I/O.
fn classify(op: &'static str, path: &Path, root: &Path, e: Errno) -> BeneathError {
    let reason = match e {
        Errno::LOOP => Refusal::Link,
        Errno::XDEV => Refusal::LeavesRoot,
        Errno::NOTDIR => Refusal::NotAFolder,
        _ => return io_error(op, path, e),
    };
    BeneathError::Refused { path: path.to_owned(), root: root.to_owned(), reason }
}

fn io_error(op: &'static str, path: &Path, e: Errno) -> BeneathError {
    BeneathError::Io { op, path: path.to_owned(), source: e.into() }
}

#[cfg(test)]
#[path = "beneath_tests.rs"]
mod tests;
