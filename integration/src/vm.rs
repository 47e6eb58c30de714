//! Full-system VM harness for tests that need a real kernel: dm-crypt, systemd, dpkg.
//!
//! A test describes one guest boot: files for the 9p share (a `run.sh` and whatever it needs:
//! binaries, a `.deb`, keys), raw data disks and forwarded ports. [`Vm::boot`] runs
//! `integration/vm/run-vm.sh`, which boots Debian 12 under qemu (software emulation), runs
//! `/share/run.sh` as a systemd unit and powers off; the guest reports `PASS <name> <ms>` and
//! `FAIL <name> <reason>` lines that come back as [`VmRun`].
//!
//! A missing qemu or guest image is a test failure with instructions, never a skip: a VM test that
//! silently skips proves nothing. See docs/vm-harness.md.

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Guest path of the first data disk; the n-th is `virtio-vmdata<n>`.
pub const GUEST_DISK0: &str = "/dev/disk/by-id/virtio-vmdata0";
/// Guest port that [`Vm::hostfwd_port`] forwards to.
pub const GUEST_FORWARDED_PORT: u16 = 7443;

static BOOT_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The folder holding `run-vm.sh` and `build-image.sh`.
pub fn harness_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("vm")
}

/// One guest configuration; boot it as often as needed (each boot starts from the pristine image,
/// data disks keep what the guest wrote).
pub struct Vm {
    name: String,
    share: tempfile::TempDir,
    disks: Vec<PathBuf>,
    timeout: Duration,
    hostfwd_port: Option<u16>,
    qmp_socket: Option<PathBuf>,
    guestfwd_port: Option<u16>,
    root_overlay: Option<PathBuf>,
    image: Option<&'static str>,
    memory_mib: Option<u32>,
}

/// One check reported by the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepResult {
    Pass { name: String, ms: u64 },
    Fail { name: String, reason: String },
}

impl StepResult {
    pub fn name(&self) -> &str {
        match self {
            StepResult::Pass { name, .. } | StepResult::Fail { name, .. } => name,
        }
    }
}

/// What one boot produced.
#[derive(Debug)]
pub struct VmRun {
    pub results: Vec<StepResult>,
    /// Guest uptime when the test driver started (kernel + initramfs + systemd), in ms.
    pub boot_to_test_ms: Option<u64>,
    /// Host wall time of the whole boot, qemu start to power-off, in ms.
    pub wall_ms: Option<u64>,
    /// Exit code of run.sh; `None` when the guest stopped before the driver finished.
    pub exit_code: Option<i32>,
    /// Folder with result.log, steps.log, stderr.log, console.log, journal.log (on failure).
    pub out_dir: PathBuf,
}

impl Vm {
    /// A new guest configuration with an empty share; `name` labels its output folder.
    pub fn new(name: &str) -> Self {
        let share = tempfile::Builder::new()
            .prefix(&format!("dbagent-vm-share-{name}-"))
            .tempdir()
            .expect("create a temporary share folder for the VM");
        Vm {
            name: name.to_owned(),
            share,
            disks: Vec::new(),
            timeout: Duration::from_secs(600),
            hostfwd_port: None,
            qmp_socket: None,
            guestfwd_port: None,
            root_overlay: None,
            image: None,
            memory_mib: None,
        }
    }

    /// Guest memory in MiB (run-vm.sh's default is 1024).
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = Some(mib);
        self
    }

    /// Boots the Debian 13 guest with PostgreSQL 15 and 17 side by side
    /// (`integration/vm/build-image-pg-majors.sh`) instead of the Debian 12 one.
    pub fn pg_majors_image(mut self) -> Self {
        self.image = Some("pg-majors");
        self
    }

    /// The test the guest runs, as `/share/run.sh` (bash). Source `/share/vmtest-lib.sh` in it for
    /// `step NAME CMD...`, `step_fails`, `pass`, `fail`, `stop_on_fail`.
    pub fn script(self, body: &str) -> Self {
        self.file_mode("run.sh", body.as_bytes(), 0o755)
    }

    /// Writes `contents` to `/share/<name>` (subfolders are created).
    pub fn file(self, name: &str, contents: impl AsRef<[u8]>) -> Self {
        self.file_mode(name, contents.as_ref(), 0o644)
    }

    /// Copies a host file (a binary, a .deb, ...) to `/share/<its file name>`, keeping its mode.
    pub fn copy(self, src: impl AsRef<Path>) -> Self {
        let src = src.as_ref();
        let name = src
            .file_name()
            .unwrap_or_else(|| panic!("copy {} into the VM share: not a file path", src.display()))
            .to_string_lossy()
            .into_owned();
        self.copy_as(src, &name)
    }

    /// Copies a host file to `/share/<name>`, keeping its mode.
    pub fn copy_as(self, src: impl AsRef<Path>, name: &str) -> Self {
        let src = src.as_ref();
        let dst = self.share.path().join(name);
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
        }
        fs::copy(src, &dst).unwrap_or_else(|e| panic!("copy {} into the VM share as {name}: {e}", src.display()));
        self
    }

    /// Adds a raw data disk; the n-th added is `/dev/disk/by-id/virtio-vmdata<n>` in the guest.
    pub fn disk(mut self, path: impl AsRef<Path>) -> Self {
        self.disks.push(path.as_ref().to_path_buf());
        self
    }

    /// Forwards `127.0.0.1:<port>` on the host to guest port 7443 ([`GUEST_FORWARDED_PORT`]).
    /// QEMU listens for QMP on this Unix socket while the guest runs (see [`qmp`]).
    pub fn qmp_socket(mut self, path: impl AsRef<Path>) -> Self {
        self.qmp_socket = Some(path.as_ref().to_path_buf());
        self
    }

    pub fn hostfwd_port(mut self, port: u16) -> Self {
        self.hostfwd_port = Some(port);
        self
    }

    /// Lets the guest reach `127.0.0.1:<port>` on the host as `10.0.2.100:<port>`.
    pub fn guestfwd_port(mut self, port: u16) -> Self {
        self.guestfwd_port = Some(port);
        self
    }

    /// Keeps the guest's root file system across boots in `overlay` (a qcow2 file over the pristine
    /// image, created by the first boot): what a boot installs, the next one finds, as on a real
    /// host after a reboot. Without it every boot starts from the pristine image.
    pub fn persistent_root(mut self, overlay: impl AsRef<Path>) -> Self {
        self.root_overlay = Some(overlay.as_ref().to_path_buf());
        self
    }

    /// qemu is killed after this long (default 600 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The share folder on the host (mounted at /share in the guest).
    pub fn share_dir(&self) -> &Path {
        self.share.path()
    }

    fn file_mode(self, name: &str, contents: &[u8], mode: u32) -> Self {
        let dst = self.share.path().join(name);
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
        }
        fs::write(&dst, contents).unwrap_or_else(|e| panic!("write {}: {e}", dst.display()));
        fs::set_permissions(&dst, fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", dst.display()));
        self
    }

    /// Boots the guest, runs run.sh, and panics with the failing checks and log excerpts unless
    /// every check passed and the script completed.
    pub fn boot(&self) -> VmRun {
        let run = self.boot_unchecked();
        run.assert_all_passed();
        run
    }

    /// Boots the guest and returns whatever it reported, failed checks included. Still panics when
    /// the harness itself cannot run (no qemu, no image, no result.log).
    pub fn boot_unchecked(&self) -> VmRun {
        require_qemu();
        assert!(
            self.share.path().join("run.sh").is_file(),
            "VM {}: no run.sh in the share; call Vm::script first",
            self.name
        );
        let n = BOOT_COUNTER.fetch_add(1, Ordering::SeqCst);
        let out_dir =
            std::env::temp_dir().join("dbagent-vm-out").join(format!("{}-{}-{n}", self.name, std::process::id()));
        fs::create_dir_all(&out_dir).unwrap_or_else(|e| panic!("create VM output folder {}: {e}", out_dir.display()));

        let script = harness_dir().join("run-vm.sh");
        let mut cmd = Command::new("bash");
        cmd.arg(&script).arg(self.share.path()).arg(&out_dir);
        for disk in &self.disks {
            cmd.arg("--disk").arg(disk);
        }
        cmd.env("VM_TIMEOUT", self.timeout.as_secs().max(1).to_string());
        if let Some(port) = self.hostfwd_port {
            cmd.env("VM_HOSTFWD_PORT", port.to_string());
        }
        if let Some(port) = self.guestfwd_port {
            cmd.env("VM_GUESTFWD_PORT", port.to_string());
        }
        if let Some(qmp) = &self.qmp_socket {
            cmd.env("VM_QMP_SOCKET", qmp);
        }
        if let Some(overlay) = &self.root_overlay {
            cmd.env("VM_ROOT_OVERLAY", overlay);
        }
        if let Some(image) = self.image {
            cmd.env("VM_IMAGE", image);
        }
        if let Some(mib) = self.memory_mib {
            cmd.env("VM_MEMORY", mib.to_string());
        }
        eprintln!("vm {}: booting, output in {}", self.name, out_dir.display());
        let status = cmd.status().unwrap_or_else(|e| panic!("run {}: {e}", script.display()));

        let result_log = out_dir.join("result.log");
        let text = fs::read_to_string(&result_log).unwrap_or_else(|_| {
            panic!(
                "VM {} produced no result.log ({} exited with {status}); the messages above say why.\n\
                 console tail:\n{}",
                self.name,
                script.display(),
                tail(&out_dir.join("console.log"), 30)
            )
        });
        let mut run = parse_result_log(&text, out_dir);
        run.wall_ms = fs::read_to_string(run.out_dir.join("wall_ms")).ok().and_then(|s| s.trim().parse().ok());
        run
    }
}

impl VmRun {
    /// The result of check `name`; panics if the guest never reported it.
    pub fn step(&self, name: &str) -> &StepResult {
        self.results
            .iter()
            .find(|r| r.name() == name)
            .unwrap_or_else(|| panic!("the guest reported no check named {name:?}; it reported {:?}", self.results))
    }

    /// Milliseconds of passed check `name`; panics if it failed or is missing.
    pub fn ms(&self, name: &str) -> u64 {
        match self.step(name) {
            StepResult::Pass { ms, .. } => *ms,
            StepResult::Fail { reason, .. } => panic!("check {name} failed: {reason}"),
        }
    }

    pub fn failures(&self) -> Vec<&StepResult> {
        self.results.iter().filter(|r| matches!(r, StepResult::Fail { .. })).collect()
    }

    /// Panics with the failed checks and log excerpts unless every check passed and run.sh finished.
    pub fn assert_all_passed(&self) {
        let failures = self.failures();
        if failures.is_empty() && self.exit_code == Some(0) {
            return;
        }
        let mut msg = String::new();
        for f in &failures {
            if let StepResult::Fail { name, reason } = f {
                msg.push_str(&format!("  FAIL {name}: {reason}\n"));
            }
        }
        match self.exit_code {
            None => msg.push_str("  the guest stopped before run.sh finished (no END line)\n"),
            Some(0) => {}
            Some(code) => msg.push_str(&format!("  run.sh exited with code {code}\n")),
        }
        panic!(
            "VM checks failed (output in {}):\n{msg}--- steps.log (tail)\n{}\n--- stderr.log (tail)\n{}\n--- console.log (tail)\n{}",
            self.out_dir.display(),
            tail(&self.out_dir.join("steps.log"), 40),
            tail(&self.out_dir.join("stderr.log"), 20),
            tail(&self.out_dir.join("console.log"), 20),
        );
    }
}

/// Parses result.log: `BOOT <ms>`, `PASS <name> <ms>`, `FAIL <name> <reason>`, `END <code>`.
pub fn parse_result_log(text: &str, out_dir: PathBuf) -> VmRun {
    let mut run = VmRun { results: Vec::new(), boot_to_test_ms: None, wall_ms: None, exit_code: None, out_dir };
    for line in text.lines() {
        let mut parts = line.splitn(3, ' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("BOOT"), Some(ms), None) => run.boot_to_test_ms = ms.parse().ok(),
            (Some("END"), Some(code), None) => run.exit_code = code.parse().ok(),
            (Some("PASS"), Some(name), ms) => run.results.push(StepResult::Pass {
                name: name.to_owned(),
                ms: ms.and_then(|m| m.trim().parse().ok()).unwrap_or(0),
            }),
            (Some("FAIL"), Some(name), reason) => {
                run.results.push(StepResult::Fail { name: name.to_owned(), reason: reason.unwrap_or("").to_owned() })
            }
            _ => {}
        }
    }
    run
}

/// Panics with install instructions when qemu is missing: VM tests never skip.
pub fn require_qemu() {
    let found =
        Command::new("qemu-system-x86_64").arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    assert!(
        found,
        "qemu-system-x86_64 is not installed, so the VM tests cannot run (they never skip).\n\
         Install: apt-get install -y qemu-system-x86 debootstrap busybox-static e2fsprogs\n\
         The guest image is then built on first use by integration/vm/build-image.sh (needs root)."
    );
}

/// Creates (or truncates to) a sparse raw disk image of `bytes` bytes.
pub fn sparse_disk(path: impl AsRef<Path>, bytes: u64) {
    let path = path.as_ref();
    let f = fs::File::create(path).unwrap_or_else(|e| panic!("create disk image {}: {e}", path.display()));
    f.set_len(bytes).unwrap_or_else(|e| panic!("size disk image {} to {bytes} bytes: {e}", path.display()));
}

/// Whether `needle` occurs anywhere in the file (streamed, so multi-GB disk images are fine).
pub fn file_contains(path: impl AsRef<Path>, needle: &[u8]) -> bool {
    assert!(!needle.is_empty(), "file_contains needs a non-empty needle");
    let path = path.as_ref();
    let mut f = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut buf = vec![0u8; 1 << 20];
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = f.read(&mut buf).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        if n == 0 {
            return false;
        }
        carry.extend_from_slice(&buf[..n]);
        if carry.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
        let keep = needle.len() - 1;
        if carry.len() > keep {
            carry.drain(..carry.len() - keep);
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for [`Vm::hostfwd_port`]).
pub fn free_local_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
    l.local_addr().expect("local address of a bound listener").port()
}

fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}

/// Runs QMP `commands` (JSON objects) in order on the socket of a running VM, after the capabilities
/// handshake; returns each command's `return` value, or the first error QEMU gave.
pub fn qmp(socket: &Path, commands: &[serde_json::Value]) -> Result<Vec<serde_json::Value>, String> {
    use std::io::{BufRead, BufReader, Write};
    let stream =
        std::os::unix::net::UnixStream::connect(socket).map_err(|e| format!("connect {}: {e}", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut writer = stream;
    // Reads until a reply (events interleave); the greeting counts as the reply to nothing.
    let reply = |reader: &mut BufReader<std::os::unix::net::UnixStream>| -> Result<serde_json::Value, String> {
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).map_err(|e| format!("read QMP: {e}"))? == 0 {
                return Err("QMP closed the connection".into());
            }
            let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| format!("QMP said {line:?}: {e}"))?;
            if let Some(e) = v.get("error") {
                return Err(format!("QMP error: {e}"));
            }
            if v.get("return").is_some() || v.get("QMP").is_some() {
                return Ok(v.get("return").cloned().unwrap_or_default());
            }
        }
    };
    reply(&mut reader)?;
    let mut out = Vec::new();
    for cmd in std::iter::once(&serde_json::json!({ "execute": "qmp_capabilities" })).chain(commands) {
        writeln!(writer, "{cmd}").map_err(|e| format!("write QMP: {e}"))?;
        out.push(reply(&mut reader)?);
    }
    out.remove(0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_result_log() {
        let run = parse_result_log(
            "BOOT 14000\nnoise\nPASS fmt 812\nFAIL open exit 2: No key available\nEND 1\n",
            PathBuf::from("/x"),
        );
        assert_eq!(run.boot_to_test_ms, Some(14000));
        assert_eq!(run.exit_code, Some(1));
        assert_eq!(run.results[0], StepResult::Pass { name: "fmt".into(), ms: 812 });
        assert_eq!(run.results[1], StepResult::Fail { name: "open".into(), reason: "exit 2: No key available".into() });
        assert_eq!(run.failures().len(), 1);
    }

    #[test]
    fn finds_needle_across_chunk_boundary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("img");
        let mut data = vec![0u8; (1 << 20) - 3];
        data.extend_from_slice(b"MARKER");
        data.extend_from_slice(&[0u8; 100]);
        fs::write(&p, &data).expect("write");
        assert!(file_contains(&p, b"MARKER"));
        assert!(!file_contains(&p, b"MARKEX"));
    }
}
