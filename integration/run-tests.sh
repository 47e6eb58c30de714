#!/usr/bin/env bash
# The whole test suite (the README's test command; CI runs it through .ci/run): installs what the tests
# need on a fresh Debian 12 machine (apt packages, cached tools, the VM guest image), checks formatting
# (cargo fmt) and lints (cargo clippy, warnings are errors), builds, and runs every tier: unit tests,
# tests against the real agent binary and real servers on 127.0.0.1, and the VM tests (real kernel,
# dm-crypt, systemd, dpkg). Needs root (apt-get, the guest image, the servers' system users).
#
# Usage: integration/run-tests.sh [--fresh] [--install-only]
#   --fresh         run as on a fresh machine, without deleting anything: every cache this command fills
#                   is a new empty folder under /var/tmp/dbagent-fresh.XXXXXX (printed at the start and
#                   the end, kept afterwards; remove it when done): the tools (DBAGENT_TOOLS: Garage,
#                   cargo-deb), the guest image (DBAGENT_VM_CACHE), the cargo target dir (CARGO_TARGET_DIR)
#                   and cargo's crate downloads (CARGO_HOME). Same as DBAGENT_FRESH=1. Debian packages
#                   are system-wide and stay installed: `apt-get remove` one to try that step.
#   --install-only  install the Debian packages, the tools and the guest image, then stop (no checks,
#                   no build, no tests): prepares a machine.
# Env:
#   DBAGENT_TOOLS     tools cache (default /var/cache/dbagent-tools): Garage 2.5.0 (about 10 minutes to
#                     build, once), cargo-deb 3.8.0; the tests and build-deb.sh look there too
#   DBAGENT_VM_CACHE  guest image cache (default /var/cache/dbagent-vm; see integration/vm/build-image.sh)
#   CARGO_TARGET_DIR  as for cargo (default ./target)
#   TEST_THREADS      tests run in parallel (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'run-tests: %s\n' "$*" >&2; }
die() { printf 'run-tests: ERROR: %s\n' "$*" >&2; exit 1; }

FRESH="${DBAGENT_FRESH:-0}"
INSTALL_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --fresh) FRESH=1 ;;
    --install-only) INSTALL_ONLY=1 ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown argument '$arg' (usage: integration/run-tests.sh [--fresh] [--install-only])" ;;
  esac
done

if [[ "$FRESH" == 1 ]]; then
  FRESH_DIR="$(mktemp -d /var/tmp/dbagent-fresh.XXXXXX)"
  chmod 755 "$FRESH_DIR"   # apt-get download (the guest's kernel) runs as _apt
  export DBAGENT_TOOLS="$FRESH_DIR/tools" DBAGENT_VM_CACHE="$FRESH_DIR/vm-cache"
  export CARGO_TARGET_DIR="$FRESH_DIR/target" CARGO_HOME="$FRESH_DIR/cargo-home"
  log "--fresh: all caches are new empty folders in $FRESH_DIR:"
  log "  DBAGENT_TOOLS=$DBAGENT_TOOLS DBAGENT_VM_CACHE=$DBAGENT_VM_CACHE"
  log "  CARGO_TARGET_DIR=$CARGO_TARGET_DIR CARGO_HOME=$CARGO_HOME"
  trap 'rmdir "$FRESH_DIR" 2>/dev/null || log "--fresh: the caches of this run are in $FRESH_DIR (remove with: rm -rf $FRESH_DIR)"' EXIT
fi
T_START=$SECONDS
step_done() { log "$1 done ($((SECONDS - T_START)) s since start)"; }

# --- format gate (first: it needs nothing from apt and fails in a second) ---------------------------
ensure_cargo_component() {   # ensure_cargo_component SUBCOMMAND RUSTUP_COMPONENT
  cargo "$1" --version >/dev/null 2>&1 && return 0
  log "cargo $1 is missing: rustup component add $2"
  command -v rustup >/dev/null || die "cargo $1 is missing and there is no rustup to add the $2 component"
  rustup component add "$2" >&2 || die "rustup component add $2 failed"
  cargo "$1" --version >/dev/null 2>&1 || die "cargo $1 still fails after rustup component add $2"
}
if [[ "$INSTALL_ONLY" == 0 ]]; then
  ensure_cargo_component fmt rustfmt
  ensure_cargo_component clippy clippy
  log "cargo fmt --all --check"
  if ! unformatted="$(cargo fmt --all --check -- --files-with-diff 2>&1)"; then
    cargo fmt --all --check 2>&1 | head -n 60 >&2 || true
    log "cargo fmt --all --check failed: $(grep -c . <<<"$unformatted") file(s) are not formatted as cargo fmt formats them"
    log "(the start of the diff is above; the files:)"
    head -n 40 <<<"$unformatted" | sed 's/^/  /' >&2
    (($(grep -c . <<<"$unformatted") <= 40)) || log "  ... and $(($(grep -c . <<<"$unformatted") - 40)) more"
    die "the code is not formatted: run cargo fmt --all"
  fi
fi

# --- Debian packages (integration/apt-deps.sh has the lists) ----------------------------------------
# shellcheck source=SCRIPTDIR/apt-deps.sh
. integration/apt-deps.sh
ensure_installed "${BUILD_PACKAGES[@]}" "${VM_PACKAGES[@]}" "${DEB_PACKAGES[@]}" "${TEST_PACKAGES[@]}" \
  -- "${BUILD_COMMANDS[@]}" "${VM_COMMANDS[@]}" "${DEB_COMMANDS[@]}" "${TEST_COMMANDS[@]}" \
  || die "the Debian packages the tests need are not all installed (what is missing is listed above)"
step_done "Debian packages"

# --- the VM guest images (built once per version of their recipe; the VM tests would build them on
# first use, but here a failure is one clear message instead of every VM test failing). On a fresh
# machine they take minutes of downloading and unpacking, mostly waiting on the network and the disk:
# they are built in the background while clippy, Garage and the workspace compile. ---------------------
IMAGES_OUT="$(mktemp)" IMAGES_LOG="$(mktemp)"
(
  set -e
  integration/vm/build-image.sh
  # The Debian 13 guest with PostgreSQL 15 and 17 for the major-upgrade test (vm_pg_upgrade).
  integration/vm/build-image-pg-majors.sh
) >"$IMAGES_OUT" 2>"$IMAGES_LOG" &
IMAGES_PID=$!
wait_for_images() {
  if ! wait "$IMAGES_PID"; then
    tail -n 60 "$IMAGES_LOG" >&2
    die "building the VM guest images failed (the end of its log is above; whole log: $IMAGES_LOG)"
  fi
  IMAGE="$(sed -n 1p "$IMAGES_OUT")" PG_MAJORS_IMAGE="$(sed -n 2p "$IMAGES_OUT")"
  log "VM guest image: $IMAGE"
  log "VM guest image with two PostgreSQL majors: $PG_MAJORS_IMAGE"
  rm -f "$IMAGES_OUT" "$IMAGES_LOG"
  step_done "VM guest images"
}

# --- lint gate ---------------------------------------------------------------------------------------
if [[ "$INSTALL_ONLY" == 0 ]]; then
  log "cargo clippy --workspace --all-targets --locked -- -D warnings"
  cargo clippy --workspace --all-targets --locked -- -D warnings \
    || die "cargo clippy found problems (above; warnings count as errors): fix them, cargo clippy --fix can do some"
  step_done "clippy"
fi

# --- heavy test tools, built from crates.io once and cached outside the checkout ----------------------
# shellcheck source=SCRIPTDIR/tools.sh
. integration/tools.sh
tools_setup
TOOLS="$DBAGENT_TOOLS"
if [[ ! -x "$TOOLS/bin/garage" ]]; then
  ensure_garage || die "building Garage failed (above)"
  step_done "Garage"
fi
CARGO_DEB_VERSION=3.8.0   # as in integration/build-deb.sh
if [[ "$(cargo deb --version 2>/dev/null || true)" != *"$CARGO_DEB_VERSION"* ]]; then
  log "installing cargo-deb $CARGO_DEB_VERSION into $TOOLS (Debian package for the VM test)"
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --root "$TOOLS" --target-dir "$TOOLS/build"
  rm -rf "$TOOLS/build"
  step_done "cargo-deb"
fi


if [[ "$INSTALL_ONLY" == 1 ]]; then
  wait_for_images
  log "--install-only: everything the tests need is installed"
  exit 0
fi

# Debian's packaged servers must not keep running on their default ports: tests start their own.
for svc in prometheus prometheus-node-exporter; do
  if pgrep -x "$svc" >/dev/null 2>&1; then
    (systemctl stop "$svc" 2>/dev/null || pkill -x "$svc") || true
  fi
done

log "building"
cargo build --workspace --all-targets --locked
step_done "build"
wait_for_images
log "running all tests"
# --no-fail-fast: a red run names every failing test binary, not only the first.
cargo test --workspace --locked --no-fail-fast -- --test-threads="${TEST_THREADS:-2}"
step_done "tests"
