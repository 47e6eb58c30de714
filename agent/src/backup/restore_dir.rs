//! The folder a physical restore writes into, and how a failed restore gives it back unchanged.
//!
//! The folder lies beneath a data root that the database's OS user owns, and that user may be a
//! tenant running code in their database. So it is opened once, beneath its data root and without
//! following any link ([`crate::beneath`]), inside the job right before the work, and everything
//! after (setting aside, chown, the restored file, commit, rollback) acts on the open handles: a
//! name swapped for a link half-way changes nothing the agent touches.
//!
//! A new or empty folder is emptied again (and removed if the restore created it). A restore in
//! place first moves what the data directory holds into a set-aside folder inside it (a rename on
//! the same filesystem, so the data never leaves the encrypted volume); success deletes the
//! set-aside copy, failure removes what the restore wrote and moves the old files back. A crash in
//! between leaves the set-aside folder, and the next restore refuses to start until an operator has
//! looked at it.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use super::BackupError;
use crate::beneath::{BeneathError, DirHandle, DirOutcome};

/// Set-aside folder inside the data directory during a restore in place.
pub const ASIDE: &str = ".dbagent-restore-aside";
/// ext4 creates it on the volume's root, which is the data directory; it is never moved or removed.
const LOST_FOUND: &str = "lost+found";

#[derive(Debug)]
pub struct RestoreDir {
    /// The folder holding the data directory, and the data directory's name in it.
    parent: DirHandle,
    name: OsString,
    dir: DirHandle,
    created: bool,
    aside: Option<DirHandle>,
}

/// Whether the restore replaces the instance's own data directory or fills a new folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreInto {
    /// The instance's stopped data directory: what it holds is set aside.
    InPlace,
    /// Another folder, which must be missing or empty.
    NewFolder,
}

impl RestoreDir {
    /// Opens `dir` beneath the data root that holds it, creating it (0700) and the folders above it
    /// if missing, and sets aside what it holds (in place) or refuses it if it holds anything.
    /// Blocking: run it off the async workers.
    pub fn prepare(data_roots: &[PathBuf], dir: &Path, into: RestoreInto) -> Result<Self, BackupError> {
        let (root, rel) = crate::beneath::split_below(data_roots, dir)
            .ok_or_else(|| BackupError::RestoreDirOutsideRoots { dir: dir.to_owned(), roots: data_roots.to_vec() })?;
        let name = rel
            .file_name()
            .ok_or_else(|| BackupError::RestoreDirOutsideRoots { dir: dir.to_owned(), roots: data_roots.to_vec() })?;
        let root = DirHandle::open_root(root)?;
        let (parent, _) = root.open_or_create_dir(rel.parent().unwrap_or(Path::new("")), 0o700)?;
        let (handle, outcome) = parent.open_or_create_dir(Path::new(name), 0o700)?;
        let mut this =
            Self { parent, name: name.to_owned(), dir: handle, created: outcome == DirOutcome::Created, aside: None };
        if this.dir.entries()?.iter().any(|n| n == ASIDE) {
            return Err(BackupError::RestoreLeftoverFound { aside: dir.join(ASIDE) });
        }
        let entries = entries(&this.dir)?;
        if entries.is_empty() {
            return Ok(this);
        }
        if into == RestoreInto::NewFolder {
            return Err(BackupError::RestoreTargetNotEmpty { dir: dir.to_owned() });
        }
        let (aside, outcome) = this.dir.open_or_create_dir(Path::new(ASIDE), 0o700)?;
        if outcome != DirOutcome::Created {
            return Err(BackupError::RestoreLeftoverFound { aside: dir.join(ASIDE) });
        }
        this.aside = Some(aside);
        let moved = entries.iter().try_for_each(|name| this.dir.rename(name, this.aside_handle(), name));
        if let Err(e) = moved {
            this.rollback();
            return Err(e.into());
        }
        let _ = this.dir.sync();
        Ok(this)
    }

    /// The open data directory: chown it, create files in it, through this handle.
    pub fn handle(&self) -> &DirHandle {
        &self.dir
    }

    fn aside_handle(&self) -> &DirHandle {
        self.aside.as_ref().unwrap_or(&self.dir)
    }

    /// The restore succeeded: the set-aside copy is no longer needed.
    pub fn commit(self) {
        let Some(aside) = &self.aside else { return };
        let removed = aside.clear().and_then(|()| self.remove_if_still(&self.dir, OsStr::new(ASIDE), aside));
        if let Err(e) = removed {
            tracing::warn!("restore succeeded, but removing the old data in {} failed: {e}", aside.path().display());
        }
    }

    /// The restore failed: remove what it wrote and put the old content back.
    pub fn rollback(self) {
        if let Err(e) = self.try_rollback() {
            tracing::error!(
                "a failed restore could not put {} back as it was: {e}; the old data is in {}",
                self.dir.path().display(),
                self.dir.path().join(ASIDE).display()
            );
        }
    }

    fn try_rollback(&self) -> Result<(), BeneathError> {
        for name in entries(&self.dir)? {
            self.dir.remove_tree(&name)?;
        }
        if let Some(aside) = &self.aside {
            // Replacing: whatever the tenant planted at a name since the folder was emptied goes.
            for name in aside.entries()? {
                aside.rename_over(&name, &self.dir, &name)?;
            }
            self.remove_if_still(&self.dir, OsStr::new(ASIDE), aside)?;
        } else if self.created {
            self.remove_if_still(&self.parent, &self.name, &self.dir)?;
        }
        let _ = self.dir.sync();
        let _ = self.parent.sync();
        Ok(())
    }

    /// Removes the empty folder `name` in `parent` only if that name still is the folder `held`:
    /// if it was swapped (for a link, another folder), the swapped-in thing stays as it is.
    fn remove_if_still(&self, parent: &DirHandle, name: &OsStr, held: &DirHandle) -> Result<(), BeneathError> {
        if parent.holds(name, held) {
            parent.remove_dir(name)?;
        } else {
            tracing::warn!("{} was replaced during the restore; left as it is", parent.path().join(name).display());
        }
        Ok(())
    }
}

/// Names in the folder that a restore replaces: everything but lost+found and the set-aside folder.
fn entries(dir: &DirHandle) -> Result<Vec<OsString>, BeneathError> {
    Ok(dir.entries()?.into_iter().filter(|n| n != LOST_FOUND && n != ASIDE).collect())
}

#[cfg(test)]
#[path = "restore_dir_tests.rs"]
mod tests;
