#!/usr/bin/env bash
# Boot the dbagent test VM once: Debian 12 with systemd, which runs SHARE_DIR/run.sh and powers off.
#
# Usage: run-vm.sh SHARE_DIR OUT_DIR [--disk FILE]...
#   SHARE_DIR  mounted read-write at /share in the guest (9p); must contain run.sh. vmtest-lib.sh is
#              copied in beside it. Put binaries, .deb files, keys, ... here.
#   OUT_DIR    mounted at /out; the guest writes result.log (PASS/FAIL lines), steps.log, stderr.log,
#              journal.log (on failure) there; the serial console goes to OUT_DIR/console.log.
#   --disk F   extra raw disk (repeatable), the guest sees /dev/disk/by-id/virtio-vmdata0, -vmdata1, ...
# Env:
#   VM_TIMEOUT        seconds before qemu is killed (default 600)
#   VM_HOSTFWD_PORT   host port on 127.0.0.1 forwarded to guest port 7443 (VM_GUEST_PORT)
#   VM_GUESTFWD_PORT  guest connections to 10.0.2.100:PORT reach 127.0.0.1:PORT on the host
#   VM_ROOT_OVERLAY   qcow2 file over root.img that keeps the guest's root changes across boots
#                     (created on first use); without it every boot starts from the pristine image
#   VM_IMAGE          "pg-majors": the Debian 13 guest with PostgreSQL 15 and 17 (build-image-pg-majors.sh);
#                     unset: the Debian 12 guest (build-image.sh)
#   VM_MEMORY (1024), VM_CPUS (2), DBAGENT_VM_CACHE (see build-image.sh)
#   VM_KERNEL_ARGS    replaces "quiet loglevel=3 systemd.show_status=false" (e.g. "systemd.show_status=true" to debug)
# Exit status: 0 when result.log is complete and has no FAIL line; 1 otherwise, with the reason.
# Only one VM runs at a time on this machine (a lock in the cache folder); timings suffer otherwise.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
die() { printf 'run-vm: ERROR: %s\n' "$*" >&2; exit 1; }
log() { printf 'run-vm: %s\n' "$*" >&2; }

[[ $# -ge 2 ]] || die "usage: run-vm.sh SHARE_DIR OUT_DIR [--disk FILE]..."
SHARE="$(realpath "$1")"; OUT="$(realpath -m "$2")"; shift 2
DISKS=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --disk) [[ $# -ge 2 ]] || die "--disk needs a file"; DISKS+=("$(realpath "$2")"); shift 2 ;;
        *) die "unknown argument '$1' (usage: run-vm.sh SHARE_DIR OUT_DIR [--disk FILE]...)" ;;
    esac
done
[[ -f "$SHARE/run.sh" ]] || die "$SHARE/run.sh is missing: the guest runs it as its test"
for d in "${DISKS[@]}"; do [[ -f "$d" || -b "$d" ]] || die "disk $d does not exist (create one with: truncate -s 64M FILE)"; done
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found: apt-get install qemu-system-x86"

case "${VM_IMAGE:-}" in
    "") BUILDER=build-image.sh ;;
    pg-majors) BUILDER=build-image-pg-majors.sh ;;
    *) die "VM_IMAGE=${VM_IMAGE} is not a guest image (known: pg-majors, or unset for Debian 12)" ;;
esac
IMAGE="$("$HERE/$BUILDER")" || die "building the guest image failed (see above)"
# build-image.sh prints exactly one line, the image folder; anything else is a bug there, say so plainly.
[[ "$IMAGE" != *$'\n'* && "$IMAGE" == /* && -d "$IMAGE" ]] \
    || die "build-image.sh printed $(printf '%q' "$IMAGE") on stdout instead of one line naming the image folder"
for f in root.img vmlinuz initrd.gz; do [[ -f "$IMAGE/$f" ]] || die "$IMAGE/$f missing: rebuild with VM_REBUILD=1 $HERE/$BUILDER"; done

mkdir -p "$OUT"
rm -f "$OUT"/{result.log,steps.log,stderr.log,journal.log,console.log}
cp "$HERE/vmtest-lib.sh" "$SHARE/vmtest-lib.sh"

NET="user,id=n0,restrict=on"
if [[ -n "${VM_HOSTFWD_PORT:-}" ]]; then
    NET+=",hostfwd=tcp:127.0.0.1:${VM_HOSTFWD_PORT}-:${VM_GUEST_PORT:-7443}"
fi
if [[ -n "${VM_GUESTFWD_PORT:-}" ]]; then
    command -v busybox >/dev/null || die "VM_GUESTFWD_PORT needs busybox on the host (busybox-static)"
    NET+=",guestfwd=tcp:10.0.2.100:${VM_GUESTFWD_PORT}-cmd:busybox nc 127.0.0.1 ${VM_GUESTFWD_PORT}"
fi

ROOT_DRIVE="file=$IMAGE/root.img,format=raw,if=none,id=root,snapshot=on"
if [[ -n "${VM_ROOT_OVERLAY:-}" ]]; then
    if [[ ! -f "$VM_ROOT_OVERLAY" ]]; then
        command -v qemu-img >/dev/null || die "VM_ROOT_OVERLAY needs qemu-img: apt-get install qemu-utils"
        qemu-img create -q -f qcow2 -b "$IMAGE/root.img" -F raw "$VM_ROOT_OVERLAY" >&2 \
            || die "create the root overlay $VM_ROOT_OVERLAY"
    fi
    ROOT_DRIVE="file=$(realpath "$VM_ROOT_OVERLAY"),format=qcow2,if=none,id=root"
fi

# shellcheck disable=SC2054  # commas separate qemu's suboptions, not array elements
ARGS=(
    -accel tcg,thread=multi -cpu max -m "${VM_MEMORY:-1024}" -smp "${VM_CPUS:-2}" -nographic -no-reboot
    -kernel "$IMAGE/vmlinuz" -initrd "$IMAGE/initrd.gz"
    -append "console=ttyS0 panic=-1 ${VM_KERNEL_ARGS:-quiet loglevel=3 systemd.show_status=false}"
    -drive "$ROOT_DRIVE"
    -device virtio-blk-pci,drive=root,serial=vmroot
    -virtfs "local,path=$SHARE,mount_tag=share,security_model=none,id=share"
    -virtfs "local,path=$OUT,mount_tag=out,security_model=none,id=out"
    -netdev "$NET" -device virtio-net-pci,netdev=n0,romfile=
    -serial "file:$OUT/console.log" -monitor none -display none
)
# A QMP socket lets the host change the running VM (block_resize: a disk grows under the guest).
if [[ -n "${VM_QMP_SOCKET:-}" ]]; then
    ARGS+=(-qmp "unix:$VM_QMP_SOCKET,server=on,wait=off")
fi
i=0
for d in "${DISKS[@]}"; do
    ARGS+=(-drive "file=$d,format=raw,if=none,id=d$i,cache=writeback" -device "virtio-blk-pci,drive=d$i,serial=vmdata$i")
    i=$((i + 1))
done

TIMEOUT="${VM_TIMEOUT:-600}"
exec 8>"$(dirname "$IMAGE")/run.lock"
flock -n 8 || { log "another VM is running on this machine, waiting for it"; flock 8; }
log "booting (timeout ${TIMEOUT} s, console in $OUT/console.log)"
T0=$(date +%s%N)
rc=0
timeout --kill-after=10 "$TIMEOUT" qemu-system-x86_64 "${ARGS[@]}" </dev/null >"$OUT/qemu.log" 2>&1 || rc=$?
WALL_MS=$(( ($(date +%s%N) - T0) / 1000000 ))
exec 8>&-
log "guest stopped after ${WALL_MS} ms (qemu exit $rc)"
echo "$WALL_MS" >"$OUT/wall_ms"

if [[ $rc == 124 || $rc == 137 ]]; then
    tail -n 20 "$OUT/console.log" >&2 || true
    die "the VM did not power off within ${TIMEOUT} s (VM_TIMEOUT); console: $OUT/console.log"
fi
if [[ $rc != 0 ]]; then
    cat "$OUT/qemu.log" >&2
    die "qemu exited with code $rc (its output is above and in $OUT/qemu.log)"
fi
if [[ ! -s "$OUT/result.log" ]]; then
    tail -n 30 "$OUT/console.log" >&2 || true
    die "the guest wrote no result.log: it did not reach vmtest.service (console: $OUT/console.log)"
fi
grep -E '^(PASS|FAIL) ' "$OUT/result.log" || true
if grep -q '^FAIL ' "$OUT/result.log"; then
    die "$(grep -c '^FAIL ' "$OUT/result.log") check(s) failed; details in $OUT/steps.log, $OUT/stderr.log, $OUT/journal.log"
fi
if ! grep -q '^END ' "$OUT/result.log"; then
    tail -n 30 "$OUT/console.log" >&2 || true
    die "result.log has no END line: the guest stopped in the middle of run.sh (console: $OUT/console.log)"
fi
log "all checks passed"
