//! Durable file writes: write a temporary file, fsync it, rename it over the target, fsync the folder.
//! A crash leaves either the old or the new content, never a torn file. A folder of JSON records
//! uses these through `json_store`, which adds keys, loading and a policy for corrupt records.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Writes `bytes` to `path` atomically and durably, with mode 0600.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().ok_or_else(|| io::Error::other("path has no parent folder"))?;
    let name = path.file_name().ok_or_else(|| io::Error::other("path has no file name"))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Makes the creations, renames and removals in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes `path` and makes the removal durable; a missing file is not an error.
pub fn remove_durable(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// Creates `dir` (and parents) with mode 0700 if it does not exist. A folder it creates is made
/// durable in its parent, so files written into it later cannot vanish with it in a crash.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

/// Lists the `*.json` files of `dir`, removing leftovers of interrupted atomic writes. Hidden files
/// (a temporary file is `.<name>.tmp`) are never listed.
pub fn json_files(dir: &Path) -> io::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with('.') {
            if name.ends_with(".tmp") {
                // A temporary file of a write that never reached its rename: the old file is still valid.
                let _ = fs::remove_file(&path);
            }
        } else if name.ends_with(".json") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Whether `path`, with every symbolic link in its existing part resolved, still lies below one of
/// `roots` (themselves resolved). The part of `path` that does not exist yet cannot hold a link.
pub fn resolves_below(path: &Path, roots: &[std::path::PathBuf]) -> bool {
    let Some(resolved) = path.ancestors().find_map(|a| {
        let rest = path.strip_prefix(a).ok()?;
        fs::canonicalize(a).ok().map(|c| c.join(rest))
    }) else {
        return false;
    };
    let roots: Vec<_> = roots.iter().map(|r| fs::canonicalize(r).unwrap_or_else(|_| r.clone())).collect();
    strictly_below(&resolved, &roots)
}

/// Whether `path` lies strictly below one of `roots`, compared component by component (so
/// /srv/db2 is not below /srv/db, and a root is not below itself). No file system access.
pub fn strictly_below(path: &Path, roots: &[std::path::PathBuf]) -> bool {
    roots.iter().any(|root| path.strip_prefix(root).is_ok_and(|rest| !rest.as_os_str().is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_cleans_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        fs::write(dir.path().join(".b.json.tmp"), b"torn").unwrap();
        fs::write(dir.path().join(".hidden.json"), b"{}").unwrap();
        fs::write(dir.path().join("a.json.corrupt-20240501T100000Z"), b"{").unwrap();
        let files = json_files(dir.path()).unwrap();
        assert_eq!(files, vec![p.clone()]);
        assert!(!dir.path().join(".b.json.tmp").exists());
        assert!(dir.path().join(".hidden.json").exists(), "only temporary files are removed");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn resolves_below_follows_links_in_the_existing_part() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let roots = [root.path().to_path_buf()];
        assert!(resolves_below(&root.path().join("new/deeper"), &roots));
        assert!(!resolves_below(root.path(), &roots), "the root itself is not below it");
        std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
        assert!(!resolves_below(&root.path().join("escape/data"), &roots));
        std::os::unix::fs::symlink(root.path().join("inner"), root.path().join("inside")).unwrap();
        fs::create_dir(root.path().join("inner")).unwrap();
        assert!(resolves_below(&root.path().join("inside/data"), &roots));
    }
}
