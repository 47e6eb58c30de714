#!/usr/bin/env bash
# Build the dbagent Debian package: release binaries, shell completions, man pages, then cargo-deb.
# Prints the path of the .deb on standard output, as its only line (integration/tests/vm_deb.rs captures
# it); everything else, ours and every tool's, goes to standard error.
#
# Usage: integration/build-deb.sh
# Env:
#   DEB_VERSION       package version instead of the crate's (e.g. 0.1.0+test2 for an upgrade test)
#   CARGO_TARGET_DIR  honoured as by cargo (default: ./target)
#   DBAGENT_TOOLS     where cargo-deb is installed and cached (default /var/cache/dbagent-tools)
set -euo pipefail
# The original stdout is kept as fd 3 for the one result line; everything else goes to stderr. The
# build runs with fd 3 closed, so nothing it starts (an sccache server, say) can hold the caller's pipe.
exec 3>&1 1>&2
cd "$(dirname "$0")/.."
ROOT="$PWD"
log() { printf 'build-deb: %s\n' "$*" >&2; }
die() { printf 'build-deb: ERROR: %s\n' "$*" >&2; exit 1; }

build() {
CARGO_DEB_VERSION=3.8.0
TOOLS="${DBAGENT_TOOLS:-/var/cache/dbagent-tools}"
export PATH="$TOOLS/bin:$PATH"
if [[ "$(cargo deb --version 2>/dev/null || true)" != *"$CARGO_DEB_VERSION"* ]]; then
    log "installing cargo-deb $CARGO_DEB_VERSION into $TOOLS (once)"
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --root "$TOOLS"
fi
# dpkg-shlibdeps computes the library dependencies ($auto); help2man writes the man pages.
# shellcheck source=SCRIPTDIR/apt-deps.sh
. integration/apt-deps.sh
ensure_installed "${DEB_PACKAGES[@]}" -- "${DEB_COMMANDS[@]}" || die "the Debian packages the .deb build needs are missing (above)"

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ "$TARGET" = /* ]] || TARGET="$ROOT/$TARGET"
log "building release binaries in $TARGET"
cargo build --release --locked -p dbagent --bin dbagent --bin dbagentctl
REL="$TARGET/release"

mkdir -p "$REL/completions" "$REL/man"
"$REL/dbagentctl" completions bash >"$REL/completions/dbagentctl.bash"
"$REL/dbagentctl" completions zsh >"$REL/completions/_dbagentctl"
"$REL/dbagentctl" completions fish >"$REL/completions/dbagentctl.fish"
help2man --no-info --section 8 --name "managed-database node agent" "$REL/dbagent" | gzip -9n >"$REL/man/dbagent.8.gz"
help2man --no-info --section 1 --name "control the dbagent node agent over mutual TLS" "$REL/dbagentctl" \
    | gzip -9n >"$REL/man/dbagentctl.1.gz"

args=(deb -p dbagent --no-build --locked)
[[ -n "${DEB_VERSION:-}" ]] && args+=(--deb-version "$DEB_VERSION")
out="$(cargo "${args[@]}" 2>&1)" || { printf '%s\n' "$out" >&2; die "cargo deb failed"; }
printf '%s\n' "$out" >&2
deb="$(printf '%s\n' "$out" | grep -E '\.deb$' | tail -n 1)"
[[ -f "$deb" ]] || die "cargo deb did not name a .deb it wrote (output above)"
}
build 3>&-
printf '%s\n' "$deb" >&3
