#!/usr/bin/env bash
# Runs the agent with its embedded development defaults (`dbagent --dev`): installs the Debian
# packages the build needs if they are missing, then builds and starts it. Extra arguments go to
# dbagent (e.g. --listen 127.0.0.1:7444).
set -euo pipefail
cd "$(dirname "$0")/.."
. integration/apt-deps.sh
install_missing "${BUILD_PACKAGES[@]}" e2fsprogs
exec cargo run --locked -p dbagent --bin dbagent -- --dev "$@"
