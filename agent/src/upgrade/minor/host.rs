//! The host side of a minor upgrade, behind a small trait: installed package versions
//! (dpkg-query), the install from the request's repository (apt), a unit's last journal lines,
//! and `mariadb-upgrade`. The real one runs the tools (`ToolMinorHost`); the in-memory one serves
//! the unit tests (`memory.rs`).
//!
//! apt sees only the request's folder: a sources list of its own (`deb [trusted=yes] file:<dir>
//! ./`), an empty parts folder, and private lists, cache and preferences under the agent's state,
//! so neither the host's sources nor its pinning take part. Maintainer scripts do not restart the
//! servers: a `policy-rc.d` answering 101 ("action forbidden") is in place at `/usr/sbin` while
//! apt runs (the only place invoke-rc.d and deb-systemd-invoke read it). On a host with many
//! instances of one engine, a package restart would stop every customer's server at once, outside
//! their windows; each instance is restarted by its own minor upgrade, inside its window.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::backup::engine_commands::{maria_conn, tool};
use crate::backup::settings::BackupConfig;
use crate::command::ToolCommand;
use crate::instances::Instance;

/// The second line of the agent's `policy-rc.d` (after `#!/bin/sh`): a file with it is the agent's (left
/// by a crash, it is reused and removed); any other is the host's own and is left alone.
pub const POLICY_MARKER: &str = "# dbagent: a minor upgrade installs packages";

/// What the install did, for the operation's result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Installed {
    /// The last lines apt printed.
    pub output_tail: String,
    /// "agent" (ours was in place), or "host" (the host's own policy-rc.d decided).
    pub policy_rc_d: &'static str,
}

#[async_trait::async_trait]
pub trait MinorHost: Send + Sync {
    /// Each package's installed version (`None`: not installed).
    async fn installed_versions(&self, packages: &[String]) -> BTreeMap<String, Option<String>>;
    /// Installs `packages` from the flat repository `repository` only. Err: what apt said.
    async fn install(&self, repository: &Path, packages: &[String]) -> Result<Installed, String>;
    /// The unit's last `lines` journal lines (for the reason a server did not come back).
    async fn journal_tail(&self, unit: &str, lines: usize) -> String;
    /// `mariadb-upgrade` against the instance's server, as its admin over the socket. Ok: its output.
    async fn mariadb_upgrade(&self, instance: &Instance) -> Result<String, String>;
}

/// The real host. `apt_dir`: the agent's private apt state (`<state>/apt`); `policy_rc_d`:
/// `/usr/sbin/policy-rc.d`.
pub struct ToolMinorHost {
    pub backup: BackupConfig,
    pub data_roots: Vec<PathBuf>,
    pub apt_dir: PathBuf,
    pub policy_rc_d: PathBuf,
}

/// The last `n` non-empty lines of `text`, joined with " | ".
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim_end).filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

impl ToolMinorHost {
    /// The private apt folders and the sources list naming only `repository`; the `-o` options.
    fn apt_options(&self, repository: &Path) -> Result<Vec<String>, String> {
        let d = &self.apt_dir;
        crate::fsutil::ensure_private_dir(d).map_err(|e| format!("create {}: {e}", d.display()))?;
        for sub in ["lists/partial", "cache/archives/partial", "sources.list.d", "preferences.d"] {
            std::fs::create_dir_all(d.join(sub)).map_err(|e| format!("create {}: {e}", d.join(sub).display()))?;
        }
        let list = d.join("sources.list");
        let line = format!("deb [trusted=yes] file:{} ./\n", repository.display());
        crate::fsutil::atomic_write(&list, line.as_bytes()).map_err(|e| format!("write {}: {e}", list.display()))?;
        let o = |k: &str, v: &Path| format!("-o{k}={}", v.display());
        Ok(vec![
            o("Dir::Etc::SourceList", &list),
            o("Dir::Etc::SourceParts", &d.join("sources.list.d")),
            o("Dir::Etc::PreferencesParts", &d.join("preferences.d")),
            o("Dir::Etc::Preferences", &d.join("preferences")),
            o("Dir::State::Lists", &d.join("lists")),
            o("Dir::Cache", &d.join("cache")),
            "-oDPkg::Lock::Timeout=300".into(),
        ])
    }

    fn apt(&self, options: &[String], args: &[&str]) -> ToolCommand {
        // env: ToolCommand passes the agent's environment; apt's frontend must not ask anything.
        ToolCommand::new("/usr/bin/env")
            .args(["DEBIAN_FRONTEND=noninteractive", "apt-get", "-q"])
            .args(options)
            .args(args)
    }

    /// Puts the agent's policy-rc.d in place unless the host has its own. Returns whether it is ours.
    fn forbid_restarts(&self) -> Result<bool, String> {
        let p = &self.policy_rc_d;
        match std::fs::read_to_string(p) {
            Ok(text) => return Ok(text.lines().nth(1).is_some_and(|l| l.starts_with(POLICY_MARKER))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("read {}: {e}", p.display())),
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(p)
            .map_err(|e| format!("create {}: {e}", p.display()))?;
        let text = format!(
            "#!/bin/sh\n{POLICY_MARKER}; the agent restarts each instance itself, inside its maintenance window\nexit 101\n"
        );
        f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(|e| format!("write {}: {e}", p.display()))?;
        Ok(true)
    }
}

#[async_trait::async_trait]
impl MinorHost for ToolMinorHost {
    async fn installed_versions(&self, packages: &[String]) -> BTreeMap<String, Option<String>> {
        let mut out = BTreeMap::new();
        for p in packages {
            let q = ToolCommand::new("dpkg-query").args(["--showformat=${db:Status-Abbrev}|${Version}", "--show", p]);
            let version = q.output().await.ok().and_then(|o| {
                let text = String::from_utf8_lossy(&o).into_owned();
                let (status, version) = text.trim().split_once('|')?;
                // "ii ": installed; "rc ", "un ": removed or only known.
                (status.starts_with("ii") && !version.is_empty()).then(|| version.to_owned())
            });
            out.insert(p.clone(), version);
        }
        out
    }

    async fn install(&self, repository: &Path, packages: &[String]) -> Result<Installed, String> {
        let options = self.apt_options(repository)?;
        let ours = self.forbid_restarts()?;
        let run = async {
            self.apt(&options, &["update"]).output().await.map_err(|e| format!("apt-get update: {e}"))?;
            let mut args =
                vec!["install", "-y", "--no-install-recommends", "--no-remove", "-oDpkg::Options::=--force-confold"];
            args.extend(packages.iter().map(String::as_str));
            let out = self.apt(&options, &args).output().await.map_err(|e| format!("apt-get install: {e}"))?;
            Ok::<_, String>(tail(&String::from_utf8_lossy(&out), 12))
        };
        let result = run.await;
        if ours && let Err(e) = std::fs::remove_file(&self.policy_rc_d) {
            tracing::error!(
                "remove {}: {e}; services on this host will not be restarted by packages until it is removed",
                self.policy_rc_d.display()
            );
        }
        result.map(|output_tail| Installed { output_tail, policy_rc_d: if ours { "agent" } else { "host" } })
    }

    async fn journal_tail(&self, unit: &str, lines: usize) -> String {
        let cmd = ToolCommand::new("journalctl")
            .args(["--no-pager", "--output=cat", "--lines"])
            .arg(lines.to_string())
            .args(["--unit", unit]);
        match cmd.output().await {
            Ok(out) => tail(&String::from_utf8_lossy(&out), lines),
            Err(e) => format!("(journalctl: {e})"),
        }
    }

    async fn mariadb_upgrade(&self, instance: &Instance) -> Result<String, String> {
        let conn = self.backup.connection_for(instance, &self.data_roots).await;
        if let Err(e) = give_upgrade_info_to(&self.data_roots, instance) {
            return Err(format!("give {UPGRADE_INFO} to {}: {e}", instance.spec.os_user));
        }
        let mut args = maria_conn(&conn);
        // Without a user the client logs in as the OS user it runs as; mariadb-upgrade would try
        // root instead: name the instance's user, which unix_socket admits as itself.
        if conn.user.is_empty() {
            args.push(format!("--user={}", instance.spec.os_user));
        }
        let cmd = tool(&conn, "mariadb-upgrade", args).run_as(&instance.spec.os_user).map_err(|e| e.to_string())?;
        let out = cmd.output().await.map_err(|e| e.to_string())?;
        Ok(tail(&String::from_utf8_lossy(&out), 6))
    }
}

/// The file mariadb-upgrade writes in the data directory.
const UPGRADE_INFO: &str = "mysql_upgrade_info";

/// mariadb-upgrade runs as the instance's user (as root it would write a file in a folder that user
/// controls), and refuses when `mysql_upgrade_info` is not writable by it: Debian's packaging
/// (debian-start, as root) leaves it root's. The file is handed to the instance's user through a
/// directory handle: opened beneath the data root without following a link, `fstat`ed (a regular
/// file with one link: never a hard link to another file), `fchown`ed on the descriptor.
fn give_upgrade_info_to(data_roots: &[PathBuf], instance: &Instance) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let spec = &instance.spec;
    let (root, rel) = crate::beneath::split_below(data_roots, &spec.data_dir)
        .ok_or_else(|| format!("{} is below no data root", spec.data_dir.display()))?;
    let dir = crate::beneath::DirHandle::open_configured_root(root)
        .and_then(|r| r.open_dir(rel))
        .map_err(|e| e.to_string())?;
    let file = match dir.open_regular_file(Path::new(UPGRADE_INFO)) {
        Ok(f) => f,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    let user = nix::unistd::User::from_name(&spec.os_user)
        .ok()
        .flatten()
        .ok_or_else(|| format!("no system user {}", spec.os_user))?;
    if meta.uid() == user.uid.as_raw() || !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    if meta.nlink() != 1 {
        return Err(format!("{UPGRADE_INFO} has {} hard links; refused", meta.nlink()));
    }
    crate::beneath::fchown(&file, user.uid.as_raw(), user.gid.as_raw()).map_err(|e| e.to_string())
}
