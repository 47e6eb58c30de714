#!/usr/bin/env bash
# Runs the agent with its embedded development defaults (`dbagent --dev`): installs the Debian
# packages the build needs if they are missing (and checks they really are there afterwards), then
# builds and starts it. Extra arguments go to dbagent (e.g. --listen 127.0.0.1:7444).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=SCRIPTDIR/apt-deps.sh
. integration/apt-deps.sh
ensure_installed "${BUILD_PACKAGES[@]}" e2fsprogs -- "${BUILD_COMMANDS[@]}" mkfs.ext4=e2fsprogs \
  || { echo "run-dev: ERROR: the Debian packages the build needs are not all installed (listed above)" >&2; exit 1; }
exec cargo run --locked -p dbagent --bin dbagent -- --dev "$@"
