//! VM test of issue 14 (plan changes): the plan's limits on a real PostgreSQL unit's cgroup v2,
//! through the real agent's gRPC API and systemd's D-Bus API, in one boot of the Debian 12 guest.
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
systemctl stop postgresql@15-main.service dbagent.service
"#;

#[test]
fn vm_plan_change_sets_cgroup_limits_without_restart_and_refuses_memory_below_buffers() {
    let work = tempfile::tempdir().expect("temporary folder for the data disk");
    let disk = work.path().join("data0.img");
    vm::sparse_disk(&disk, 256 << 20);
    let vm = Vm::new("plan")
        .disk(&disk)
        .copy_as(agent_binary(), "dbagent")
        .copy(env!("CARGO_BIN_EXE_plan-vm-check"))
        .script(RUN_SH);
    let run = vm.boot();
    println!("VM plan timings (qemu TCG, 2 vCPUs):");
    println!("  boot to test start {:?} ms, whole boot {:?} ms", run.boot_to_test_ms, run.wall_ms);
    println!("  register + create volume {} ms", run.ms("register-and-create-volume"));
    for check in
        ["limits-in-cgroup-pid-unchanged", "below-buffers-refused-files-kept", "forced-restart-applies-shared-buffers"]
    {
        println!("  {check}: {} ms", run.ms(check));
    }
}
