//! VM test of issue 14, the work that restarts (or must not restart) real database units, in one
//! boot of the Debian 12 guest, through the real agent's gRPC API and systemd's D-Bus API: plan
//! changes on a real PostgreSQL unit's cgroup v2, and minor upgrades of MariaDB and Redis with
//! packages from the image's local repository through real apt.
//!
//! A dev-mode agent (a transient notify unit) registers instance `pg-plan` on
//! `postgresql@15-main.service` and creates its encrypted volume (`plan-vm-check setup`); the
//! script creates the cluster on it with the settings a 512 MiB plan gives and starts the unit;
//! `plan-vm-check change` then asserts: the new CPU, memory and I/O limits in the unit's `cpu.max`,
//! `memory.max`, `memory.high` and `io.max` (on the volume's dm-crypt mapping) with the
//! postmaster's PID unchanged; a plan below the running shared_buffers refused naming both numbers,
//! the cgroup files unchanged; a forced larger plan restarting the unit so that shared_buffers
//! follows (256MB).
//!
//! Minor upgrades (`minor-vm-check`): MariaDB (bookworm's 10.11.18, data moved into the dev data
//! root, a row written, the monitoring user made) and Redis (a key written) are started; then the
//! refusals (a repository outside the root, with `..`, group-writable, a link to a folder an engine
//! user writes, a package of another engine, a newer MariaDB major) install and restart nothing;
//! MariaDB goes to 10.11.19 from `/var/lib/dbagent/packages/bookworm-security` (the server's
//! versions before and after, mariadb-upgrade ran, the row read after); Redis restarts onto its
//! newer package with its key kept; a broken directive in Redis's config fails the operation with
//! the unit's state, the journal's reason and "No package was installed".
//!
//! Needs qemu and the guest image (built on first use); fails loudly without them, never skips.

use dbagent_integration::agent::agent_binary;
use dbagent_integration::vm::{self, Vm};

const RUN_SH: &str = r#"#!/bin/bash
. /share/vmtest-lib.sh
STATE=/srv/dbagent-vm/state
DATA=$STATE/data/pg-plan
step cgroup-v2 test -f /sys/fs/cgroup/cgroup.controllers
step start-agent systemd-run --unit=dbagent.service -p Type=notify -p TimeoutStartSec=300 \
    -p StandardOutput=append:/out/agent.log -p StandardError=append:/out/agent.log \
    /share/dbagent --dev --state-dir "$STATE" --listen 127.0.0.1:7443
stop_on_fail
if ! /share/plan-vm-check setup --state-dir "$STATE" --device /dev/disk/by-id/virtio-vmdata0; then
    fail plan-vm-check-setup-exit "plan-vm-check setup exited non-zero (see the FAIL lines above)"
fi
stop_on_fail
# The dev agent's data root lies inside its private state folder; postgres must pass through it
# (production data roots such as /var/lib/postgresql are the engine's own).
chmod 0711 /srv/dbagent-vm "$STATE" "$STATE/data"
# The settings a 512 MiB plan gives (shared_buffers 25 %, max_connections memory / 8 MiB), so that
# the first plan change is limits only.
step pg-createcluster sh -c "rmdir $DATA/lost+found && pg_createcluster 15 main -d $DATA \
    -o shared_buffers=128MB -o max_connections=64 -- --no-sync"
step pg-start systemctl start postgresql@15-main.service
stop_on_fail
if ! /share/plan-vm-check change --state-dir "$STATE"; then
    fail plan-vm-check-change-exit "plan-vm-check change exited non-zero (see the FAIL lines above)"
fi
ls -l /etc/postgresql/15/main/conf.d/ >>/out/steps.log 2>&1
cat /etc/postgresql/15/main/conf.d/90-dbagent-plan.conf >>/out/steps.log 2>&1
systemctl stop postgresql@15-main.service

# Minor upgrades: MariaDB and Redis with their data in the dev agent's data root.
MARIA=$STATE/data/maria-1
REDIS=$STATE/data/redis-1
step maria-datadir sh -c "install -d -o mysql -g mysql -m 0750 $MARIA && cp -a /var/lib/mysql/. $MARIA/"
printf '[mysqld]\ndatadir = %s\n' "$MARIA" >/etc/mysql/mariadb.conf.d/99-vmtest.cnf
step maria-start systemctl start mariadb.service
step maria-data mariadb -e "CREATE DATABASE t; CREATE TABLE t.x (v INT); INSERT INTO t.x VALUES (42);
    CREATE USER dbagent_monitor@localhost"
step redis-dir install -d -o redis -g redis -m 0750 "$REDIS"
sed -i "s|^dir .*|dir $REDIS|" /etc/redis/redis.conf
mkdir -p /etc/systemd/system/redis-server.service.d
printf '[Service]\nReadWritePaths=%s\n' "$REDIS" >/etc/systemd/system/redis-server.service.d/vmtest.conf
systemctl daemon-reload
step redis-start systemctl start redis-server.service
step redis-data redis-cli SET minor-key kept
stop_on_fail
if ! /share/minor-vm-check --state-dir "$STATE"; then
    fail minor-vm-check-exit "minor-vm-check exited non-zero (see the FAIL lines above)"
fi
journalctl -u mariadb.service -u redis-server.service --no-pager -n 60 >>/out/steps.log 2>&1
systemctl stop mariadb.service redis-server.service dbagent.service
"#;

#[test]
fn vm_plan_limits_without_restart_and_minor_upgrades_of_mariadb_and_redis_from_a_local_repository() {
    let work = tempfile::tempdir().expect("temporary folder for the data disk");
    let disk = work.path().join("data0.img");
    vm::sparse_disk(&disk, 256 << 20);
    let vm = Vm::new("restarts")
        .disk(&disk)
        .copy_as(agent_binary(), "dbagent")
        .copy(env!("CARGO_BIN_EXE_plan-vm-check"))
        .copy(env!("CARGO_BIN_EXE_minor-vm-check"))
        .script(RUN_SH)
        // apt installing MariaDB's packages under TCG takes minutes.
        .timeout(std::time::Duration::from_secs(1500));
    let run = vm.boot();
    println!("VM plan and minor-upgrade timings (qemu TCG, 2 vCPUs):");
    println!("  boot to test start {:?} ms, whole boot {:?} ms", run.boot_to_test_ms, run.wall_ms);
    println!("  register + create volume {} ms", run.ms("register-and-create-volume"));
    for check in
        ["limits-in-cgroup-pid-unchanged", "below-buffers-refused-files-kept", "forced-restart-applies-shared-buffers"]
    {
        println!("  {check}: {} ms", run.ms(check));
    }
    for check in [
        "minor-refusals-install-nothing",
        "minor-mariadb-10.11.18-to-10.11.19",
        "minor-redis-new-package-data-kept",
        "minor-broken-config-fails-with-reason",
    ] {
        println!("  {check}: {} ms", run.ms(check));
    }
    // What the upgrades reported (downtime, whether a package restarted a server, the error text).
    let result = std::fs::read_to_string(run.out_dir.join("result.log")).unwrap_or_default();
    for line in result.lines().filter(|l| l.starts_with("INFO ")) {
        println!("  {line}");
    }
}
