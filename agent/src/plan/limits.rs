//! The plan's limits as systemd unit properties: pure, so the numbers are tested without systemd.
//!
//! - CPU: `CPUQuotaPerSecUSec` = cpu_millis x 1000 (1000 millis = one CPU = 1 s of CPU per second;
//!   the cgroup's `cpu.max` reads `<quota> 100000` with systemd's 100 ms period), and a `CPUWeight`
//!   of cpu_millis / 10 (100, systemd's default, per CPU), so that under contention instances share
//!   the host's CPUs in proportion to their plans.
//! - Memory: `MemoryMax` = memory_bytes (the OOM killer's line), `MemoryHigh` = 90 % of it, in
//!   whole 4 KiB pages as the kernel keeps it (the kernel reclaims and throttles above it first,
//!   so a growing instance slows before it is killed).
//! - I/O: `IO{Read,Write}BandwidthMax` and `IO{Read,Write}IOPSMax` on the instance's dm-crypt
//!   mapping (see `io_device`); 0 in the plan = no limit (systemd's "max").

use std::path::{Path, PathBuf};

use crate::instances::Plan;
use crate::systemd::UnitProperty;

/// `MemoryHigh` as a share of `MemoryMax`, in percent.
pub const MEMORY_HIGH_PERCENT: u64 = 90;
const PAGE: u64 = 4096;

fn limit(v: u64) -> u64 {
    if v == 0 { u64::MAX } else { v }
}

/// The CPU and memory properties of `plan`.
pub fn cpu_memory_properties(plan: &Plan) -> Vec<UnitProperty> {
    let millis = u64::from(plan.cpu_millis);
    vec![
        UnitProperty::CpuQuotaPerSecUsec(millis * 1000),
        UnitProperty::CpuWeight((millis / 10).clamp(1, 10_000)),
        UnitProperty::MemoryMax(plan.memory_bytes),
        UnitProperty::MemoryHigh(plan.memory_bytes / 100 * MEMORY_HIGH_PERCENT / PAGE * PAGE),
    ]
}

/// The I/O properties of `plan` on `device`. All four are always set (0 = "max"), so a plan that
/// lifts a limit lifts it on the unit too.
pub fn io_properties(plan: &Plan, device: &Path) -> Vec<UnitProperty> {
    let d = || device.to_path_buf();
    vec![
        UnitProperty::IoReadBandwidthMax(d(), limit(plan.io_read_bps)),
        UnitProperty::IoWriteBandwidthMax(d(), limit(plan.io_write_bps)),
        UnitProperty::IoReadIopsMax(d(), limit(u64::from(plan.io_read_iops))),
        UnitProperty::IoWriteIopsMax(d(), limit(u64::from(plan.io_write_iops))),
    ]
}

/// Whether the plan limits I/O at all.
pub fn limits_io(plan: &Plan) -> bool {
    plan.io_read_bps != 0 || plan.io_write_bps != 0 || plan.io_read_iops != 0 || plan.io_write_iops != 0
}

/// The device the agent names for I/O limits: the instance's dm-crypt mapping, the device its
/// filesystem sits on and no one else's. systemd resolves a device-mapper device to the device
/// beneath it, so the cgroup's `io.max` carries the limit on the backing disk (the VM test shows it).
pub fn io_device(mapper_path: &Path) -> PathBuf {
    mapper_path.to_path_buf()
}
