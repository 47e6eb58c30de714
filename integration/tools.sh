# shellcheck shell=bash
# Sourced by run-tests.sh and bench/compare.sh: the heavy test tools that are built from crates.io
# once and cached outside the checkout, in DBAGENT_TOOLS (default /var/cache/dbagent-tools).
# integration/src/garage.rs and build-deb.sh look there too.

GARAGE_VERSION=2.5.0

# Exports DBAGENT_TOOLS and puts its bin folder first on PATH.
tools_setup() {
  export DBAGENT_TOOLS="${DBAGENT_TOOLS:-/var/cache/dbagent-tools}"
  export PATH="$DBAGENT_TOOLS/bin:$PATH"
}

# Builds Garage (the S3 server of the backup tests and benchmarks) into $DBAGENT_TOOLS/bin if it is
# not there: about 10 minutes, once.
ensure_garage() {
  tools_setup
  [[ -x "$DBAGENT_TOOLS/bin/garage" ]] && return 0
  printf '%s: building Garage %s into %s (S3 server for the backup tests; about 10 minutes, once)\n' \
    "$(basename "$0" .sh)" "$GARAGE_VERSION" "$DBAGENT_TOOLS" >&2
  cargo install "garage@$GARAGE_VERSION" --locked --no-default-features --features bundled-libs,lmdb \
    --root "$DBAGENT_TOOLS" --target-dir "$DBAGENT_TOOLS/build" || return 1
  rm -rf "$DBAGENT_TOOLS/build"
}
