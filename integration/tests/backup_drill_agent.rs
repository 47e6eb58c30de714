//! The restore drill through the real agent binary: DrillBackup over gRPC with mutual TLS and
//! `dbagentctl backups drill`, the role check, request validation, the last drill in ListBackups
//! and the drill metrics on the Prometheus endpoint.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use dbagent_integration::agent::LaunchContext;
use dbagent_integration::backup_config::BackupAgentConfig;
use dbagent_integration::ops::instance_spec;
use dbagent_integration::pki::{ServerPki, Validity};
use dbagent_integration::prometheus;
use dbagent_integration::servers::PgServer;
use dbagent_integration::{Agent, AgentBuilder, ClientIdentity};
use dbagent_proto::v1::backups_client::BackupsClient;
use dbagent_proto::v1::instances_client::InstancesClient;
use dbagent_proto::v1::operations_client::OperationsClient;
use dbagent_proto::v1::{
    BackupMethod, DrillBackupRequest, GetOperationRequest, ListBackupsRequest, Operation, OperationState,
    RegisterInstanceRequest, StartBackupRequest,
};
use tonic::Code;
use tonic::transport::Channel;

const INSTANCE: &str = "pg-drill";

/// A folder the engines' users can pass through, for the agent's `backup.drill_dir`.
fn drill_parent() -> tempfile::TempDir {
    let parent = tempfile::Builder::new().prefix("dbagent-drill-").tempdir_in("/tmp").expect("tempdir");
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod 0711");
    parent
}

async fn wait_finished(channel: &Channel, op: &Operation, agent: &Agent) -> Operation {
    let mut ops = OperationsClient::new(channel.clone());
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let now =
            ops.get_operation(GetOperationRequest { id: op.id.clone() }).await.expect("GetOperation").into_inner();
        let state = OperationState::try_from(now.state).unwrap_or(OperationState::Unspecified);
        if matches!(state, OperationState::Succeeded | OperationState::Failed | OperationState::Cancelled) {
            return now;
        }
        assert!(Instant::now() < deadline, "operation {} did not finish: {now:?}\n{}", op.id, agent.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn succeeded(op: &Operation, agent: &Agent) {
    assert_eq!(
        OperationState::try_from(op.state),
        Ok(OperationState::Succeeded),
        "{} failed: {:?}\n{}",
        op.kind,
        op.error,
        agent.log()
    );
}

/// GET /metrics from the agent's Prometheus endpoint (its address is in the agent's log).
fn scrape(agent: &Agent) -> String {
    prometheus::scrape(&prometheus::address(agent))
}

/// `dbagentctl --config <client.toml> --output json backups drill ...` as the orchestrator.
fn ctl_drill(agent: &Agent, pki: &ServerPki, args: &[&str]) -> (bool, String, String) {
    let dir = agent.work_dir().join("ctl");
    std::fs::create_dir_all(&dir).expect("create the client folder");
    let issued = pki.ca.client("orchestrator", Validity::Current);
    std::fs::write(dir.join("ca.crt"), pki.ca.cert_pem()).expect("write ca.crt");
    std::fs::write(dir.join("client.crt"), &issued.cert_pem).expect("write client.crt");
    std::fs::write(dir.join("client.key"), &issued.key_pem).expect("write client.key");
    let config = dir.join("client.toml");
    std::fs::write(
        &config,
        format!(
            "endpoint = \"https://{}\"\nca = \"ca.crt\"\ncert = \"client.crt\"\nkey = \"client.key\"\n",
            agent.addr()
        ),
    )
    .expect("write client.toml");
    let ctl = dbagent_integration::agent::agent_binary().with_file_name("dbagentctl");
    let out = Command::new(&ctl)
        .arg("--config")
        .arg(&config)
        .args(["--output", "json", "backups", "drill"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", ctl.display()));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_backup_through_the_agent_and_dbagentctl() {
    let pg = PgServer::init();
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.psql("shop", "CREATE TABLE orders AS SELECT i AS id, 'item-' || i AS item FROM generate_series(1, 4321) i");
    pg.psql("shop", "ANALYZE orders");

    let parent = drill_parent();
    let drill_dir: PathBuf = parent.path().join("drills");
    let pki = Rc::new(ServerPki::new());
    let for_config = pki.clone();
    let (pg_port, pg_root, dir) = (pg.port, pg.root.path().to_path_buf(), drill_dir.clone());
    let agent = AgentBuilder::config(move |ctx: &LaunchContext| {
        let roots = [ctx.work_dir.join("data"), pg_root.clone()];
        let toml = BackupAgentConfig {
            write_kek: true,
            data_roots: &roots,
            destinations: &["az1", "az2"],
            pg_port,
            pg_database: "shop",
            redis_port: None,
            // The destinations are folders on this host; this test is about the drill.
            accept_on_host_destinations: true,
            scheduler_interval_secs: None,
        }
        .toml(ctx, &for_config);
        let drill = format!("[backup]\ndrill_dir = \"{}\"\n", dir.display());
        toml.replacen("[backup]\n", &drill, 1)
    })
    .start();
    let orchestrator = ClientIdentity::issued(pki.ca.cert_pem(), &pki.ca.client("orchestrator", Validity::Current));
    let monitor = ClientIdentity::issued(pki.ca.cert_pem(), &pki.ca.client("monitor", Validity::Current));
    let channel = agent.channel(&orchestrator).await;
    let mut backups = BackupsClient::new(channel.clone());
    let mut spec = instance_spec(INSTANCE, &agent.work_dir().join("data"));
    spec.data_dir = pg.data.to_string_lossy().into_owned();
    InstancesClient::new(channel.clone())
        .register_instance(RegisterInstanceRequest {
            request_id: "reg-1".into(),
            id: INSTANCE.into(),
            spec: Some(spec),
        })
        .await
        .unwrap_or_else(|s| panic!("RegisterInstance: {s:?}\n{}", agent.log()));

    let drill = |request_id: &str, backup_id: &str| DrillBackupRequest {
        request_id: request_id.into(),
        instance_id: INSTANCE.into(),
        backup_id: backup_id.into(),
    };
    // No backup yet: NOT_FOUND saying so. Bad fields: INVALID_ARGUMENT naming them.
    let e = backups.drill_backup(drill("d-0", "")).await.expect_err("no backup to drill");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("no complete backup"), "{e:?}");
    let e = backups.drill_backup(drill("d-0", "../x")).await.expect_err("a bad backup id");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = backups.drill_backup(drill("", "")).await.expect_err("no request id");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = backups
        .drill_backup(DrillBackupRequest { instance_id: "nobody".into(), ..drill("d-0", "") })
        .await
        .expect_err("an unknown instance");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    let op = backups
        .start_backup(StartBackupRequest {
            request_id: "b-1".into(),
            instance_id: INSTANCE.into(),
            method: BackupMethod::Physical as i32,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|s| panic!("StartBackup: {s:?}\n{}", agent.log()))
        .into_inner();
    let done = wait_finished(&channel, &op, &agent).await;
    succeeded(&done, &agent);

    // The monitor reads only.
    let mut as_monitor = BackupsClient::new(agent.channel(&monitor).await);
    let e = as_monitor.drill_backup(drill("d-m", "")).await.expect_err("a monitor may not drill");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // Over gRPC.
    let op = backups.drill_backup(drill("d-1", "")).await.unwrap_or_else(|s| panic!("DrillBackup: {s:?}")).into_inner();
    assert_eq!(op.kind, "backup.drill");
    let done = wait_finished(&channel, &op, &agent).await;
    succeeded(&done, &agent);
    let result: serde_json::Value = serde_json::from_str(&done.result_json).unwrap();
    assert_eq!((result["table"].as_str(), result["rows"].as_u64()), (Some("public.orders"), Some(4321)), "{result}");
    assert_eq!(std::fs::read_dir(&drill_dir).map(|d| d.count()).unwrap_or(0), 0, "scratch folders left");

    let list = backups
        .list_backups(ListBackupsRequest { instance_id: INSTANCE.into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let last = list.last_drill.expect("ListBackups shows the last drill");
    assert!(last.ok && last.rows == 4321 && last.table == "public.orders" && last.database == "shop", "{last:?}");
    assert_eq!(last.operation_id, op.id);
    assert!(last.last_success.is_some() && last.finished.is_some(), "{last:?}");

    // Through dbagentctl, with the operation's progress conventions (--output json: the finished operation).
    let (ok, stdout, stderr) =
        ctl_drill(&agent, &pki, &[INSTANCE, "--backup", &last.backup_id, "--request-id", "d-ctl", "--watch"]);
    assert!(ok, "dbagentctl backups drill: {stderr}\n{}", agent.log());
    let printed: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(printed["kind"], "backup.drill", "{printed}");
    assert!(printed["state"].as_str().is_some_and(|s| s.to_lowercase().contains("succeeded")), "{printed}");
    assert_eq!(printed["result"]["rows"], 4321, "{printed}");
    let (ok, _, stderr) = ctl_drill(&agent, &pki, &[INSTANCE, "--backup", "nope", "--request-id", "d-bad"]);
    assert!(!ok && stderr.contains("backup_id"), "a bad backup id is refused naming the field: {stderr}");

    let metrics = scrape(&agent);
    let series = format!("dbagent_backup_drill_last_success_timestamp_seconds{{instance=\"{INSTANCE}\"}} ");
    assert!(metrics.contains(&series), "{metrics}");
    assert!(
        metrics.contains(&format!("dbagent_backup_drill_failures_total{{instance=\"{INSTANCE}\"}} 0\n")),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("dbagent_backup_drill_duration_seconds{{instance=\"{INSTANCE}\"}} ")),
        "{metrics}"
    );
}
