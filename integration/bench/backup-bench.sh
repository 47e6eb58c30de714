#!/usr/bin/env bash
# Backup benchmark (issue 6): a pgbench database of >= 1 GiB on a private PostgreSQL 15 cluster on
# 127.0.0.1, then, one after the other:
#   1. dbagent (library-level BackupService, release build): one pass to three `dir` destinations
#   2. pgBackRest (zstd level 1, aes-256-cbc, process-max 2) to one repository, then to three
#      (one run per repository, as pgBackRest needs)
#   3. pg_basebackup -Ft -X fetch -D - | zstd -1 -T2 > /dev/null  (the limit)
# Each under /usr/bin/time -v: wall time, CPU time (user+sys, children included), peak RSS.
# Usage: integration/bench/backup-bench.sh [SCALE]   (default 70, about 1.05 GiB)
set -euo pipefail
cd "$(dirname "$0")/../.."
SCALE=${1:-70}
PGBIN=/usr/lib/postgresql/15/bin
WORK=$(mktemp -d /tmp/dbagent-bench-XXXXXX)
chown postgres: "$WORK"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
OUT=$WORK/results.txt
cleanup() { runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap cleanup EXIT

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-backups}
cargo build --release -p dbagent-integration --bin backup-bench >/dev/null

runuser -u postgres -- "$PGBIN/initdb" -D "$WORK/data" -A trust -U postgres >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/pg.log" -w \
  -o "-p $PORT -k $WORK -c listen_addresses=127.0.0.1 -c shared_buffers=128MB -c max_wal_senders=10 -c wal_level=replica" start >/dev/null
PSQL=(runuser -u postgres -- psql -h 127.0.0.1 -p "$PORT" -U postgres -XAtq)
"${PSQL[@]}" -c "CREATE DATABASE bench"
echo "bench: pgbench -i -s $SCALE ..."
runuser -u postgres -- "$PGBIN/pgbench" -h 127.0.0.1 -p "$PORT" -U postgres -i -s "$SCALE" -q bench >/dev/null 2>&1
"${PSQL[@]}" -c "CHECKPOINT"
SIZE=$(du -sb "$WORK/data" | cut -f1)
echo "data directory: $SIZE bytes ($(numfmt --to=iec "$SIZE"))" | tee "$OUT"

measure() { # NAME CMD...
  local name=$1; shift
  /usr/bin/time -v -o "$WORK/time.txt" "$@" >"$WORK/cmd.out" 2>&1 || { cat "$WORK/cmd.out"; exit 1; }
  local wall user sys rss
  wall=$(grep "Elapsed (wall clock)" "$WORK/time.txt" | awk '{print $NF}')
  user=$(grep "User time" "$WORK/time.txt" | awk '{print $NF}')
  sys=$(grep "System time" "$WORK/time.txt" | awk '{print $NF}')
  rss=$(grep "Maximum resident" "$WORK/time.txt" | awk '{print $NF}')
  printf '%-44s wall %8s  cpu %7.1f s  peak RSS %6d MiB\n' "$name" "$wall" "$(echo "$user + $sys" | bc)" "$((rss / 1024))" | tee -a "$OUT"
}

# 1. dbagent, three destinations in one pass.
mkdir -p "$WORK/agent"
python3 - "$WORK" "$PORT" <<'PY'
import json, sys
work, port = sys.argv[1], int(sys.argv[2])
cfg = {"destinations": [{"kind": "dir", "name": f"az{i}", "path": f"{work}/agent/az{i}"} for i in (1, 2, 3)],
       "postgresql": {"host": "127.0.0.1", "port": port, "user": "postgres", "database": "bench",
                      "bin_dir": "/usr/lib/postgresql/15/bin"}}
json.dump(cfg, open(f"{work}/agent/config.json", "w"))
inst = {"id": "bench", "spec": {"engine": "postgresql", "engine_version": "15", "systemd_unit": "x.service",
        "data_dir": f"{work}/data", "os_user": "postgres",
        "volume": {"device": None, "size_bytes": 1 << 30, "filesystem": "ext4"}, "log_sources": [],
        "plan": {"name": "business", "cpu_millis": 2000, "memory_bytes": 1 << 30, "io_read_iops": 1, "io_write_iops": 1,
                 "io_read_bps": 1, "io_write_bps": 1, "disk_bytes": 1 << 30},
        "maintenance_window": None, "backup_policy": None},
        "created": "2026-01-01T00:00:00Z", "updated": "2026-01-01T00:00:00Z", "generation": 1}
json.dump(inst, open(f"{work}/agent/instance.json", "w"))
PY
measure "dbagent: 3 destinations, one pass" "$CARGO_TARGET_DIR/release/backup-bench" "$WORK/agent" "$WORK/agent/config.json" "$WORK/agent/instance.json" physical
grep -o 'stored_bytes":[0-9]*' "$WORK/cmd.out" | head -1 | sed 's/^/  dbagent /' | tee -a "$OUT"

# 2. pgBackRest: zstd level 1, encryption on, one run per repository.
mkdir -p "$WORK/pgbr"/{repo1,repo2,repo3,log,spool,lock} && chown -R postgres: "$WORK/pgbr"
cat > "$WORK/pgbr/pgbackrest.conf" <<CONF
[global]
log-path=$WORK/pgbr/log
lock-path=$WORK/pgbr/lock
spool-path=$WORK/pgbr/spool
compress-type=zst
compress-level=1
process-max=2
start-fast=y
archive-check=n
log-level-console=warn
repo1-path=$WORK/pgbr/repo1
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=benchbenchbenchbenchbenchbench01
repo2-path=$WORK/pgbr/repo2
repo2-cipher-type=aes-256-cbc
repo2-cipher-pass=benchbenchbenchbenchbenchbench02
repo3-path=$WORK/pgbr/repo3
repo3-cipher-type=aes-256-cbc
repo3-cipher-pass=benchbenchbenchbenchbenchbench03
[bench]
pg1-path=$WORK/data
pg1-port=$PORT
pg1-socket-path=$WORK
CONF
chown postgres: "$WORK/pgbr/pgbackrest.conf"
PGBR=(runuser -u postgres -- pgbackrest --config="$WORK/pgbr/pgbackrest.conf" --stanza=bench)
"${PGBR[@]}" stanza-create >/dev/null
for r in 1 2 3; do
  measure "pgBackRest: repo$r" "${PGBR[@]}" --repo=$r --type=full backup
done

# 3. The limit: read + compress only.
measure "pg_basebackup | zstd -1 -T2 > /dev/null" bash -c \
  "runuser -u postgres -- $PGBIN/pg_basebackup -h 127.0.0.1 -p $PORT -U postgres -D - -Ft -X fetch -c fast | zstd -1 -T2 -q > /dev/null"

echo; cat "$OUT"
