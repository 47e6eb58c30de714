//! Drives PostgreSQL major upgrades through a dev-mode agent inside the pg-majors VM guest (Debian 13,
//! PostgreSQL 15 and 17) and prints `PASS <step> <ms>` / `FAIL <step> <ms> <why>` lines; exits 1 if
//! any step failed.
//!
//! `pg-upgrade-vm-check --state-dir S`
//!
//! run.sh has created three PostgreSQL 15 clusters, each with a table `items` of 1000 rows in the
//! database `shop`, data in `S/data/<id>/15/<id>`:
//! - `bad` (port 5434) has the extension `dbagent_only15`, installed for 15 only;
//! - `roll` (port 5435) is upgraded while this program kills pg_upgrade mid-way;
//! - `up` (port 5433) is upgraded for real;
//! - `clone` (port 5436, data on XFS with reflink=1) is upgraded for real in clone mode.
//!
//! The checks: an upgrade without a recent backup is refused naming the knob; invalid targets are
//! refused; `bad` is refused for its extension and keeps serving 15; `roll` rolls back after
//! pg_upgrade is killed and serves its rows on 15 again, the operation naming pg_upgrade; `up` ends
//! on 17 serving the rows written on 15, with the instance record, the downtime and the statistics
//! reported, and a retry of its request_id gives the same operation. Between the two, the agent is
//! killed (SIGKILL) during a second pg_upgrade of `roll` while an upgrade of `up` waits for its
//! window: after the restart `roll` serves on 15 again, its operation says what happened and what
//! the agent did, and the waiting upgrade still waits for the same window.

use anyhow::{Context, Result, anyhow, bail, ensure};
use dbagent_integration::guest::{arg, connect, report};
use dbagent_proto::v1 as pb;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const ROWS: &str = "1000";

fn data_dir(state: &Path, id: &str, major: u32) -> PathBuf {
    state.join("data").join(id).join(major.to_string()).join(id)
}

async fn register(channel: &Channel, state: &Path, id: &str) -> Result<()> {
    let spec = pb::InstanceSpec {
        engine: pb::Engine::Postgresql.into(),
        engine_version: "15".into(),
        systemd_unit: format!("postgresql@15-{id}.service"),
        data_dir: data_dir(state, id, 15).display().to_string(),
        os_user: "postgres".into(),
        volume: Some(pb::VolumeSpec { device: String::new(), size_bytes: 64 << 20, filesystem: "ext4".into() }),
        log_sources: Vec::new(),
        plan: Some(pb::Plan {
            name: pb::PlanName::Starter.into(),
            cpu_millis: 1000,
            memory_bytes: 1 << 30,
            disk_bytes: 0,
            ..Default::default()
        }),
        maintenance_window: None,
        backup_policy: None,
    };
    let mut instances = pb::instances_client::InstancesClient::new(channel.clone());
    instances
        .register_instance(pb::RegisterInstanceRequest {
            request_id: format!("register-{id}"),
            id: id.into(),
            spec: Some(spec),
        })
        .await?;
    Ok(())
}

async fn wait_op(channel: &Channel, id: &str, deadline: Duration) -> Result<pb::Operation> {
    let mut ops = pb::operations_client::OperationsClient::new(channel.clone());
    let until = Instant::now() + deadline;
    loop {
        let op = ops.get_operation(pb::GetOperationRequest { id: id.into() }).await?.into_inner();
        let state = pb::OperationState::try_from(op.state).unwrap_or(pb::OperationState::Unspecified);
        if !matches!(
            state,
            pb::OperationState::Queued | pb::OperationState::Running | pb::OperationState::WaitingForWindow
        ) {
            return Ok(op);
        }
        ensure!(Instant::now() < until, "operation {id} still {state:?} after {deadline:?}: {:?}", op.progress);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn op_error(op: &pb::Operation) -> String {
    op.error.as_ref().map(|e| format!("{}: {}", e.code, e.message)).unwrap_or_default()
}

async fn backup(channel: &Channel, id: &str) -> Result<()> {
    let mut backups = pb::backups_client::BackupsClient::new(channel.clone());
    let op = backups
        .start_backup(pb::StartBackupRequest {
            request_id: format!("backup-{id}"),
            instance_id: id.into(),
            method: pb::BackupMethod::Logical.into(),
            manual_keep_days: 0,
        })
        .await?
        .into_inner();
    let op = wait_op(channel, &op.id, Duration::from_secs(180)).await?;
    ensure!(op.state == pb::OperationState::Succeeded as i32, "backup of {id} did not succeed: {}", op_error(&op));
    Ok(())
}

fn upgrade_request(request_id: &str, id: &str, target: &str) -> pb::StartUpgradeRequest {
    pb::StartUpgradeRequest {
        request_id: request_id.into(),
        instance_id: id.into(),
        target_version: target.into(),
        force: true,
        ..Default::default()
    }
}

async fn start_upgrade(channel: &Channel, req: pb::StartUpgradeRequest) -> Result<pb::Operation, tonic::Status> {
    let mut upgrades = pb::upgrades_client::UpgradesClient::new(channel.clone());
    upgrades.start_upgrade(req).await.map(tonic::Response::into_inner)
}

/// `psql` as postgres on the local socket; the rows, `|`-separated fields.
fn psql(port: u16, db: &str, sql: &str) -> Result<String> {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--", "psql", "-XAtq", "-h", "/var/run/postgresql", "-p", &port.to_string(), "-d", db])
        .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .context("run psql")?;
    ensure!(out.status.success(), "psql on port {port}: {}", String::from_utf8_lossy(&out.stderr).trim());
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The server on `port` runs `major` and still has the rows written before.
fn serves_rows(port: u16, major: u32) -> Result<String> {
    let version: u32 = psql(port, "shop", "SHOW server_version_num")?.parse()?;
    ensure!(version / 10000 == major, "the server on port {port} runs {version}, not {major}");
    let rows = psql(port, "shop", "SELECT count(*) || '|' || sum(n) FROM items")?;
    ensure!(rows == format!("{ROWS}|500500"), "items on port {port}: {rows}, not {ROWS} rows summing to 500500");
    Ok(format!("port {port}: version {version}, items {rows}"))
}

fn unit_active(unit: &str) -> bool {
    Command::new("systemctl").args(["is-active", "--quiet", unit]).status().is_ok_and(|s| s.success())
}

/// Kills (SIGKILL) the first pg_upgrade that is not a `--check` and works on `needle`'s data.
async fn kill_pg_upgrade(needle: &str, deadline: Duration) -> Result<u32> {
    let pid = pg_upgrade_at_work(needle, deadline).await?;
    nix_kill(pid)?;
    Ok(pid)
}

/// The first pg_upgrade that is not a `--check` and works on `needle`'s data, once it has been at
/// work for 1.5 s (it has started the old server or is copying).
async fn pg_upgrade_at_work(needle: &str, deadline: Duration) -> Result<u32> {
    let until = Instant::now() + deadline;
    loop {
        for entry in std::fs::read_dir("/proc")?.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
            let args: Vec<String> =
                cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            let is_upgrade = args.first().is_some_and(|a| a.ends_with("/pg_upgrade"));
            if is_upgrade && !args.iter().any(|a| a == "--check") && args.iter().any(|a| a.contains(needle)) {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                ensure!(Path::new(&format!("/proc/{pid}")).exists(), "pg_upgrade {pid} ended within 1.5 s");
                return Ok(pid);
            }
        }
        ensure!(Instant::now() < until, "no pg_upgrade on {needle} appeared within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn nix_kill(pid: u32) -> Result<()> {
    let st = Command::new("kill").args(["-KILL", &pid.to_string()]).status()?;
    ensure!(st.success(), "kill -KILL {pid} failed");
    Ok(())
}

/// The dev-mode agent's unit: killed with SIGKILL (its main process; systemd then ends what is left
/// in its cgroup, pg_upgrade and its servers, as a power loss would) and started again with the
/// command run.sh used (`/usr/local/sbin/start-dbagent`).
async fn kill_and_restart_agent(state: &Path) -> Result<Channel> {
    let out = Command::new("systemctl").args(["show", "-p", "MainPID", "--value", "dbagent.service"]).output()?;
    let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().context("the agent's MainPID")?;
    ensure!(pid > 0, "dbagent.service has no main process");
    nix_kill(pid)?;
    let until = Instant::now() + Duration::from_secs(120);
    while unit_active("dbagent.service") || Path::new(&format!("/proc/{pid}")).exists() {
        ensure!(Instant::now() < until, "dbagent.service still active 120 s after SIGKILL");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = Command::new("systemctl").args(["reset-failed", "dbagent.service"]).status();
    let st = Command::new("/usr/local/sbin/start-dbagent").status()?;
    ensure!(st.success(), "starting the agent again failed");
    connect(state).await
}

/// Waits until the operation is in `want` (an interrupted upgrade stays `interrupted` until its
/// recovery has concluded it).
async fn wait_state(
    channel: &Channel,
    id: &str,
    want: pb::OperationState,
    deadline: Duration,
) -> Result<pb::Operation> {
    let mut ops = pb::operations_client::OperationsClient::new(channel.clone());
    let until = Instant::now() + deadline;
    loop {
        let op = ops.get_operation(pb::GetOperationRequest { id: id.into() }).await?.into_inner();
        if op.state == want as i32 {
            return Ok(op);
        }
        ensure!(
            Instant::now() < until,
            "operation {id} not {want:?} after {deadline:?}: state {} {}",
            op.state,
            op_error(&op)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Today's weekday in the guest's clock, Monday = 1 .. Sunday = 7 (the proto's numbering).
fn weekday_today() -> i32 {
    let days =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs() / 86_400;
    // 1970-01-01 was a Thursday.
    ((days + 3) % 7) as i32 + 1
}

fn result_json(op: &pb::Operation) -> Result<serde_json::Value> {
    serde_json::from_str(&op.result_json).with_context(|| format!("result_json {:?}", op.result_json))
}

#[tokio::main]
async fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let state = PathBuf::from(arg("--state-dir").context("--state-dir is required")?);
    let mut channel = connect(&state).await?;
    let mut ok = true;

    let t = Instant::now();
    let registered = async {
        for id in ["bad", "roll", "up", "clone"] {
            register(&channel, &state, id).await.with_context(|| format!("register {id}"))?;
        }
        Ok(())
    };
    ok &= report("register-instances", t, registered.await).is_some();

    // No backup yet: refused before anything runs, naming the knob; then the allowed path.
    let t = Instant::now();
    let refused = match start_upgrade(&channel, upgrade_request("no-backup", "up", "17")).await {
        Ok(op) => Err(anyhow!("accepted without a backup: operation {}", op.id)),
        Err(s) if s.code() == tonic::Code::FailedPrecondition && s.message().contains("max_backup_age_hours") => {
            println!("INFO refused without a backup: {}", s.message());
            Ok(())
        }
        Err(s) => Err(anyhow!("wrong refusal: {s:?}")),
    };
    ok &= report("refused-without-recent-backup", t, refused).is_some();

    let t = Instant::now();
    let backed_up = async {
        for id in ["bad", "roll", "up", "clone"] {
            backup(&channel, id).await?;
        }
        Ok(())
    };
    ok &= report("backups-taken", t, backed_up.await).is_some();

    let t = Instant::now();
    let invalid = async {
        for (target, code, says) in [
            ("17.2", tonic::Code::InvalidArgument, "minor"),
            // The instance's own major ("15") is a minor upgrade now (issue 14); an older one never.
            ("14", tonic::Code::FailedPrecondition, "downgrades are never offered"),
            ("16", tonic::Code::FailedPrecondition, "PostgreSQL 16 is not installed"),
        ] {
            match start_upgrade(&channel, upgrade_request(&format!("invalid-{target}"), "up", target)).await {
                Ok(op) => bail!("target {target} accepted: {}", op.id),
                Err(s) if s.code() == code && s.message().contains(says) => {}
                Err(s) => bail!("target {target}: {s:?}"),
            }
        }
        Ok(())
    };
    ok &= report("invalid-targets-refused", t, invalid.await).is_some();

    // An extension installed for 15 only: refused before any downtime, the server untouched.
    let t = Instant::now();
    let ext = async {
        let op = start_upgrade(&channel, upgrade_request("upgrade-bad", "bad", "17")).await?;
        let op = wait_op(&channel, &op.id, Duration::from_secs(300)).await?;
        ensure!(op.state == pb::OperationState::Failed as i32, "not failed: state {} {}", op.state, op_error(&op));
        let error = op_error(&op);
        ensure!(error.contains("dbagent_only15") && error.contains("FAILED_PRECONDITION"), "error: {error}");
        println!("INFO bad: {error}");
        ensure!(unit_active("postgresql@15-bad"), "postgresql@15-bad is not active after the refusal");
        ensure!(!Path::new("/etc/postgresql/17/bad").exists(), "a 17/bad cluster was left behind");
        println!("INFO {}", serves_rows(5434, 15)?);
        Ok(())
    };
    ok &= report("extension-missing-for-17-refused-old-serves", t, ext.await).is_some();

    // pg_upgrade killed mid-way: the old cluster is started again and serves its rows.
    let t = Instant::now();
    let roll = async {
        let op = start_upgrade(&channel, upgrade_request("upgrade-roll", "roll", "17")).await?;
        let pid = kill_pg_upgrade("/data/roll/15/roll", Duration::from_secs(300)).await?;
        println!("INFO killed pg_upgrade pid {pid}");
        let op = wait_op(&channel, &op.id, Duration::from_secs(300)).await?;
        ensure!(op.state == pb::OperationState::Failed as i32, "not failed: state {} {}", op.state, op_error(&op));
        let error = op_error(&op);
        ensure!(
            error.contains("pg_upgrade") && error.contains("old cluster was started again"),
            "error does not name pg_upgrade and the rollback: {error}"
        );
        println!("INFO roll: {error}");
        ensure!(unit_active("postgresql@15-roll"), "postgresql@15-roll is not active after the rollback");
        ensure!(!unit_active("postgresql@17-roll"), "postgresql@17-roll is active");
        ensure!(!Path::new("/etc/postgresql/17/roll").exists(), "the 17/roll cluster was left behind");
        println!("INFO {}", serves_rows(5435, 15)?);
        let mut instances = pb::instances_client::InstancesClient::new(channel.clone());
        let inst = instances.get_instance(pb::GetInstanceRequest { id: "roll".into() }).await?.into_inner();
        let spec = inst.spec.context("no spec")?;
        ensure!(
            spec.engine_version == "15" && spec.systemd_unit == "postgresql@15-roll.service",
            "record changed: {spec:?}"
        );
        Ok(())
    };
    ok &= report("killed-pg-upgrade-rolls-back-old-serves", t, roll.await).is_some();

    // Restart- and crash-proof: an upgrade of `up` waits for a window three days away; the agent
    // is killed (SIGKILL) while pg_upgrade runs on `roll`, and started again. At start it recovers
    // `roll` (the old cluster serves its rows again, the half-made 17 cluster is gone, the
    // operation says what happened) and re-arms the waiting upgrade for the same window.
    let t = Instant::now();
    let crash = async {
        let mut upgrades = pb::upgrades_client::UpgradesClient::new(channel.clone());
        let weekday = (weekday_today() + 2) % 7 + 1;
        let window = pb::MaintenanceWindow { weekday, start_minute_utc: 120, duration_minutes: 60 };
        upgrades
            .set_maintenance_window(pb::SetMaintenanceWindowRequest {
                request_id: "window-up".into(),
                instance_id: "up".into(),
                window: Some(window),
            })
            .await?;
        let mut waiting_req = upgrade_request("upgrade-up-waiting", "up", "17");
        waiting_req.force = false;
        let waiting = start_upgrade(&channel, waiting_req).await?;
        let waiting =
            wait_state(&channel, &waiting.id, pb::OperationState::WaitingForWindow, Duration::from_secs(60)).await?;
        let window_start = waiting.window_start.context("no window_start while waiting")?;
        println!("INFO up waits for the window starting {window_start:?}");

        let op = start_upgrade(&channel, upgrade_request("upgrade-roll-crash", "roll", "17")).await?;
        let pid = pg_upgrade_at_work("/data/roll/15/roll", Duration::from_secs(300)).await?;
        let killed = Instant::now();
        println!("INFO pg_upgrade pid {pid} ran; killing the agent");
        channel = kill_and_restart_agent(&state).await?;
        let op = wait_state(&channel, &op.id, pb::OperationState::Failed, Duration::from_secs(300)).await?;
        let back_ms = killed.elapsed().as_millis();
        let error = op_error(&op);
        println!("INFO roll after the crash: {error}");
        for says in [
            "the agent stopped during the upgrade",
            "pg_upgrade",
            "17/roll was dropped",
            "15/roll was started again and serves",
        ] {
            ensure!(error.contains(says), "the operation does not say {says:?}: {error}");
        }
        ensure!(unit_active("postgresql@15-roll"), "postgresql@15-roll is not active after the recovery");
        ensure!(!unit_active("postgresql@17-roll"), "postgresql@17-roll is active");
        ensure!(!Path::new("/etc/postgresql/17/roll").exists(), "the half-made 17/roll cluster was left behind");
        println!("INFO {}", serves_rows(5435, 15)?);
        println!("INFO crash_recovery_ms {back_ms} (from SIGKILL to the operation concluded, agent restart included)");
        let mut instances = pb::instances_client::InstancesClient::new(channel.clone());
        let inst = instances.get_instance(pb::GetInstanceRequest { id: "roll".into() }).await?.into_inner();
        let spec = inst.spec.context("no spec")?;
        ensure!(spec.engine_version == "15", "record changed: {spec:?}");

        let mut ops = pb::operations_client::OperationsClient::new(channel.clone());
        let after = ops.get_operation(pb::GetOperationRequest { id: waiting.id.clone() }).await?.into_inner();
        ensure!(
            after.state == pb::OperationState::WaitingForWindow as i32
                && after.window_start.as_ref() == Some(&window_start),
            "the waiting upgrade after the restart: state {} window_start {:?} (was {window_start:?}) {}",
            after.state,
            after.window_start,
            op_error(&after)
        );
        // Re-armed, so a cancel ends it (the real upgrade of `up` below runs forced).
        ops.cancel_operation(pb::CancelOperationRequest { id: waiting.id.clone() }).await?;
        wait_state(&channel, &waiting.id, pb::OperationState::Cancelled, Duration::from_secs(30)).await?;
        Ok(())
    };
    ok &= report("crash-during-pg-upgrade-recovered-waiting-upgrade-rearmed", t, crash.await).is_some();

    // The real upgrade.
    let t = Instant::now();
    let up = async {
        let req = upgrade_request("upgrade-up", "up", "17");
        let first = start_upgrade(&channel, req.clone()).await?;
        let op = wait_op(&channel, &first.id, Duration::from_secs(600)).await?;
        ensure!(op.state == pb::OperationState::Succeeded as i32, "state {} {}", op.state, op_error(&op));
        let result = result_json(&op)?;
        println!("INFO up result: {result}");
        println!("INFO {}", serves_rows(5433, 17)?);
        ensure!(unit_active("postgresql@17-up") && !unit_active("postgresql@15-up"), "units after the switch");
        let mut instances = pb::instances_client::InstancesClient::new(channel.clone());
        let inst = instances.get_instance(pb::GetInstanceRequest { id: "up".into() }).await?.into_inner();
        let spec = inst.spec.context("no spec")?;
        let new_dir = data_dir(&state, "up", 17).display().to_string();
        ensure!(
            spec.engine_version == "17" && spec.systemd_unit == "postgresql@17-up.service" && spec.data_dir == new_dir,
            "instance record after the upgrade: {spec:?}"
        );
        // Writes are accepted on 17.
        psql(5433, "shop", "INSERT INTO items(n) VALUES (0)")?;
        let downtime = result["downtime_ms"].as_u64().context("downtime_ms")?;
        ensure!(downtime > 0, "downtime_ms {downtime}");
        ensure!(result["mode"] == "copy", "mode {}", result["mode"]);
        ensure!(result["analyze"]["ok"] == true, "analyze {}", result["analyze"]);
        let stats = result["analyze"]["statistics_rows"].as_u64().unwrap_or_default();
        ensure!(stats > 0, "no statistics after vacuumdb --analyze-in-stages");
        ensure!(Path::new("/etc/postgresql/15/up").exists(), "the old cluster's configuration was not kept");
        let again = start_upgrade(&channel, req).await?;
        ensure!(again.id == first.id, "a retry of the request_id started {} instead of {}", again.id, first.id);
        println!(
            "INFO downtime_ms {downtime} pg_upgrade_ms {} analyze_ms {} statistics_rows {stats}",
            result["pg_upgrade_ms"], result["analyze"]["ms"]
        );
        println!("DOWNTIME_MS {downtime}");
        Ok(())
    };
    ok &= report("upgrade-15-to-17-serves-rows", t, up.await).is_some();

    // Clone mode: the data folder is on XFS with reflink, so pg_upgrade --clone shares the blocks.
    let t = Instant::now();
    let clone = async {
        let op = start_upgrade(&channel, upgrade_request("upgrade-clone", "clone", "17")).await?;
        let op = wait_op(&channel, &op.id, Duration::from_secs(600)).await?;
        ensure!(op.state == pb::OperationState::Succeeded as i32, "state {} {}", op.state, op_error(&op));
        let result = result_json(&op)?;
        ensure!(result["mode"] == "clone", "mode {} on XFS with reflink: {result}", result["mode"]);
        println!("INFO {}", serves_rows(5436, 17)?);
        psql(5436, "shop", "INSERT INTO items(n) VALUES (0)")?;
        println!(
            "INFO clone: downtime_ms {} pg_upgrade_ms {} size_bytes {}",
            result["downtime_ms"], result["pg_upgrade_ms"], result["size_bytes"]
        );
        Ok(())
    };
    ok &= report("upgrade-clone-mode-on-xfs-reflink", t, clone.await).is_some();

    if !ok {
        println!("FAIL pg-upgrade-vm-check some checks failed");
        std::process::exit(1);
    }
    println!("PASS pg-upgrade-vm-check 0");
    Ok(())
}
