//! VM test of issue 4: per-instance metrics from a real cgroup v2 under systemd, through the real
//! agent's gRPC Metrics API.
//!
//! One boot: a transient unit `dbagent-burn.service` (`MemoryMax=512M`) writes ~200 MiB to tmpfs
//! (charged to its cgroup as shmem), does some direct disk I/O and then burns a CPU; a dev-mode agent
//! runs as a transient notify unit; `metrics-vm-check` registers instance `burn` with that unit and
//! asserts on two snapshots: CPU usage grows by more than 1 s, memory above 150 MiB, memory limit
//! 512 MiB, io.stat and pressure series present. The same instance has the journald source
//! `dbagent-logger.service` (a unit printing a line twice a second): TailLogs must deliver its
//! lines from the guest's live journald.
//!
//! Needs qemu and the guest image (built on first use); fails loudly without them, never skips.

use dbagent_integration::agent::agent_binary;
use dbagent_integration::vm::Vm;

const RUN_SH: &str = r#"#!/bin/bash
. /share/vmtest-lib.sh
STATE=/var/lib/dbagent-vm
step cgroup-v2 test -f /sys/fs/cgroup/cgroup.controllers
step start-burn-unit systemd-run --unit=dbagent-burn.service -p MemoryMax=512M \
    -p CPUAccounting=yes -p MemoryAccounting=yes -p IOAccounting=yes \
    sh -c 'head -c 200M /dev/zero >/dev/shm/dbagent-burn &&
           dd if=/dev/zero of=/var/tmp/dbagent-burn.io bs=1M count=16 oflag=direct conv=fsync &&
           dd if=/var/tmp/dbagent-burn.io of=/dev/null bs=1M iflag=direct &&
           while :; do :; done'
step start-logger-unit systemd-run --unit=dbagent-logger.service \
    sh -c 'i=0; while :; do i=$((i+1)); echo "dbagent-vm-journal-line $i"; sleep 0.5; done'
step start-agent systemd-run --unit=dbagent.service -p Type=notify -p TimeoutStartSec=300 \
    -p StandardOutput=append:/out/agent.log -p StandardError=append:/out/agent.log \
    /share/dbagent --dev --state-dir "$STATE" --listen 127.0.0.1:7443
stop_on_fail
step burn-cgroup-exists test -f /sys/fs/cgroup/system.slice/dbagent-burn.service/memory.current
if ! /share/metrics-vm-check --state-dir "$STATE" --unit dbagent-burn.service --log-unit dbagent-logger.service; then
    fail metrics-vm-check-exit "metrics-vm-check exited non-zero (see the FAIL lines above and stderr.log)"
fi
cat /sys/fs/cgroup/system.slice/dbagent-burn.service/memory.current \
    /sys/fs/cgroup/system.slice/dbagent-burn.service/cpu.stat >>/out/steps.log 2>&1
systemctl stop dbagent.service dbagent-burn.service dbagent-logger.service
"#;

#[test]
fn vm_instance_metrics_from_a_real_cgroup_v2_unit() {
    let vm = Vm::new("metrics")
        .copy_as(agent_binary(), "dbagent")
        .copy(env!("CARGO_BIN_EXE_metrics-vm-check"))
        .script(RUN_SH);
    let run = vm.boot();
    println!("VM metrics timings (qemu TCG, 2 vCPUs):");
    println!("  boot to test start {:?} ms, whole boot {:?} ms", run.boot_to_test_ms, run.wall_ms);
    println!("  agent start to READY {} ms; two snapshots after {} ms", run.ms("start-agent"), run.ms("two-snapshots"));
    println!("  journald lines through TailLogs after {} ms", run.ms("journald-lines"));
    for check in [
        "cpu-usage-grows",
        "memory-above-150mib",
        "memory-limit-512mib",
        "io-series-present",
        "pressure-series-present",
    ] {
        run.ms(check);
    }
}
