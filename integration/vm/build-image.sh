#!/usr/bin/env bash
# Build (once, cached) the Debian 12 guest used by the VM harness: a root file system image with systemd,
# cryptsetup, PostgreSQL 15, MariaDB, Redis and the test driver, Debian's stock kernel and a small busybox
# initramfs. The servers are bookworm's (debootstrap reads the suite alone); the newer bookworm-security
# builds of their packages, downloaded on the host, are a flat apt repository in the guest at
# /var/lib/dbagent/packages/bookworm-security, for the minor-upgrade test.
#
# Usage: build-image.sh            prints the image directory (root.img, vmlinuz, initrd.gz) on stdout,
#                                  as its only line: run-vm.sh captures it; everything else goes to stderr
# Env:   DBAGENT_VM_CACHE          cache folder (default /var/cache/dbagent-vm)
#        VM_REBUILD=1              rebuild even if a cached image for this script version exists
#
# The cache is keyed by a hash of this script and of guest/, so any change to them builds a new image.
# Needs root (debootstrap, chroot). Missing host packages are installed with apt-get.
set -euo pipefail
# Standard output carries one line, the image folder (callers capture it): the original stdout is kept
# as fd 3 for that line and everything else, ours and every tool's (mke2fs -d, apt, chroot ...), goes
# to stderr. The build itself runs with fd 3 closed, so nothing it starts can hold the caller's pipe.
exec 3>&1 1>&2
image_ready() { printf '%s\n' "$IMAGE" >&3; exit 0; }

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${DBAGENT_VM_CACHE:-/var/cache/dbagent-vm}"
SUITE=bookworm

log() { printf 'build-image: %s\n' "$*" >&2; }
die() { printf 'build-image: ERROR: %s\n' "$*" >&2; exit 1; }

KEY="$(cat "$HERE/build-image.sh" "$HERE"/guest/* | sha256sum | cut -c1-16)"
IMAGE="$CACHE/image-$KEY"

if [[ -f "$IMAGE/ready" && "${VM_REBUILD:-0}" != 1 ]]; then
    touch "$IMAGE/ready" 2>/dev/null || true
    image_ready
fi

[[ $(id -u) == 0 ]] || die "building the guest image needs root (debootstrap, chroot); run as root once, later runs reuse $IMAGE"
mkdir -p "$CACHE"
exec 9>"$CACHE/build.lock"
flock -n 9 || { log "another build of the guest image is running, waiting for it ($CACHE/build.lock)"; flock 9; }
if [[ -f "$IMAGE/ready" && "${VM_REBUILD:-0}" != 1 ]]; then
    image_ready
fi

# The build; it runs with fd 3 closed (see the top) and ends in image_ready.
build() {
# --- host tools -------------------------------------------------------------------------------------
# The packages and commands of the VM harness (integration/apt-deps.sh), installed and checked.
# shellcheck source=SCRIPTDIR/../apt-deps.sh
. "$HERE/../apt-deps.sh"
ensure_installed "${VM_PACKAGES[@]}" -- "${VM_COMMANDS[@]}" || die "the host packages the guest image needs are missing (above)"
BUSYBOX="$(command -v busybox)"
if ldd "$BUSYBOX" >/dev/null 2>&1; then die "$BUSYBOX is not statically linked; install busybox-static"; fi

MIRROR="$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
if [[ -z "$MIRROR" ]]; then
    MIRROR="$(awk '$1=="deb" && $0 ~ /debian/ {for(i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list 2>/dev/null || true)"
fi
[[ -n "$MIRROR" ]] || die "no Debian archive URI found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"

WORK="$CACHE/build-$KEY.tmp"
# debootstrap mounts proc and sys inside the root file system; never let rm -rf walk into a mount.
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
mkdir -p "$WORK"
T0=$SECONDS

# --- kernel -----------------------------------------------------------------------------------------
log "resolving the kernel package"
KPKG="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')"
if [[ -z "$KPKG" ]]; then
    apt-get update -qq >&2
    KPKG="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')"
fi
[[ -n "$KPKG" ]] || die "cannot resolve linux-image-amd64 to a versioned kernel package (apt-get update?)"
KV="${KPKG#linux-image-}"
log "kernel $KPKG (modules $KV)"
chown _apt "$WORK" 2>/dev/null || true   # apt-get download drops privileges to _apt
(cd "$WORK" && apt-get download -q "$KPKG" >&2) || die "apt-get download $KPKG failed"
rm -rf "$WORK/kernel"
mkdir -p "$WORK/kernel"
dpkg-deb -x "$WORK"/linux-image-*.deb "$WORK/kernel"
[[ -f "$WORK/kernel/boot/vmlinuz-$KV" ]] || die "vmlinuz-$KV not found in $KPKG"

# --- root file system -------------------------------------------------------------------------------
INCLUDE=systemd,systemd-sysv,udev,kmod,cryptsetup-bin,e2fsprogs,xfsprogs,iproute2,ca-certificates,postgresql-15,dbus,mariadb-server,redis-server
# The debootstrap result is the slow part (minutes) and changes only with the package list or mirror:
# it is cached as a tarball of its own, so editing the steps below rebuilds in about a minute.
DTAR="$CACHE/debootstrap-$(printf '%s\n' "$SUITE" "$INCLUDE" "$MIRROR" | sha256sum | cut -c1-16).tar"
mkdir -p "$ROOTFS"
if [[ -f "$DTAR" ]]; then
    log "unpacking the cached debootstrap $DTAR"
    tar -C "$ROOTFS" --numeric-owner -xf "$DTAR"
else
    log "debootstrap $SUITE from $MIRROR (1-5 minutes)"
    debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -30 "$WORK/debootstrap.log" >&2; die "debootstrap failed, full log in $WORK/debootstrap.log"; }
    unmount_under "$ROOTFS"
    tar -C "$ROOTFS" --numeric-owner --one-file-system -cf "$DTAR.tmp" . && mv "$DTAR.tmp" "$DTAR"
fi

log "configuring the guest"
# PostgreSQL: no cluster by default; tests create their own (often on an encrypted volume).
chroot "$ROOTFS" pg_dropcluster --stop 15 main 2>/dev/null || true
sed -i 's/^#\?\s*create_main_cluster.*/create_main_cluster = false/' "$ROOTFS/etc/postgresql-common/createcluster.conf"
grep -q '^create_main_cluster = false' "$ROOTFS/etc/postgresql-common/createcluster.conf" \
    || echo 'create_main_cluster = false' >>"$ROOTFS/etc/postgresql-common/createcluster.conf"

# MariaDB and Redis: installed, not started at boot (the tests that use them start them).
systemctl --root="$ROOTFS" disable mariadb.service redis-server.service >/dev/null 2>&1 || true
rm -f "$ROOTFS"/etc/systemd/system/multi-user.target.wants/{mariadb,redis-server}.service

# The local package repository of the minor-upgrade test: for each installed package built from the
# mariadb, redis or postgresql-15 source, the newest version the host's apt knows (bookworm-security),
# if newer than the guest's. Owned by root and writable by no one else, as the agent requires.
REPO_REL=var/lib/dbagent/packages/bookworm-security
DEBS="$WORK/debs"
mkdir -p "$DEBS"
chown _apt "$DEBS" 2>/dev/null || true
newer=0
while read -r pkg src installed; do
    case "$src" in mariadb|redis|postgresql-15) ;; *) continue ;; esac
    candidate="$(apt-cache madison "$pkg" 2>/dev/null | awk -F'|' 'NR==1{gsub(/ /,"",$2); print $2}')"
    if [[ -n "$candidate" ]] && dpkg --compare-versions "$candidate" gt "$installed"; then
        (cd "$DEBS" && apt-get download -q "$pkg=$candidate" >&2) || die "apt-get download $pkg=$candidate failed"
        newer=$((newer + 1))
    fi
done < <(chroot "$ROOTFS" dpkg-query -W -f '${Package} ${source:Package} ${Version}\n')
ls "$DEBS"/mariadb-server_*.deb >/dev/null 2>&1 \
    || die "no newer mariadb-server than the guest's on the host's apt (apt-cache madison mariadb-server; bookworm-security in the sources?)"
mkdir -p "$ROOTFS/$REPO_REL"
mv "$DEBS"/*.deb "$ROOTFS/$REPO_REL/"
(cd "$ROOTFS/$REPO_REL" && dpkg-scanpackages --multiversion . /dev/null >Packages 2>/dev/null)
chown -R root:root "$ROOTFS/var/lib/dbagent"
chmod 0755 "$ROOTFS/var/lib/dbagent" "$ROOTFS/var/lib/dbagent/packages" "$ROOTFS/$REPO_REL"
chmod 0644 "$ROOTFS/$REPO_REL"/*
log "local package repository /$REPO_REL: $newer newer packages"

# Stock kernel modules minus hardware that qemu never shows (396 -> ~160 MB). scsi and ata go together:
# keeping one without the other leaves libata with unresolved symbols.
mkdir -p "$ROOTFS/lib/modules"
cp -a "$WORK/kernel/lib/modules/$KV" "$ROOTFS/lib/modules/"
M="$ROOTFS/lib/modules/$KV/kernel"
rm -rf "$M/sound" "$M/drivers/gpu" "$M/drivers/media" "$M/drivers/net/wireless" "$M/drivers/net/ethernet" \
    "$M/drivers/scsi" "$M/drivers/ata" "$M/drivers/usb" "$M/drivers/hid" "$M/drivers/input" \
    "$M/drivers/infiniband" "$M/drivers/bluetooth" "$M/net/bluetooth" "$M/net/wireless" "$M/net/mac80211"
chroot "$ROOTFS" depmod "$KV"

echo dbagent-vm >"$ROOTFS/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 dbagent-vm\n::1 localhost\n' >"$ROOTFS/etc/hosts"
chroot "$ROOTFS" systemd-machine-id-setup >/dev/null 2>&1 || true
cat >"$ROOTFS/etc/fstab" <<'FSTAB'
LABEL=vmroot  /       ext4  defaults,noatime                                   0 1
share         /share  9p    trans=virtio,version=9p2000.L,msize=262144,nofail  0 0
out           /out    9p    trans=virtio,version=9p2000.L,msize=262144,nofail  0 0
FSTAB
mkdir -p "$ROOTFS/share" "$ROOTFS/out"

# Static network: qemu user networking, guest 10.0.2.15, gateway 10.0.2.2, no DNS (restrict=on).
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
ln -sf /lib/systemd/system/systemd-networkd.service "$ROOTFS/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"

# Nothing periodic, no logins: the only job of this system is to run the test and power off.
for unit in serial-getty@ttyS0.service getty@tty1.service console-getty.service getty.target \
    apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer e2scrub_reap.service \
    fstrim.timer systemd-tmpfiles-clean.timer systemd-pstore.service systemd-networkd-wait-online.service \
    systemd-timesyncd.service man-db.timer logrotate.timer; do
    ln -sf /dev/null "$ROOTFS/etc/systemd/system/$unit"
done
mkdir -p "$ROOTFS/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\nForwardToConsole=no\n' >"$ROOTFS/etc/systemd/journald.conf.d/vm.conf"

# The test driver.
install -m 0755 "$HERE/guest/vmtest-driver" "$ROOTFS/usr/local/sbin/vmtest-driver"
install -m 0644 "$HERE/guest/vmtest.service" "$ROOTFS/etc/systemd/system/vmtest.service"
ln -sf /etc/systemd/system/vmtest.service "$ROOTFS/etc/systemd/system/multi-user.target.wants/vmtest.service"

chroot "$ROOTFS" apt-get clean
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/locale/*

# --- initramfs --------------------------------------------------------------------------------------
log "building the initramfs"
INITRD="$WORK/initrd"
rm -rf "$INITRD"
mkdir -p "$INITRD"/{bin,dev,proc,sys,newroot,lib/modules}
cp "$BUSYBOX" "$INITRD/bin/busybox"
for applet in sh mount umount insmod findfs switch_root sleep poweroff echo cat mkdir; do
    ln -s busybox "$INITRD/bin/$applet"
done
# modprobe --show-depends gives the load order with dependencies; "builtin" lines need nothing.
: >"$INITRD/modules.order"
for mod in crc32c_generic crc32c-intel ext4 virtio_pci virtio_blk 9pnet_virtio 9p; do
    modprobe -d "$ROOTFS" -S "$KV" --show-depends "$mod" | while read -r kind path _; do
        [[ "$kind" == insmod ]] || continue
        name="$(basename "$path")"
        src="$path"; [[ -f "$src" ]] || src="$ROOTFS$path"
        if [[ ! -f "$INITRD/lib/modules/${name%%.ko*}.ko" ]]; then
            case "$name" in
                *.ko.xz) xz -dc "$src" >"$INITRD/lib/modules/${name%.xz}" ;;
                *.ko.zst) zstd -qdc "$src" >"$INITRD/lib/modules/${name%.zst}" ;;
                *) cp "$src" "$INITRD/lib/modules/$name" ;;
            esac
            echo "${name%%.ko*}.ko" >>"$INITRD/modules.order"
        fi
    done
done
install -m 0755 "$HERE/guest/initrd-init" "$INITRD/init"
(cd "$INITRD" && find . | "$BUSYBOX" cpio -o -H newc 2>/dev/null | gzip -1) >"$WORK/initrd.gz"

# --- images -----------------------------------------------------------------------------------------
log "creating root.img"
cp "$WORK/kernel/boot/vmlinuz-$KV" "$WORK/vmlinuz"
mkfs.ext4 -q -F -L vmroot -d "$ROOTFS" "$WORK/root.img" 2G

mkdir -p "$IMAGE.new"
mv "$WORK/root.img" "$WORK/vmlinuz" "$WORK/initrd.gz" "$IMAGE.new/"
printf 'kernel=%s\nmirror=%s\nbuilt=%s\nseconds=%s\n' "$KPKG" "$MIRROR" "$(date -u +%FT%TZ)" "$((SECONDS - T0))" >"$IMAGE.new/ready"
rm -rf "$IMAGE"
mv "$IMAGE.new" "$IMAGE"
remove_tree "$WORK"
# Images of other script versions unused for two weeks are dead weight (other branches may still use newer ones).
for old in "$CACHE"/image-*; do
    if [[ "$old" != "$IMAGE" && -f "$old/ready" && -n "$(find "$old/ready" -mtime +14)" ]]; then rm -rf "$old"; fi
done
log "image ready in $IMAGE ($((SECONDS - T0)) s)"
}
build 3>&-
image_ready
