#!/usr/bin/env bash
# Major-upgrade downtime, PostgreSQL 15 -> 17, for a ~1 GiB cluster: the agent's steps against Debian's
# pg_upgradecluster doing the same work. Prints a Markdown section "## PostgreSQL major upgrade" on
# stdout (compare.sh puts it in docs/benchmarks.md), progress on stderr.
#
# Usage (root): integration/bench/pg-upgrade.sh [--runs N] [--dump-runs N] [--scale S] [--quick]
#   --runs N       runs of each like-for-like method (default 3)
#   --dump-runs N  runs of pg_upgradecluster's default dump-and-restore, different work shown for
#                  reference, in the first N runs (default 1; at most --runs)
#   --scale S      pgbench scale of the cluster (default 65, ~1 GiB)
#   --quick        scale 5, 1 run, no dump: to develop the script (the output says so)
#
# Pairs doing the same work, each run from a fresh copy of the same data, in alternating order (run 1:
# agent copy, pg_upgradecluster -m upgrade, agent clone, pg_upgradecluster -m clone[, -m dump];
# run 2 the other way round; ...):
#   copy:  the agent's pg_upgrade --copy            vs  pg_upgradecluster -m upgrade, on ext4
#   clone: the agent's pg_upgrade --clone           vs  pg_upgradecluster -m clone, on XFS (reflink=1)
# Downtime is measured the same way for every method, by a client outside the tools: an unprivileged
# role asks for a write every 50 ms; downtime = the first write accepted by 17 minus the last one
# accepted by 15 before it. The whole operation (checks, the upgrade, the ANALYZE after it) is timed
# too. The details are in pg-upgrade-chroot.sh, which runs in the chroot.
#
# Runs natively (qemu TCG would be 20-50x slower) in a chroot of the pg-majors guest image (Debian 13
# with PostgreSQL 15 and 17, integration/vm/build-image-pg-majors.sh, which builds it once and then
# reuses it): the image read-only under an overlay; /srv/ext a folder of this machine's file system
# (bind-mounted), /srv/xfs an XFS with reflink on a loop file in /dev/shm. Scratch under /var/tmp
# (~5 GB) and /dev/shm (~4 GB).
set -euo pipefail
RUNS=3 DUMP_RUNS=1 SCALE=65 QUICK=0
log() { printf 'pg-upgrade: %s\n' "$*" >&2; }
die() { printf 'pg-upgrade: ERROR: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }
number() { [[ "$2" =~ ^[0-9]+$ ]] || die "$1 needs a number"; }
while (($#)); do
    case "$1" in
        --runs) number "$1" "${2:-}"; RUNS="$2"; shift 2 ;;
        --dump-runs) number "$1" "${2:-}"; DUMP_RUNS="$2"; shift 2 ;;
        --scale) number "$1" "${2:-}"; SCALE="$2"; shift 2 ;;
        --quick) QUICK=1 RUNS=1 DUMP_RUNS=0 SCALE=5; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
((RUNS >= 1)) || die "--runs must be at least 1"
((SCALE >= 1)) || die "--scale must be at least 1"
((DUMP_RUNS <= RUNS)) || die "--dump-runs ($DUMP_RUNS) cannot exceed --runs ($RUNS): dump runs share the runs' order"
[[ $(id -u) == 0 ]] || die "run as root (loop and overlay mounts, chroot)"
for tool in mkfs.xfs chroot mount; do command -v "$tool" >/dev/null || die "$tool is missing (xfsprogs, coreutils, mount)"; done

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IMAGE="$("$HERE/../vm/build-image-pg-majors.sh")" || die "the pg-majors image could not be built (above)"
# The copy pair needs ~5 GB on this disk at most (the stopped cluster, 1 GB of data and 1 GB of WAL
# segments the load left; its fresh copy; the new cluster); the clone pair ~4 GB of memory.
free_gb=$(($(stat -f -c '%a * %S' /var/tmp) / 1073741824))
((free_gb >= 10)) || die "/var/tmp has ${free_gb} GB free: the benchmark needs ~5 GB and leaves at least 5 to the rest"
W="$(mktemp -d /var/tmp/pg-upgrade-bench.XXXXXX)"
M="$W/merged"
cleanup() {
    # Whatever still runs inside the chroot (PostgreSQL servers, the client) first, by process id.
    local pid pids=()
    for pid in /proc/[0-9]*; do
        [[ "$(readlink "$pid/root" 2>/dev/null)" == "$M" ]] && pids+=("${pid#/proc/}")
    done
    if ((${#pids[@]})); then
        kill "${pids[@]}" 2>/dev/null || true
        sleep 2
        kill -9 "${pids[@]}" 2>/dev/null || true
    fi
    for m in "$M/srv/xfs" "$M/srv/ext" "$M/dev" "$M/proc" "$M" "$W/lower"; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
    rm -rf --one-file-system "$W"
    [[ -n "${XFS_IMG:-}" ]] && rm -f "$XFS_IMG"
}
trap cleanup EXIT
mkdir -p "$W"/{lower,upper,work,merged,ext}
mount -o loop,ro "$IMAGE/root.img" "$W/lower"
mount -t overlay overlay -o "lowerdir=$W/lower,upperdir=$W/upper,workdir=$W/work" "$M"
mount -t proc proc "$M/proc"
mount --bind /dev "$M/dev"
mkdir -p "$M/srv/ext" "$M/srv/xfs"
mount --bind "$W/ext" "$M/srv/ext"
# The XFS file lives in memory (/dev/shm) and is mounted with discard, so files deleted between runs
# give their space back: on this machine's disk it grew by the 1 GB copy of every run.
XFS_IMG="$(mktemp /dev/shm/pg-upgrade-bench-xfs.XXXXXX)"
truncate -s 8G "$XFS_IMG"
mkfs.xfs -q -f -m reflink=1 "$XFS_IMG"
mount -o loop,discard "$XFS_IMG" "$M/srv/xfs"
cp "$HERE/pg-upgrade-chroot.sh" "$M/bench.sh"

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
T0=$SECONDS
log "scale $SCALE, $RUNS runs per method, $DUMP_RUNS of dump and restore; progress below"
chroot "$M" bash /bench.sh "$SCALE" "$RUNS" "$DUMP_RUNS" /results.txt || die "the benchmark failed (above)"
ELAPSED=$((SECONDS - T0))
R="$M/results.txt"

# --- the Markdown ----------------------------------------------------------------------------------
cpu="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
mem="$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
host_fs="$(findmnt -n -o FSTYPE --target "$W/ext")"
info="$(sed -n 's/^INFO //p' "$R")"
echo "## PostgreSQL major upgrade, 15 -> 17, ~1 GiB (\`integration/bench/pg-upgrade.sh\`)"
echo
if ((QUICK)); then
    echo "**A \`--quick\` run (pgbench scale $SCALE, one run, no dump): for developing the script, not for publication.**"
    echo
fi
echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $cpu, $(nproc) CPUs, $mem, kernel $(uname -r). Data: $info."
echo "Natively in a chroot of the pg-majors guest image (no qemu); copy pair on this machine's $host_fs"
echo "(bind-mounted), clone pair on XFS (\`mkfs.xfs -m reflink=1\`, a loop file in memory, /dev/shm: a run on"
echo "this disk filled it, the loop file keeping every run's copy; so the clone pair's writes and fsyncs"
echo "cost no disk I/O)."
echo "Every run starts from a fresh copy of the same stopped cluster (copied, then \`sync\`); the runs go"
echo "in alternating order (run 1: agent copy, peer copy, agent clone, peer clone$( ((DUMP_RUNS)) && echo ', peer dump'); run 2 the other way"
echo "round; ...): $RUNS of each like-for-like method, $DUMP_RUNS of dump and restore. Seconds, median [min-max]."
echo
echo "| method | same work as | downtime seen by a client | whole operation | agent's own downtime figure | of which pg_upgrade | agent's pg_createcluster, before its downtime |"
echo "|---|---|---|---|---|---|---|"
awk '
    function stat(list,   a, n, i, j, t, med) {
        n = split(list, a, " ")
        if (n == 0 || a[1] == "-") return "-"
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        med = (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        if (n == 1) return sprintf("%.1f (1 run)", med)
        return sprintf("%.1f [%.1f-%.1f]", med, a[1], a[n])
    }
    function median(list,   a, n, i, j, t) {
        n = split(list, a, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    $1 == "RESULT" { down[$2] = down[$2] " " $4; whole[$2] = whole[$2] " " $5; own[$2] = own[$2] " " $6; pgu[$2] = pgu[$2] " " $7; mk[$2] = mk[$2] " " $8 }
    END {
        name["agent-copy"] = "dbagent, `pg_upgrade --copy` (its choice on ext4)"; same["agent-copy"] = "peer copy"
        name["peer-upgrade"] = "`pg_upgradecluster -m upgrade` (pg_upgrade, copy mode)"; same["peer-upgrade"] = "agent copy"
        name["agent-clone"] = "dbagent, `pg_upgrade --clone` (its choice on XFS)"; same["agent-clone"] = "peer clone"
        name["peer-clone"] = "`pg_upgradecluster -m clone`"; same["peer-clone"] = "agent clone"
        name["peer-dump"] = "`pg_upgradecluster` default (`-m dump`: pg_dump and pg_restore)"; same["peer-dump"] = "**nothing: different work**"
        split("agent-copy peer-upgrade agent-clone peer-clone peer-dump", order, " ")
        for (k = 1; k <= 5; k++) {
            m = order[k]
            if (!(m in down)) continue
            printf "| %s | %s | %s | %s | %s | %s | %s |\n", name[m], same[m], stat(down[m]), stat(whole[m]), stat(own[m]), stat(pgu[m]), stat(mk[m])
        }
        print ""
        if (("agent-copy" in down) && ("peer-upgrade" in down))
            printf "Client downtime, agent / pg_upgradecluster (medians): copy **x%.2f**", median(down["agent-copy"]) / median(down["peer-upgrade"])
        if (("agent-clone" in down) && ("peer-clone" in down))
            printf ", clone **x%.2f**", median(down["agent-clone"]) / median(down["peer-clone"])
        printf "; whole operation: copy x%.2f, clone x%.2f.\n", median(whole["agent-copy"]) / median(whole["peer-upgrade"]), median(whole["agent-clone"]) / median(whole["peer-clone"])
    }' "$R"
echo
echo "Every run in the order it ran (client downtime / whole operation, seconds):"
echo
awk '$1 == "RESULT" { if ($3 != run) { if (run != "") printf "\n"; run = $3; printf "* run %s:", run; sep = " " }
                      printf "%s%s %s / %s", sep, $2, $4, $5; sep = ", " } END { printf "\n" }' "$R"
cat <<'EOF'

What each side does, and what is counted:
* **dbagent**: its command sequence reproduced step by step from `agent/src/upgrade/` (job.rs, cluster.rs,
  server.rs), not the agent binary itself: the agent needs systemd (it stops and starts
  `postgresql@15-b` with `systemctl`), which a chroot has not; the unit's own commands
  (`pg_ctlcluster -m fast ... stop`, `pg_ctlcluster ... start`) stand in for it. Before the downtime
  (not in it): the old server's settings, extensions and size read, the new cluster made with
  `pg_createcluster` (the old encoding, locale, checksums), `pg_upgrade --check` against the running
  old server. The downtime: a write on 15, stop 15, `pg_upgrade`, port and start.conf switched,
  start 17, then the agent's health check (the major and data folder, a read of `pg_class` in every
  database) and a write. After it: `vacuumdb --all --analyze-in-stages`.
* **pg_upgradecluster** (postgresql-common, as its manual page describes it), the new data folder
  (its NEWDATADIR argument) on the same file system (clone mode needs it): stop 15, `pg_createcluster`
  17 (inside the downtime: it makes the new cluster only after stopping the old one), its
  configuration carried over, `pg_upgrade`, ports swapped, start 17, then its `analyze` hook (`vacuumdb --analyze-in-stages`, the same as the agent's).
  Its `pg_createcluster` inside the downtime is the main reason its downtime is longer: the last column
  shows what the same command costs the agent before its downtime.
* **Downtime seen by a client** is the comparison: the same client for every method, outside both tools.
  A write is accepted as soon as 17 has started, so it counts neither side's extras after the start
  (the agent's health check, either side's ANALYZE). **Whole operation** is each tool's start to its end,
  ANALYZE included on both sides; the agent's also holds its `pg_upgrade --check` before the downtime,
  which pg_upgradecluster does not run separately (pg_upgrade checks again inside both). The
  **agent's own figure** is what it reports as `downtime_ms`: its write before the stop to its write
  after the health check.
* **Not the same guarantee in one respect**: pg_upgradecluster carries the old cluster's configuration
  (postgresql.conf, pg_hba.conf, conf.d) over to the new cluster, inside its downtime; the agent's new
  cluster gets the old encoding, locale and checksum setting only and starts with 17's default
  configuration (the plan's `conf.d/90-dbagent-plan.conf` and any pg_hba.conf rules are left behind).
  That is a gap in the agent, reported; closing it adds a few file copies to its downtime.
EOF
echo
echo "Caveats: this machine has 2 cores, shared while this ran with two other engineers compiling and running"
echo "qemu VM tests (load average $LOAD_BEFORE before, $(cut -d' ' -f1-3 /proc/loadavg) after; the section took ${ELAPSED} s): absolute"
echo "figures are pessimistic and noisy, and only the alternating order keeps the pairs comparable. The client"
echo "tries a write every 50 ms, each a new psql connection (tens of ms more under this load): a downtime is"
echo "known to about 0.1-0.2 s. The data was just copied, so it sits in the page cache on both sides (warm cache). Neither side runs pg_upgrade"
echo "with \`--jobs\` (the agent has no such setting; pg_upgradecluster's default is none). The agent's backup"
echo "before the upgrade and its maintenance-window wait happen before all of this and are not timed."
echo "\`--link\` is not measured: the agent never uses it (no way back to the old cluster once the new one has"
echo "started; docs/operations.md)."
echo
