#!/usr/bin/env bash
# The part of integration/bench/pg-upgrade.sh that runs inside the chroot of the pg-majors image
# (PostgreSQL 15 and 17 under postgresql-common, no systemd). Not meant to be run by hand.
#
# Usage: pg-upgrade-chroot.sh SCALE RUNS DUMP_RUNS OUT
#   /srv/ext is the host's ext4, /srv/xfs an XFS with reflink=1. Writes one RESULT line per run to OUT:
#   RESULT METHOD RUN CLIENT_DOWNTIME_S WHOLE_S AGENT_DOWNTIME_S PG_UPGRADE_S CREATECLUSTER_S
#   ("-" where none; the last is the agent's pg_createcluster, which it runs before its downtime)
#
# Every run starts from a fresh copy of the same stopped 15 cluster (pgbench scale SCALE plus a login
# role "app"), made once. Methods, in alternating order (run 1 forwards, run 2 backwards, ...):
#   agent-copy    the agent's command sequence (agent/src/upgrade/job.rs, cluster.rs, server.rs) on ext4:
#                 pg_upgrade --copy
#   peer-upgrade  pg_upgradecluster -m upgrade on ext4 (pg_upgrade in copy mode: the same work)
#   agent-clone   the agent's command sequence on XFS: pg_upgrade --clone (the agent picks clone on XFS)
#   peer-clone    pg_upgradecluster -m clone on XFS
#   peer-dump     pg_upgradecluster -m dump (its default) on ext4: different work, for reference
# The client-side downtime of every method is measured the same way, by a client outside the tools:
# as the unprivileged role "app" over the socket, it asks for a write (txid_current()) every 50 ms
# and logs the server's major with each one accepted; downtime = first write accepted by 17 minus
# the last accepted by 15 before it.
set -euo pipefail
SCALE="$1" RUNS="$2" DUMP_RUNS="$3" OUT="$4"
PORT=25433 TEMP_PORT=26433 SOCK=/var/run/postgresql
B15=/usr/lib/postgresql/15/bin B17=/usr/lib/postgresql/17/bin

log() { printf 'pg-upgrade: %s\n' "$*" >&2; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
# As the engine's user the way the agent's ToolCommand::run_as does it: uid, gid, no supplementary
# groups, HOME; no PAM session (runuser would open one, and cost more than the agent pays).
as_pg() { HOME=/var/lib/postgresql setpriv --reuid=postgres --regid=postgres --clear-groups -- "$@"; }
# psql 17 as the engine's user, as the agent's ServerAt::query does.
q() { as_pg "$B17/psql" "--host=$SOCK" "--port=$PORT" "--dbname=$1" -XAtq --no-password \
    --field-separator='|' -v ON_ERROR_STOP=1 -c "$2"; }

PROBE_PID=
stop_probe() {
    if [[ -n "$PROBE_PID" ]]; then kill "$PROBE_PID" 2>/dev/null || true; wait "$PROBE_PID" 2>/dev/null || true; fi
    PROBE_PID=
}
stop_all() {
    stop_probe
    pg_ctlcluster 17 b stop -m immediate 2>/dev/null || true
    pg_ctlcluster 15 b stop -m immediate 2>/dev/null || true
}
trap stop_all EXIT

# The client: a write every 50 ms as "app" (not a superuser: pg_upgradecluster's dump method lets only
# the cluster's owner in while it dumps); each accepted one logged as "TIME MAJOR".
probe() {
    local log="$1" v
    while :; do
        if v="$(setpriv --reuid=app --regid=app --clear-groups -- "$B17/psql" "--host=$SOCK" "--port=$PORT" -d postgres -XAtq --no-password \
            -c "SELECT current_setting('server_version_num')::int / 10000, txid_current()" 2>/dev/null)"; then
            printf '%s %s\n' "$(now)" "${v%%|*}" >>"$log"
        fi
        sleep 0.05
    done
}
start_probe() {
    : >"$1"
    probe "$1" &
    PROBE_PID=$!
    local i
    for ((i = 0; i < 200; i++)); do grep -q ' 15$' "$1" && return 0; sleep 0.05; done
    log "the client never wrote to the 15 cluster"; return 1
}
# Downtime as a client saw it: the first write accepted by 17 minus the last accepted by 15 before it.
client_downtime() {
    awk '$2 == 15 { last = $1 } $2 == 17 { if (last == "") { print "no write on 15 before 17"; exit 1 }
                   printf "%.2f", $1 - last; found = 1; exit } END { if (!found) exit 1 }' "$1"
}

# --- the data, made once ------------------------------------------------------------------------
mkdir -p "$SOCK" && chown postgres:postgres "$SOCK"
id app >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin app
log "making the 15 cluster: pgbench scale $SCALE"
install -d -m 0755 /srv/ext/15 /srv/ext/17 /srv/xfs/15 /srv/xfs/17
pg_createcluster 15 b -d /srv/ext/15/b -p "$PORT" --start -- --no-sync >/dev/null
# Server-side generation (G): the same tables and rows as the default, made faster.
runuser -u postgres -- "$B15/pgbench" -q -i -I dtGvp -s "$SCALE" -h "$SOCK" -p "$PORT" postgres >/dev/null 2>&1
q postgres "CREATE ROLE app LOGIN" >/dev/null
q postgres "CHECKPOINT" >/dev/null
SIZE="$(q postgres "SELECT pg_size_pretty(sum(pg_database_size(oid))) FROM pg_database")"
BYTES="$(q postgres "SELECT sum(pg_database_size(oid)) FROM pg_database")"
V15="$(q postgres "SHOW server_version")"
pg_ctlcluster 15 b stop
mkdir -p /srv/ext/template /srv/xfs/template
mv /srv/ext/15/b /srv/ext/template/data
cp -a /etc/postgresql/15/b /srv/ext/template/conf
rm -rf /etc/postgresql/15/b
cp -a --reflink=never /srv/ext/template/data /srv/xfs/template/data
cp -a /srv/ext/template/conf /srv/xfs/template/conf
sed -i 's#/srv/ext/15/b#/srv/xfs/15/b#' /srv/xfs/template/conf/postgresql.conf
V17="$("$B17/postgres" --version)"
printf 'INFO %s of databases (%s bytes, pgbench scale %s); PostgreSQL %s and %s; postgresql-common %s\n' \
    "$SIZE" "$BYTES" "$SCALE" "$V15" "${V17#postgres (PostgreSQL) }" \
    "$(dpkg-query -W -f '${Version}' postgresql-common)" >>"$OUT"

# A fresh copy of the 15 cluster on FS, started, and flushed to disk so that the copy's writeback is
# not timed.
restore() {
    local fs="$1"
    cp -a --reflink=never "$fs/template/data" "$fs/15/b"
    mkdir -p /etc/postgresql/15
    cp -a "$fs/template/conf" /etc/postgresql/15/b
    pg_ctlcluster 15 b start
    sync
}
# Both clusters gone, with whatever the tools left beside them.
clean() {
    local fs="$1"
    stop_probe
    pg_dropcluster --stop 17 b 2>/dev/null || true
    pg_dropcluster --stop 15 b 2>/dev/null || true
    rm -rf "$fs/15/b" "$fs/17/b" /etc/postgresql/15/b /etc/postgresql/17/b /var/log/postgresql/pg_upgradecluster-*
    rm -f "$SOCK"/*.sh "$SOCK"/*.txt
}

# pg_upgrade as the agent runs it (cluster.rs UpgradeRun::command); $1 = --copy|--clone, $2 = the
# old port for a live --check, or nothing.
agent_pg_upgrade() {
    local mode="$1" check=()
    [[ -n "${2:-}" ]] && check=(--check "--old-port=$2")
    # shellcheck disable=SC2016 # the inner shell expands them
    as_pg /bin/sh -c 'cd "$1" || exit 1; shift; export PGCTLTIMEOUT=600; exec "$0" "$@" 1>&2' \
        "$B17/pg_upgrade" "$SOCK" \
        "--old-bindir=$B15" "--new-bindir=$B17" "--old-datadir=$FS/15/b" "--new-datadir=$FS/17/b" \
        "--old-options=-c config_file=/etc/postgresql/15/b/postgresql.conf -c ssl=off" \
        "--new-options=-c config_file=/etc/postgresql/17/b/postgresql.conf -c ssl=off" \
        "--socketdir=$SOCK" --username=postgres "$mode" "${check[@]}" >/dev/null 2>&1
}
# The agent's health check (server.rs PsqlHealthCheck: major and data folder, a read of pg_class in
# every database) and then its write; retried every 250 ms for up to 60 s, as job.rs does.
health_once() {
    local db
    q postgres "SELECT current_setting('server_version_num'), current_setting('data_directory')" 2>/dev/null \
        | grep -qx "17[0-9]*|$FS/17/b" || return 1
    for db in $(q postgres "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1" 2>/dev/null); do
        q "$db" "SELECT count(*) FROM pg_catalog.pg_class" >/dev/null 2>&1 || return 1
    done
    q postgres "SELECT txid_current()" >/dev/null 2>&1
}
agent_healthy() {
    local i
    for ((i = 0; i < 240; i++)); do
        health_once && return 0
        sleep 0.25
    done
    log "the new cluster failed the agent's health check for 60 s"; return 1
}

# The agent's major upgrade (job.rs UpgradeJob::prepare, switch, analyze), command for command; its
# systemd units replaced by what they run (postgresql@.service: pg_ctlcluster -m fast ... stop/start).
agent_run() {
    local t_start t_create t_created t_old t_stopped t_pgu t_new t_end settings enc coll ctype sums db mode=--copy
    [[ "$(stat -f -c %T "$FS")" == xfs ]] && mode=--clone
    t_start=$(now)
    # Phase 1, nothing disrupted: settings, extensions, size, the new cluster, pg_upgrade --check.
    settings="$(q template1 "SELECT datcollate, datctype, pg_encoding_to_char(encoding), current_setting('data_checksums'), \
current_setting('server_version_num'), current_setting('data_directory') FROM pg_database WHERE datname = 'template1'")"
    IFS='|' read -r coll ctype enc sums _ _ <<<"$settings"
    for db in $(q postgres "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1"); do
        q "$db" "SELECT extname FROM pg_extension ORDER BY 1" >/dev/null
    done
    q postgres "SELECT sum(pg_database_size(oid))::bigint FROM pg_database" >/dev/null
    local extra=()
    [[ "$sums" == on ]] && extra=(-- --data-checksums)
    t_create=$(now)
    pg_createcluster 17 b "--datadir=$FS/17/b" --user=postgres "--encoding=$enc" "--lc-collate=$coll" \
        "--lc-ctype=$ctype" "--port=$TEMP_PORT" --start-conf=manual "${extra[@]}" >/dev/null
    t_created=$(now)
    agent_pg_upgrade "$mode" "$PORT"
    # Phase 2, the downtime: a write on 15, stop it, pg_upgrade, switch port and start.conf, start 17.
    q postgres "SELECT txid_current()" >/dev/null
    t_old=$(now)
    pg_ctlcluster -m fast 15 b stop
    t_stopped=$(now)
    agent_pg_upgrade "$mode"
    t_pgu=$(now)
    as_pg pg_conftool 17 b set port "$PORT"
    as_pg /bin/sh -c "printf '%s\\n' \"\$1\" > \"\$2\"" sh auto /etc/postgresql/17/b/start.conf
    as_pg /bin/sh -c "printf '%s\\n' \"\$1\" > \"\$2\"" sh manual /etc/postgresql/15/b/start.conf
    pg_ctlcluster 17 b start
    agent_healthy
    t_new=$(now)
    # After the switch: vacuumdb --analyze-in-stages and the statistics rows it produced.
    as_pg "$B17/vacuumdb" --all --analyze-in-stages --no-password "--host=$SOCK" "--port=$PORT" >/dev/null 2>&1
    for db in $(q postgres "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1"); do
        q "$db" "SELECT count(*) FROM pg_catalog.pg_statistic" >/dev/null
    done
    t_end=$(now)
    AGENT_DOWNTIME=$(secs "$t_old" "$t_new") PG_UPGRADE=$(secs "$t_stopped" "$t_pgu") WHOLE=$(secs "$t_start" "$t_end")
    CREATE=$(secs "$t_create" "$t_created")
}

# Debian's tool as its manual page describes it; NEWDATADIR keeps the new cluster on the same file
# system as the old one (as the agent does), or clone mode could not work.
peer_run() {
    local method="$1" t_start
    t_start=$(now)
    pg_upgradecluster -v 17 -m "$method" 15 b "$FS/17/b" >/tmp/pg_upgradecluster.log 2>&1 || {
        log "pg_upgradecluster -m $method failed:"; tail -n 30 /tmp/pg_upgradecluster.log >&2; return 1
    }
    WHOLE=$(secs "$t_start" "$(now)") AGENT_DOWNTIME=- PG_UPGRADE=- CREATE=-
}

one() {  # METHOD RUN
    local method="$1" run="$2" probe_log down
    case "$method" in agent-clone | peer-clone) FS=/srv/xfs ;; *) FS=/srv/ext ;; esac
    log "run $run: $method on $(stat -f -c %T "$FS")"
    restore "$FS"
    probe_log="$(mktemp)"
    start_probe "$probe_log"
    case "$method" in
        agent-*) agent_run ;;
        peer-upgrade) peer_run upgrade ;;
        peer-clone) peer_run clone ;;
        peer-dump) peer_run dump ;;
    esac
    local i
    for ((i = 0; i < 200; i++)); do grep -q ' 17$' "$probe_log" && break; sleep 0.05; done
    stop_probe
    down="$(client_downtime "$probe_log")" || { log "$method: no client downtime: $(tail -n 3 "$probe_log")"; return 1; }
    rm -f "$probe_log"
    printf 'RESULT %s %s %s %s %s %s %s\n' "$method" "$run" "$down" "$WHOLE" "$AGENT_DOWNTIME" "$PG_UPGRADE" "$CREATE" >>"$OUT"
    log "run $run: $method: client downtime $down s, whole $WHOLE s"
    clean "$FS"
}

FORWARD=(agent-copy peer-upgrade agent-clone peer-clone)
for ((run = 1; run <= RUNS; run++)); do
    order=("${FORWARD[@]}")
    ((run <= DUMP_RUNS)) && order+=(peer-dump)
    if ((run % 2 == 0)); then
        rev=()
        for ((k = ${#order[@]} - 1; k >= 0; k--)); do rev+=("${order[k]}"); done
        order=("${rev[@]}")
    fi
    for m in "${order[@]}"; do one "$m" "$run"; done
done
