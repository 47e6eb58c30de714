#!/usr/bin/env bash
# The whole test suite: installs what the tests need on a fresh Debian 12 machine (apt packages,
# cached tools), builds, and runs every tier: unit tests, tests against the real agent binary and
# real servers on 127.0.0.1, and the VM tests (real kernel, dm-crypt, systemd, dpkg).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  cryptsetup-bin e2fsprogs xfsprogs                                     # volumes (mkfs; build deps in apt-deps.sh)
  qemu-system-x86 qemu-utils debootstrap busybox-static                 # VM harness (qemu-img: root overlays)
  prometheus prometheus-node-exporter                                   # promtool, metrics comparison
  openssl
  rsyslog rsyslog-gnutls systemd-journal-remote                         # log drains, journal files
  postgresql mariadb-server mariadb-backup redis-server zstd curl       # backup engines, S3 checks
  dpkg-dev help2man                                                     # the Debian package (shlibdeps, man pages)
)

. integration/apt-deps.sh
install_missing "${BUILD_PACKAGES[@]}" "${APT_PACKAGES[@]}"

# Heavy test tools built from crates.io once and cached outside the checkout.
TOOLS=/var/cache/dbagent-tools
export PATH="$TOOLS/bin:$PATH"
if [ ! -x "$TOOLS/bin/garage" ]; then
  echo "run-tests: building Garage 2.5.0 (S3 server for the backup tests; about 10 minutes, once)"
  cargo install garage@2.5.0 --locked --no-default-features --features bundled-libs,lmdb \
    --root "$TOOLS" --target-dir "$TOOLS/build"
  rm -rf "$TOOLS/build"
fi
if [ ! -x "$TOOLS/bin/cargo-deb" ]; then
  echo "run-tests: installing cargo-deb 3.8.0 (Debian package for the VM test)"
  cargo install cargo-deb --version 3.8.0 --locked --root "$TOOLS"
fi

# Debian's packaged servers must not keep running on their default ports: tests start their own.
for svc in prometheus prometheus-node-exporter; do
  if pgrep -x "$svc" >/dev/null 2>&1; then
    (systemctl stop "$svc" 2>/dev/null || pkill -x "$svc") || true
  fi
done

echo "run-tests: building"
cargo build --workspace --all-targets --locked
echo "run-tests: running all tests"
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-2}"
