#!/usr/bin/env bash
# Every side-by-side benchmark of dbagent against its peers, on this machine, in one run; writes
# docs/benchmarks.md (or --out FILE) from what they print. Installs every peer it runs (Debian
# packages from integration/apt-deps.sh, Garage from the tools cache of integration/tools.sh),
# builds what it runs in release. Needs root (apt-get, cgroup folders, a private mount namespace).
#
# Usage: integration/bench/compare.sh [--runs N] [--quick] [--only LIST] [--out FILE]
#   --runs N     runs per side and row (default 5; at least 5 for a published figure)
#   --quick      few runs and short durations, to develop the benchmarks (the output says so; never
#                publish it)
#   --only LIST  comma-separated sections, of: metrics,api,logs,backups,volumes,upgrade (default: all);
#                with --only, an existing FILE keeps its other sections: only the sections run are
#                replaced (found by their <!-- section NAME --> markers; appended if absent)
#   --out FILE   where the Markdown goes (default docs/benchmarks.md); written only if every
#                section succeeded
# Each section is a program that prints a Markdown section on stdout (progress on stderr): metrics
# (integration/src/bin/metrics-bench.rs), api (loadbench.rs), logs (logs-bench.rs), backups
# (integration/bench/backups.sh), volumes (cargo bench -p dbagent --bench volume_header, and the VM
# figures of integration/bench/volumes-vm.md), upgrade (integration/bench/pg-upgrade.sh: PostgreSQL
# 15 -> 17 against pg_upgradecluster, N runs of each like-for-like method and min(N, 3) of the
# dump-and-restore method; it needs the pg-majors guest image, built once and cached).
# The release build is made only for the sections that run it (metrics, api, logs, backups). A full
# run takes about 40 minutes on 2 CPUs (about 17 of them the upgrade section).
set -euo pipefail
cd "$(dirname "$0")/../.."

log() { printf 'compare: %s\n' "$*" >&2; }
die() { printf 'compare: ERROR: %s\n' "$*" >&2; exit 1; }

ALL_SECTIONS=(metrics api logs backups volumes upgrade)
RUNS=5 QUICK=0 ONLY="$(IFS=,; echo "${ALL_SECTIONS[*]}")" OUT=docs/benchmarks.md
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }
while (($#)); do
  case "$1" in
    --runs) [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || die "--runs needs a number of at least 1"; RUNS="$2"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --only) [[ -n "${2:-}" ]] || die "--only needs a list"; ONLY="$2"; shift 2 ;;
    --out) [[ -n "${2:-}" ]] || die "--out needs a file"; OUT="$2"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
((QUICK)) && [[ "$RUNS" == 5 ]] && RUNS=2
IFS=, read -r -a SECTIONS <<<"$ONLY"
for s in "${SECTIONS[@]}"; do
  [[ " ${ALL_SECTIONS[*]} " == *" $s "* ]] || die "unknown section '$s' in --only (known: ${ALL_SECTIONS[*]})"
done
wants() { [[ ",$ONLY," == *",$1,"* ]]; }

# Fail before spending any time on what cannot run.
if wants backups && [[ ! -x integration/bench/backups.sh ]]; then
  die "the backups section needs integration/bench/backups.sh, which is not in this checkout; run with --only and the other sections, e.g. --only metrics,api,logs,volumes"
fi
[[ $(id -u) == 0 ]] || die "run as root: apt-get, cgroup folders and a private mount namespace (metrics) need it"

# --- what it runs ---------------------------------------------------------------------------------
# shellcheck source=SCRIPTDIR/../apt-deps.sh
. integration/apt-deps.sh
ensure_installed "${BUILD_PACKAGES[@]}" "${BENCH_PACKAGES[@]}" -- "${BUILD_COMMANDS[@]}" "${BENCH_COMMANDS[@]}" \
  || die "the Debian packages the benchmarks need are not all installed (what is missing is listed above)"
# shellcheck source=SCRIPTDIR/../tools.sh
. integration/tools.sh
tools_setup
if wants backups; then ensure_garage || die "building Garage failed (above)"; fi
if wants upgrade; then
  ensure_installed xfsprogs -- mkfs.xfs=xfsprogs || die "the upgrade section needs mkfs.xfs (xfsprogs)"
fi

if wants metrics || wants api || wants logs || wants backups; then
  log "cargo build --release (dbagent, the bench binaries)"
  cargo build --release --locked -p dbagent --bins -p dbagent-integration \
    --bin loadbench --bin logs-bench --bin metrics-bench >&2 || die "the release build failed (above)"
fi
TARGET="${CARGO_TARGET_DIR:-target}"
[[ "$TARGET" == /* ]] || TARGET="$PWD/$TARGET"
export DBAGENT_BIN="$TARGET/release/dbagent"
BIN="$TARGET/release"
SCRATCH="$(mktemp -d /var/tmp/dbagent-compare.XXXXXX)"
trap 'rm -rf "$SCRATCH"' EXIT
export BENCH_SCRATCH="$SCRATCH"

# --- the header: machine, versions, date, what else was running ------------------------------------
first_line() { "$@" 2>&1 | head -n 1 || true; }
header() {
  local cpu mem kernel debian commit dirty garage
  cpu="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
  mem="$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  kernel="$(uname -r)"
  debian="$(cat /etc/debian_version 2>/dev/null || echo '?')"
  commit="$(git rev-parse --short=12 HEAD 2>/dev/null || echo '?')"
  dirty=""; git diff --quiet HEAD 2>/dev/null || dirty=" (with uncommitted changes)"
  garage="$(first_line "$DBAGENT_TOOLS/bin/garage" --version)"
  echo "# Benchmarks"
  echo
  echo "Generated by \`integration/bench/compare.sh\` (README.md, \"Benchmarks\"): every comparison, run on one machine"
  echo "in one go (a section run again alone, with \`--only\`, says so in its last line). Rules for every row: the same work and the same guarantee on both sides; the peer configured as"
  echo "its own documentation recommends for that guarantee; dbagent at its shipped defaults (a tuned setting is"
  echo "shown beside the default); each side run several times with the order alternating, the median and the"
  echo "spread [min-max] printed; caveats right under the figure they qualify."
  echo
  if ((QUICK)); then
    echo "**This is a \`--quick\` run (few runs, short durations) made while developing the benchmarks: its figures"
    echo "are not for publication. Run \`integration/bench/compare.sh\` on an otherwise idle machine to replace it.**"
    echo
  fi
  echo "| | |"
  echo "|---|---|"
  echo "| date | $(date -u '+%Y-%m-%d %H:%M UTC') |"
  echo "| command | \`integration/bench/compare.sh --runs $RUNS$( ((QUICK)) && echo ' --quick')$([[ "$ONLY" != "$(IFS=,; echo "${ALL_SECTIONS[*]}")" ]] && echo " --only $ONLY")\` |"
  echo "| machine | $cpu, $(nproc) CPUs, $mem, kernel $kernel, Debian $debian |"
  echo "| dbagent | git $commit$dirty, release build (the upgrade section runs no dbagent binary: see there) |"
  echo "| peers | $(first_line prometheus-node-exporter --version | sed 's/ (branch.*//'); $(first_line /usr/sbin/rsyslogd -v | sed 's/ compiled with://; s/  */ /g'); $(first_line pgbackrest version); $(first_line "$PG_BIN/postgres" --version); $garage; $(first_line zstd --version | sed "s/\*\*\* //g; s/ \*\*\*//; s/, by .*//") |"
  echo "| load average at the start | $(cut -d' ' -f1-3 /proc/loadavg) |"
  echo
  echo "Busiest processes at the start, other than this benchmark (\`top\`, over 2 s):"
  echo
  echo '```'
  top_processes
  echo '```'
  echo
}

# The 8 busiest processes over 2 s, without this script and its children.
top_processes() {
  top -b -n 2 -d 2 -w 200 -o %CPU 2>/dev/null \
    | awk -v self="$$" '/^top -/ {n++} n == 2 && /^ *PID/ {hdr = 1; print; next} hdr && $1 != self && $12 != "top" && $12 != "awk" {print; if (++k == 8) exit}' \
    | cut -c1-120
}

# --- sections ----------------------------------------------------------------------------------------
section_metrics() {
  if ((QUICK)); then "$BIN/metrics-bench" --windows 3 --window-secs 20
  else "$BIN/metrics-bench" --windows "$RUNS" --window-secs 60; fi
}
section_api() {
  if ((QUICK)); then "$BIN/loadbench" --runs "$RUNS" --seconds 3 --hold 300
  else "$BIN/loadbench" --runs "$RUNS" --seconds 10; fi
}
section_logs() {
  if ((QUICK)); then "$BIN/logs-bench" --runs "$RUNS" --lines 100000
  else "$BIN/logs-bench" --runs "$RUNS" --lines 1000000; fi
}
section_backups() {
  if ((QUICK)); then integration/bench/backups.sh --runs "$RUNS" --quick
  else integration/bench/backups.sh --runs "$RUNS"; fi
}

section_upgrade() {
  if ((QUICK)); then integration/bench/pg-upgrade.sh --quick
  else integration/bench/pg-upgrade.sh --runs "$RUNS" --dump-runs $((RUNS < 3 ? RUNS : 3)); fi
}

# volume_header prints "NAME, BITS-bit key: format + keyslot DURATION, unlock DURATION" once per
# configuration; it runs RUNS times and each configuration gets its median [min-max].
section_volumes() {
  local raw="$SCRATCH/volumes.txt" i
  : >"$raw"
  for ((i = 1; i <= RUNS; i++)); do
    log "volumes: cargo bench -p dbagent --bench volume_header, run $i/$RUNS"
    cargo bench --locked -p dbagent --bench volume_header 2>/dev/null | grep -- '-bit key:' >>"$raw" \
      || die "cargo bench -p dbagent --bench volume_header failed (run it alone to see why)"
  done
  echo "## Volumes"
  echo
  echo "LUKS2 header work with the real libcryptsetup on a 32 MiB file (\`cargo bench -p dbagent --bench"
  echo "volume_header\`, agent/benches/volume_header.rs), $RUNS runs, median [min-max] in seconds. No dm-crypt"
  echo "device is activated here: \"unlock\" is \`crypt_activate_by_passphrase\` without a name, i.e. the key"
  echo "derivation and keyslot decryption every open pays; activation adds a device-mapper table load (milliseconds)."
  echo
  echo "| keyslot KDF | key | format + first keyslot (= create, before mkfs) | unlock (= open) |"
  echo "|---|---|---|---|"
  awk '
    function secs(d) { if (d ~ /ms$/) return d / 1000; if (d ~ /µs$/) return d / 1e6; if (d ~ /ns$/) return d / 1e9; return d + 0 }
    function stat(list,   a, n, i, j, t, med) {
      n = split(list, a, " ")
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
      med = (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
      return sprintf("%.3f [%.3f-%.3f]", med, a[1], a[n])
    }
    {
      split($0, parts, ": format \\+ keyslot ")
      head = parts[1]; split(parts[2], d, ", unlock ")
      k = index(head, "-bit key"); c = head; sub(/, [0-9]+-bit key$/, "", c)
      bits = head; sub(/.*, /, "", bits); sub(/-bit key/, "", bits)
      key = c SUBSEP bits
      if (!(key in fmt)) order[++n] = key
      fmt[key] = fmt[key] " " secs(d[1]); unl[key] = unl[key] " " secs(d[2])
    }
    END {
      for (i = 1; i <= n; i++) { split(order[i], kb, SUBSEP); printf "| %s | %s bits | %s | %s |\n", kb[1], kb[2], stat(fmt[order[i]]), stat(unl[order[i]]) }
    }' "$raw"
  echo
  echo "* The shipped keyslots are PBKDF2 at 1000 iterations: their secret is a random 256/512-bit key, so a slow"
  echo "  KDF would add only delay (docs/volumes.md, Keyslot KDF). argon2id, the former default, takes its ~2 s per"
  echo "  open by design and also pays libcryptsetup's benchmark at create; volumes at start-up open one after the"
  echo "  other, so with it READY came about 2 s per volume after the start."
  echo
  cat integration/bench/volumes-vm.md
  echo
}

# --- run ---------------------------------------------------------------------------------------------
# Each section between markers, so that a later run with --only can replace it alone.
BODY="$SCRATCH/body.md"
header >"$BODY"
T0=$SECONDS
QUICK_FLAG=""; ((QUICK)) && QUICK_FLAG=" --quick"
RUNS_FLAG=""; [[ "$RUNS" != 5 ]] && RUNS_FLAG=" --runs $RUNS"
COMMAND="integration/bench/compare.sh$RUNS_FLAG$QUICK_FLAG --only $ONLY"
for s in "${ALL_SECTIONS[@]}"; do
  wants "$s" || continue
  before="$(cut -d' ' -f1-3 /proc/loadavg)"
  t=$SECONDS
  log "section $s"
  "section_$s" >"$SCRATCH/$s.md" || die "section $s failed (above); $OUT is left as it was"
  {
    echo "<!-- section $s -->"
    cat "$SCRATCH/$s.md"
    echo "_Section $s: $((SECONDS - t)) s, $(date -u '+%Y-%m-%d %H:%M UTC'), \`$COMMAND\`; load average before: $before, after: $(cut -d' ' -f1-3 /proc/loadavg)._"
    echo "<!-- end section $s -->"
    echo
  } >"$SCRATCH/$s.section"
  cat "$SCRATCH/$s.section" >>"$BODY"
  log "section $s done in $((SECONDS - t)) s"
done
mkdir -p "$(dirname "$OUT")"
if [[ "$ONLY" != "$(IFS=,; echo "${ALL_SECTIONS[*]}")" && -f "$OUT" ]]; then
  # Only some sections ran: the file keeps its header and the other sections.
  cp "$OUT" "$SCRATCH/out.md"
  for s in "${ALL_SECTIONS[@]}"; do
    wants "$s" || continue
    awk -v s="$s" -v new="$SCRATCH/$s.section" '
      $0 == "<!-- section " s " -->" { while ((getline line < new) > 0) print line; skip = 1; done = 1; next }
      skip && $0 == "<!-- end section " s " -->" { skip = 0; after = 1; next }
      after { after = 0; if ($0 == "") next }
      !skip { print }
      END { if (!done) { print ""; while ((getline line < new) > 0) print line } }' "$SCRATCH/out.md" >"$SCRATCH/out.new"
    mv "$SCRATCH/out.new" "$SCRATCH/out.md"
  done
  cp "$SCRATCH/out.md" "$OUT"
  log "replaced the sections $ONLY in $OUT ($((SECONDS - T0)) s of benchmarks)"
else
  cp "$BODY" "$OUT"
  log "wrote $OUT ($((SECONDS - T0)) s of benchmarks)"
fi
