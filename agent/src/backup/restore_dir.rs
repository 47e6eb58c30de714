//! The folder a physical restore writes into, and how a failed restore gives it back unchanged.
//!
//! A new or empty folder is emptied again (and removed if the restore created it). A restore in
//! place first moves what the data directory holds into a set-aside folder inside it (a rename on
//! the same filesystem, so the data never leaves the encrypted volume); success deletes the
//! set-aside copy, failure removes what the restore wrote and moves the old files back. A crash in
//! between leaves the set-aside folder, and the next restore refuses to start until an operator has
//! looked at it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::BackupError;
use crate::fsutil;

/// Set-aside folder inside the data directory during a restore in place.
pub const ASIDE: &str = ".dbagent-restore-aside";
/// ext4 creates it on the volume's root, which is the data directory; it is never moved or removed.
const LOST_FOUND: &str = "lost+found";

#[derive(Debug)]
pub struct RestoreDir {
    dir: PathBuf,
    created: bool,
    aside: Option<PathBuf>,
}

impl RestoreDir {
    /// Creates `dir` (0700) if missing, and sets aside what it holds.
    pub fn prepare(dir: &Path) -> Result<Self, BackupError> {
        let aside = dir.join(ASIDE);
        if aside.symlink_metadata().is_ok() {
            return Err(BackupError::RestoreLeftoverFound { aside });
        }
        let created = !dir.exists();
        fsutil::ensure_private_dir(dir).map_err(|e| BackupError::io(format!("create {}", dir.display()), e))?;
        let entries = entries(dir).map_err(|e| BackupError::io(format!("list {}", dir.display()), e))?;
        let mut this = Self { dir: dir.to_owned(), created, aside: None };
        if entries.is_empty() {
            return Ok(this);
        }
        fs::create_dir(&aside).map_err(|e| BackupError::io(format!("create {}", aside.display()), e))?;
        this.aside = Some(aside.clone());
        for name in entries {
            if let Err(e) = fs::rename(dir.join(&name), aside.join(&name)) {
                this.rollback();
                return Err(BackupError::io(format!("set aside {}", dir.join(&name).display()), e));
            }
        }
        let _ = fsutil::sync_dir(dir);
        Ok(this)
    }

    /// The restore succeeded: the set-aside copy is no longer needed.
    pub fn commit(self) {
        if let Some(aside) = &self.aside
            && let Err(e) = fs::remove_dir_all(aside)
        {
            tracing::warn!("restore succeeded, but removing the old data in {} failed: {e}", aside.display());
        }
    }

    /// The restore failed: remove what it wrote and put the old content back.
    pub fn rollback(self) {
        if let Err(e) = self.try_rollback() {
            tracing::error!(
                "a failed restore could not put {} back as it was: {e}; the old data is in {}",
                self.dir.display(),
                self.dir.join(ASIDE).display()
            );
        }
    }

    fn try_rollback(&self) -> io::Result<()> {
        for name in entries(&self.dir)? {
            let path = self.dir.join(&name);
            if path.is_dir() && !path.is_symlink() { fs::remove_dir_all(&path)? } else { fs::remove_file(&path)? }
        }
        if let Some(aside) = &self.aside {
            for name in entries(aside)? {
                fs::rename(aside.join(&name), self.dir.join(&name))?;
            }
            fs::remove_dir(aside)?;
        } else if self.created {
            fs::remove_dir(&self.dir)?;
        }
        let _ = fsutil::sync_dir(&self.dir);
        Ok(())
    }
}

/// Names in `dir` that a restore replaces: everything but lost+found and the set-aside folder.
fn entries(dir: &Path) -> io::Result<Vec<std::ffi::OsString>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        if name != LOST_FOUND && name != ASIDE {
            names.push(name);
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    #[test]
    fn in_place_failure_puts_the_old_data_back_and_success_drops_it() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        write(&dir.join("PG_VERSION"), "15");
        write(&dir.join("base/1/1259"), "old");
        fs::create_dir(dir.join(LOST_FOUND)).unwrap();

        let r = RestoreDir::prepare(&dir).unwrap();
        let mut left: Vec<_> = entries(&dir).unwrap();
        left.sort();
        assert!(left.is_empty(), "only lost+found and the set-aside folder remain: {left:?}");
        write(&dir.join("PG_VERSION"), "16");
        write(&dir.join("half-written"), "x");
        r.rollback();
        assert_eq!(fs::read_to_string(dir.join("PG_VERSION")).unwrap(), "15");
        assert_eq!(fs::read_to_string(dir.join("base/1/1259")).unwrap(), "old");
        assert!(!dir.join("half-written").exists() && !dir.join(ASIDE).exists());
        assert!(dir.join(LOST_FOUND).is_dir());

        let r = RestoreDir::prepare(&dir).unwrap();
        write(&dir.join("PG_VERSION"), "16");
        r.commit();
        assert_eq!(fs::read_to_string(dir.join("PG_VERSION")).unwrap(), "16");
        assert!(!dir.join("base").exists() && !dir.join(ASIDE).exists());
    }

    #[test]
    fn a_new_folder_is_removed_again_and_leftovers_refuse_a_restore() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("new");
        let r = RestoreDir::prepare(&dir).unwrap();
        write(&dir.join("partial"), "x");
        r.rollback();
        assert!(!dir.exists());

        fs::create_dir_all(dir.join(ASIDE)).unwrap();
        let e = RestoreDir::prepare(&dir).unwrap_err();
        assert!(matches!(&e, BackupError::RestoreLeftoverFound { aside } if aside.ends_with(ASIDE)), "{e:?}");
    }
}
