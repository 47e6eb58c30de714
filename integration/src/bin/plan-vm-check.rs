//! Checks plan changes against a dev-mode agent inside the VM, through the gRPC API, on the
//! guest's real PostgreSQL unit and its real cgroup v2 files; prints `PASS <step> <ms>` /
//! `FAIL <step> <ms> <why>` lines and exits 1 if any step failed.
//!
//! `plan-vm-check setup --state-dir S --device D`: registers instance `pg-plan` on
//! `postgresql@15-main.service` (data dir `S/data/pg-plan`, a 512 MiB plan) and creates its
//! encrypted volume on `D`, mounted at the data dir. The script then creates the cluster there with
//! the settings a 512 MiB plan gives (shared_buffers 128MB, max_connections 64) and starts it.
//!
//! `plan-vm-check change --state-dir S`: (1) ChangePlan to 500 millis, 512 MiB and I/O limits: the
//! unit's `cpu.max`, `memory.max`, `memory.high` and `io.max` (on the volume's dm-crypt mapping)
//! show them, and the postmaster's PID is unchanged; (2) ChangePlan to 100 MiB, below the running
//! shared_buffers: refused with FAILED_PRECONDITION naming both numbers, and the cgroup files keep
//! their values; (3) ChangePlan to 1 GiB with force: limits at once, and the restart for
//! shared_buffers runs (new PID, `SHOW shared_buffers` = 256MB).

use anyhow::{Context, Result, anyhow, bail, ensure};
use dbagent_integration::guest::{arg, connect, report};
use dbagent_proto::v1 as pb;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const INSTANCE: &str = "pg-plan";
const UNIT: &str = "postgresql@15-main.service";
const MIB: u64 = 1 << 20;

fn plan(cpu_millis: u32, memory_bytes: u64) -> pb::Plan {
    pb::Plan { name: pb::PlanName::Starter.into(), cpu_millis, memory_bytes, ..Default::default() }
}

async fn wait_op(channel: &Channel, id: &str) -> Result<pb::Operation> {
    let mut ops = pb::operations_client::OperationsClient::new(channel.clone());
    let until = Instant::now() + Duration::from_secs(240);
    loop {
        let op = ops.get_operation(pb::GetOperationRequest { id: id.into() }).await?.into_inner();
        use pb::OperationState as S;
        match S::try_from(op.state) {
            Ok(S::Succeeded) => return Ok(op),
            Ok(S::Failed | S::Cancelled | S::Interrupted) => {
                bail!("operation {id} ended {:?}: {:?}", op.state, op.error)
            }
            _ if Instant::now() > until => bail!("operation {id} not finished after 240 s: {op:?}"),
            _ => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

async fn setup(channel: &Channel, state: &Path, device: &str) -> Result<()> {
    let data_dir = state.join("data").join(INSTANCE);
    let spec = pb::InstanceSpec {
        engine: pb::Engine::Postgresql.into(),
        engine_version: "15".into(),
        systemd_unit: UNIT.into(),
        data_dir: data_dir.display().to_string(),
        os_user: "postgres".into(),
        volume: Some(pb::VolumeSpec { device: device.into(), size_bytes: 256 * MIB, filesystem: "ext4".into() }),
        log_sources: vec![],
        plan: Some(plan(1000, 512 * MIB)),
        maintenance_window: None,
        backup_policy: None,
    };
    let mut instances = pb::instances_client::InstancesClient::new(channel.clone());
    instances
        .register_instance(pb::RegisterInstanceRequest {
            request_id: "plan-vm-register".into(),
            id: INSTANCE.into(),
            spec: Some(spec),
        })
        .await?;
    let mut volumes = pb::volumes_client::VolumesClient::new(channel.clone());
    let op = volumes
        .create_volume(pb::CreateVolumeRequest {
            request_id: "plan-vm-volume".into(),
            instance_id: INSTANCE.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    wait_op(channel, &op.id).await.map(drop)
}

/// The unit's cgroup folder, from its main process's `/proc/PID/cgroup` (template units live in
/// `system.slice/system-postgresql.slice/`).
fn cgroup_dir(pid: u32) -> Result<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::")).context("no cgroup v2 line")?;
    Ok(PathBuf::from("/sys/fs/cgroup").join(rel.trim_start_matches('/')))
}

fn main_pid() -> Result<u32> {
    let out = Command::new("systemctl").args(["show", "-p", "MainPID", "--value", UNIT]).output()?;
    let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
    ensure!(pid != 0, "{UNIT} has no main process");
    Ok(pid)
}

#[derive(Debug, PartialEq, Eq)]
struct Cgroup {
    cpu_max: String,
    memory_max: String,
    memory_high: String,
    io_max: String,
}

fn read_cgroup(dir: &Path) -> Result<Cgroup> {
    let read = |f: &str| -> Result<String> {
        Ok(std::fs::read_to_string(dir.join(f))
            .with_context(|| format!("read {}", dir.join(f).display()))?
            .trim()
            .to_owned())
    };
    Ok(Cgroup {
        cpu_max: read("cpu.max")?,
        memory_max: read("memory.max")?,
        memory_high: read("memory.high")?,
        io_max: read("io.max")?,
    })
}

/// MAJ:MIN as io.max names the device: systemd resolves the dm-crypt mapping the agent names to
/// the device beneath it (its single slave, the backing disk), seen in this test's first run.
fn mapping_dev() -> Result<String> {
    let meta = std::fs::metadata(format!("/dev/mapper/dbagent-{INSTANCE}"))?;
    let rdev = meta.rdev();
    let dm = format!("{}:{}", nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    let slaves: Vec<_> = std::fs::read_dir(format!("/sys/dev/block/{dm}/slaves"))?.collect::<Result<_, _>>()?;
    match slaves.as_slice() {
        [one] => Ok(std::fs::read_to_string(one.path().join("dev"))?.trim().to_owned()),
        _ => Ok(dm),
    }
}

fn pages(bytes: u64) -> String {
    (bytes / 4096 * 4096).to_string()
}

async fn change_plan(channel: &Channel, rid: &str, p: pb::Plan, force: bool) -> Result<pb::Operation, tonic::Status> {
    let mut upgrades = pb::upgrades_client::UpgradesClient::new(channel.clone());
    let req = pb::ChangePlanRequest { request_id: rid.into(), instance_id: INSTANCE.into(), plan: Some(p), force };
    upgrades.change_plan(req).await.map(tonic::Response::into_inner)
}

fn shared_buffers() -> Result<String> {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--", "psql", "-XAtq", "-c", "SHOW shared_buffers"])
        .output()?;
    ensure!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Step 1: limits at runtime, the server untouched.
async fn limits_applied(channel: &Channel) -> Result<Cgroup> {
    let pid = main_pid()?;
    let dir = cgroup_dir(pid)?;
    println!("INFO cgroup {} before: {:?}", dir.display(), read_cgroup(&dir).ok());
    let p = pb::Plan {
        io_read_bps: 10 * MIB,
        io_write_bps: 5 * MIB,
        io_read_iops: 1000,
        io_write_iops: 500,
        ..plan(500, 512 * MIB)
    };
    let op = change_plan(channel, "plan-vm-1", p, false).await?;
    let op = wait_op(channel, &op.id).await?;
    println!("INFO plan-vm-1 result {}", op.result_json);
    let cg = read_cgroup(&dir)?;
    println!("INFO cgroup after: {cg:?}");
    ensure!(cg.cpu_max == "50000 100000", "cpu.max is {:?}, not \"50000 100000\"", cg.cpu_max);
    ensure!(cg.memory_max == pages(512 * MIB), "memory.max is {}", cg.memory_max);
    ensure!(cg.memory_high == pages(512 * MIB / 100 * 90), "memory.high is {}", cg.memory_high);
    let dev = mapping_dev()?;
    let want = format!("{dev} rbps={} wbps={} riops=1000 wiops=500", 10 * MIB, 5 * MIB);
    ensure!(cg.io_max.lines().any(|l| l == want), "io.max is {:?}, not a line {want:?}", cg.io_max);
    let after = main_pid()?;
    ensure!(after == pid, "the postmaster's PID changed from {pid} to {after}: only limits changed");
    ensure!(op.result_json.contains("\"unchanged\""), "the result does not say the settings were unchanged");
    Ok(cg)
}

/// Step 2: below shared_buffers, refused with the numbers; nothing changed.
async fn below_buffers_refused(channel: &Channel, before: &Cgroup) -> Result<()> {
    let dir = cgroup_dir(main_pid()?)?;
    let e = match change_plan(channel, "plan-vm-2", plan(500, 100 * MIB), false).await {
        Ok(op) => bail!("a plan below shared_buffers was accepted: operation {}", op.id),
        Err(e) => e,
    };
    ensure!(e.code() == tonic::Code::FailedPrecondition, "code {:?}: {}", e.code(), e.message());
    let (requested, configured) = ((100 * MIB).to_string(), (128 * MIB).to_string());
    ensure!(
        e.message().contains(&requested) && e.message().contains(&configured) && e.message().contains("shared_buffers"),
        "the refusal does not name {requested} and shared_buffers {configured}: {}",
        e.message()
    );
    println!("INFO refused: {}", e.message());
    let now = read_cgroup(&dir)?;
    ensure!(&now == before, "the cgroup files changed after a refused plan: {now:?}");
    Ok(())
}

/// Step 3: forced, larger memory: the restart for shared_buffers runs at once.
async fn forced_restart(channel: &Channel) -> Result<()> {
    let pid = main_pid()?;
    let op = change_plan(channel, "plan-vm-3", plan(1000, 1024 * MIB), true).await?;
    let op = wait_op(channel, &op.id).await?;
    let result: serde_json::Value = serde_json::from_str(&op.result_json)?;
    let restart = result["restart"]["operation_id"].as_str().ok_or_else(|| anyhow!("no restart in {result}"))?;
    let restart = wait_op(channel, restart).await?;
    println!("INFO plan-vm-3 restart result {}", restart.result_json);
    let after = main_pid()?;
    ensure!(after != pid, "the PID is still {pid} after the restart");
    let sb = shared_buffers()?;
    ensure!(sb == "256MB", "shared_buffers is {sb} after the restart, not 256MB");
    let cg = read_cgroup(&cgroup_dir(after)?)?;
    ensure!(cg.memory_max == pages(1024 * MIB), "memory.max is {}", cg.memory_max);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let state = PathBuf::from(arg("--state-dir").context("--state-dir is required")?);
    let channel = connect(&state).await?;
    let phase = std::env::args().nth(1).unwrap_or_default();
    let ok = match phase.as_str() {
        "setup" => {
            let device = arg("--device").context("--device is required")?;
            report("register-and-create-volume", Instant::now(), setup(&channel, &state, &device).await).is_some()
        }
        "change" => {
            let cg = report("limits-in-cgroup-pid-unchanged", Instant::now(), limits_applied(&channel).await);
            let mut ok = cg.is_some();
            if let Some(cg) = cg {
                ok &= report(
                    "below-buffers-refused-files-kept",
                    Instant::now(),
                    below_buffers_refused(&channel, &cg).await,
                )
                .is_some();
            }
            ok &= report("forced-restart-applies-shared-buffers", Instant::now(), forced_restart(&channel).await)
                .is_some();
            ok
        }
        other => bail!("unknown phase {other:?}: setup or change"),
    };
    if !ok {
        println!("FAIL plan-vm-check-{phase} some checks failed");
        std::process::exit(1);
    }
    Ok(())
}
