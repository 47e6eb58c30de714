//! What a minor upgrade may install, and from where.
//!
//! Packages come only from a flat apt repository (a `Packages` index and the `.deb`s) in a folder
//! the request names, beneath `[upgrade] package_repository_root`. The folder is walked from `/`
//! through directory handles (`beneath`), following no link: every folder on the way must belong
//! to root (or the agent's own user) and be writable by no one else (a sticky folder such as /tmp
//! is accepted above the root, as its other users cannot rename root's entries), the configured
//! root and the repository itself with no exception. Every entry of the repository must be a
//! regular file of that owner, writable by no one else: an engine user can then neither plant a
//! package nor swap a folder between this check and apt reading the path. apt reads the folder by
//! its path, which is safe only because nobody but root can change what that path names.
//!
//! Package names follow Debian's rules and must belong to the instance's engine: a MariaDB
//! instance's upgrade installs no Redis and no unrelated package from the same folder.

use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{FileType, Stat};

use super::MinorError;
use crate::beneath::DirHandle;
use crate::instances::Engine;

/// At most this many packages in one request (MariaDB's whole source is about 20).
pub const MAX_PACKAGES: usize = 64;
/// A repository with more entries than this is refused before its entries are checked.
const MAX_ENTRIES: usize = 4096;
/// The index apt reads in a flat repository (`deb file:<dir> ./`).
pub const INDEX: &str = "Packages";

/// A package name by Debian Policy 5.6.1: lower-case letters, digits, `+`, `-`, `.`, at least two
/// characters, starting with a letter or digit. No `=version` or `/release`: the repository
/// decides the version.
pub fn valid_name(name: &str) -> bool {
    name.len() >= 2
        && name.len() <= 128
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

/// Whether `name` is a package of `engine` at `major` (PostgreSQL: "15"; the others' packages
/// carry no major in their names).
pub fn belongs_to(engine: Engine, major: &str, name: &str) -> bool {
    match engine {
        Engine::Postgresql => {
            let server = format!("postgresql-{major}");
            name == server
                || name == format!("postgresql-client-{major}")
                || name.strip_prefix(&server).is_some_and(|rest| rest.starts_with('-') && rest.len() > 1)
                || ["plperl", "plpython3", "pltcl"].iter().any(|pl| name == format!("postgresql-{pl}-{major}"))
                || name == "libpq5"
        }
        Engine::Mariadb => {
            (name.starts_with("mariadb-") && name.len() > "mariadb-".len())
                || name == "libmariadb3"
                || name == "mysql-common"
        }
        Engine::Redis => (name.starts_with("redis-") && name.len() > "redis-".len()) || name == "redis",
    }
}

/// The request's package list checked: names, engine, count, no duplicate.
pub fn check_packages(engine: Engine, major: &str, packages: &[String]) -> Result<Vec<String>, MinorError> {
    let invalid = |message: String| MinorError::InvalidRequest { field: "packages", message };
    if packages.len() > MAX_PACKAGES {
        return Err(invalid(format!("{} packages; at most {MAX_PACKAGES}", packages.len())));
    }
    let mut out: Vec<String> = Vec::new();
    for name in packages {
        if !valid_name(name) {
            return Err(invalid(format!(
                "{name:?} is not a Debian package name (lower-case letters, digits, + - .; no version or release)"
            )));
        }
        if !belongs_to(engine, major, name) {
            return Err(MinorError::ForeignPackage {
                name: name.clone(),
                engine: engine.as_str(),
                allowed: allowed(engine, major),
            });
        }
        if out.contains(name) {
            return Err(invalid(format!("{name:?} is listed twice")));
        }
        out.push(name.clone());
    }
    Ok(out)
}

fn allowed(engine: Engine, major: &str) -> String {
    match engine {
        Engine::Postgresql => format!(
            "postgresql-{major}, postgresql-client-{major}, postgresql-{major}-<extension>, \
             postgresql-pl{{perl,python3,tcl}}-{major}, libpq5"
        ),
        Engine::Mariadb => "mariadb-*, libmariadb3, mysql-common".into(),
        Engine::Redis => "redis, redis-*".into(),
    }
}

/// The request's folder checked by its text: absolute, normal components only, beneath `root`,
/// and characters an apt sources line carries unquoted. Returns it relative to `root`.
pub fn check_repository_path(root: &Path, text: &str) -> Result<PathBuf, MinorError> {
    let invalid = |message: String| MinorError::InvalidRequest { field: "package_repository", message };
    let path = Path::new(text);
    if !path.is_absolute() {
        return Err(invalid(format!("{text:?} must be an absolute folder beneath {}", root.display())));
    }
    // By the text: `Path::components` drops a `.` and empty components it meets on the way.
    if text.split('/').skip(1).any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(invalid(format!("{text:?} must not contain \"..\", \".\" or empty components")));
    }
    if !text.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._+-".contains(&b)) {
        return Err(invalid(format!("{text:?}: only letters, digits and / . _ + - are accepted in the folder's path")));
    }
    match path.strip_prefix(root) {
        Ok(rel) if rel.components().next().is_some() => Ok(rel.to_path_buf()),
        _ => Err(invalid(format!(
            "{text:?} is not beneath the package repository root {} (upgrade.package_repository_root); packages \
             are installed from nowhere else",
            root.display()
        ))),
    }
}

/// What the folder walk requires of every folder and file: this owner, no write for others.
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    /// root in production (the agent's own user in unit tests).
    pub uid: u32,
}

impl Owner {
    pub fn agent() -> Self {
        Self { uid: rustix::process::geteuid().as_raw() }
    }

    fn check(&self, path: &Path, st: &Stat, sticky_ok: bool) -> Result<(), MinorError> {
        let refuse = |message: String| MinorError::Repository { path: path.to_path_buf(), message };
        let mode = st.st_mode;
        if st.st_uid != 0 && st.st_uid != self.uid {
            return Err(refuse(format!("it belongs to uid {}, not root: an engine user could change it", st.st_uid)));
        }
        let sticky = mode & 0o1000 != 0;
        if mode & 0o022 != 0 && !(sticky_ok && sticky) {
            return Err(refuse(format!(
                "it is writable by its group or others (mode {:o}): an engine user could plant a package",
                mode & 0o7777
            )));
        }
        Ok(())
    }
}

/// The repository checked through directory handles, from `/` to its files (see the module's
/// comment). Returns the number of `.deb` files. Run right before apt reads it.
pub fn check_repository(root: &Path, rel: &Path, owner: Owner) -> Result<usize, MinorError> {
    let full = root.join(rel);
    let beneath = |e: crate::beneath::BeneathError| MinorError::Repository {
        path: full.clone(),
        message: format!("{e} (package repositories are read through no link)"),
    };
    let mut dir = DirHandle::open_root(Path::new("/")).map_err(beneath)?;
    let mut at = PathBuf::from("/");
    let root_depth = root.components().count();
    for (depth, c) in full.components().enumerate().skip(1) {
        let Component::Normal(name) = c else { continue };
        at.push(name);
        let st = dir.stat_entry(name).map_err(|e| MinorError::Repository {
            path: at.clone(),
            message: if e.is_not_found() { "it does not exist".into() } else { e.to_string() },
        })?;
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            return Err(MinorError::Repository {
                path: at.clone(),
                message: "it is not a folder (links are not followed)".into(),
            });
        }
        // Folders above the configured root may be sticky (as /tmp); the root and below may not.
        owner.check(&at, &st, depth + 1 < root_depth)?;
        dir = dir.open_dir(Path::new(name)).map_err(beneath)?;
    }
    let entries = dir.entries().map_err(beneath)?;
    if entries.len() > MAX_ENTRIES {
        return Err(MinorError::Repository { path: full, message: format!("more than {MAX_ENTRIES} entries") });
    }
    let mut debs = 0;
    let mut has_index = false;
    for name in &entries {
        let path = full.join(name);
        let st = dir.stat_entry(name).map_err(beneath)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(MinorError::Repository {
                path,
                message: "not a regular file: a flat repository holds files only (no link, no folder)".into(),
            });
        }
        owner.check(&path, &st, false)?;
        has_index |= name == OsStr::new(INDEX);
        debs += usize::from(Path::new(name).extension() == Some(OsStr::new("deb")));
    }
    if !has_index {
        return Err(MinorError::Repository {
            path: full,
            message: format!("it has no {INDEX} index (make one with apt-ftparchive packages . > {INDEX})"),
        });
    }
    Ok(debs)
}
