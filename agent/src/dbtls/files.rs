//! The certificate files in the instance's data directory, written as root beneath a folder the
//! engine's user can write: everything goes through a handle on the data directory opened beneath
//! its data root without following links (`beneath`). New files are created `O_EXCL|O_NOFOLLOW`
//! under a `.new` name (a name planted there is removed as the link it is first, and a race that
//! plants it again fails the create), owned by the engine's user with the mode the engine requires
//! (the key 0600: PostgreSQL refuses a key others can read), then renamed over the live names, so
//! a link planted at a live name is replaced, never followed. The previous files are kept as
//! `.old` until the engine serves the new ones, and put back otherwise.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::DbTlsError;
use super::validate::ValidBundle;
use crate::beneath::DirHandle;

/// The live names, in the data directory. Fixed, because MariaDB reads its paths at start only.
pub const CERT: &str = "dbagent-tls.crt";
pub const KEY: &str = "dbagent-tls.key";
pub const CA: &str = "dbagent-tls-ca.crt";
const NAMES: [&str; 3] = [CERT, KEY, CA];
/// An installed certificate file larger than this is not read (a tenant can replace it).
const MAX_READ: u64 = 256 * 1024;

fn staged(name: &str) -> String {
    format!("{name}.new")
}

fn previous(name: &str) -> String {
    format!("{name}.old")
}

/// The absolute paths the engine is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl TlsPaths {
    pub fn in_data_dir(data_dir: &Path) -> Self {
        Self { cert: data_dir.join(CERT), key: data_dir.join(KEY), ca: data_dir.join(CA) }
    }
}

/// The instance's data directory, held open.
pub struct TlsFiles {
    dir: DirHandle,
    uid: u32,
    gid: u32,
}

/// Whether the install replaced files that were there before (and so has something to put back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Swapped {
    pub had_previous: bool,
}

impl TlsFiles {
    /// Opens `data_dir` beneath the data root of `data_roots` that holds it, following no link.
    pub fn open(data_roots: &[PathBuf], data_dir: &Path, uid: u32, gid: u32) -> Result<Self, DbTlsError> {
        let (root, rest) = crate::beneath::split_below(data_roots, data_dir)
            .ok_or_else(|| DbTlsError::NotBeneathDataRoot(data_dir.to_owned()))?;
        let dir = DirHandle::open_configured_root(root)?.open_dir(rest)?;
        Ok(Self { dir, uid, gid })
    }

    /// Writes the bundle under the `.new` names, owned by the engine's user, synced.
    pub fn stage(&self, bundle: &ValidBundle) -> Result<(), DbTlsError> {
        let input = &bundle.input;
        let contents: [(&str, &[u8], u32); 3] = [
            (CERT, input.cert_pem.as_bytes(), 0o644),
            (KEY, input.key_pem.as_bytes(), 0o600),
            (CA, input.ca_pem.as_bytes(), 0o644),
        ];
        for (name, bytes, mode) in contents {
            let name = staged(name);
            let name = OsStr::new(&name);
            // What an interrupted install left, or what the tenant planted: removed as the
            // file or link it is; if it comes back before the create, the create fails.
            self.dir.remove_file(name)?;
            let mut file = self.dir.create_file(name, 0o600)?;
            let io = |op: &'static str| {
                let path = self.dir.path().join(name);
                move |source: std::io::Error| crate::beneath::BeneathError::Io { op, path, source }
            };
            crate::beneath::fchown(&file, self.uid, self.gid).map_err(|e| io("chown")(e.into()))?;
            rustix::fs::fchmod(&file, rustix::fs::Mode::from_raw_mode(mode)).map_err(|e| io("chmod")(e.into()))?;
            file.write_all(bytes).map_err(io("write"))?;
            file.sync_all().map_err(io("fsync"))?;
        }
        self.dir.sync()?;
        Ok(())
    }

    /// Moves the live files (regular files only: a link there is the tenant's, replaced below) to
    /// `.old`, then the `.new` ones to the live names. A rename that fails half-way puts back
    /// what it moved, so the engine never finds a mix of two certificates.
    pub fn swap_in(&self) -> Result<Swapped, DbTlsError> {
        let swapped = Swapped { had_previous: self.is_regular(CERT) };
        let result = self.renames(swapped);
        if result.is_err() {
            let _ = self.put_back(swapped);
        }
        result.map(|()| swapped)
    }

    fn renames(&self, swapped: Swapped) -> Result<(), DbTlsError> {
        for name in NAMES {
            if swapped.had_previous && self.is_regular(name) {
                self.dir.rename_over(OsStr::new(name), &self.dir, OsStr::new(&previous(name)))?;
            }
        }
        for name in NAMES {
            self.dir.rename_over(OsStr::new(&staged(name)), &self.dir, OsStr::new(name))?;
        }
        self.dir.sync()?;
        Ok(())
    }

    /// Undoes [`TlsFiles::swap_in`]: the `.old` files back to the live names, or, if there were
    /// none, the new files removed.
    pub fn put_back(&self, swapped: Swapped) -> Result<(), DbTlsError> {
        for name in NAMES {
            if swapped.had_previous && self.is_regular(&previous(name)) {
                self.dir.rename_over(OsStr::new(&previous(name)), &self.dir, OsStr::new(name))?;
            } else {
                self.dir.remove_file(OsStr::new(name))?;
            }
        }
        self.dir.sync()?;
        Ok(())
    }

    /// Removes the `.old` files once the new ones are served, and any `.new` left behind.
    pub fn discard_previous(&self) -> Result<(), DbTlsError> {
        for name in NAMES {
            self.dir.remove_file(OsStr::new(&previous(name)))?;
            self.dir.remove_file(OsStr::new(&staged(name)))?;
        }
        self.dir.sync()?;
        Ok(())
    }

    /// The installed certificate file (PEM), if there is one: read through the handle, no link
    /// followed, bounded.
    pub fn read_cert(&self) -> Result<Option<Vec<u8>>, DbTlsError> {
        let file = match self.dir.open_regular_file(Path::new(CERT)) {
            Ok(file) => file,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        file.take(MAX_READ).read_to_end(&mut out).map_err(|source| crate::beneath::BeneathError::Io {
            op: "read",
            path: self.dir.path().join(CERT),
            source,
        })?;
        Ok(Some(out))
    }

    fn is_regular(&self, name: &str) -> bool {
        self.dir
            .stat_entry(OsStr::new(name))
            .is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile)
    }
}

#[cfg(test)]
#[path = "files_tests.rs"]
mod tests;
