//! Drives minor upgrades through a dev-mode agent inside the bookworm VM guest, on its real MariaDB
//! and Redis units, real systemd and real apt, and prints `PASS <step> <ms>` / `FAIL <step> <ms>
//! <why>` lines; exits 1 if any step failed.
//!
//! `minor-vm-check --state-dir S`
//!
//! run.sh has started MariaDB (bookworm's 10.11.18, data in `S/data/maria-1`, a row `t.x = 42`, the
//! monitoring user `dbagent_monitor`) and Redis (data in `S/data/redis-1`, a key `minor-key`); the
//! image holds the newer bookworm-security packages of both in `/var/lib/dbagent/packages/bookworm-security`.
//! The checks, in order:
//! 1. refusals, with nothing installed and nothing restarted: a repository outside
//!    `upgrade.package_repository_root`, one with `..`, a group-writable copy, a link to a folder an
//!    engine user writes, a package of another engine, a newer MariaDB major;
//! 2. MariaDB 10.11.18 -> 10.11.19 from the repository: the server's own versions before and after,
//!    the packages' versions, mariadb-upgrade ran, the row written before read after;
//! 3. Redis restarted onto its newer package (the server says 7.0.15 both times; Debian's revision
//!    changes), the key kept;
//! 4. Redis with a broken directive in its config: the operation fails saying the unit's state, the
//!    journal's `Bad directive` and that no package was installed; the config is then repaired.

use anyhow::{Context, Result, anyhow, bail, ensure};
use dbagent_integration::guest::{arg, connect, report};
use dbagent_proto::v1 as pb;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const REPO: &str = "/var/lib/dbagent/packages/bookworm-security";
const REDIS_CONF: &str = "/etc/redis/redis.conf";

async fn register(
    channel: &Channel,
    state: &Path,
    id: &str,
    engine: pb::Engine,
    version: &str,
    unit: &str,
    user: &str,
) -> Result<()> {
    let spec = pb::InstanceSpec {
        engine: engine.into(),
        engine_version: version.into(),
        systemd_unit: unit.into(),
        data_dir: state.join("data").join(id).display().to_string(),
        os_user: user.into(),
        volume: Some(pb::VolumeSpec { device: String::new(), size_bytes: 64 << 20, filesystem: "ext4".into() }),
        log_sources: Vec::new(),
        plan: Some(pb::Plan {
            name: pb::PlanName::Starter.into(),
            cpu_millis: 1000,
            memory_bytes: 1 << 30,
            ..Default::default()
        }),
        maintenance_window: None,
        backup_policy: None,
    };
    let mut instances = pb::instances_client::InstancesClient::new(channel.clone());
    let req = pb::RegisterInstanceRequest { request_id: format!("register-{id}"), id: id.into(), spec: Some(spec) };
    instances.register_instance(req).await.with_context(|| format!("register {id}"))?;
    Ok(())
}

fn upgrade(id: &str, request_id: &str, target: &str, repository: &str, packages: &[String]) -> pb::StartUpgradeRequest {
    pb::StartUpgradeRequest {
        request_id: request_id.into(),
        instance_id: id.into(),
        target_version: target.into(),
        force: true,
        package_repository: repository.into(),
        packages: packages.to_vec(),
    }
}

async fn start(channel: &Channel, req: pb::StartUpgradeRequest) -> Result<pb::Operation, tonic::Status> {
    let mut upgrades = pb::upgrades_client::UpgradesClient::new(channel.clone());
    upgrades.start_upgrade(req).await.map(tonic::Response::into_inner)
}

/// The operation once finished (any end state).
async fn finished(channel: &Channel, id: &str) -> Result<pb::Operation> {
    let mut ops = pb::operations_client::OperationsClient::new(channel.clone());
    let until = Instant::now() + Duration::from_secs(600);
    loop {
        let op = ops.get_operation(pb::GetOperationRequest { id: id.into() }).await?.into_inner();
        use pb::OperationState as S;
        if matches!(S::try_from(op.state), Ok(S::Succeeded | S::Failed | S::Cancelled | S::Interrupted)) {
            return Ok(op);
        }
        ensure!(Instant::now() < until, "operation {id} not finished after 600 s: {op:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn result_json(op: &pb::Operation) -> Result<serde_json::Value> {
    ensure!(op.state == pb::OperationState::Succeeded as i32, "operation {} ended {}: {:?}", op.id, op.state, op.error);
    serde_json::from_str(&op.result_json).context("the operation's result")
}

fn sh(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd).args(args).output().with_context(|| format!("run {cmd}"))?;
    ensure!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn installed(pkg: &str) -> Result<String> {
    sh("dpkg-query", &["--showformat=${Version}", "--show", pkg])
}

fn main_pid(unit: &str) -> Result<String> {
    sh("systemctl", &["show", "-p", "MainPID", "--value", unit])
}

/// The installed packages built from `source` (all of them are upgraded together: their
/// dependencies name each other's exact version).
fn packages_of(source: &str) -> Result<Vec<String>> {
    let all = sh("dpkg-query", &["-W", "--showformat=${Package} ${source:Package} ${db:Status-Abbrev}\n"])?;
    Ok(all
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (p, s, st) = (f.next()?, f.next()?, f.next()?);
            (s == source && st == "ii").then(|| p.to_owned())
        })
        .collect())
}

async fn refusals(channel: &Channel) -> Result<()> {
    let maria = packages_of("mariadb")?;
    let before = (installed("mariadb-server")?, main_pid("mariadb.service")?);
    // A copy that its group may write, and a link to a folder an engine user writes.
    sh("cp", &["-a", REPO, "/var/lib/dbagent/packages/writable"])?;
    sh("chmod", &["0775", "/var/lib/dbagent/packages/writable"])?;
    sh("install", &["-d", "-o", "mysql", "-g", "mysql", "/var/lib/mysql-files/planted"])?;
    sh("ln", &["-sfn", "/var/lib/mysql-files/planted", "/var/lib/dbagent/packages/linked"])?;
    let cases: Vec<(pb::StartUpgradeRequest, tonic::Code, &str)> = vec![
        (upgrade("maria-1", "r-out", "10.11", "/tmp/repo", &maria), tonic::Code::InvalidArgument, "not beneath"),
        (
            upgrade("maria-1", "r-dots", "10.11", &format!("{REPO}/../../../../../tmp"), &maria),
            tonic::Code::InvalidArgument,
            "\"..\"",
        ),
        (
            upgrade("maria-1", "r-wr", "10.11", "/var/lib/dbagent/packages/writable", &maria),
            tonic::Code::FailedPrecondition,
            "writable by its group or others",
        ),
        (
            upgrade("maria-1", "r-link", "10.11", "/var/lib/dbagent/packages/linked", &maria),
            tonic::Code::FailedPrecondition,
            "links are not followed",
        ),
        (
            upgrade("maria-1", "r-foreign", "10.11", REPO, &["redis-server".into()]),
            tonic::Code::InvalidArgument,
            "not a package of mariadb",
        ),
        (upgrade("maria-1", "r-major", "11.4", "", &[]), tonic::Code::FailedPrecondition, "newer major"),
    ];
    for (req, code, said) in cases {
        let id = req.request_id.clone();
        match start(channel, req).await {
            Ok(op) => bail!("{id}: accepted as {}, expected {code:?} saying {said:?}", op.id),
            Err(s) => ensure!(
                s.code() == code && s.message().contains(said),
                "{id}: {:?} {:?}, expected {code:?} {said:?}",
                s.code(),
                s.message()
            ),
        }
    }
    let after = (installed("mariadb-server")?, main_pid("mariadb.service")?);
    ensure!(before == after, "something changed: {before:?} -> {after:?}");
    Ok(())
}

async fn mariadb(channel: &Channel) -> Result<String> {
    let packages = packages_of("mariadb")?;
    ensure!(!packages.is_empty(), "no installed package of the mariadb source");
    let op = start(channel, upgrade("maria-1", "minor-maria", "10.11.19", REPO, &packages)).await?;
    let r = result_json(&finished(channel, &op.id).await?)?;
    ensure!(r["version_before"] == "10.11.18", "version_before {}", r["version_before"]);
    ensure!(r["version_after"] == "10.11.19", "version_after {}", r["version_after"]);
    ensure!(r["mariadb_upgrade"]["ran"] == true, "mariadb-upgrade did not run: {}", r["mariadb_upgrade"]);
    let server = r["packages"]
        .as_array()
        .and_then(|l| l.iter().find(|p| p["name"] == "mariadb-server"))
        .ok_or_else(|| anyhow!("no mariadb-server in {}", r["packages"]))?;
    ensure!(server["before"].as_str().is_some_and(|v| v.contains("10.11.18")), "{server}");
    ensure!(server["after"].as_str().is_some_and(|v| v.contains("10.11.19")), "{server}");
    ensure!(installed("mariadb-server")?.contains("10.11.19"), "dpkg says {}", installed("mariadb-server")?);
    let row = sh("mariadb", &["-N", "-B", "-e", "SELECT v FROM t.x"])?;
    ensure!(row == "42", "the row written before reads {row:?} after");
    Ok(format!(
        "downtime_ms={} restarted_by_packages={} policy_rc_d={} mariadb_upgrade={}",
        r["downtime_ms"], r["restarted_by_packages"], r["install"]["policy_rc_d"], r["mariadb_upgrade"]["output"]
    ))
}

async fn redis(channel: &Channel) -> Result<String> {
    let packages = packages_of("redis")?;
    let before = installed("redis-server")?;
    let op = start(channel, upgrade("redis-1", "minor-redis", "7.0.15", REPO, &packages)).await?;
    let r = result_json(&finished(channel, &op.id).await?)?;
    ensure!(
        r["version_before"] == "7.0.15" && r["version_after"] == "7.0.15",
        "{} -> {}",
        r["version_before"],
        r["version_after"]
    );
    ensure!(r["main_pid_before"] != r["main_pid_after"], "not restarted: {r}");
    let after = installed("redis-server")?;
    ensure!(after != before, "redis-server is still {before}");
    ensure!(r["mariadb_upgrade"]["ran"] == false, "{r}");
    let value = sh("redis-cli", &["GET", "minor-key"])?;
    ensure!(value == "kept", "the key reads {value:?} after the restart");
    Ok(format!(
        "{before} -> {after}, downtime_ms={} restarted_by_packages={}",
        r["downtime_ms"], r["restarted_by_packages"]
    ))
}

async fn broken_redis(channel: &Channel) -> Result<()> {
    let conf = std::fs::read_to_string(REDIS_CONF)?;
    std::fs::write(REDIS_CONF, format!("{conf}\nthis-is-not-a-directive yes\n"))?;
    let outcome = async {
        let op = start(channel, upgrade("redis-1", "minor-redis-broken", "7.0", "", &[])).await?;
        let op = finished(channel, &op.id).await?;
        ensure!(op.state == pb::OperationState::Failed as i32, "ended {}, expected failed", op.state);
        let e = op.error.ok_or_else(|| anyhow!("no error"))?;
        ensure!(e.code == "UNAVAILABLE", "code {} ({})", e.code, e.message);
        for said in ["did not come back", "Bad directive", "No package was installed"] {
            ensure!(e.message.contains(said), "{said:?} not in {:?}", e.message);
        }
        println!("INFO broken-redis-error {}", e.message);
        Ok(())
    }
    .await;
    std::fs::write(REDIS_CONF, conf)?;
    sh("systemctl", &["restart", "redis-server.service"])?;
    outcome
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let state = PathBuf::from(arg("--state-dir").context("--state-dir is required")?);
    let channel = connect(&state).await?;
    let t = Instant::now();
    let setup = async {
        register(&channel, &state, "maria-1", pb::Engine::Mariadb, "10.11", "mariadb.service", "mysql").await?;
        register(&channel, &state, "redis-1", pb::Engine::Redis, "7.0", "redis-server.service", "redis").await
    };
    let mut ok = report("minor-register", t, setup.await).is_some();
    let t = Instant::now();
    ok &= report("minor-refusals-install-nothing", t, refusals(&channel).await).is_some();
    let t = Instant::now();
    match report("minor-mariadb-10.11.18-to-10.11.19", t, mariadb(&channel).await) {
        Some(info) => println!("INFO minor-mariadb {info}"),
        None => ok = false,
    }
    let t = Instant::now();
    match report("minor-redis-new-package-data-kept", t, redis(&channel).await) {
        Some(info) => println!("INFO minor-redis {info}"),
        None => ok = false,
    }
    let t = Instant::now();
    ok &= report("minor-broken-config-fails-with-reason", t, broken_redis(&channel).await).is_some();
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
