//! The mount point as a directory handle. The data roots belong to the engines' users, who can swap
//! any name beneath them for a link at any moment. So the mount point is opened once, beneath its
//! data root, without following links (through [`crate::beneath`]: openat2 `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS`), creating missing folders relative to their parent's handle; the
//! mount-point check, the mount (new mount API: fsopen/fsconfig/fsmount, then move_mount onto the
//! handle), the owner of the mounted root (set through the new mount's own handle before it is
//! attached) and the unmount all use handles, never the path again. What is kept here is what only
//! a mount needs: the words for each refusal, the retries against a tenant racing the walk, the
//! mount-root check and the mount calls.

use rustix::fd::{AsFd, AsRawFd};
use rustix::fs::{AtFlags, Mode, OFlags, StatxFlags};
use rustix::io::Errno;
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, UnmountFlags};
use std::path::{Component, Path};

use super::{HostError, MountPoint};
use crate::beneath::DirHandle;

/// Opening the new mount's root: O_DIRECTORY refuses anything else before it can block or act.
const DIR: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::CLOEXEC);

/// A tenant who removes a folder as fast as it is made would keep the walk going for ever.
const CREATE_ATTEMPTS: u32 = 8;

fn unsafe_target(at: MountPoint<'_>, reason: impl Into<String>) -> HostError {
    HostError::UnsafeMountPoint { dir: at.dir.to_path_buf(), reason: reason.into() }
}

/// The mount point, opened: its parent folder's handle, its own, and its name in the parent.
#[derive(Debug)]
struct Opened<'a> {
    parent: DirHandle,
    dir: DirHandle,
    name: &'a std::ffi::OsStr,
}

/// Opens `at.dir` beneath `at.root`, creating what is missing (mode 0755, owned by root) when
/// `create` is set. A link, a non-folder or a way out of the root on the way is refused.
fn open_dir(at: MountPoint<'_>, create: bool) -> Result<Option<Opened<'_>>, HostError> {
    let rel = at.dir.strip_prefix(at.root).map_err(|_| unsafe_target(at, "it is not below its data root"))?;
    let names: Vec<&std::ffi::OsStr> = rel
        .components()
        .map(|c| match c {
            Component::Normal(name) => Ok(name),
            _ => Err(unsafe_target(at, "it has '.', '..' or a root among its components")),
        })
        .collect::<Result<_, _>>()?;
    let Some((last, parents)) = names.split_last() else {
        return Err(unsafe_target(at, "it is the data root itself"));
    };
    // The root comes from the agent's configuration and its parents belong to root: opening it by
    // path is the one trusted step.
    let mut parent = DirHandle::open_configured_root(at.root)
        .map_err(|e| HostError::io(format!("open data root {}", at.root.display()), e.to_io()))?;
    for name in parents {
        let Some(child) = open_child(&parent, name, create, at)? else { return Ok(None) };
        parent = child;
    }
    let Some(dir) = open_child(&parent, last, create, at)? else { return Ok(None) };
    Ok(Some(Opened { parent, dir, name: last }))
}

/// One component beneath `parent`: opened, or made and then opened.
fn open_child(
    parent: &DirHandle,
    name: &std::ffi::OsStr,
    create: bool,
    at: MountPoint<'_>,
) -> Result<Option<DirHandle>, HostError> {
    let shown = Path::new(name).display();
    let io = |verb: &str, e: crate::beneath::BeneathError| {
        HostError::io(format!("{verb} {shown} in {}", at.dir.display()), e.to_io())
    };
    for _ in 0..CREATE_ATTEMPTS {
        let e = match parent.open_dir(Path::new(name)) {
            Ok(dir) => return Ok(Some(dir)),
            Err(e) => e,
        };
        match e.errno() {
            // Made, or made by someone else meanwhile: either way it is opened on the next round.
            Some(Errno::NOENT) if create => {
                parent.create_dir(name, 0o755).map_err(|e| io("create", e))?;
            }
            Some(Errno::NOENT) => return Ok(None),
            Some(Errno::LOOP) => return Err(unsafe_target(at, format!("{shown} on its way is a symbolic link"))),
            Some(Errno::NOTDIR) => return Err(unsafe_target(at, format!("{shown} on its way is not a folder"))),
            Some(Errno::XDEV) => {
                return Err(unsafe_target(at, format!("{shown} on its way leads out of its data root")));
            }
            // openat2 retries renames itself a few times; a steady stream of them ends here.
            Some(Errno::AGAIN) => {}
            _ => return Err(io("open", e)),
        }
    }
    Err(unsafe_target(at, format!("{shown} kept changing while it was opened")))
}

/// Whether `dir` is the root of a mount: STATX_ATTR_MOUNT_ROOT, or on kernels that do not report it,
/// a device other than its parent's.
fn is_mount_root(parent: &impl AsFd, dir: &impl AsFd) -> Result<bool, HostError> {
    let stat = |fd: &dyn AsFd| {
        rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::BASIC_STATS)
            .map_err(|e| HostError::io("stat the mount point", e.into()))
    };
    let mine = stat(dir)?;
    if mine.stx_attributes_mask.contains(rustix::fs::StatxAttributes::MOUNT_ROOT) {
        return Ok(mine.stx_attributes.contains(rustix::fs::StatxAttributes::MOUNT_ROOT));
    }
    let theirs = stat(parent)?;
    Ok((mine.stx_dev_major, mine.stx_dev_minor) != (theirs.stx_dev_major, theirs.stx_dev_minor))
}

/// The uid and gid of `user`, refused if it is root or a system account: checked at registration
/// too, but an account can be created (or changed) after that.
pub(super) fn lookup_user(user: &str) -> Result<(rustix::fs::Uid, rustix::fs::Gid), HostError> {
    let found =
        nix::unistd::User::from_name(user).map_err(|e| HostError::io(format!("look up user {user}"), e.into()))?;
    let entry = found.ok_or_else(|| HostError::NoUser(user.to_owned()))?;
    let (uid, gid) = (entry.uid.as_raw(), entry.gid.as_raw());
    crate::instances::validate::os_user_account("os_user", user, uid, gid)
        .map_err(|e| HostError::RefusedOwner { user: user.to_owned(), reason: e.reason })?;
    Ok((rustix::fs::Uid::from_raw(uid), rustix::fs::Gid::from_raw(gid)))
}

/// Mounts `source` (a filesystem of type `fstype`) on `at.dir`, nosuid and nodev, through handles:
/// see the module comment. With `owner`, the mounted root is given to that user, mode 0700, before
/// the mount is attached, so no one sees it half set up.
pub(super) fn mount_beneath(
    source: &Path,
    fstype: &str,
    at: MountPoint<'_>,
    owner: Option<&str>,
) -> Result<(), HostError> {
    let owner = owner.map(lookup_user).transpose()?;
    let Some(Opened { parent, dir, .. }) = open_dir(at, true)? else {
        return Err(unsafe_target(at, "it vanished while it was made"));
    };
    if is_mount_root(&parent, &dir)? {
        return Err(unsafe_target(at, "something else is already mounted there"));
    }
    let what = || format!("mount {} on {}", source.display(), at.dir.display());
    let io = |step: &str, e: Errno| HostError::io(format!("{} ({step})", what()), e.into());
    let fs = rustix::mount::fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| io("fsopen", e))?;
    rustix::mount::fsconfig_set_string(&fs, "source", source).map_err(|e| io("fsconfig source", e))?;
    rustix::mount::fsconfig_create(&fs).map_err(|e| io("fsconfig create", e))?;
    let mnt = rustix::mount::fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
    )
    .map_err(|e| io("fsmount", e))?;
    if let Some((uid, gid)) = owner {
        // The detached mount's root: nobody else can reach it yet.
        let root = rustix::fs::openat(&mnt, ".", DIR, Mode::empty()).map_err(|e| io("open the new root", e))?;
        rustix::fs::fchown(&root, Some(uid), Some(gid)).map_err(|e| io("chown the new root", e))?;
        rustix::fs::fchmod(&root, Mode::from_raw_mode(0o700)).map_err(|e| io("chmod the new root", e))?;
    }
    rustix::mount::move_mount(
        mnt.as_fd(),
        "",
        dir.as_fd(),
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| io("move_mount", e))
}

/// Unmounts what is mounted on `at.dir`, if that is `device`; `Ok(false)` if `at.dir` is missing or
/// is not the root of `device`'s mount. The folder is opened as for mounting (no links) and
/// checked; the unmount then names it through its parent's handle (`/proc/self/fd/N/<name>`, the
/// name not followed if it is a link). A handle on the mounted folder itself would keep the mount
/// busy; the parent's handle does not, and while the mount stands its name cannot be renamed or
/// replaced, so a swapped name cannot aim the unmount at another mount.
pub(super) fn unmount_beneath(device: &Path, at: MountPoint<'_>) -> Result<bool, HostError> {
    let Some(Opened { parent, dir, name }) = open_dir(at, false)? else { return Ok(false) };
    let dev = rustix::fs::stat(device).map_err(|e| HostError::io(format!("stat {}", device.display()), e.into()))?;
    let st = rustix::fs::fstat(&dir).map_err(|e| HostError::io(format!("stat {}", at.dir.display()), e.into()))?;
    if st.st_dev != dev.st_rdev || !is_mount_root(&parent, &dir)? {
        return Ok(false);
    }
    drop(dir);
    let handle = Path::new("/proc/self/fd").join(parent.as_fd().as_raw_fd().to_string()).join(name);
    rustix::mount::unmount(&handle, UnmountFlags::NOFOLLOW).map_err(|e| {
        HostError::io(format!("unmount {} (is the database still running?)", at.dir.display()), e.into())
    })?;
    Ok(true)
}

#[cfg(test)]
#[path = "mount_point_tests.rs"]
mod tests;
