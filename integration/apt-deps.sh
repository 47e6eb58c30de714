# Sourced by run-tests.sh and run-dev.sh: installs the Debian packages given that are missing.
# BUILD_PACKAGES is what compiling the agent needs (libcryptsetup-rs binds libcryptsetup with bindgen).
BUILD_PACKAGES=(pkg-config clang libcryptsetup-dev)

install_missing() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  echo "$(basename "$0"): installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}"
}
