//! Attacking the agent as a tenant would: a database's OS user owns the data root and the log folder
//! and, while the root agent works beneath them, plants links, FIFOs and huge files and exchanges
//! names in a tight loop. The defences these tests prove are listed in `docs/security.md`.
//!
//! - [`TenantUser`]: an unprivileged account (`dbagent-tenant`, created once) to own the folders.
//! - [`Sentinels`]: a file and a folder outside every root, owned by root, whose content, owner, mode
//!   and existence must survive the attack; the content is a unique marker a test can look for in a
//!   drain or a TailLogs stream.
//! - [`Exchange`]: `tenant-attack exchange A B` run as the tenant, until stopped; [`Exchange::stop`]
//!   returns how many exchanges it made, so a test shows the attack ran while the agent worked.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

/// The account the attacks run as, unless a test uses an engine's own user.
pub const TENANT: &str = "dbagent-tenant";

#[derive(Debug, Clone)]
pub struct TenantUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl TenantUser {
    /// The unprivileged test account, created on first use (a regular user, no home, no shell).
    pub fn get() -> Self {
        static CREATE: Mutex<()> = Mutex::new(());
        let _once = CREATE.lock().unwrap_or_else(|p| p.into_inner());
        if nix::unistd::User::from_name(TENANT).ok().flatten().is_none() {
            let out = Command::new("useradd")
                .args(["--no-create-home", "--shell", "/usr/sbin/nologin", "--comment", "dbagent attack tests", TENANT])
                .output()
                .unwrap_or_else(|e| panic!("useradd {TENANT}: {e} (the attack tests run as root)"));
            assert!(
                out.status.success() || nix::unistd::User::from_name(TENANT).ok().flatten().is_some(),
                "useradd {TENANT}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Self::named(TENANT)
    }

    /// An existing account, e.g. `postgres` or `redis`, to attack as the engine's own user.
    pub fn named(name: &str) -> Self {
        let u = nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("user {name} does not exist on this machine"));
        Self { name: name.to_owned(), uid: u.uid.as_raw(), gid: u.gid.as_raw() }
    }

    /// Gives `path` and everything beneath it to this user (not following links).
    pub fn own(&self, path: &Path) {
        let out = Command::new("chown")
            .args(["-R", "-h", &format!("{}:{}", self.uid, self.gid)])
            .arg(path)
            .output()
            .expect("chown");
        assert!(out.status.success(), "chown -R {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    }

    /// A command that runs as this user (uid and gid set before exec, no supplementary groups).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        // std drops the supplementary groups when root sets a uid.
        cmd.uid(self.uid).gid(self.gid);
        cmd
    }
}

/// Files outside every root that the agent must never read, write, chown or delete.
pub struct Sentinels {
    dir: tempfile::TempDir,
    /// A root-owned file, mode 0600, holding [`Sentinels::marker`].
    pub file: PathBuf,
    /// A root-owned folder with one file in it; it must survive with that file.
    pub folder: PathBuf,
    pub marker: String,
}

impl Sentinels {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("dbagent-sentinel-").tempdir().expect("sentinel dir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("sentinel");
        let marker = format!("SENTINEL-{}-{}", std::process::id(), nanos());
        let file = dir.path().join("secret.conf");
        let mut f = fs::File::create(&file).expect("sentinel");
        for i in 0..50 {
            writeln!(f, "{marker} line {i}: this must never leave the host").expect("sentinel");
        }
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).expect("sentinel");
        let folder = dir.path().join("keep");
        fs::create_dir(&folder).expect("sentinel");
        fs::write(folder.join("keystore.json"), &marker).expect("sentinel");
        Self { dir, file, folder, marker }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Panics, naming what changed, unless every sentinel is as it was made.
    pub fn assert_untouched(&self) {
        let meta = fs::symlink_metadata(&self.file)
            .unwrap_or_else(|e| panic!("sentinel file {} is gone: {e}", self.file.display()));
        assert!(meta.file_type().is_file(), "sentinel {} is no longer a regular file", self.file.display());
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "sentinel {} was chowned", self.file.display());
        assert_eq!(meta.mode() & 0o7777, 0o600, "sentinel {} changed mode", self.file.display());
        let text = fs::read_to_string(&self.file).expect("read the sentinel");
        assert!(
            text.lines().count() == 50 && text.lines().all(|l| l.starts_with(&self.marker)),
            "sentinel {} was written to",
            self.file.display()
        );
        let kept = self.folder.join("keystore.json");
        assert_eq!(
            fs::read_to_string(&kept).unwrap_or_else(|e| panic!("sentinel folder lost {}: {e}", kept.display())),
            self.marker,
            "sentinel {} was written to",
            kept.display()
        );
        let meta = fs::symlink_metadata(&self.folder).expect("the sentinel folder is gone");
        assert!(meta.is_dir() && meta.uid() == 0, "sentinel folder {} was replaced or chowned", self.folder.display());
    }

    /// Panics if `text` carries the sentinel's marker (it reached a drain, a stream or a file).
    pub fn assert_not_in(&self, what: &str, text: &str) {
        assert!(!text.contains(&self.marker), "the sentinel's content reached {what}");
    }
}

impl Default for Sentinels {
    fn default() -> Self {
        Self::new()
    }
}

/// `renameat2(A, B, RENAME_EXCHANGE)` in a loop, as the tenant, until stopped (or dropped).
pub struct Exchange {
    attack: AttackLoop,
}

impl Exchange {
    pub fn start(user: &TenantUser, a: &Path, b: &Path) -> Self {
        Self::start_with(&attack_binary(), user, a, b)
    }

    /// As [`Exchange::start`] with `tenant-attack` at `binary`: inside the VM guest it sits in the
    /// share beside the driver, not in cargo's target folder.
    pub fn start_with(binary: &Path, user: &TenantUser, a: &Path, b: &Path) -> Self {
        let what = format!("{} <-> {}", a.display(), b.display());
        Self { attack: AttackLoop::start(binary, user, "exchange", a, b, what) }
    }

    /// Stops the loop and returns how many exchanges it made; panics if it made none (the attack
    /// never ran, so a test passing beside it would prove nothing).
    pub fn stop(mut self) -> u64 {
        let end = self.attack.stop();
        assert!(
            end.status.success() && end.count > 0,
            "the exchange {} never ran ({}): {} {}",
            self.attack.what,
            end.status,
            end.stdout,
            end.stderr
        );
        end.count
    }
}

/// `symlink(TARGET, LINK)` whenever LINK is missing, in a loop, as the tenant, until stopped (or
/// dropped): a link planted again each time the agent moves or removes the name.
pub struct Planter {
    attack: AttackLoop,
}

impl Planter {
    pub fn start(user: &TenantUser, target: &Path, link: &Path) -> Self {
        let what = format!("{} -> {}", link.display(), target.display());
        Self { attack: AttackLoop::start(&attack_binary(), user, "plant-link", target, link, what) }
    }

    /// Stops the loop and returns how many links it planted. Unlike an exchange, none is a valid
    /// outcome of one race (the agent's own file took the name first): a test sums the counts of
    /// its attempts and asserts the total.
    pub fn stop(mut self) -> u64 {
        let end = self.attack.stop();
        assert!(end.status.success(), "planting {} failed ({}): {}", self.attack.what, end.status, end.stderr);
        end.count
    }
}

/// One `tenant-attack` loop running as the tenant: it runs until its stdin closes, then prints how
/// many times it acted and exits. Killed on drop, so a failing test leaves no attacker behind.
struct AttackLoop {
    child: Option<Child>,
    /// What it attacks, for messages.
    what: String,
}

/// How a stopped loop ended.
struct AttackEnd {
    status: std::process::ExitStatus,
    /// The count it printed (0 if it printed none).
    count: u64,
    stdout: String,
    stderr: String,
}

impl AttackLoop {
    fn start(binary: &Path, user: &TenantUser, verb: &str, first: &Path, second: &Path, what: String) -> Self {
        let child = user
            .command(binary)
            .arg(verb)
            .arg(first)
            .arg(second)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tenant-attack");
        Self { child: Some(child), what }
    }

    fn stop(&mut self) -> AttackEnd {
        let mut child = self.child.take().expect("running");
        drop(child.stdin.take());
        let out = child.wait_with_output().expect("tenant-attack");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let count = stdout.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
        AttackEnd { status: out.status, count, stdout, stderr: String::from_utf8_lossy(&out.stderr).into_owned() }
    }
}

impl Drop for AttackLoop {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Lets every account traverse (not list) each folder from `/` down to `path`: the test's temp
/// folders are private, and the tenant must reach the folder it owns as a database user would.
pub fn open_way_to(path: &Path) {
    for dir in path.ancestors().collect::<Vec<_>>().into_iter().rev() {
        let mode = fs::metadata(dir).unwrap_or_else(|e| panic!("stat {}: {e}", dir.display())).mode();
        if mode & 0o001 == 0 {
            fs::set_permissions(dir, fs::Permissions::from_mode((mode & 0o7777) | 0o001))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));
        }
    }
}

/// Makes a FIFO at `path` (owned by `user`): an open for reading blocks until a writer comes.
pub fn plant_fifo(user: &TenantUser, path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)).expect("mkfifo");
    user.own(path);
}

/// Makes a sparse file of `bytes` at `path` (owned by `user`): reading it whole exhausts memory.
pub fn plant_huge_file(user: &TenantUser, path: &Path, bytes: u64) {
    let f = fs::File::create(path).expect("huge file");
    f.set_len(bytes).expect("set_len");
    user.own(path);
}

/// Makes a symlink at `link` pointing at `target` (the link owned by `user`).
pub fn plant_link(user: &TenantUser, target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link).expect("symlink");
    user.own(link);
}

/// `tenant-attack`, built by cargo beside the test binaries (`target/debug/deps/..`).
fn attack_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let bin = exe.parent().and_then(Path::parent).map(|d| d.join("tenant-attack")).expect("target dir");
    assert!(bin.exists(), "{} does not exist; cargo test -p dbagent-integration builds it", bin.display());
    bin
}

fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exchange_runs_as_the_tenant_and_leaves_both_names_in_place() {
        let user = TenantUser::get();
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, "real").unwrap();
        let sentinels = Sentinels::new();
        plant_link(&user, &sentinels.file, &b);
        user.own(dir.path());
        let attack = Exchange::start(&user, &a, &b);
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(attack.stop() > 0);
        assert_eq!(fs::read_to_string(&a).unwrap(), "real");
        assert!(fs::symlink_metadata(&b).unwrap().file_type().is_symlink());
        sentinels.assert_untouched();

        // The tenant cannot exchange names in a folder it does not own.
        let root_dir = tempfile::tempdir().unwrap();
        fs::write(root_dir.path().join("a"), "x").unwrap();
        fs::write(root_dir.path().join("b"), "y").unwrap();
        let out = user
            .command(attack_binary())
            .arg("exchange")
            .arg(root_dir.path().join("a"))
            .arg(root_dir.path().join("b"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("0 "), "{:?}", out);
    }

    #[test]
    fn the_planter_plants_its_link_again_whenever_the_name_is_freed() {
        let user = TenantUser::get();
        let dir = tempfile::tempdir().unwrap();
        user.own(dir.path());
        let sentinels = Sentinels::new();
        let link = dir.path().join("dump.rdb");
        let planter = Planter::start(&user, &sentinels.file, &link);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut removed = 0;
        while removed < 3 {
            assert!(std::time::Instant::now() < deadline, "the link was not planted again");
            if fs::symlink_metadata(&link).is_ok() {
                let meta = fs::symlink_metadata(&link).unwrap();
                assert!(meta.file_type().is_symlink(), "the planter made a link");
                assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), user.uid, "as the tenant");
                fs::remove_file(&link).unwrap();
                removed += 1;
            }
            std::thread::yield_now();
        }
        assert!(planter.stop() >= 3);
        sentinels.assert_untouched();
    }
}
