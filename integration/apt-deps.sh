# shellcheck shell=bash disable=SC2034  # (the lists are used by the scripts that source this file)
# Sourced by run-tests.sh, run-dev.sh, build-deb.sh, vm/build-image.sh and bench/compare.sh: the
# Debian packages and commands each of them needs, and ensure_installed, which installs what is
# missing and then checks that everything really is there. apt can remove an installed package
# while it installs another (a backports qemu-utils gave way to bookworm's qemu-system-x86 that way),
# so what counts is the state after apt, never apt's exit status.
#
# The lists come in pairs:
#   *_PACKAGES  Debian packages that must end up "install ok installed";
#   *_COMMANDS  what the scripts and tests run, as COMMAND=PACKAGE. A COMMAND starting with / is the
#               exact path the code runs, anything else is looked up on PATH; PACKAGE provides it and
#               is installed too (reinstalled if it is installed but the command is gone).
# To add a dependency, add it to a list, or add a pair of lists and pass it where needed:
#   ensure_installed "${X_PACKAGES[@]}" "${Y_PACKAGES[@]}" -- "${X_COMMANDS[@]}" "${Y_COMMANDS[@]}"

# Compiling the agent: libcryptsetup-rs binds libcryptsetup with bindgen (libclang), found with pkg-config.
BUILD_PACKAGES=(pkg-config clang libcryptsetup-dev)
BUILD_COMMANDS=(pkg-config=pkgconf clang=clang)

# The VM harness on the host (vm/build-image.sh, vm/run-vm.sh): qemu-img makes the root overlays;
# dpkg-scanpackages indexes the guest's local package repository (minor upgrades).
VM_PACKAGES=(qemu-system-x86 qemu-utils debootstrap busybox-static e2fsprogs kmod xz-utils zstd dpkg-dev)
VM_COMMANDS=(
  qemu-system-x86_64=qemu-system-x86 qemu-img=qemu-utils debootstrap=debootstrap busybox=busybox-static
  mkfs.ext4=e2fsprogs depmod=kmod modprobe=kmod xz=xz-utils zstd=zstd dpkg-scanpackages=dpkg-dev
)

# The Debian package (build-deb.sh): library dependencies and man pages.
DEB_PACKAGES=(dpkg-dev help2man)
DEB_COMMANDS=(dpkg-shlibdeps=dpkg-dev help2man=help2man)

# The tests' servers and tools on the host. PostgreSQL is run from PG_BIN of integration/src/servers.rs.
PG_BIN=/usr/lib/postgresql/15/bin
TEST_PACKAGES=(
  cryptsetup-bin e2fsprogs xfsprogs                                     # volumes
  prometheus prometheus-node-exporter                                   # promtool, metrics comparison
  openssl
  rsyslog rsyslog-gnutls systemd-journal-remote                         # log drains, journal files
  postgresql mariadb-server mariadb-backup redis-server zstd curl       # backup engines, S3 checks
  age                                                                   # recovery keys opened by the age tool too
)
TEST_COMMANDS=(
  cryptsetup=cryptsetup-bin mkfs.ext4=e2fsprogs mkfs.xfs=xfsprogs
  promtool=prometheus prometheus-node-exporter=prometheus-node-exporter openssl=openssl
  /usr/sbin/rsyslogd=rsyslog /lib/systemd/systemd-journal-remote=systemd-journal-remote journalctl=systemd
  "$PG_BIN/initdb=postgresql-15" "$PG_BIN/pg_ctl=postgresql-15" "$PG_BIN/pgbench=postgresql-15"
  "$PG_BIN/psql=postgresql-client-15" "$PG_BIN/pg_basebackup=postgresql-client-15"
  "$PG_BIN/pg_dump=postgresql-client-15" "$PG_BIN/pg_restore=postgresql-client-15"
  "$PG_BIN/createdb=postgresql-client-15" psql=postgresql-client-common
  mariadbd=mariadb-server-core mariadb-install-db=mariadb-server-core mariadb=mariadb-client-core
  mariadb-admin=mariadb-client mariadb-dump=mariadb-client mariabackup=mariadb-backup mbstream=mariadb-backup
  redis-server=redis-server redis-cli=redis-tools
  zstd=zstd curl=curl runuser=util-linux age=age age-keygen=age
)

# The side-by-side benchmarks (integration/bench/compare.sh): every peer they run, and the tools that
# measure (taskset pins client and server to separate cores, /usr/bin/time -v reports peak RSS,
# unshare + mount give the metrics bench's agent a cgroup v2 view on a hybrid host).
BENCH_PACKAGES=(prometheus-node-exporter rsyslog pgbackrest zstd socat openssl postgresql-15 postgresql-client-15 util-linux mount time curl)
BENCH_COMMANDS=(
  prometheus-node-exporter=prometheus-node-exporter /usr/sbin/rsyslogd=rsyslog pgbackrest=pgbackrest zstd=zstd
  "$PG_BIN/initdb=postgresql-15" "$PG_BIN/pg_ctl=postgresql-15" "$PG_BIN/pgbench=postgresql-15"
  "$PG_BIN/pg_basebackup=postgresql-client-15" taskset=util-linux unshare=util-linux mount=mount
  /usr/bin/time=time curl=curl socat=socat openssl=openssl
)

_apt_log() { printf '%s: %s\n' "$(basename "$0" .sh)" "$*" >&2; }

# Sets _APT_ABSENT (packages not installed), _APT_BROKEN (installed packages whose command is
# missing) and _APT_NOCMD (missing commands, as COMMAND (PACKAGE)) for the given lists.
_apt_check() {
  local -n _pk=$1 _cm=$2
  local p c cmd
  _APT_ABSENT=() _APT_BROKEN=() _APT_NOCMD=()
  for p in "${_pk[@]}"; do
    [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == "install ok installed" ]] || _APT_ABSENT+=("$p")
  done
  for c in "${_cm[@]}"; do
    cmd="${c%=*}" p="${c##*=}"
    if [[ "$cmd" == /* ]]; then [[ -x "$cmd" ]] && continue; else command -v "$cmd" >/dev/null 2>&1 && continue; fi
    _APT_NOCMD+=("$cmd ($p)")
    [[ " ${_APT_ABSENT[*]} " == *" $p "* || " ${_APT_BROKEN[*]} " == *" $p "* ]] || _APT_BROKEN+=("$p")
  done
  # A package that is missing is installed, not reinstalled.
  local keep=()
  for p in "${_APT_BROKEN[@]}"; do [[ " ${_APT_ABSENT[*]} " == *" $p "* ]] || keep+=("$p"); done
  _APT_BROKEN=("${keep[@]}")
}

_apt_installed_list() { dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' 2>/dev/null | awk '$1 == "ii" {print $2}' | sort; }

# One apt-get install of what is missing; reports what apt removed on the way. Never fails: the
# check afterwards decides.
_apt_install_round() {
  local before after removed rc=0
  local apt=(apt-get -y -qq -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef
    -o Dpkg::Options::=--force-confold --no-install-recommends)
  before="$(_apt_installed_list)"
  if ((${#_APT_ABSENT[@]})); then
    _apt_log "apt-get install ${_APT_ABSENT[*]}"
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install "${_APT_ABSENT[@]}" >&2 || rc=$?
    ((rc == 0)) || _apt_log "apt-get install exited with status $rc"
  fi
  if ((${#_APT_BROKEN[@]})); then
    rc=0
    _apt_log "apt-get install --reinstall ${_APT_BROKEN[*]} (installed, but commands are missing)"
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install --reinstall "${_APT_BROKEN[@]}" >&2 || rc=$?
    ((rc == 0)) || _apt_log "apt-get install --reinstall exited with status $rc"
  fi
  after="$(_apt_installed_list)"
  removed="$(comm -23 <(printf '%s\n' "$before") <(printf '%s\n' "$after") | paste -sd ' ')"
  [[ -z "$removed" ]] || _apt_log "WARNING: apt removed these packages on the way: $removed"
}

# ensure_installed PACKAGE... [-- COMMAND=PACKAGE...]
# Installs the packages that are not installed (and the packages of missing commands), checks that
# every package is installed and every command is there, installs again exactly what is still
# missing, checks again, and fails naming every missing package and command. Does nothing (no apt,
# no root needed) when everything is there. All output goes to standard error.
ensure_installed() {
  local packages=() commands=() arg p c after_sep=0
  for arg in "$@"; do
    if [[ "$arg" == -- ]]; then after_sep=1
    elif ((after_sep)); then
      [[ "$arg" == ?*=?* ]] || { _apt_log "ensure_installed: '$arg' is not COMMAND=PACKAGE"; return 2; }
      commands+=("$arg")
    else packages+=("$arg")
    fi
  done
  for c in "${commands[@]}"; do packages+=("${c##*=}"); done
  local -A seen=()
  local unique=()
  for p in "${packages[@]}"; do [[ -n "${seen[$p]:-}" ]] || { seen[$p]=1; unique+=("$p"); }; done
  packages=("${unique[@]}")

  _apt_check packages commands
  ((${#_APT_ABSENT[@]} + ${#_APT_NOCMD[@]})) || return 0

  if [[ $(id -u) != 0 ]]; then
    _apt_log "ERROR: missing packages: ${_APT_ABSENT[*]:-none}; missing commands: ${_APT_NOCMD[*]:-none}"
    _apt_log "run as root, or: sudo apt-get install ${_APT_ABSENT[*]} ${_APT_BROKEN[*]}"
    return 1
  fi
  _apt_log "missing packages: ${_APT_ABSENT[*]:-none}; missing commands: ${_APT_NOCMD[*]:-none}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq -o DPkg::Lock::Timeout=600 >&2 \
    || _apt_log "apt-get update failed; trying with the package lists there are"

  # apt refuses a whole install when one name is unknown: set those aside (reported at the end).
  local unknown=() known=()
  for p in "${_APT_ABSENT[@]}"; do
    if apt-cache show --no-all-versions "$p" >/dev/null 2>&1; then known+=("$p"); else unknown+=("$p"); fi
  done
  _APT_ABSENT=("${known[@]}")
  _apt_install_round

  local round
  for round in 1 2; do
    _apt_check packages commands
    ((${#_APT_ABSENT[@]} + ${#_APT_NOCMD[@]})) || return 0
    ((round == 1)) || break
    _apt_log "still missing after apt-get: packages: ${_APT_ABSENT[*]:-none}; commands: ${_APT_NOCMD[*]:-none}; installing those again"
    known=()
    for p in "${_APT_ABSENT[@]}"; do [[ " ${unknown[*]} " == *" $p "* ]] || known+=("$p"); done
    _APT_ABSENT=("${known[@]}")
    _apt_install_round
  done

  _apt_log "ERROR: after two rounds of apt-get install, these are still missing:"
  ((${#_APT_ABSENT[@]} == 0)) || _apt_log "  packages: ${_APT_ABSENT[*]}"
  ((${#_APT_NOCMD[@]} == 0)) || _apt_log "  commands: ${_APT_NOCMD[*]}"
  ((${#unknown[@]} == 0)) || _apt_log "  not known to apt (apt-cache show finds no such package; check /etc/apt/sources.list.d): ${unknown[*]}"
  _apt_log "  (apt's messages above say why; 'apt-cache policy PACKAGE' shows which versions it can install)"
  return 1
}
