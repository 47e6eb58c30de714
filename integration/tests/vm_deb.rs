//! VM test of the Debian package and the systemd unit in a full Debian 12 system (issue 7).
//!
//! Builds the package twice (the second as a newer version), then boots one guest twice on a
//! persistent root overlay, so the second boot is a reboot of the same host:
//!
//! - boot 1 (`vm_deb/boot1.sh`): `dpkg -i` -> unit enabled, skipped until provisioned, KEK generated
//!   -> TLS and agent.toml provisioned, service active -> the host, over mTLS through the forwarded
//!   port, runs `dbagentctl status`, registers a PostgreSQL instance and creates its encrypted volume
//!   on the data disk -> PostgreSQL cluster on the volume, a row written;
//! - boot 2 (`vm_deb/boot2.sh`): the agent reopened the volume before PostgreSQL started and the row
//!   is there -> `dpkg -i` of the newer package keeps configuration, keys and state and restarts the
//!   agent (not PostgreSQL) -> the watchdog restarts a hung agent (test-only fault switch): the
//!   process stays up without petting until systemd logs "Watchdog timeout" and result 'watchdog',
//!   and the restarted agent answers -> `systemd-analyze verify` is clean -> `dpkg --purge` leaves
//!   the keystore and KEK and says where.
//!
//! The host checks that the data disk never shows the row in plain text, and that the shipped unit's
//! `systemd-analyze security` exposure level is at most [`DOCUMENTED_EXPOSURE`]. Needs qemu, root for the
//! first image build, and cargo-deb (installed by integration/build-deb.sh); fails loudly without.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use dbagent_integration::pki::{ServerPki, Validity};
use dbagent_integration::vm::{self, Vm};

const BOOT1: &str = include_str!("vm_deb/boot1.sh");
const BOOT2: &str = include_str!("vm_deb/boot2.sh");
const INSTANCE: &str = "pg-main";
/// The "Overall exposure level" of `systemd-analyze security dbagent.service` for the unit as shipped,
/// as docs/packaging.md states it. The measured level must not exceed it: a unit change that weakens
/// the hardening fails this test, one that improves it should lower the figure here and in the docs.
const DOCUMENTED_EXPOSURE: f64 = 4.9;
const PACKAGING_DOC: &str = include_str!("../../docs/packaging.md");

#[test]
fn vm_deb_install_reboot_upgrade_watchdog_purge() {
    let work = tempfile::tempdir().expect("temporary folder for packages, disks and client files");
    let t0 = Instant::now();
    let (deb, target) = build_deb(None, work.path());
    let new_version = format!("{}+vmtest2", env!("CARGO_PKG_VERSION"));
    let (new_deb, _) = build_deb(Some(&new_version), work.path());
    let build_ms = t0.elapsed().as_millis();
    // The host's dbagentctl is the same build as the package's.
    let ctl = target.join("release").join("dbagentctl");
    assert!(ctl.is_file(), "{} is missing after build-deb.sh", ctl.display());

    let disk = work.path().join("data0.img");
    vm::sparse_disk(&disk, 256 << 20);
    let overlay = work.path().join("root-overlay.qcow2");
    let port = vm::free_local_port();

    let pki = ServerPki::new();
    let files = pki.write(&work.path().join("pki"));
    let (client_cert, client_key) = pki.ca.client("orchestrator", Validity::Current).write(work.path(), "orchestrator");
    let client_toml = work.path().join("client.toml");
    std::fs::write(
        &client_toml,
        format!(
            "endpoint = \"https://127.0.0.1:{port}\"\nserver_name = \"localhost\"\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
            files.ca, client_cert, client_key
        ),
    )
    .expect("write client.toml");

    // The guest's own client (boot 2 checks that the agent answers before the hang and after the
    // watchdog restart), with the same orchestrator identity as the host's.
    let guest_client = "endpoint = \"https://127.0.0.1:7443\"\nserver_name = \"localhost\"\n\
        ca = \"/share/client/ca.crt\"\ncert = \"/share/client/orchestrator.crt\"\nkey = \"/share/client/orchestrator.key\"\n";
    let vm = Vm::new("deb")
        .persistent_root(&overlay)
        .disk(&disk)
        .hostfwd_port(port)
        .copy_as(&deb, "dbagent.deb")
        .copy_as(&new_deb, "dbagent-new.deb")
        .file("new-version", &new_version)
        .copy_as(&files.cert, "tls/server.crt")
        .copy_as(&files.key, "tls/server.key")
        .copy_as(&files.ca, "tls/client-ca.crt")
        .file("agent.toml", AGENT_TOML)
        .copy_as(&files.ca, "client/ca.crt")
        .copy_as(&client_cert, "client/orchestrator.crt")
        .copy_as(&client_key, "client/orchestrator.key")
        .file("guest-client.toml", guest_client)
        .script(BOOT1);

    // The host side of boot 1 runs while the guest waits for /share/host-done.
    let share = vm.share_dir().to_path_buf();
    let done = Arc::new(AtomicBool::new(false));
    let host = {
        let done = Arc::clone(&done);
        let (ctl, client_toml) = (ctl.clone(), client_toml.clone());
        thread::spawn(move || drive_agent_from_host(&share, &ctl, &client_toml, &done))
    };
    let first = vm.boot_unchecked();
    done.store(true, Ordering::SeqCst);
    let host_log = host.join().expect("host-side dbagentctl driver");
    println!("host side of boot 1:\n{host_log}");
    first.assert_all_passed();
    let plain = exposure(&first, "security-before.txt");
    let shipped = exposure(&first, "security-after.txt");
    println!("systemd-analyze security: {plain} without the hardening block, {shipped} as shipped");
    assert!(
        shipped <= DOCUMENTED_EXPOSURE,
        "the shipped unit's exposure level is {shipped}, above the {DOCUMENTED_EXPOSURE} docs/packaging.md states"
    );
    assert!(
        plain > shipped,
        "the unit without its hardening block scores {plain}, not worse than the shipped {shipped}"
    );
    assert!(
        PACKAGING_DOC.contains(&format!("| as shipped | {DOCUMENTED_EXPOSURE} ")),
        "docs/packaging.md does not state the shipped exposure {DOCUMENTED_EXPOSURE} that this test asserts"
    );

    assert!(
        !vm::file_contains(&disk, b"written-in-boot-1"),
        "the row appears in plain text on the raw data disk: the volume is not encrypted"
    );
    assert!(vm::file_contains(&disk, b"LUKS\xba\xbe"), "no LUKS header on the data disk");

    let vm = vm.script(BOOT2);
    let second = vm.boot();

    println!("VM deb test (qemu TCG, 2 vCPUs); package builds took {build_ms} ms");
    println!("  exposure level without hardening {plain}, as shipped {shipped} (at most {DOCUMENTED_EXPOSURE})");
    for (label, run) in [("boot 1", &first), ("boot 2", &second)] {
        println!("  {label}: boot to test start {:?} ms, whole boot {:?} ms", run.boot_to_test_ms, run.wall_ms);
    }
    for name in ["dpkg-install", "agent-start", "host-drove-agent", "pg-createcluster", "pg-start"] {
        println!("  boot 1 {name}: {} ms", first.ms(name));
    }
    for name in ["upgrade", "fault-switch-enabled", "watchdog-restarts-hung-agent", "systemd-analyze-verify", "purge"] {
        println!("  boot 2 {name}: {} ms", second.ms(name));
    }
}

/// The number in the "Overall exposure level for dbagent.service: 4.9 OK" line of a
/// `systemd-analyze security` output the guest saved in `file`.
fn exposure(run: &vm::VmRun, file: &str) -> f64 {
    let path = run.out_dir.join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no \"Overall exposure level\" line in {}:\n{text}", path.display()));
    line.rsplit_once(": ")
        .and_then(|(_, score)| score.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure number in {line:?} ({})", path.display()))
}

/// Agent configuration for the guest: listens for the forwarded port; keyslots at the shipped defaults.
const AGENT_TOML: &str = r#"# Written by integration/tests/vm_deb.rs
[api]
listen = "0.0.0.0:7443"

[auth]
orchestrators = ["orchestrator"]
monitors = ["monitor"]

[instances]
data_roots = ["/var/lib/postgresql"]
device_prefixes = ["/dev/disk/by-id/"]
"#;

/// Runs integration/build-deb.sh and copies the .deb it built into `dest` (cargo-deb deletes older
/// versions of the package from its output folder). Returns the copy and the cargo target folder.
fn build_deb(version: Option<&str>, dest: &Path) -> (PathBuf, PathBuf) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("build-deb.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script).stderr(Stdio::inherit());
    if let Some(v) = version {
        cmd.env("DEB_VERSION", v);
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    assert!(out.status.success(), "{} failed ({}); its messages are above", script.display(), out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    assert!(path.is_file(), "build-deb.sh printed {path:?}, which is not a file");
    let copy = dest.join(path.file_name().expect("a .deb file name"));
    std::fs::copy(&path, &copy).unwrap_or_else(|e| panic!("copy {} to {}: {e}", path.display(), copy.display()));
    // build-deb.sh writes into <target>/debian/.
    let target = path.parent().and_then(Path::parent).expect("the .deb lies in <target>/debian/").to_path_buf();
    (copy, target)
}

/// Waits for the guest to say the agent is up, then talks to it as the orchestrator would: status,
/// register the instance, create its volume. Writes `host-done` ("ok" or the failure) into the share.
fn drive_agent_from_host(share: &Path, ctl: &Path, client_toml: &Path, done: &AtomicBool) -> String {
    let ready = share.join("guest-ready");
    let deadline = Instant::now() + Duration::from_secs(900);
    while !ready.exists() {
        if done.load(Ordering::SeqCst) || Instant::now() > deadline {
            return "the guest never signalled guest-ready".to_owned();
        }
        thread::sleep(Duration::from_millis(300));
    }
    let mut log = String::new();
    let steps: [&[&str]; 4] = [
        &["status"],
        &[
            "instances",
            "register",
            INSTANCE,
            "--engine",
            "postgresql",
            "--engine-version",
            "15",
            "--unit",
            "postgresql@15-main.service",
            "--data-dir",
            "/var/lib/postgresql/15/main",
            "--os-user",
            "postgres",
            "--volume-size",
            "256MiB",
            "--device",
            vm::GUEST_DISK0,
            "--plan",
            "starter",
            "--cpu-millis",
            "1000",
            "--memory",
            "512MiB",
        ],
        &["volumes", "create", INSTANCE, "--watch"],
        &["volumes", "get", INSTANCE],
    ];
    let mut verdict = "ok".to_owned();
    for args in steps {
        let t = Instant::now();
        let out = Command::new(ctl)
            .arg("--config")
            .arg(client_toml)
            .args(["--timeout", "120"])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", ctl.display()));
        log.push_str(&format!(
            "$ dbagentctl {} ({} ms, {})\n{}{}",
            args.join(" "),
            t.elapsed().as_millis(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
        if !out.status.success() {
            verdict = format!("dbagentctl {} failed: {}", args.join(" "), out.status);
            break;
        }
    }
    std::fs::write(share.join("host-done"), format!("{verdict}\n")).expect("write host-done into the share");
    log
}
