//! A restore drill's scratch folder: made with the right owners and modes, removed when the drill
//! ends, and, after a crash, found again at start-up with the server still working in it. Also
//! the /proc checks: which processes work in a folder, and whether one listens on TCP.
//!
//! Everything in the folder is made and removed through directory handles (`crate::beneath`):
//! `data/` and `run/` belong to the instance's user, who may plant links there.

use std::path::Path;
use std::time::Duration;

use super::BackupError;
use super::drill_engine as de;
use crate::beneath::{DirHandle, DirOutcome};

/// Makes `<drill_dir>/<name>` (root's, 0711) with `data/` and `run/` (the instance user's, 0700)
/// and the config files (0644), all through directory handles. Blocking.
pub(super) fn prepare_scratch(
    drill_dir: &Path,
    name: &std::ffi::OsStr,
    owner: Option<(u32, u32)>,
    files: &[(&'static str, String)],
) -> Result<(), BackupError> {
    use std::io::Write as _;
    use std::os::unix::fs::DirBuilderExt as _;
    if !drill_dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(drill_dir)
            .map_err(|e| BackupError::io(format!("create {}", drill_dir.display()), e))?;
    }
    let root = DirHandle::open_root(drill_dir)?;
    chmod(&root, 0o711)?;
    let (scratch, outcome) = root.open_or_create_dir(Path::new(name), 0o711)?;
    if outcome != DirOutcome::Created {
        return Err(BackupError::io(
            format!("create {}", scratch.path().display()),
            std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        ));
    }
    chmod(&scratch, 0o711)?;
    for sub in [de::DATA, de::RUN] {
        let (dir, _) = scratch.open_or_create_dir(Path::new(sub), 0o700)?;
        if let Some((uid, gid)) = owner {
            dir.chown(uid, gid)?;
        }
    }
    for (file, text) in files {
        let mut f = scratch.create_file(std::ffi::OsStr::new(file), 0o644)?;
        f.write_all(text.as_bytes()).map_err(|e| BackupError::io(format!("write {file}"), e))?;
    }
    Ok(())
}

/// Sets the mode whatever the umask made of it.
fn chmod(dir: &DirHandle, mode: u32) -> Result<(), BackupError> {
    rustix::fs::fchmod(dir, rustix::fs::Mode::from_raw_mode(mode))
        .map_err(|e| BackupError::io(format!("chmod {}", dir.path().display()), e.into()))
}

/// Removes `<drill_dir>/<name>` and everything in it, following no link. Blocking.
pub(super) fn remove_scratch(drill_dir: &Path, name: &str) -> Result<(), BackupError> {
    if !drill_dir.exists() {
        return Ok(());
    }
    let root = DirHandle::open_root(drill_dir)?;
    root.remove_tree(std::ffi::OsStr::new(name))?;
    Ok(())
}

/// At start-up: a drill cut short by a crash left its server running and its scratch folder.
/// Kills every process whose command line names a folder in `drill_dir` and removes them all (no
/// drill runs yet). Returns the folders removed. Blocking.
pub fn clean_leftovers(drill_dir: &Path) -> Vec<String> {
    let Ok(root) = DirHandle::open_root(drill_dir) else { return Vec::new() };
    let names = root.entries().unwrap_or_default();
    if names.is_empty() {
        return Vec::new();
    }
    for pid in processes_in(drill_dir) {
        tracing::warn!(pid, "killing the throw-away server of a drill cut short");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
    // A killed PostgreSQL's backends exit on their own; give the kernel a moment to reap them.
    std::thread::sleep(Duration::from_millis(200));
    let mut removed = Vec::new();
    for name in names {
        match root.remove_tree(&name) {
            Ok(()) => removed.push(name.to_string_lossy().into_owned()),
            Err(e) => tracing::error!("remove the drill leftover {}: {e}", drill_dir.join(&name).display()),
        }
    }
    removed
}

/// The pids of the processes working in a folder below `dir` (a server's working folder is its
/// data folder) or naming one on their command line.
pub fn processes_in(dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let me = std::process::id();
    let needle = format!("{}/", dir.display());
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| c.starts_with(dir) && c != dir);
            cwd || std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|arg| String::from_utf8_lossy(arg).contains(&needle)))
        })
        .collect()
}

/// Whether process `pid` holds a TCP socket in the LISTEN state (from /proc/<pid>/fd and
/// /proc/net/tcp{,6} of its network namespace).
pub fn listens_on_tcp(pid: u32) -> std::io::Result<bool> {
    let mut inodes = std::collections::HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(target) = std::fs::read_link(fd?.path()) else { continue };
        let target = target.to_string_lossy().into_owned();
        if let Some(inode) = target.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
            inodes.insert(inode.to_owned());
        }
    }
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else { continue };
        // Fields: sl local_address rem_address st ... uid timeout inode; st 0A is LISTEN.
        let listening = text.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 9 && f[3] == "0A" && inodes.contains(f[9])
        });
        if listening {
            return Ok(true);
        }
    }
    Ok(false)
}
