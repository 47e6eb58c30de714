//! VM test of issue 3: the real agent's encrypted volumes on real dm-crypt, across two boots.
//!
//! Two data disks: `virtio-vmdata0` is instance vm-a's block device; `virtio-vmdata1` holds the
//! agent's state folder (ext4, made in boot 1, mounted in both boots; the root is `snapshot=on`), so
//! the keystore, the volume records and vm-b's managed file survive the reboot.
//!
//! Boot 1: a dev-mode agent (a transient notify unit) and `volume-vm-check --phase first`: create
//! vm-a on the disk and vm-b on a managed file (vm-b while postgres, who owns the data root,
//! exchanges its data_dir with a link to a root-owned sentinel folder in a tight loop: the sentinel
//! is never mounted over or chowned, the volume ends up mounted at its data_dir), markers, close/reopen, the agent refuses to open vm-a
//! when its keystore entry holds another key (and opens it with the real entry back), rotation,
//! online growth, keys per instance, no key of any kind (current and rotated-away volume keys, the
//! KEK) under the state folder or in the agent log, both volumes closed. Host: the raw disks do not contain the markers. Boot 2: the agent reopens both
//! volumes before READY (the mappings are mounted as soon as `systemd-run` returns, and the READY
//! line counts them), the markers read back, and the leak search runs again (the rotated-away key
//! included: boot 1 left it in the share). Then issue 13: `volume-vm-check --phase fill` creates 48
//! more volumes on small managed files, and the agent's start-to-READY with those 50 volumes to open
//! is timed against its start with an empty state in the same guest (every volume mounted at READY).
//!
//! Boot 2's agent escrows volume keys to an operator recovery key (`--recovery-recipient`); at the
//! end the keystore and the KEK are deleted, the agent starts with a new KEK and opens nothing,
//! OpenVolume with another age key is refused, with the right one vm-a opens (marker intact), and
//! the next start opens it without the recovery key.
//!
//! Needs qemu and the guest image (built on first use); fails loudly without them, never skips.

use dbagent_integration::agent::agent_binary;
use dbagent_integration::vm::{self, Vm};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

/// The markers `volume-vm-check` writes into vm-a and vm-b.
const MARKER_A: &[u8] = b"dbagent-vm-marker-6f1d2c";
const MARKER_B: &[u8] = b"dbagent-vm-marker-b-93e0a7";

const COMMON: &str = r#"#!/bin/bash
. /share/vmtest-lib.sh
DISK=/dev/disk/by-id/virtio-vmdata0
STATE_DISK=/dev/disk/by-id/virtio-vmdata1
MNT=/srv/dbagent-vm
STATE=$MNT/state
LOG=/out/agent-boot$BOOT.log

# start_agent [STATE_DIR LOG]: returns once the agent has sent READY.
start_agent() {
    local state="${1:-$STATE}" log="${2:-$LOG}"
    systemd-run --unit=dbagent.service -p Type=notify -p TimeoutStartSec=300 \
        -p StandardOutput=append:$log -p StandardError=append:$log \
        /share/dbagent --dev --state-dir "$state" --listen 127.0.0.1:7443 \
        ${RECIPIENT:+--recovery-recipient "$RECIPIENT"}
}

run_driver() {
    if ! /share/volume-vm-check --state-dir "$STATE" --agent-log "$LOG" "$@"; then
        fail volume-vm-check-exit "volume-vm-check exited non-zero (see the FAIL lines above and stderr.log)"
    fi
}

stop_and_unmount() {
    systemctl stop dbagent.service
    umount "$MNT"
}

step load-dm-crypt modprobe dm-crypt
step disks-present test -b "$DISK" -a -b "$STATE_DISK"
"#;

const BOOT1: &str = r#"
step mkfs-state-disk mkfs.ext4 -q -L dbagent-state "$STATE_DISK"
step mount-state-disk sh -c 'mkdir -p "$0" && mount "$1" "$0"' "$MNT" "$STATE_DISK"
stop_on_fail
step start-agent start_agent
stop_on_fail
run_driver --phase first --device "$DISK"
step state-disk-unmounts stop_and_unmount
"#;

const BOOT2: &str = r#"
mounted_from() {
    local src
    test -b "$1" || { echo "$1 is not a block device"; return 1; }
    src="$(findmnt -n -o SOURCE --mountpoint "$2")"
    echo "$2 is mounted from ${src:-nothing}"
    [[ "$src" == "$1" ]]
}
# From here on volume keys are escrowed to the operator's recovery key: vm-a and vm-b, made in boot 1
# without it, get their escrow when this start opens them.
RECIPIENT="$(cat /share/recovery.pub)"
step mount-state-disk sh -c 'mkdir -p "$0" && mount "$1" "$0"' "$MNT" "$STATE_DISK"
stop_on_fail
step start-agent start_agent
# systemd-run returned: the agent has sent READY. The volumes must be open and mounted already.
step vm-a-open-at-ready mounted_from /dev/mapper/dbagent-vm-a "$STATE/data/vm-a"
step vm-b-open-at-ready mounted_from /dev/mapper/dbagent-vm-b "$STATE/data/vm-b"
step ready-counts-volumes grep -q "volumes: 2 opened, 0 failed" "$LOG"
stop_on_fail
run_driver --phase second
# The former default keyslot cost (argon2id benchmarked to 2000 ms, 1 GiB, 4 threads) with the same
# libcryptsetup, timed only, for docs/benchmarks.md: the agent's own path (the shipped PBKDF2 at 1000
# iterations) is proven above.
ARGON=/var/tmp/argon2id.img
truncate -s 64M "$ARGON"
step argon2id-create cryptsetup luksFormat --batch-mode --type luks2 --cipher aes-xts-plain64 --key-size 256 \
    --hash sha256 --pbkdf argon2id --iter-time 2000 --pbkdf-memory 1048576 --pbkdf-parallel 4 \
    --key-file /share/argon2id-key "$ARGON"
step argon2id-params sh -c 'cryptsetup luksDump "$0" | grep -E "PBKDF|Time cost|Memory|Threads"' "$ARGON"
step argon2id-open cryptsetup open --key-file /share/argon2id-key \
    --perf-no_read_workqueue --perf-no_write_workqueue "$ARGON" argon2id-check
cryptsetup close argon2id-check

# Issue 13: start-to-READY with 50 volumes, on top of the same agent's start with none to open.
# The agent leaves its volumes open when it stops, so they are all closed before the timed start,
# as after a reboot.
close_all_volumes() {
    local m
    for m in /dev/mapper/dbagent-*; do
        [[ -e "$m" ]] || continue
        umount "$m" && cryptsetup close "${m##*/}" || return 1
    done
    losetup -D
}
# A transient unit that ended badly stays loaded as failed and would block the next systemd-run.
stop_agent() {
    systemctl stop dbagent.service
    systemctl reset-failed dbagent.service 2>/dev/null || true
}
all_50_mounted() {
    local id n=0
    for id in vm-a vm-b $(seq -f 'vm-n%02g' 3 50); do
        mounted_from "/dev/mapper/dbagent-$id" "$STATE/data/$id" || return 1
        n=$((n + 1))
    done
    echo "$n volumes mounted"
    [[ $n == 50 ]]
}
EMPTY=$MNT/empty-state
EMPTY_LOG=/out/agent-empty-state.log
run_driver --phase fill
step fill-makes-50-volumes sh -c 'n="$(ls /dev/mapper | grep -c "^dbagent-")"; echo "$n"; test "$n" = 50'
stop_on_fail
stop_agent
step close-50-volumes close_all_volumes
stop_on_fail
# The empty state's first start also makes its KEK and TLS identity: timed, but the baseline is a
# restart, like the start with 50 volumes. Under emulation one start can take twice another, so the
# baseline is started three times, two before the start with 50 volumes and one after it.
step start-agent-empty-state-first start_agent "$EMPTY" "$EMPTY_LOG"
stop_agent
step start-agent-no-volumes-1 start_agent "$EMPTY" "$EMPTY_LOG"
stop_agent
step start-agent-no-volumes-2 start_agent "$EMPTY" "$EMPTY_LOG"
stop_agent
step start-agent-50-volumes start_agent
step ready-counts-50-volumes grep -q "volumes: 50 opened, 0 failed" "$LOG"
step all-50-mounted-at-ready all_50_mounted
stop_agent
step close-50-volumes-again close_all_volumes
step start-agent-no-volumes-3 start_agent "$EMPTY" "$EMPTY_LOG"
stop_agent
step ready-counts-no-volumes sh -c 'test "$(grep -c "volumes: 0 opened, 0 failed" "$0")" = 4' "$EMPTY_LOG"

# Issue 13: the host loses its keystore and its KEK. The agent starts with a new KEK and opens
# nothing; the operator's recovery key opens vm-a on purpose, and the next start opens it alone.
step lose-keystore-and-kek rm -r "$STATE/keystore" "$STATE/kek"
step start-agent-new-kek start_agent
step ready-counts-no-volume-opened grep -q "volumes: 0 opened, 50 failed" "$LOG"
run_driver --phase recovery --recovery-key /share/recovery.key
stop_agent
step close-recovered-volume close_all_volumes
step start-agent-after-recovery start_agent
step vm-a-open-at-ready-after-recovery mounted_from /dev/mapper/dbagent-vm-a "$STATE/data/vm-a"
step ready-counts-recovered-volume grep -q "volumes: 1 opened, 49 failed" "$LOG"
step vm-a-marker-after-recovery grep -q dbagent-vm-marker-6f1d2c "$STATE/data/vm-a/marker"
stop_agent
step close-after-recovery close_all_volumes
step state-disk-unmounts umount "$MNT"
"#;

fn script(boot: u32, body: &str) -> String {
    COMMON.replacen("\n. /share", &format!("\nBOOT={boot}\n. /share"), 1) + body
}

#[test]
fn vm_volumes_on_real_dm_crypt_across_two_boots() {
    let work = tempfile::tempdir().expect("temporary folder for the data disks");
    let disk = work.path().join("data0.img");
    let state_disk = work.path().join("state.img");
    vm::sparse_disk(&disk, 128 << 20);
    // Sparse, but each managed volume file takes its LUKS2 header's 16 MiB for real (libcryptsetup
    // zeroes the keyslot area): 50 volumes need about 1 GiB.
    vm::sparse_disk(&state_disk, 2 << 30);

    let recovery = dbagent::recovery_key::RecoveryIdentity::generate();
    let qmp = work.path().join("qmp.sock");
    let vm = Vm::new("volumes")
        .copy_as(agent_binary(), "dbagent")
        .copy(env!("CARGO_BIN_EXE_volume-vm-check"))
        .copy(env!("CARGO_BIN_EXE_tenant-attack"))
        .file("argon2id-key", "argon2id-timing-only-key")
        // The operator's recovery key (issue 13): boot 2's agent escrows volume keys to its public half.
        .file("recovery.key", recovery.to_file_text().as_bytes())
        .file("recovery.pub", recovery.recipient())
        .disk(&disk)
        .disk(&state_disk)
        .qmp_socket(&qmp)
        // Boot 2 also creates 48 volumes, restarts the agent seven times and runs the recovery-key
        // open: 892 s measured under a load average of 10 on this 2-core machine.
        .timeout(Duration::from_secs(1500))
        .script(&script(1, BOOT1));
    // The host side of "a disk grows under the guest": the driver asks, QMP block_resize answers.
    let done = Arc::new(AtomicBool::new(false));
    let grower = {
        let (done, share) = (Arc::clone(&done), vm.share_dir().to_path_buf());
        thread::spawn(move || grow_disk_when_asked(&share, &qmp, &done))
    };
    let first = vm.boot_unchecked();
    done.store(true, Ordering::SeqCst);
    let grown = grower.join().expect("host-side disk grower");
    first.assert_all_passed();
    assert_eq!(grown.as_deref(), Some("ok"), "the guest asked for a disk resize and QMP did it");
    assert_eq!(std::fs::metadata(&disk).map(|m| m.len()).unwrap_or(0), 192 << 20, "the raw disk grew to 192 MiB");

    assert!(vm::file_contains(&disk, b"LUKS\xba\xbe"), "no LUKS header on vm-a's raw disk");
    assert!(!vm::file_contains(&disk, MARKER_A), "vm-a's marker is in plain text on its raw disk");
    assert!(
        !vm::file_contains(&state_disk, MARKER_B),
        "vm-b's marker is in plain text on the state disk that holds its managed file"
    );

    let second = vm.script(&script(2, BOOT2)).boot();

    println!("VM volume timings (qemu TCG, 2 vCPUs, --dev: pbkdf2 1000 iterations):");
    for (boot, run) in [(1, &first), (2, &second)] {
        println!("  boot {boot}: boot to test start {:?} ms, whole boot {:?} ms", run.boot_to_test_ms, run.wall_ms);
    }
    println!(
        "  create vm-a (disk) {} ms, vm-b (managed file, under the mount race) {} ms",
        first.ms("create-vm-a"),
        first.ms("create-vm-b-under-mount-race")
    );
    println!("  close vm-a {} ms, reopen {} ms", first.ms("close-vm-a"), first.ms("reopen-vm-a"));
    println!(
        "  wrong key refused by the agent, then opened with the right one: {} ms",
        first.ms("wrong-key-refused-by-agent")
    );
    println!("  rotate {} ms, grow vm-b {} ms", first.ms("rotate-key"), first.ms("grow-vm-b"));
    println!("  agent start to READY with 2 volumes to open: {} ms", second.ms("start-agent"));
    println!(
        "  production KDF (cryptsetup, argon2id 2000 ms target, 1 GiB asked, 4 threads): create {} ms, open {} ms",
        second.ms("argon2id-create"),
        second.ms("argon2id-open")
    );
    println!(
        "  48 more volumes (32 MiB managed files) created, all submitted at once: {} ms",
        second.ms("create-48-volumes")
    );
    println!(
        "  keystore and KEK lost: start with a new KEK (50 volumes fail) {} ms; other age key refused {} ms; \
         recovery-key open of vm-a {} ms; next start opens it {} ms",
        second.ms("start-agent-new-kek"),
        second.ms("other-recovery-key-refused"),
        second.ms("recovery-key-opens-vm-a"),
        second.ms("start-agent-after-recovery")
    );
    let mut none: Vec<u64> = (1..=3).map(|n| second.ms(&format!("start-agent-no-volumes-{n}"))).collect();
    let fifty = second.ms("start-agent-50-volumes");
    println!(
        "  agent start with an empty state: first (makes its KEK and TLS identity) {} ms, restarts {none:?} ms",
        second.ms("start-agent-empty-state-first")
    );
    none.sort_unstable();
    let (median, extra) = (none[1], fifty.saturating_sub(none[1]));
    println!(
        "  START-TO-READY: no volumes {median} ms (median of 3), 50 volumes {fifty} ms: +{extra} ms for 50 volumes; \
         goal under 5000 ms on top: {}",
        if extra < 5000 { "met" } else { "not met" }
    );
}

/// Waits for the guest's `want-disk-grow` (the new size in bytes), grows data disk 0 (`d0`) with QMP
/// block_resize and answers in `disk-grown`: "ok" or the error. None if the guest never asked.
fn grow_disk_when_asked(share: &Path, qmp: &Path, done: &AtomicBool) -> Option<String> {
    let ask = share.join("want-disk-grow");
    while !ask.exists() {
        if done.load(Ordering::SeqCst) {
            return None;
        }
        thread::sleep(Duration::from_millis(200));
    }
    thread::sleep(Duration::from_millis(100));
    let answer = match std::fs::read_to_string(&ask).ok().and_then(|s| s.trim().parse::<u64>().ok()) {
        Some(size) => {
            let resize =
                serde_json::json!({ "execute": "block_resize", "arguments": { "device": "d0", "size": size } });
            vm::qmp(qmp, &[resize]).map(|_| "ok".to_owned()).unwrap_or_else(|e| e)
        }
        None => "want-disk-grow does not hold a size in bytes".to_owned(),
    };
    std::fs::write(share.join("disk-grown"), &answer).expect("answer the guest in disk-grown");
    Some(answer)
}
