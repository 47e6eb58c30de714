#!/usr/bin/env bash
# Major-upgrade downtime, PostgreSQL 15 -> 17, for a ~1 GiB cluster: pg_upgrade --copy, pg_upgrade
# --clone (XFS with reflink on a loop file) and Debian's pg_upgradecluster (its default method), each
# on the same data. Runs natively (not under qemu: TCG is 20-50x slower) in a chroot of the pg-majors
# guest image, which has both majors (build it with integration/vm/build-image-pg-majors.sh).
#
# Usage (root): integration/bench/pg-upgrade.sh [SCALE]     SCALE = pgbench scale, 65 ~ 1 GiB
# Downtime for the pg_upgrade runs is measured as the agent measures it: from the last write the old
# server accepted (txid_current()) to the first the new one accepted; the steps are the agent's
# (stop old, pg_upgrade, port and start.conf switch, start new). pg_upgradecluster is timed whole:
# it keeps the old cluster from taking writes for all of its run.
set -euo pipefail
SCALE="${1:-65}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IMAGE="$("$HERE/../vm/build-image-pg-majors.sh")"
W="$(mktemp -d /var/tmp/pg-upgrade-bench.XXXXXX)"
cleanup() {
    for m in "$W/merged/srv/xfs" "$W/merged/dev" "$W/merged/proc" "$W/merged" "$W/lower"; do
        umount -l "$m" 2>/dev/null || true
    done
    rm -rf --one-file-system "$W"
}
trap cleanup EXIT
mkdir -p "$W"/{lower,upper,work,merged}
mount -o loop,ro "$IMAGE/root.img" "$W/lower"
mount -t overlay overlay -o "lowerdir=$W/lower,upperdir=$W/upper,workdir=$W/work" "$W/merged"
mount -t proc proc "$W/merged/proc"
mount --bind /dev "$W/merged/dev"
truncate -s 8G "$W/xfs.img"
mkfs.xfs -q -m reflink=1 "$W/xfs.img"
mkdir -p "$W/merged/srv/xfs"
mount -o loop "$W/xfs.img" "$W/merged/srv/xfs"

cat >"$W/merged/bench.sh" <<'EOF'
set -euo pipefail
SCALE="$1"
mkdir -p /run/postgresql && chown postgres:postgres /run/postgresql
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
q() { runuser -u postgres -- /usr/lib/postgresql/17/bin/psql -XAtq -h /run/postgresql -p "$1" -d postgres -c "$2"; }
wait_write() { until q "$1" "SELECT txid_current()" >/dev/null 2>&1; do sleep 0.05; done; }
upgrade() {  # DIR MODE: the agent's downtime steps
    local dir="$1" mode="$2" t0 t1 t2
    pg_createcluster 17 b -d "$dir/17/b" -p 26433 --start-conf=manual -- --no-sync >/dev/null
    q 25433 "SELECT txid_current()" >/dev/null; t0=$(now)
    pg_ctlcluster 15 b stop
    runuser -u postgres -- sh -c 'cd /run/postgresql && exec "$@"' sh /usr/lib/postgresql/17/bin/pg_upgrade \
        -b /usr/lib/postgresql/15/bin -B /usr/lib/postgresql/17/bin -d "$dir/15/b" -D "$dir/17/b" \
        -o "-c config_file=/etc/postgresql/15/b/postgresql.conf" -O "-c config_file=/etc/postgresql/17/b/postgresql.conf" \
        --socketdir=/run/postgresql "$mode" >/dev/null
    t1=$(now)
    runuser -u postgres -- pg_conftool 17 b set port 25433
    pg_ctlcluster 17 b start; wait_write 25433; t2=$(now)
    echo "RESULT pg_upgrade $mode: downtime $(secs "$t0" "$t2") s (pg_upgrade $(secs "$t0" "$t1") s)"
    pg_dropcluster --stop 17 b; pg_ctlcluster 15 b start
}
for dir in /srv/ext /srv/xfs; do
    mkdir -p "$dir/15"
    pg_createcluster 15 b -d "$dir/15/b" -p 25433 --start -- --no-sync >/dev/null
    runuser -u postgres -- /usr/lib/postgresql/15/bin/pgbench -q -i -s "$SCALE" -h /run/postgresql -p 25433 postgres >/dev/null 2>&1
    echo "INFO $dir: $(q 25433 "SELECT pg_size_pretty(sum(pg_database_size(oid))) FROM pg_database") in the 15 cluster ($(stat -f -c %T "$dir"))"
    if [[ "$dir" == /srv/xfs ]]; then upgrade "$dir" --clone; else upgrade "$dir" --copy; fi
    if [[ "$dir" == /srv/ext ]]; then
        t0=$(now)
        pg_upgradecluster -v 17 15 b >/dev/null 2>&1
        wait_write 25433; t2=$(now)
        echo "RESULT pg_upgradecluster (default method): whole run $(secs "$t0" "$t2") s"
        pg_dropcluster --stop 17 b
    fi
    pg_dropcluster --stop 15 b 2>/dev/null || true
done
EOF
chroot "$W/merged" bash /bench.sh "$SCALE"
