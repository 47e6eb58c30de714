#!/usr/bin/env bash
# Build (once, cached) the "pg-majors" guest flavour: a Debian 13 (trixie) root with PostgreSQL 17 from
# trixie and PostgreSQL 15 from Debian 12 (bookworm) side by side under postgresql-common, booted with the
# same kernel and initramfs as the default Debian 12 image (build-image.sh). Major-upgrade tests use it.
#
# Usage: build-image-pg-majors.sh   prints the image directory (root.img, vmlinuz, initrd.gz) on stdout,
#                                   as its only line, like build-image.sh; everything else goes to stderr
# Env:   DBAGENT_VM_CACHE, VM_REBUILD=1   as for build-image.sh
#
# Why a separate script rather than a flavour switch inside build-image.sh: that image's cache key is a
# hash of build-image.sh and guest/*, and other tests use it; editing it would rebuild it for everyone.
# This image's key hashes this script, guest/* and the base image's folder name (itself build-image.sh's
# key), so a change to either rebuilds it. The kernel is Debian 12's (6.1): trixie's userland runs on it,
# and reusing it keeps one initramfs recipe. Its modules are copied from the base image with debugfs.
# Needs root (debootstrap, chroot).
set -euo pipefail
exec 3>&1 1>&2
image_ready() { printf '%s\n' "$IMAGE" >&3; exit 0; }

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${DBAGENT_VM_CACHE:-/var/cache/dbagent-vm}"
log() { printf 'build-image-pg-majors: %s\n' "$*" >&2; }
die() { printf 'build-image-pg-majors: ERROR: %s\n' "$*" >&2; exit 1; }

BASE="$("$HERE/build-image.sh" 3>&-)" || die "building the base (Debian 12) image failed (see above)"
[[ "$BASE" == /* && -f "$BASE/root.img" ]] || die "build-image.sh printed '$BASE', not an image folder"

KEY="$( (cat "$HERE/build-image-pg-majors.sh" "$HERE"/guest/*; basename "$BASE") | sha256sum | cut -c1-16)"
IMAGE="$CACHE/pg-majors-$KEY"
if [[ -f "$IMAGE/ready" && "${VM_REBUILD:-0}" != 1 ]]; then
    touch "$IMAGE/ready" 2>/dev/null || true
    image_ready
fi

[[ $(id -u) == 0 ]] || die "building the guest image needs root (debootstrap, chroot)"
exec 9>"$CACHE/build-pg-majors.lock"
flock -n 9 || { log "another build of this image is running, waiting for it"; flock 9; }
if [[ -f "$IMAGE/ready" && "${VM_REBUILD:-0}" != 1 ]]; then
    image_ready
fi

build() {
# The Debian archive apt already uses on this machine (no host name is written into the project).
MIRROR="$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
if [[ -z "$MIRROR" ]]; then
    MIRROR="$(awk '$1=="deb" && $0 ~ /debian/ {for(i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list 2>/dev/null || true)"
fi
[[ -n "$MIRROR" ]] || die "no Debian archive URI found in the apt sources"
command -v debugfs >/dev/null || die "debugfs missing (e2fsprogs)"

WORK="$CACHE/build-pg-majors-$KEY.tmp"
unmount_under() {
    local m
    for m in $(awk -v p="$1/" 'index($2, p) == 1 {print $2}' /proc/mounts | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
}
remove_tree() { unmount_under "$1"; rm -rf --one-file-system "$1"; }
trap 'unmount_under "$WORK"' EXIT
ROOTFS="$WORK/rootfs"
remove_tree "$WORK"
mkdir -p "$ROOTFS"
T0=$SECONDS

# --- trixie root with PostgreSQL 17 -----------------------------------------------------------------
INCLUDE=systemd,systemd-sysv,udev,kmod,cryptsetup-bin,e2fsprogs,xfsprogs,iproute2,ca-certificates,procps,postgresql-common,postgresql-17,postgresql-client-17
DTAR="$CACHE/debootstrap-trixie-$(printf '%s\n' trixie "$INCLUDE" "$MIRROR" | sha256sum | cut -c1-16).tar"
if [[ -f "$DTAR" ]]; then
    log "unpacking the cached debootstrap $DTAR"
    tar -C "$ROOTFS" --numeric-owner -xf "$DTAR"
else
    log "debootstrap trixie from $MIRROR (minutes)"
    debootstrap --variant=minbase --include="$INCLUDE" trixie "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -30 "$WORK/debootstrap.log" >&2; die "debootstrap trixie failed, full log in $WORK/debootstrap.log"; }
    unmount_under "$ROOTFS"
    tar -C "$ROOTFS" --numeric-owner --one-file-system -cf "$DTAR.tmp" . && mv "$DTAR.tmp" "$DTAR"
fi

# No cluster by default: tests create their own.
chroot "$ROOTFS" pg_dropcluster --stop 17 main 2>/dev/null || true
sed -i 's/^#\?\s*create_main_cluster.*/create_main_cluster = false/' "$ROOTFS/etc/postgresql-common/createcluster.conf"
grep -q '^create_main_cluster = false' "$ROOTFS/etc/postgresql-common/createcluster.conf" \
    || echo 'create_main_cluster = false' >>"$ROOTFS/etc/postgresql-common/createcluster.conf"

# --- PostgreSQL 15 from bookworm, beside 17 ----------------------------------------------------------
# Pinned low so that only what postgresql-15 needs and trixie lacks (e.g. libicu72, libllvm) comes from
# bookworm; everything else stays trixie's.
log "adding PostgreSQL 15 from bookworm"
cat >"$ROOTFS/etc/apt/sources.list.d/pg-majors.sources" <<SRC
Types: deb
URIs: $MIRROR
Suites: trixie bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
printf 'Package: *\nPin: release n=bookworm\nPin-Priority: 100\n' >"$ROOTFS/etc/apt/preferences.d/bookworm-low"
printf '#!/bin/sh\nexit 101\n' >"$ROOTFS/usr/sbin/policy-rc.d"
chmod 0755 "$ROOTFS/usr/sbin/policy-rc.d"
mount -t proc proc "$ROOTFS/proc"
chroot "$ROOTFS" apt-get update -q >&2 || die "apt-get update in the trixie root failed"
DEBIAN_FRONTEND=noninteractive chroot "$ROOTFS" apt-get install -y -q --no-install-recommends \
    postgresql-15 postgresql-client-15 >&2 || die "installing postgresql-15 from bookworm on trixie failed"
umount "$ROOTFS/proc"
rm -f "$ROOTFS/usr/sbin/policy-rc.d" "$ROOTFS/etc/apt/sources.list.d/pg-majors.sources"
for v in 15 17; do
    [[ -x "$ROOTFS/usr/lib/postgresql/$v/bin/postgres" ]] || die "PostgreSQL $v binaries missing in the image"
done
[[ -x "$ROOTFS/usr/lib/postgresql/17/bin/pg_upgrade" ]] || die "pg_upgrade 17 missing in the image"

# --- kernel modules of the base image (its kernel boots this root) ---------------------------------
log "copying kernel modules from $BASE/root.img"
mkdir -p "$WORK/mods"
debugfs -R "rdump /lib/modules $WORK/mods" "$BASE/root.img" >/dev/null 2>&1 || true
[[ -n "$(ls "$WORK/mods/modules" 2>/dev/null)" ]] || die "no kernel modules found in $BASE/root.img"
mkdir -p "$ROOTFS/usr/lib/modules"
cp -a "$WORK/mods/modules/." "$ROOTFS/usr/lib/modules/"

# --- the same guest configuration as the base image ---------------------------------------------------
echo dbagent-vm >"$ROOTFS/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 dbagent-vm\n::1 localhost\n' >"$ROOTFS/etc/hosts"
chroot "$ROOTFS" systemd-machine-id-setup >/dev/null 2>&1 || true
cat >"$ROOTFS/etc/fstab" <<'FSTAB'
LABEL=vmroot  /       ext4  defaults,noatime                                   0 1
share         /share  9p    trans=virtio,version=9p2000.L,msize=262144,nofail  0 0
out           /out    9p    trans=virtio,version=9p2000.L,msize=262144,nofail  0 0
FSTAB
mkdir -p "$ROOTFS/share" "$ROOTFS/out"
mkdir -p "$ROOTFS/etc/systemd/network"
cat >"$ROOTFS/etc/systemd/network/10-qemu.network" <<'NET'
[Match]
Name=en* eth*

[Network]
Address=10.0.2.15/24
Gateway=10.0.2.2
LinkLocalAddressing=no
IPv6AcceptRA=no
NET
mkdir -p "$ROOTFS/etc/systemd/system/multi-user.target.wants"
ln -sf /usr/lib/systemd/system/systemd-networkd.service "$ROOTFS/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
for unit in serial-getty@ttyS0.service getty@tty1.service console-getty.service getty.target \
    apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer e2scrub_reap.service \
    fstrim.timer systemd-tmpfiles-clean.timer systemd-pstore.service systemd-networkd-wait-online.service \
    systemd-timesyncd.service man-db.timer logrotate.timer; do
    ln -sf /dev/null "$ROOTFS/etc/systemd/system/$unit"
done
mkdir -p "$ROOTFS/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\nForwardToConsole=no\n' >"$ROOTFS/etc/systemd/journald.conf.d/vm.conf"
install -m 0755 "$HERE/guest/vmtest-driver" "$ROOTFS/usr/local/sbin/vmtest-driver"
install -m 0644 "$HERE/guest/vmtest.service" "$ROOTFS/etc/systemd/system/vmtest.service"
ln -sf /etc/systemd/system/vmtest.service "$ROOTFS/etc/systemd/system/multi-user.target.wants/vmtest.service"

chroot "$ROOTFS" apt-get clean
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/*

log "creating root.img"
mkfs.ext4 -q -F -L vmroot -d "$ROOTFS" "$WORK/root.img" 3G
mkdir -p "$IMAGE.new"
mv "$WORK/root.img" "$IMAGE.new/"
cp "$BASE/vmlinuz" "$BASE/initrd.gz" "$IMAGE.new/"
printf 'base=%s\nmirror=%s\nbuilt=%s\nseconds=%s\n' "$(basename "$BASE")" "$MIRROR" "$(date -u +%FT%TZ)" "$((SECONDS - T0))" >"$IMAGE.new/ready"
rm -rf "$IMAGE"
mv "$IMAGE.new" "$IMAGE"
remove_tree "$WORK"
for old in "$CACHE"/pg-majors-*; do
    if [[ "$old" != "$IMAGE" && -f "$old/ready" && -n "$(find "$old/ready" -mtime +14)" ]]; then rm -rf "$old"; fi
done
log "image ready in $IMAGE ($((SECONDS - T0)) s)"
}
build 3>&-
image_ready
