//! Retention, zones and backup health through the real agent binary (production mode, not --dev)
//! with a private PostgreSQL 15 and three `dir` destinations on this host:
//! * without `backup.accept_on_host_destinations` StartBackup is FAILED_PRECONDITION naming the
//!   zone rule and nothing is written, and GetStatus shows 0 of 3 destinations off the host;
//! * with it, a manual backup is kept its requested days (its manifest's expiry), the Prometheus
//!   endpoint shows the last good backup's age and each destination reachable; a destination made
//!   unreachable shows 0 and counts a failed check; a new backup resets the age; GetStatus shows
//!   the copies of the newest backup; DeleteBackup of the last good copy needs the explicit flag.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use dbagent_integration::agent::LaunchContext;
use dbagent_integration::backup_config::BackupAgentConfig;
use dbagent_integration::ops::instance_spec;
use dbagent_integration::pki::{ServerPki, Validity};
use dbagent_integration::prometheus::{address as prometheus_addr, scrape, value};
use dbagent_integration::servers::PgServer;
use dbagent_integration::{Agent, AgentBuilder, ClientIdentity};
use dbagent_proto::v1::agent_client::AgentClient;
use dbagent_proto::v1::backups_client::BackupsClient;
use dbagent_proto::v1::instances_client::InstancesClient;
use dbagent_proto::v1::operations_client::OperationsClient;
use dbagent_proto::v1::{
    BackupMethod, BackupRedundancy, DeleteBackupRequest, GetBackupRequest, GetOperationRequest, GetStatusRequest,
    Operation, OperationState, RegisterInstanceRequest, StartBackupRequest,
};
use tonic::transport::Channel;

const INSTANCE: &str = "pg-keep";
const TIMEOUT: Duration = Duration::from_secs(120);

fn agent(pki: &Rc<ServerPki>, pg: &PgServer, accept: bool) -> Agent {
    let (pki, pg_port, pg_root) = (pki.clone(), pg.port, pg.root.path().to_path_buf());
    AgentBuilder::config(move |ctx: &LaunchContext| {
        let roots = [ctx.work_dir.join("data"), pg_root.clone()];
        BackupAgentConfig {
            write_kek: true,
            data_roots: &roots,
            destinations: &["az1", "az2", "az3"],
            pg_port,
            pg_database: "shop",
            redis_port: None,
            accept_on_host_destinations: accept,
            // A scheduler pass (listing, retention, health) every second.
            scheduler_interval_secs: Some(1),
        }
        .toml(ctx, &pki)
        // And a metrics sample every second.
        .replace("[metrics]\n", "[metrics]\ninterval_secs = 1\n")
    })
    .start()
}

async fn register(channel: &Channel, agent: &Agent, data_dir: &Path) {
    let mut spec = instance_spec(INSTANCE, &agent.work_dir().join("data"));
    spec.data_dir = data_dir.to_string_lossy().into_owned();
    // No scheduled backups in this test: only the retention pass and the health it records.
    if let Some(p) = spec.backup_policy.as_mut() {
        p.enabled = false;
    }
    InstancesClient::new(channel.clone())
        .register_instance(RegisterInstanceRequest {
            request_id: "reg-1".into(),
            id: INSTANCE.into(),
            spec: Some(spec),
        })
        .await
        .unwrap_or_else(|s| panic!("RegisterInstance: {s:?}\n{}", agent.log()));
}

fn start(request_id: &str, keep_days: u32) -> StartBackupRequest {
    StartBackupRequest {
        request_id: request_id.into(),
        instance_id: INSTANCE.into(),
        method: BackupMethod::Logical as i32,
        manual_keep_days: keep_days,
    }
}

/// Polls GetOperation until `op` finishes; asserts it SUCCEEDED.
async fn finish(channel: &Channel, op: &Operation, agent: &Agent) -> Operation {
    let mut ops = OperationsClient::new(channel.clone());
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let now = ops.get_operation(GetOperationRequest { id: op.id.clone() }).await.expect("GetOperation");
        let now = now.into_inner();
        match OperationState::try_from(now.state) {
            Ok(OperationState::Succeeded) => return now,
            Ok(OperationState::Failed | OperationState::Cancelled) => {
                panic!("{} failed: {:?}\n{}", now.kind, now.error, agent.log())
            }
            _ => {}
        }
        assert!(Instant::now() < deadline, "operation {} did not finish\n{}", op.id, agent.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Takes a manual backup kept `keep_days` (0: the default) and returns its id.
async fn backup(channel: &Channel, agent: &Agent, request_id: &str, keep_days: u32) -> String {
    let op = BackupsClient::new(channel.clone())
        .start_backup(start(request_id, keep_days))
        .await
        .unwrap_or_else(|s| panic!("StartBackup {request_id}: {s:?}\n{}", agent.log()))
        .into_inner();
    let done = finish(channel, &op, agent).await;
    let result: serde_json::Value = serde_json::from_str(&done.result_json).expect("result JSON");
    result["backup_id"].as_str().expect("backup_id").to_owned()
}

/// Scrapes until `check` holds for a scrape (then returns it) or the time is up.
async fn scrape_until(agent: &Agent, what: &str, check: impl Fn(&str) -> bool) -> String {
    let addr = prometheus_addr(agent);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = scrape(&addr);
        if check(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{what}: not seen within 30 s; last scrape:\n{text}\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn redundancy(channel: &Channel) -> BackupRedundancy {
    let status = AgentClient::new(channel.clone()).get_status(GetStatusRequest {}).await.expect("GetStatus");
    let status = status.into_inner();
    status.backup_redundancy.into_iter().find(|r| r.instance_id == INSTANCE).expect("the instance's redundancy")
}

const AGE: &str = "dbagent_instance_backup_last_good_age_seconds{instance=\"pg-keep\"}";
fn reachable(az: &str) -> String {
    format!("dbagent_node_backup_destination_reachable{{destination=\"{az}\"}}")
}
fn failed_checks(az: &str) -> String {
    format!("dbagent_node_backup_destination_failed_checks_total{{destination=\"{az}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_agent_refuses_on_host_zones_unless_accepted_and_its_metrics_follow_the_backups() {
    let pg = PgServer::init();
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.psql("shop", "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 1000)");
    let pki = Rc::new(ServerPki::new());
    let orchestrator = ClientIdentity::issued(pki.ca.cert_pem(), &pki.ca.client("orchestrator", Validity::Current));
    let monitor = ClientIdentity::issued(pki.ca.cert_pem(), &pki.ca.client("monitor", Validity::Current));

    // 1. Production config, three folders on this host, nothing accepted: refused, nothing written.
    {
        let strict = agent(&pki, &pg, false);
        let channel = strict.channel(&orchestrator).await;
        register(&channel, &strict, &pg.data).await;
        let e = BackupsClient::new(channel.clone()).start_backup(start("refused", 0)).await.expect_err("refused");
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
        for part in ["0 of 3 destinations are off this host's disks", "az1 on this host", "accept_on_host_destinations"]
        {
            assert!(e.message().contains(part), "{part:?} missing in {}", e.message());
        }
        let dest: PathBuf = strict.work_dir().join("dest");
        for az in ["az1", "az2", "az3"] {
            assert!(!dest.join(az).join(INSTANCE).exists(), "{az} got something");
        }
        let r = redundancy(&strict.channel(&monitor).await).await;
        assert_eq!((r.destinations, r.off_host_destinations, r.on_host_accepted), (3, 0, false), "{r:?}");
    }

    // 2. The same, accepted in so many words: backups are taken and watched.
    let agent = agent(&pki, &pg, true);
    let channel = agent.channel(&orchestrator).await;
    register(&channel, &agent, &pg.data).await;
    let mut backups = BackupsClient::new(channel.clone());
    let first = backup(&channel, &agent, "b-1", 2).await;
    let got = backups
        .get_backup(GetBackupRequest { instance_id: INSTANCE.into(), backup_id: first.clone() })
        .await
        .expect("GetBackup")
        .into_inner();
    let (created, expires) = (got.created.unwrap(), got.expires.expect("a manual backup has an expiry"));
    assert_eq!(expires.seconds - created.seconds, 2 * 86_400, "kept the two days asked for");

    let text = scrape_until(&agent, "age and reachability after the first backup", |t| {
        value(t, AGE).is_some() && ["az1", "az2", "az3"].iter().all(|az| value(t, &reachable(az)) == Some(1.0))
    })
    .await;
    assert!(value(&text, AGE).unwrap() < 60.0, "{text}");
    assert_eq!(value(&text, "dbagent_instance_backups_degraded{instance=\"pg-keep\"}"), Some(0.0));
    assert_eq!(value(&text, &failed_checks("az2")), Some(0.0));
    let r = redundancy(&agent.channel(&monitor).await).await;
    assert_eq!((r.destinations, r.off_host_destinations, r.on_host_accepted), (3, 0, true), "{r:?}");
    assert_eq!((r.newest_backup_id.as_str(), r.newest_backup_copies), (first.as_str(), 3), "{r:?}");
    assert!(r.last_good_backup.is_some() && r.checked.is_some(), "{r:?}");

    // az2 made unreachable: its folder replaced by a file.
    let az2 = agent.work_dir().join("dest/az2");
    let away = agent.work_dir().join("az2-away");
    std::fs::rename(&az2, &away).expect("move az2 away");
    std::fs::write(&az2, b"not a folder").expect("plant a file");
    let text = scrape_until(&agent, "az2 unreachable", |t| {
        value(t, &reachable("az2")) == Some(0.0) && value(t, &failed_checks("az2")).is_some_and(|n| n >= 1.0)
    })
    .await;
    assert_eq!(value(&text, &reachable("az1")), Some(1.0), "{text}");
    assert_eq!(value(&text, "dbagent_instance_backups_degraded{instance=\"pg-keep\"}"), Some(1.0), "{text}");
    std::fs::remove_file(&az2).expect("remove the file");
    std::fs::rename(&away, &az2).expect("move az2 back");
    let text = scrape_until(&agent, "az2 reachable again", |t| value(t, &reachable("az2")) == Some(1.0)).await;
    let age_before = scrape_until(&agent, "the age grows", |t| value(t, AGE).is_some_and(|a| a >= 3.0)).await;
    let age_before = value(&age_before, AGE).unwrap();
    assert!(value(&text, &failed_checks("az2")).unwrap() >= 1.0, "the count of failed checks stays: {text}");

    // A new backup: the age starts again.
    let second = backup(&channel, &agent, "b-2", 0).await;
    scrape_until(&agent, "the age reset by the new backup", |t| value(t, AGE).is_some_and(|a| a < age_before)).await;
    let r = redundancy(&agent.channel(&monitor).await).await;
    assert_eq!(r.newest_backup_id, second, "{r:?}");

    // The newest backup is the last good copy: deleting it must be meant; the older one goes freely.
    let delete = |id: &str, request: &str, flag: bool| DeleteBackupRequest {
        request_id: request.into(),
        instance_id: INSTANCE.into(),
        backup_id: id.into(),
        delete_last_good_copy: flag,
    };
    let e = backups.delete_backup(delete(&second, "d-1", false)).await.expect_err("the last good copy");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("last good copy"), "{}", e.message());
    let op = backups.delete_backup(delete(&first, "d-2", false)).await.expect("delete the older").into_inner();
    finish(&channel, &op, &agent).await;
    let op = backups.delete_backup(delete(&second, "d-3", true)).await.expect("delete, meant").into_inner();
    finish(&channel, &op, &agent).await;
    assert!(!agent.work_dir().join("dest/az1").join(INSTANCE).join(&second).exists());
}
