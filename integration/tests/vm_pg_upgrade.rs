//! VM test of issue 14's PostgreSQL major upgrade: a real 15 -> 17 pg_upgrade through the real agent
//! in the pg-majors guest (Debian 13 with PostgreSQL 17, and 15 from Debian 12 beside it under
//! postgresql-common; `integration/vm/build-image-pg-majors.sh`).
//!
//! One boot: run.sh checks both majors are really there and that the agent (built on Debian 12) runs
//! on Debian 13, creates four 15 clusters with 1000 rows each (one, `clone`, on XFS with reflink=1 in
//! a loop file) and starts a dev-mode agent;
//! `pg-upgrade-vm-check` then drives the upgrades through the gRPC API (see its header): refusals
//! (no recent backup, invalid targets, an extension missing for 17), a rollback after pg_upgrade is
//! killed mid-way (the old cluster serves its rows again), the agent killed (SIGKILL) mid-pg_upgrade
//! and restarted (the old cluster serves again, the operation says why; an upgrade waiting for its
//! window still waits for the same one), and the real upgrade (rows written on 15
//! read from 17, instance record, downtime, statistics, idempotent retry), and the same in clone mode
//! on XFS.
//!
//! Needs qemu and the guest image (built on first use, minutes); fails loudly without them, never
//! skips. If the guest lacks either major, the `pg-majors-installed` step fails and says so.

use dbagent_integration::agent::agent_binary;
use dbagent_integration::vm::Vm;
use std::time::Duration;

const RUN_SH: &str = r#"#!/bin/bash
. /share/vmtest-lib.sh
STATE=/var/lib/dbagent-vm
step pg-majors-installed bash -c 'for v in 15 17; do test -x /usr/lib/postgresql/$v/bin/postgres || { echo "PostgreSQL $v is not installed in this guest: two real majors are needed"; exit 1; }; done; test -x /usr/lib/postgresql/17/bin/pg_upgrade; grep -h VERSION_CODENAME /etc/os-release; /usr/lib/postgresql/15/bin/postgres --version; /usr/lib/postgresql/17/bin/postgres --version'
step agent-runs-on-trixie /share/dbagent --version
stop_on_fail

# An extension for 15 only: the upgrade of the cluster that uses it must be refused.
cat >/usr/share/postgresql/15/extension/dbagent_only15.control <<'EOF'
comment = 'dbagent test: installed for PostgreSQL 15 only'
default_version = '1.0'
relocatable = true
EOF
echo "CREATE FUNCTION dbagent_only15() RETURNS int LANGUAGE sql AS 'SELECT 15';" \
    >/usr/share/postgresql/15/extension/dbagent_only15--1.0.sql

# The check starts the agent again after killing it: one command for both.
cat >/usr/local/sbin/start-dbagent <<AGENT
#!/bin/sh
exec systemd-run --unit=dbagent.service -p Type=notify -p TimeoutStartSec=300 \\
    -p StandardOutput=append:/out/agent.log -p StandardError=append:/out/agent.log \\
    /share/dbagent --dev --state-dir "$STATE" --listen 127.0.0.1:7443
AGENT
chmod 0755 /usr/local/sbin/start-dbagent
step start-agent /usr/local/sbin/start-dbagent
stop_on_fail
# The clusters live below the dev data root, in folders only root can write (the upgrade requires it
# for the folder of the new cluster); postgres must be able to pass through.
chmod 0711 "$STATE"
chmod 0755 "$STATE/data"

# The health probe's role (docs/operations.md, "Monitoring role"): the agent, root, logs in as
# dbagent_monitor by peer authentication with an ident map. The upgrade carries pg_hba.conf and
# pg_ident.conf over to the new cluster, so its health check gets in after the switch too.
monitor_role() {
    local id="$1" port="$2" conf="/etc/postgresql/15/$1"
    runuser -u postgres -- psql -XAtq -p "$port" -c "CREATE ROLE dbagent_monitor LOGIN" &&
        echo "dbagent root dbagent_monitor" >>"$conf/pg_ident.conf" &&
        sed -i '1i local all dbagent_monitor peer map=dbagent' "$conf/pg_hba.conf" &&
        pg_ctlcluster 15 "$id" reload
}
make_cluster() {
    local id="$1" port="$2"
    install -d -m 0755 -o root -g root "$STATE/data/$id" "$STATE/data/$id/15"
    pg_createcluster 15 "$id" -d "$STATE/data/$id/15/$id" -p "$port" --start -- --no-sync &&
        runuser -u postgres -- psql -XAtq -p "$port" -c "CREATE DATABASE shop" &&
        monitor_role "$id" "$port" &&
        runuser -u postgres -- psql -XAtq -p "$port" -d shop -v ON_ERROR_STOP=1 \
            -c "CREATE TABLE items(id serial PRIMARY KEY, n int NOT NULL); INSERT INTO items(n) SELECT g FROM generate_series(1, 1000) g; CREATE INDEX ON items(n)"
}
# The three side by side: initdb under emulation takes over a minute each.
make_clusters() {
    local pids=() rc=0
    make_cluster up 5433 & pids+=($!)
    make_cluster bad 5434 & pids+=($!)
    make_cluster roll 5435 & pids+=($!)
    make_cluster clone 5436 & pids+=($!)
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    return $rc
}
# `clone` lives on XFS made with reflink=1 (a loop file): the agent picks pg_upgrade --clone there.
xfs_reflink() {
    truncate -s 2G /var/lib/clone-xfs.img && mkfs.xfs -q -m reflink=1 /var/lib/clone-xfs.img &&
        install -d -m 0755 -o root -g root "$STATE/data/clone" &&
        mount -o loop /var/lib/clone-xfs.img "$STATE/data/clone" && chmod 0755 "$STATE/data/clone" &&
        findmnt -n -o FSTYPE "$STATE/data/clone" | grep -qx xfs
}
step xfs-reflink xfs_reflink
step clusters-15 make_clusters
step cluster-bad-extension runuser -u postgres -- psql -XAtq -p 5434 -d shop -v ON_ERROR_STOP=1 -c "CREATE EXTENSION dbagent_only15"
stop_on_fail

if ! /share/pg-upgrade-vm-check --state-dir "$STATE"; then
    fail pg-upgrade-vm-check-exit "pg-upgrade-vm-check exited non-zero (see the FAIL lines above and stderr.log)"
fi
{ pg_lsclusters; df -h "$STATE"; } >>/out/steps.log 2>&1
systemctl stop dbagent.service
"#;

#[test]
fn vm_postgresql_major_upgrade_15_to_17_copy_and_clone_refusals_rollback_and_crash_recovery() {
    let vm = Vm::new("pg-upgrade")
        .pg_majors_image()
        // Three 15 clusters, the agent's restore drills and pg_upgrade's two servers at once.
        .memory_mib(2048)
        .timeout(Duration::from_secs(1500))
        .copy_as(agent_binary(), "dbagent")
        .copy(env!("CARGO_BIN_EXE_pg-upgrade-vm-check"))
        .script(RUN_SH);
    let run = vm.boot();
    println!("VM PostgreSQL major upgrade timings (qemu TCG, 2 vCPUs):");
    println!("  boot to test start {:?} ms, whole boot {:?} ms", run.boot_to_test_ms, run.wall_ms);
    for step in [
        "clusters-15",
        "refused-without-recent-backup",
        "backups-taken",
        "invalid-targets-refused",
        "extension-missing-for-17-refused-old-serves",
        "killed-pg-upgrade-rolls-back-old-serves",
        "crash-during-pg-upgrade-recovered-waiting-upgrade-rearmed",
        "upgrade-15-to-17-serves-rows",
        "upgrade-clone-mode-on-xfs-reflink",
    ] {
        println!("  {step}: {} ms", run.ms(step));
    }
    let result = std::fs::read_to_string(run.out_dir.join("result.log")).unwrap_or_default();
    for line in result.lines().filter(|l| l.starts_with("INFO ") || l.starts_with("DOWNTIME_MS")) {
        println!("  {line}");
    }
}
