//! The health probes through the real agent binary against real PostgreSQL, MariaDB and Redis
//! servers (Debian packages): outages recorded in the downtime ledger as the probes see them.
//!
//! - PostgreSQL stopped for 12 s with probes every 2 s: the recorded unplanned downtime is within
//!   one probe interval of the real stop; the same stop while a disruptive StartSleep (forced)
//!   runs on the instance is planned; a SIGKILL of the agent in the middle of an outage leaves a
//!   closed interval and the agent's own gap as unknown.
//! - MariaDB frozen (SIGSTOP: the probe's deadline) and Redis stopped: each goes unhealthy and
//!   healthy again.
//! - The monitoring roles the probes log in as cannot read a customer's table.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use dbagent_integration::agent::{Agent, AgentBuilder, LaunchContext};
use dbagent_integration::config::{custom_config, toml_path};
use dbagent_integration::ops::{instance_spec, sleep_request, wait_for_state};
use dbagent_integration::pki::ServerPki;
use dbagent_integration::servers::{MariaServer, PG_BIN, PgServer, RedisServer, run_as};
use dbagent_integration::{ClientIdentity, Validity};
use dbagent_proto::v1::instances_client::InstancesClient;
use dbagent_proto::v1::operations_client::OperationsClient;
use dbagent_proto::v1::upgrades_client::UpgradesClient;
use dbagent_proto::v1::{
    Availability, CancelOperationRequest, Engine, GetAvailabilityRequest, OperationState, RegisterInstanceRequest,
};
use tonic::transport::Channel;

/// Seconds between probes in these tests (production default: 10).
const EVERY: u64 = 2;
const MONITOR: &str = "dbagent_monitor";

fn agent_with(sections: String) -> (Agent, ClientIdentity) {
    let pki = Rc::new(ServerPki::new());
    let for_config = pki.clone();
    let agent = AgentBuilder::config(move |ctx: &LaunchContext| {
        std::fs::create_dir_all(ctx.work_dir.join("data")).expect("create the data root");
        format!(
            "{base}\n[instances]\ndata_roots = [{data}]\n\n[health]\ninterval_secs = {EVERY}\ndeadline_secs = 1\n{sections}",
            base = custom_config(ctx, &for_config.write(&ctx.work_dir.join("pki")), &[], &["orchestrator"], &[]),
            data = toml_path(&ctx.work_dir.join("data")),
        )
    })
    .start();
    let identity = ClientIdentity::issued(pki.ca.cert_pem(), &pki.ca.client("orchestrator", Validity::Current));
    (agent, identity)
}

async fn register(channel: &Channel, agent: &Agent, id: &str, engine: Engine, os_user: &str) {
    let mut spec = instance_spec(id, &agent.work_dir().join("data"));
    spec.engine = engine as i32;
    spec.os_user = os_user.into();
    let req = RegisterInstanceRequest { request_id: format!("reg-{id}"), id: id.into(), spec: Some(spec) };
    InstancesClient::new(channel.clone()).register_instance(req).await.expect("RegisterInstance");
}

async fn availability(channel: &Channel, id: &str) -> Availability {
    let req = GetAvailabilityRequest { instance_id: id.into(), month: String::new() };
    UpgradesClient::new(channel.clone()).get_availability(req).await.expect("GetAvailability").into_inner()
}

/// Polls GetAvailability until the last probe says `healthy`; panics after `within`.
async fn wait_healthy(channel: &Channel, id: &str, healthy: bool, within: Duration) -> Availability {
    let deadline = Instant::now() + within;
    loop {
        let a = availability(channel, id).await;
        if a.healthy == healthy && a.last_probe.is_some() {
            return a;
        }
        assert!(Instant::now() < deadline, "{id} not healthy={healthy} within {within:?}: {a:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A root-only file with `secret` in it.
fn secret_file(dir: &Path, name: &str, secret: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{secret}\n")).expect("write the secret");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod 0600");
    path
}

/// The monitoring role as docs/operations.md creates it: a login with no privilege, admitted
/// over the socket by peer authentication, OS root mapped to it.
fn pg_monitor_role(pg: &PgServer) {
    pg.psql("postgres", &format!("CREATE ROLE {MONITOR} LOGIN"));
    pg.psql("postgres", "CREATE TABLE customer_secrets (card text); INSERT INTO customer_secrets VALUES ('4111')");
    let data = &pg.data;
    std::fs::write(data.join("pg_ident.conf"), format!("dbagent root {MONITOR}\n")).expect("write pg_ident.conf");
    let hba = std::fs::read_to_string(data.join("pg_hba.conf")).expect("read pg_hba.conf");
    std::fs::write(data.join("pg_hba.conf"), format!("local all {MONITOR} peer map=dbagent\n{hba}"))
        .expect("write pg_hba.conf");
    run_as("postgres", &format!("{PG_BIN}/pg_ctl"), &["-D", data.to_str().unwrap_or_default(), "reload"]);
    std::thread::sleep(Duration::from_millis(500));
}

/// psql as OS root over the socket: peer authentication maps root to the monitoring role only.
fn psql_as_root(pg: &PgServer, user: &str, sql: &str) -> std::process::Output {
    Command::new("psql")
        .args(["-h", pg.root.path().to_str().unwrap_or_default(), "-p", &pg.port.to_string(), "-U", user])
        .args(["-d", "postgres", "-XAtq", "-c", sql])
        .output()
        .expect("run psql")
}

#[tokio::test]
async fn postgresql_stops_are_recorded_within_one_probe_interval_planned_inside_an_ordered_operation_and_across_a_sigkill()
 {
    let pg = PgServer::init();
    pg_monitor_role(&pg);
    // What the monitoring role can and cannot do.
    let ok = psql_as_root(&pg, MONITOR, "SELECT 1 FROM pg_database LIMIT 1");
    assert!(ok.status.success(), "the probe's query: {}", String::from_utf8_lossy(&ok.stderr));
    let denied = psql_as_root(&pg, MONITOR, "SELECT card FROM customer_secrets");
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(!denied.status.success() && stderr.contains("permission denied"), "{stderr}");
    let superuser = psql_as_root(&pg, MONITOR, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user");
    assert_eq!(String::from_utf8_lossy(&superuser.stdout).trim(), "f");

    let sections = format!(
        "\n[backup.postgresql]\nhost = {sock}\nport = {port}\n",
        sock = toml_path(pg.root.path()),
        port = pg.port
    );
    let (mut agent, identity) = agent_with(sections);
    let channel = agent.channel(&identity).await;
    const ID: &str = "pg-p1";
    register(&channel, &agent, ID, Engine::Postgresql, "postgres").await;
    let first = wait_healthy(&channel, ID, true, Duration::from_secs(20)).await;
    assert_eq!((first.unplanned_downtime_seconds, first.planned_downtime_seconds), (0, 0), "{first:?}");

    // 1. Unplanned: stopped for about 12 s.
    let stop_begun = Instant::now();
    pg.stop();
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_secs(12)).await;
    let start_begun = Instant::now();
    pg.start();
    let started = Instant::now();
    let after = wait_healthy(&channel, ID, true, Duration::from_secs(20)).await;
    // The real outage lies between the shortest and the longest reading of the clocks around
    // pg_ctl; the recorded one (whole seconds) within one probe interval of it.
    let (shortest, longest) = ((start_begun - stopped).as_secs_f64(), (started - stop_begun).as_secs_f64());
    let recorded = after.unplanned_downtime_seconds as f64;
    assert!(
        recorded >= shortest - EVERY as f64 - 1.0 && recorded <= longest + EVERY as f64 + 1.0,
        "recorded {recorded} s for a stop of {shortest:.1}..{longest:.1} s: {after:?}"
    );
    assert_eq!(after.planned_downtime_seconds, 0, "{after:?}");
    println!("unplanned: recorded {recorded} s for a stop of {shortest:.1}..{longest:.1} s");
    let unplanned_before = after.unplanned_downtime_seconds;

    // 2. Planned: the same kind of stop while a disruptive (forced) operation runs on the instance.
    let mut ops = OperationsClient::new(channel.clone());
    let mut req = sleep_request("upgrade-stand-in", ID, Duration::from_secs(120));
    (req.disruptive, req.force) = (true, true);
    let op = ops.start_sleep(req).await.expect("StartSleep").into_inner();
    wait_for_state(&mut ops, &op.id, Duration::from_secs(10), |s| s == OperationState::Running).await;
    pg.stop();
    tokio::time::sleep(Duration::from_secs(8)).await;
    pg.start();
    let planned = wait_healthy(&channel, ID, true, Duration::from_secs(20)).await;
    ops.cancel_operation(CancelOperationRequest { id: op.id.clone() }).await.expect("CancelOperation");
    assert_eq!(planned.unplanned_downtime_seconds, unplanned_before, "nothing unplanned added: {planned:?}");
    let p = planned.planned_downtime_seconds;
    assert!((8 - EVERY - 1..=8 + EVERY + 3).contains(&p), "planned {p} s for about 8 s stopped: {planned:?}");
    println!("planned: recorded {p} s for a stop of about 8 s");

    // 3. SIGKILL of the agent in the middle of an outage, the server still down when it is back.
    pg.stop();
    wait_healthy(&channel, ID, false, Duration::from_secs(20)).await;
    // Past the next heartbeat (every 10 s), so that the evidence lies inside the outage.
    tokio::time::sleep(Duration::from_secs(11)).await;
    agent.kill9();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    agent.restart();
    let gap = killed.elapsed().as_secs();
    assert!(agent.log().contains("closed at the last heartbeat"), "{}", agent.log());
    let channel = agent.channel(&identity).await;
    wait_healthy(&channel, ID, false, Duration::from_secs(20)).await;
    pg.start();
    let end = wait_healthy(&channel, ID, true, Duration::from_secs(20)).await;
    // The agent's own gap (from its last heartbeat to its start) is unknown, not downtime: at
    // least the time it was dead, at most that plus one heartbeat period and the start.
    assert!(
        end.unknown_seconds >= gap.saturating_sub(1) && end.unknown_seconds <= gap + 10 + 10,
        "unknown {} s for {gap} s dead: {end:?}",
        end.unknown_seconds
    );
    // The outage before the kill (closed at the heartbeat) and after the start are unplanned.
    let added = end.unplanned_downtime_seconds - unplanned_before;
    assert!(added >= 10, "unplanned added {added} s: {end:?}");
    assert_eq!(end.planned_downtime_seconds, p, "{end:?}");
    println!("sigkill: {gap} s dead, unknown {} s, unplanned added {added} s", end.unknown_seconds);
}

#[tokio::test]
async fn mariadb_frozen_and_redis_stopped_go_unhealthy_and_healthy_again_as_their_monitoring_users() {
    let maria = MariaServer::start();
    let redis = RedisServer::start(None);
    let secrets = tempfile::tempdir().expect("tempdir");
    // MariaDB: a user with USAGE only, a password in a root-only file.
    maria.sql(&format!("CREATE USER {MONITOR}@localhost IDENTIFIED BY 'monitor-pw'"));
    maria.sql("CREATE DATABASE shop; CREATE TABLE shop.cards (n text); INSERT INTO shop.cards VALUES ('4111')");
    let maria_pw = secret_file(secrets.path(), "mariadb-monitor", "monitor-pw");
    let as_monitor = |sql: &str| {
        Command::new("mariadb")
            .arg(format!("--socket={}", maria.socket.display()))
            .args([&format!("-u{MONITOR}"), "-pmonitor-pw", "-N", "-B", "-e", sql])
            .output()
            .expect("run mariadb")
    };
    assert!(as_monitor("SELECT VERSION() FROM information_schema.SCHEMATA LIMIT 1").status.success());
    let denied = as_monitor("SELECT n FROM shop.cards");
    assert!(!denied.status.success(), "the monitoring user read a customer table");
    assert!(String::from_utf8_lossy(&denied.stderr).contains("denied"), "{denied:?}");
    // Redis: an ACL user allowed PING, DBSIZE and INFO, and no key.
    redis.cli(&["ACL", "SETUSER", MONITOR, "on", ">monitor-pw", "+ping", "+dbsize", "+info"]);
    redis.cli(&["SET", "card", "4111"]);
    let redis_pw = secret_file(secrets.path(), "redis-monitor", "monitor-pw");
    let get = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &redis.port.to_string(), "--user", MONITOR, "--pass", "monitor-pw"])
        .args(["GET", "card"])
        .output()
        .expect("run redis-cli");
    assert!(String::from_utf8_lossy(&get.stdout).contains("NOPERM"), "{get:?}");

    let sections = format!(
        "mariadb_password_file = {mpw}\nredis_user = \"{MONITOR}\"\nredis_password_file = {rpw}\n\n\
         [backup.mariadb]\nhost = {msock}\n\n[backup.redis]\nhost = \"127.0.0.1\"\nport = {rport}\n",
        mpw = toml_path(&maria_pw),
        rpw = toml_path(&redis_pw),
        msock = toml_path(&maria.socket),
        rport = redis.port,
    );
    let (agent, identity) = agent_with(sections);
    let channel = agent.channel(&identity).await;
    register(&channel, &agent, "maria-p1", Engine::Mariadb, "mysql").await;
    register(&channel, &agent, "redis-p1", Engine::Redis, "redis").await;
    wait_healthy(&channel, "maria-p1", true, Duration::from_secs(20)).await;
    wait_healthy(&channel, "redis-p1", true, Duration::from_secs(20)).await;

    // MariaDB frozen: it accepts nothing, the probe's 1 s deadline says down.
    let pid = std::fs::read_to_string(maria.root.path().join("mysqld.pid")).expect("mysqld.pid");
    let pid = nix::unistd::Pid::from_raw(pid.trim().parse().expect("a pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP mariadbd");
    let frozen = wait_healthy(&channel, "maria-p1", false, Duration::from_secs(20)).await;
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).expect("SIGCONT mariadbd");
    let thawed = wait_healthy(&channel, "maria-p1", true, Duration::from_secs(20)).await;
    assert!(thawed.unplanned_downtime_seconds >= 1, "{frozen:?} then {thawed:?}");

    // Redis stopped for real, then started again on the same port and config.
    let _ = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &redis.port.to_string(), "SHUTDOWN", "NOSAVE"])
        .output();
    wait_healthy(&channel, "redis-p1", false, Duration::from_secs(20)).await;
    let user = nix::unistd::User::from_name("redis").ok().flatten().expect("user redis");
    let mut again = Command::new("redis-server");
    std::os::unix::process::CommandExt::uid(&mut again, user.uid.as_raw());
    std::os::unix::process::CommandExt::gid(&mut again, user.gid.as_raw());
    let mut again = again
        .arg(redis.root.path().join("redis.conf"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start redis-server again");
    // The ACL user was in memory only: the operator's config would hold it; set it again.
    let deadline = Instant::now() + Duration::from_secs(20);
    while Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &redis.port.to_string(), "ACL", "SETUSER", MONITOR, "on", ">monitor-pw"])
        .args(["+ping", "+dbsize", "+info"])
        .output()
        .map(|o| !String::from_utf8_lossy(&o.stdout).contains("OK"))
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "redis-server did not come back");
        std::thread::sleep(Duration::from_millis(100));
    }
    let back = wait_healthy(&channel, "redis-p1", true, Duration::from_secs(20)).await;
    let _ = again.kill();
    let _ = again.wait();
    assert!(back.unplanned_downtime_seconds >= 1, "{back:?}");
    // The healthy MariaDB was not touched by Redis's outage.
    assert_eq!(availability(&channel, "maria-p1").await.unplanned_downtime_seconds, thawed.unplanned_downtime_seconds);
}
