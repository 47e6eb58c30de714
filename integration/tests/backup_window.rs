//! Scheduled backups stay out of an open maintenance window (`backup.avoid_maintenance_windows`,
//! on by default), through the real agent binary with a private PostgreSQL 15: the agent's clock is
//! moved (`testing.clock_offset_secs`) into the instance's window, after the daily backup minute.
//! Several scheduler passes start no backup; moving the window away (SetMaintenanceWindow) lets the
//! next pass start that day's scheduled backup, which completes.

use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dbagent_integration::agent::LaunchContext;
use dbagent_integration::backup_config::BackupAgentConfig;
use dbagent_integration::ops::instance_spec;
use dbagent_integration::pki::{ServerPki, Validity};
use dbagent_integration::servers::PgServer;
use dbagent_integration::{Agent, AgentBuilder, ClientIdentity};
use dbagent_proto::v1::instances_client::InstancesClient;
use dbagent_proto::v1::operations_client::OperationsClient;
use dbagent_proto::v1::upgrades_client::UpgradesClient;
use dbagent_proto::v1::{
    BackupPolicy, ListOperationsRequest, MaintenanceWindow, Operation, OperationState, RegisterInstanceRequest,
    SetMaintenanceWindowRequest, Weekday,
};
use tonic::transport::Channel;

const INSTANCE: &str = "pg-win";
/// Tuesday 2030-01-01 02:00 UTC, the window's start; the agent's clock reads 5 minutes later.
const WINDOW_START_UNIX: i64 = 1_893_463_200;
const INSIDE: i64 = 300;

fn unix_now() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs()).expect("fits")
}

fn agent(pki: &Rc<ServerPki>, pg: &PgServer, offset: i64) -> Agent {
    let (pki, pg_port, pg_root) = (pki.clone(), pg.port, pg.root.path().to_path_buf());
    AgentBuilder::config(move |ctx: &LaunchContext| {
        let roots = [ctx.work_dir.join("data"), pg_root.clone()];
        let toml = BackupAgentConfig {
            write_kek: true,
            data_roots: &roots,
            destinations: &["az1", "az2"],
            pg_port,
            pg_database: "shop",
            redis_port: None,
            accept_on_host_destinations: true,
            // A scheduler pass every second.
            scheduler_interval_secs: Some(1),
        }
        .toml(ctx, &pki);
        format!("{toml}\n[testing]\nclock_offset_secs = {offset}\n")
    })
    .start()
}

/// The scheduled backups the agent has started for the instance.
async fn scheduled_backups(channel: &Channel) -> Vec<Operation> {
    let list = OperationsClient::new(channel.clone())
        .list_operations(ListOperationsRequest { target: INSTANCE.into(), only_open: false, limit: 0 })
        .await
        .expect("ListOperations")
        .into_inner();
    list.operations.into_iter().filter(|op| op.request_id.starts_with("scheduled:")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_backups_wait_while_the_window_is_open_and_start_once_it_is_not() {
    let pg = PgServer::init();
    pg.psql("postgres", "CREATE DATABASE shop");
    let pki = Rc::new(ServerPki::new());
    let orchestrator = ClientIdentity::issued(pki.ca.cert_pem(), &pki.ca.client("orchestrator", Validity::Current));
    let offset = WINDOW_START_UNIX + INSIDE - unix_now();
    let agent = agent(&pki, &pg, offset);
    let channel = agent.channel(&orchestrator).await;

    // Window Tuesday 02:00 for 30 minutes; the daily backup at 01:00 is due (the clock reads 02:05).
    let window = MaintenanceWindow { weekday: Weekday::Tuesday as i32, start_minute_utc: 120, duration_minutes: 30 };
    let mut spec = instance_spec(INSTANCE, &agent.work_dir().join("data"));
    spec.data_dir = pg.data.to_string_lossy().into_owned();
    spec.maintenance_window = Some(window);
    spec.backup_policy =
        Some(BackupPolicy { daily_at_minute_utc: 60, keep_daily: 7, enabled: true, ..Default::default() });
    InstancesClient::new(channel.clone())
        .register_instance(RegisterInstanceRequest { request_id: "reg".into(), id: INSTANCE.into(), spec: Some(spec) })
        .await
        .unwrap_or_else(|s| panic!("RegisterInstance: {s:?}\n{}", agent.log()));

    // Five passes inside the window: no scheduled backup.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let held = scheduled_backups(&channel).await;
    assert!(held.is_empty(), "a scheduled backup started inside the open window: {held:?}\n{}", agent.log());

    // The window moves to Friday: the next pass starts the day's backup (the day it was due).
    let friday = MaintenanceWindow { weekday: Weekday::Friday as i32, ..window };
    UpgradesClient::new(channel.clone())
        .set_maintenance_window(SetMaintenanceWindowRequest {
            request_id: "w-friday".into(),
            instance_id: INSTANCE.into(),
            window: Some(friday),
        })
        .await
        .expect("SetMaintenanceWindow");
    let day = (WINDOW_START_UNIX + INSIDE) / 86_400;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ops = scheduled_backups(&channel).await;
        if let Some(op) = ops.first() {
            assert_eq!(op.request_id, format!("scheduled:{INSTANCE}:{day}"), "{ops:?}");
            assert_eq!(ops.len(), 1, "one scheduled backup for the day: {ops:?}");
            match OperationState::try_from(op.state) {
                Ok(OperationState::Succeeded) => break,
                Ok(OperationState::Failed | OperationState::Cancelled) => {
                    panic!("the scheduled backup failed: {:?}\n{}", op.error, agent.log())
                }
                _ => {}
            }
        }
        assert!(Instant::now() < deadline, "no scheduled backup completed after the window moved\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
