#!/usr/bin/env bash
# Backups benchmark: prints a Markdown section "## Backups" on stdout, progress on stderr.
#
#   integration/bench/backups.sh [--runs N] [--quick]
#
# A private PostgreSQL 15 on 127.0.0.1 holds pgbench tables whose filler column is random hex, so
# the data compresses like real tables (the zstd -1 ratio is measured and printed), and a real Garage
# (the test suite's, integration/src/garage.rs) holds three buckets. Then, N times each, the order
# rotating every run:
#   dbagent     one physical backup to three S3 destinations (buckets bench-az1..3), one pass, shipped defaults
#               (zstd level 1, 2 workers, 1 MiB AES-256-GCM chunks, 8 MiB parts)
#   pgBackRest  a full backup to repo1, repo2 and repo3 (one per bucket; it writes one repository
#               per run), zstd level 1, aes-256-cbc, process-max 2
#   limit       pg_basebackup -Ft -X fetch -D - | zstd -1 -T2 > /dev/null
# Each run under /usr/bin/time: wall, CPU (user+sys of the tool and its children) and peak RSS (the
# largest process of its tree); the PostgreSQL server's own CPU for the run is measured beside it.
# --quick: about 200 MB of data and 2 runs, for development. Scratch goes under $TMPDIR (/var/tmp).
set -euo pipefail

RUNS=5
QUICK=0
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --quick) QUICK=1; RUNS=2; shift ;;
    *) echo "usage: $0 [--runs N] [--quick]" >&2; exit 2 ;;
  esac
done
# pgbench_accounts rows: ~145 bytes each with its index, so 13.5M rows make a ~2 GiB data directory.
ROWS=$([ "$QUICK" = 1 ] && echo 1500000 || echo 13500000)

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PGBIN=/usr/lib/postgresql/15/bin
log() { echo "backups: $*" >&2; }
die() { echo "backups: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (PostgreSQL and pgBackRest run as the postgres user)"
for tool in "$PGBIN/pg_basebackup" /usr/bin/pgbackrest /usr/bin/zstd /usr/bin/socat /usr/bin/time; do
  [ -x "$tool" ] || die "$tool is missing: apt-get install -y postgresql-15 pgbackrest zstd socat time"
done
GARAGE=${DBAGENT_TOOLS:-/var/cache/dbagent-tools}/bin/garage
[ -x "$GARAGE" ] || die "$GARAGE is missing: integration/run-tests.sh installs it"

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
log "building backup-bench (release)"
(cd "$ROOT" && cargo build --release -q -p dbagent-integration --bin backup-bench) >&2
BENCH=$TARGET/release/backup-bench

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/dbagent-backups-XXXXXX")
chmod 755 "$WORK"
GARAGE_PID=
TLS_PID=
cleanup() {
  [ -n "$TLS_PID" ] && kill "$TLS_PID" 2>/dev/null || true
  if [ -n "$GARAGE_PID" ]; then kill "$GARAGE_PID" 2>/dev/null || true; wait "$GARAGE_PID" 2>/dev/null || true; fi
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # DESCRIPTION SECONDS CMD...
  local what=$1 deadline=$((SECONDS + $2)); shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "$what did not happen in time"
    sleep 0.2
  done
}

# --- PostgreSQL and data -----------------------------------------------------------------------
PGPORT=$(free_port)
mkdir -p "$WORK/sock" "$WORK/data" && chown postgres: "$WORK/sock" "$WORK/data" && chmod 700 "$WORK/data"
runuser -u postgres -- "$PGBIN/initdb" -D "$WORK/data" -A trust -U postgres >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/sock/pg.log" -w -o "-p $PGPORT -k $WORK/sock \
  -c listen_addresses=127.0.0.1 -c shared_buffers=128MB -c max_wal_senders=10 -c wal_level=replica" start >/dev/null
PSQL=(runuser -u postgres -- "$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -XAtq -v ON_ERROR_STOP=1)
log "data: pgbench tables, $ROWS accounts with a random hex filler"
runuser -u postgres -- "$PGBIN/pgbench" -h 127.0.0.1 -p "$PGPORT" -U postgres -i -I dt -q postgres >/dev/null 2>&1
"${PSQL[@]}" <<SQL
-- pgbench's filler is blank padding (40:1 under zstd); random hex compresses like real rows.
INSERT INTO pgbench_branches SELECT b, 0, md5(b::text) FROM generate_series(1, $((ROWS / 100000))) b;
INSERT INTO pgbench_tellers SELECT t, (t - 1) / 10 + 1, 0, md5(t::text) FROM generate_series(1, $((ROWS / 10000))) t;
INSERT INTO pgbench_accounts
  SELECT a, (a - 1) / 100000 + 1, (random() * 100000)::int - 50000,
         left(md5(random()::text) || md5(random()::text) || md5(random()::text), 84)
  FROM generate_series(1, $ROWS) a;
SQL
runuser -u postgres -- "$PGBIN/pgbench" -h 127.0.0.1 -p "$PGPORT" -U postgres -i -I vp -q postgres >/dev/null 2>&1
"${PSQL[@]}" -c CHECKPOINT
# Without pg_wal: the load leaves up to max_wal_size of it, which no backup reads.
DATA_BYTES=$(du -sb --exclude=pg_wal "$WORK/data" | cut -f1)
log "data directory: $(numfmt --to=iec "$DATA_BYTES"); measuring its zstd -1 ratio"
mkfifo "$WORK/ratio.fifo"
zstd -1 -T2 -q <"$WORK/ratio.fifo" | wc -c >"$WORK/zst.bytes" &
RATIO_PID=$!
"$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$PGPORT" -U postgres -D - -Ft -X fetch -c fast \
  | tee "$WORK/ratio.fifo" | wc -c >"$WORK/tar.bytes"
wait "$RATIO_PID"
TAR_BYTES=$(cat "$WORK/tar.bytes")
ZST_BYTES=$(cat "$WORK/zst.bytes")

# --- Garage, and TLS in front of it for pgBackRest (its S3 client speaks HTTPS only) -------------
log "starting Garage with buckets bench-az1..3"
mkdir -p "$WORK/garage"
TMPDIR=$WORK/garage "$BENCH" garage >"$WORK/garage.env" 2>"$WORK/garage.err" &
GARAGE_PID=$!
wait_for "Garage start" 90 grep -q READY "$WORK/garage.env"
S3_PORT=$(sed -n 's/^S3_PORT=//p' "$WORK/garage.env")
S3_KEY=$(sed -n 's/^S3_KEY=//p' "$WORK/garage.env")
S3_SECRET=$(sed -n 's/^S3_SECRET=//p' "$WORK/garage.env")
S3_REGION=$(sed -n 's/^S3_REGION=//p' "$WORK/garage.env")
STORE_PID=$(pgrep -P "$GARAGE_PID" -x garage) || die "no garage process under the helper"
TLS_PORT=$(free_port)
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
  -keyout "$WORK/tls.key" -out "$WORK/tls.crt" >/dev/null 2>&1
socat "openssl-listen:$TLS_PORT,bind=127.0.0.1,reuseaddr,fork,cert=$WORK/tls.crt,key=$WORK/tls.key,verify=0" \
  "tcp:127.0.0.1:$S3_PORT" 2>/dev/null &
TLS_PID=$!
wait_for "TLS proxy start" 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$TLS_PORT"

# --- pgBackRest: three S3 repositories ----------------------------------------------------------
mkdir -p "$WORK/pgbr"/{log,spool,lock}
{
  printf '[global]\nlog-path=%s/pgbr/log\nlock-path=%s/pgbr/lock\nspool-path=%s/pgbr/spool\n' "$WORK" "$WORK" "$WORK"
  printf 'compress-type=zst\ncompress-level=1\nprocess-max=2\nstart-fast=y\narchive-check=n\nlog-level-console=error\n'
  for r in 1 2 3; do
    printf 'repo%s-type=s3\nrepo%s-path=/pgbackrest\nrepo%s-s3-bucket=bench-az%s\nrepo%s-s3-endpoint=127.0.0.1\n' $r $r $r $r $r
    printf 'repo%s-storage-port=%s\nrepo%s-s3-uri-style=path\nrepo%s-storage-verify-tls=n\n' $r "$TLS_PORT" $r $r
    printf 'repo%s-s3-region=%s\nrepo%s-s3-key=%s\nrepo%s-s3-key-secret=%s\n' $r "$S3_REGION" $r "$S3_KEY" $r "$S3_SECRET"
    printf 'repo%s-cipher-type=aes-256-cbc\nrepo%s-cipher-pass=bench-cipher-pass-%s-0123456789abcdef\n' $r $r $r
    printf 'repo%s-retention-full=9999999\n' $r
  done
  printf '[bench]\npg1-path=%s/data\npg1-port=%s\npg1-socket-path=%s/sock\n' "$WORK" "$PGPORT" "$WORK"
} >"$WORK/pgbr/pgbackrest.conf"
chown -R postgres: "$WORK/pgbr"
PGBR=(runuser -u postgres -- pgbackrest --config="$WORK/pgbr/pgbackrest.conf" --stanza=bench)
"${PGBR[@]}" stanza-create >/dev/null

# --- measuring ---------------------------------------------------------------------------------
RESULTS=$WORK/results.tsv
: >"$RESULTS"
# CPU seconds of the PostgreSQL server so far: live processes plus the backends it has reaped.
server_cpu() {
  python3 - "$(head -1 "$WORK/data/postmaster.pid")" <<'PY'
import os, sys
pm = sys.argv[1]
hz = os.sysconf("SC_CLK_TCK")
def fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()
total = 0
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    try:
        f = fields(pid)
    except OSError:
        continue
    if pid == pm or f[1] == pm:
        total += int(f[11]) + int(f[12])
        if pid == pm:
            total += int(f[13]) + int(f[14])
print(total / hz)
PY
}
# CPU seconds of Garage so far: it shares the cores with the tool measured.
store_cpu() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$STORE_PID/stat"; }
measure() { # SIDE STORED_CMD CMD...  (STORED_CMD prints the bytes stored by the run)
  local side=$1 stored_cmd=$2; shift 2
  local before after store_before store_after
  before=$(server_cpu)
  store_before=$(store_cpu)
  /usr/bin/time -f '%e %U %S %M' -o "$WORK/time.txt" "$@" >"$WORK/cmd.out" 2>"$WORK/cmd.err" \
    || { cat "$WORK/cmd.out" "$WORK/cmd.err" >&2; die "$side failed"; }
  after=$(server_cpu)
  store_after=$(store_cpu)
  read -r wall user sys rss <"$WORK/time.txt"
  local stored
  stored=$(eval "$stored_cmd")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$side" "$wall" "$(echo "$user + $sys" | bc)" "$rss" "$stored" \
    "$(echo "$after - $before" | bc)" "$(echo "$store_after - $store_before" | bc)" >>"$RESULTS"
  log "  $side: wall ${wall}s cpu $(echo "$user + $sys" | bc)s rss $((rss / 1024))MiB stored $stored"
}
pgbr_stored() { # REPO: the size in the repository of its newest backup
  "${PGBR[@]}" --repo="$1" info --output=json \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["backup"][-1]["info"]["repository"]["size"])'
}

run_dbagent() {
  "$BENCH" clean "$WORK/agent" "$PGPORT" "$WORK/data" "s3:$S3_PORT" >&2
  measure dbagent "sed -n 's/.*stored_bytes=//p' $WORK/cmd.out" \
    "$BENCH" backup "$WORK/agent" "$PGPORT" "$WORK/data" "s3:$S3_PORT"
}
run_pgbackrest() {
  for r in 1 2 3; do
    measure "pgbackrest-repo$r" "pgbr_stored $r" "${PGBR[@]}" --repo=$r --type=full backup
    # Keep one backup per repository (outside the timing) so the buckets do not fill the disk.
    "${PGBR[@]}" --repo=$r --repo$r-retention-full=1 expire >/dev/null
  done
}
run_limit() {
  measure limit "echo 0" bash -c "$PGBIN/pg_basebackup -h 127.0.0.1 -p $PGPORT -U postgres -D - -Ft -X fetch -c fast \
    | zstd -1 -T2 -q >/dev/null"
}

mkdir -p "$WORK/agent"
SIDES=(dbagent pgbackrest limit)
for ((i = 0; i < RUNS; i++)); do
  log "run $((i + 1))/$RUNS"
  for ((k = 0; k < 3; k++)); do
    "run_${SIDES[(i + k) % 3]}"
  done
done

# --- report --------------------------------------------------------------------------------------
python3 - "$RESULTS" "$RUNS" "$DATA_BYTES" "$TAR_BYTES" "$ZST_BYTES" "$ROWS" "$QUICK" \
  "$(nproc) x $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(free -g | awk '/Mem:/ {print $2}') GiB RAM, Linux $(uname -r)" \
  "$(git -C "$ROOT" rev-parse --short HEAD)" "$(pgbackrest version)" "$("$PGBIN/postgres" --version)" \
  "zstd $(zstd --version | grep -o 'v[0-9.]*' | head -1)" "$("$GARAGE" --version 2>/dev/null | head -1)" <<'PY'
import statistics, sys
(path, runs, data, tar, zst, rows, quick, machine, rev, pgbr, pg, zstd, garage) = sys.argv[1:]
rows_ = [l.rstrip("\n").split("\t") for l in open(path)]
by = {}
for side, wall, cpu, rss, stored, server, store in rows_:
    by.setdefault(side, []).append((float(wall), float(cpu), int(rss) / 1024, int(stored), float(server), float(store)))
# The 3-repository pgBackRest total of each run: the three runs one after the other.
n = len(by["pgbackrest-repo1"])
by["pgbackrest-3repos"] = [
    tuple(
        f([by[f"pgbackrest-repo{r}"][i][k] for r in (1, 2, 3)])
        for k, f in enumerate((sum, sum, max, sum, sum, sum))
    )
    for i in range(n)
]
def stat(side, k, fmt="{:.1f}"):
    v = [x[k] for x in by[side]]
    return f"{fmt.format(statistics.median(v))} ({fmt.format(min(v))}-{fmt.format(max(v))})"
def med(side, k):
    return statistics.median(x[k] for x in by[side])
mib = lambda b: f"{int(b) / 2**20:,.0f} MiB"
data, tar, zst = int(data), int(tar), int(zst)
print("## Backups\n")
print(f"Machine: {machine}. Versions: dbagent {rev} (release build), {pgbr}, {pg}, {zstd}, {garage}.")
if quick == "1":
    print("\n**--quick run: small data, 2 runs; not a result.**")
print(f"\nData: pgbench tables with {int(rows):,} accounts whose filler is random hex (pgbench's blank filler "
      f"compresses about 40:1); data directory {mib(data)} without pg_wal, base backup tar {mib(tar)}, "
      f"zstd -1 {mib(zst)}: **ratio {tar / zst:.2f}:1**.")
print(f"\n{runs} runs per side, the order rotating each run (dbagent, pgBackRest, limit; then pgBackRest, limit, "
      "dbagent; ...). Median (min-max). CPU is user+sys of the tool and all its children; the server column is "
      "the PostgreSQL server's CPU during the run (the walsender that reads the files for pg_basebackup; "
      "pgBackRest reads the files itself, so its reading is in its own CPU). Peak RSS is the largest process "
      "of the tool's tree. Garage CPU is the S3 store's CPU during the run: it runs on the same two cores, so "
      "it lengthens the wall time of every side that stores (the limit stores nothing).\n")
print("| Side | Wall s | CPU s | Server CPU s | Garage CPU s | Peak RSS MiB | Stored | Caveats |")
print("|---|---|---|---|---|---|---|---|")
def row(label, side, stored, caveat):
    print(f"| {label} | {stat(side, 0)} | {stat(side, 1)} | {stat(side, 4)} | {stat(side, 5)} | {stat(side, 2, '{:.0f}')} | "
          f"{stored} | {caveat} |")
row("dbagent, 3 S3 destinations, one pass", "dbagent", f"{mib(med('dbagent', 3))} x 3",
    "shipped defaults: zstd 1, 2 workers, AES-256-GCM, 8 MiB parts; plain HTTP to Garage")
for r in (1, 2, 3):
    row(f"pgBackRest, repo{r}", f"pgbackrest-repo{r}", mib(med(f"pgbackrest-repo{r}", 3)),
        "zstd 1, aes-256-cbc, process-max 2; HTTPS through a local TLS proxy (its S3 client needs TLS); "
        "no WAL archive (archive-check=n): it copies no WAL, dbagent and the limit do" if r == 1 else "as repo1")
row("pgBackRest, 3 repositories (sum of 3 runs)", "pgbackrest-3repos", mib(med("pgbackrest-3repos", 3)),
    "one run per repository: it reads and compresses the data 3 times")
row("limit: pg_basebackup \\| zstd -1 -T2 > /dev/null", "limit", "none", "reads and compresses once, stores nothing")
d, p1, lim = med("dbagent", 0), med("pgbackrest-repo1", 0), med("limit", 0)
ok1, ok2 = d <= p1, d <= 1.25 * lim
print(f"\nGoal: dbagent to three destinations no slower than pgBackRest to one: {d:.1f} s vs {p1:.1f} s "
      f"(median wall), **{'met' if ok1 else 'not met'}**; within 1.25x of the limit: {d / lim:.2f}x "
      f"({d:.1f} s vs {lim:.1f} s), **{'met' if ok2 else 'not met'}**. CPU of the tool plus the PostgreSQL "
      f"server: dbagent {med('dbagent', 1) + med('dbagent', 4):.1f} s, limit {med('limit', 1) + med('limit', 4):.1f} s, "
      f"pgBackRest per repository {med('pgbackrest-repo1', 1) + med('pgbackrest-repo1', 4):.1f} s; Garage adds "
      f"{med('dbagent', 5):.1f} s for dbagent's three copies.")
print("\nCaveats: pgBackRest is given process-max 2, the two cores dbagent's zstd uses; its user guide advises "
      "at most 25% of the CPUs for backups, which on this machine means 1 and a slower pgBackRest. Garage, "
      "PostgreSQL and the TLS proxy run on the same two cores as the tool measured.")
PY
