//! VM smoke test: proves the full-system harness with real dm-crypt in Debian's own kernel.
//!
//! Boot 1 formats a LUKS2 volume on a data disk, writes a marker through it and closes it; the host
//! then checks that the raw disk never shows the marker. Boot 2 reopens the same disk: a wrong key is
//! refused, the right one reads the marker back. Boot 1 also proves the network is loopback-only:
//! the forwarded port reaches the guest, the gateway's other ports are refused.
//!
//! Needs qemu and root for the first image build (cached afterwards); fails loudly without them.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dbagent_integration::vm::{self, Vm};

const LUKS_ARGS: &str = "--type luks2 --cipher aes-xts-plain64 --key-size 256 --hash sha256 \
                         --pbkdf pbkdf2 --pbkdf-force-iterations 1000";

const FORMAT_SCRIPT: &str = r#"#!/bin/bash
. /share/vmtest-lib.sh
DISK=/dev/disk/by-id/virtio-vmdata0
step data-disk-present test -b "$DISK"
step load-dm-crypt modprobe dm-crypt
stop_on_fail
step luks-format cryptsetup luksFormat --batch-mode LUKS_ARGS --key-file /share/key "$DISK"
step luks-open cryptsetup open --type luks2 --key-file /share/key "$DISK" smoke
stop_on_fail
step luks-params sh -c 'cryptsetup status smoke | tee /dev/stderr | grep -q "cipher:  *aes-xts-plain64" &&
                        cryptsetup status smoke | grep -q "keysize:  *256 bits"'
step mkfs mkfs.ext4 -q /dev/mapper/smoke
step mount mount /dev/mapper/smoke /mnt
step write-marker sh -c 'cp /share/marker /mnt/marker && sync'
step umount umount /mnt
step luks-close cryptsetup close smoke

gateway_port_refused() {
    local out
    if out="$(timeout 10 bash -c 'exec 3<>/dev/tcp/10.0.2.2/9' 2>&1)"; then
        echo "connected to 10.0.2.2:9, the network is not isolated"; return 1
    fi
    echo "$out"
    grep -qi refused <<<"$out"
}
step network-configured sh -c 'ip -4 addr show | grep -q "inet 10.0.2.15/24"'
step net-gateway-port-refused gateway_port_refused

# The host connects to its forwarded port until this listener answers.
hostfwd_reaches_guest() {
    local line
    line="$(timeout 120 perl -MIO::Socket::INET -e '
        my $s = IO::Socket::INET->new(LocalAddr => "0.0.0.0", LocalPort => 7443, Listen => 1, ReuseAddr => 1)
            or die "listen on 7443: $!\n";
        my $c = $s->accept or die "accept: $!\n";
        my $l = <$c>; print $c "pong\n"; close $c; print $l;')" || return 1
    echo "got: $line"
    [[ "$line" == hello-from-host ]]
}
step hostfwd-reaches-guest hostfwd_reaches_guest
"#;

const REOPEN_SCRIPT: &str = r#"#!/bin/bash
. /share/vmtest-lib.sh
DISK=/dev/disk/by-id/virtio-vmdata0
step load-dm-crypt modprobe dm-crypt
step is-luks2 cryptsetup isLuks --type luks2 "$DISK"
step_fails wrong-key-refused cryptsetup open --type luks2 --key-file /share/wrong-key "$DISK" smoke
step luks-open cryptsetup open --type luks2 --key-file /share/key "$DISK" smoke
stop_on_fail
step mount mount /dev/mapper/smoke /mnt
step marker-reads-back cmp /mnt/marker /share/marker
step umount umount /mnt
step luks-close cryptsetup close smoke
"#;

#[test]
fn vm_luks_roundtrip_on_real_dm_crypt_and_loopback_only_network() {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_nanos();
    let marker = format!("dbagent-vm-smoke-marker-{nanos}\n");
    let work = tempfile::tempdir().expect("temporary folder for the data disk");
    let disk = work.path().join("data0.img");
    vm::sparse_disk(&disk, 64 << 20);
    let port = vm::free_local_port();

    let vm = Vm::new("smoke")
        .disk(&disk)
        .hostfwd_port(port)
        .file("key", format!("smoke-key-{nanos}"))
        .file("wrong-key", "not-the-key")
        .file("marker", &marker)
        .script(&FORMAT_SCRIPT.replace("LUKS_ARGS", LUKS_ARGS));

    // Host side of the forwarded-port check runs while the guest boots.
    let done = Arc::new(AtomicBool::new(false));
    let client = {
        let done = Arc::clone(&done);
        thread::spawn(move || ping_guest_until_answered(port, &done))
    };
    let first = vm.boot();
    done.store(true, Ordering::SeqCst);
    let answered = client.join().expect("host-side port forward client");
    assert!(answered, "the guest never answered on the forwarded port 127.0.0.1:{port}");

    assert!(
        !vm::file_contains(&disk, marker.trim_end().as_bytes()),
        "the marker appears in plain text on the raw disk: the volume is not encrypted"
    );
    assert!(vm::file_contains(&disk, b"LUKS\xba\xbe"), "no LUKS header on the raw disk");

    let vm = vm.script(REOPEN_SCRIPT);
    let second = vm.boot();

    println!("VM smoke timings (qemu TCG, 2 vCPUs):");
    println!("  boot 1: boot to test start {:?} ms, whole boot {:?} ms", first.boot_to_test_ms, first.wall_ms);
    println!("  boot 2: boot to test start {:?} ms, whole boot {:?} ms", second.boot_to_test_ms, second.wall_ms);
    println!("  luksFormat (pbkdf2, 1000 iterations) {} ms", first.ms("luks-format"));
    println!("  open {} ms (first boot), {} ms (second boot)", first.ms("luks-open"), second.ms("luks-open"));
    println!("  mkfs.ext4 {} ms; wrong key refused in {} ms", first.ms("mkfs"), second.ms("wrong-key-refused"));
}

/// Connects to the forwarded port until the guest's listener answers "pong" or the VM is done.
///
/// slirp accepts the host side of a forwarded connection before the guest listens and keeps
/// retrying the guest side, so the guest may accept a connection the host opened long ago. The host
/// therefore never gives up on an open connection: it keeps reading until the guest answers, closes
/// it (then it reconnects), or the VM is done.
fn ping_guest_until_answered(port: u16, done: &AtomicBool) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while !done.load(Ordering::SeqCst) {
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            if s.write_all(b"hello-from-host\n").is_ok() && read_pong(&s, done) {
                return true;
            }
        }
        thread::sleep(Duration::from_millis(500));
    }
    false
}

/// Reads one line, waiting through read timeouts until the VM is done; true when it is "pong".
fn read_pong(stream: &TcpStream, done: &AtomicBool) -> bool {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        match reader.read_line(&mut line) {
            Ok(0) => return false,
            Ok(_) => return line.trim() == "pong",
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if done.load(Ordering::SeqCst) {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
}
