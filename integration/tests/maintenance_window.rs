//! Maintenance windows through the real agent binary: SetMaintenanceWindow stored with the
//! instance, and a disruptive operation (the test `sleep` with `disruptive`) that waits for the
//! window, survives an agent restart while waiting, and starts by itself when the window opens.
//! The agent reads windows against `testing.clock_offset_secs`, so "now" is put 40 s before a
//! window instead of waiting for one.

use dbagent_integration::agent::{AgentBuilder, LaunchContext};
use dbagent_integration::config::{custom_config, toml_path};
use dbagent_integration::ops::{instance_spec, sleep_request, state_of, wait_for_state};
use dbagent_integration::pki::{PkiFiles, ServerPki};
use dbagent_integration::{ClientIdentity, Validity};
use dbagent_proto::v1::instances_client::InstancesClient;
use dbagent_proto::v1::operations_client::OperationsClient;
use dbagent_proto::v1::upgrades_client::UpgradesClient;
use dbagent_proto::v1::{
    GetInstanceRequest, GetOperationRequest, MaintenanceWindow, OperationState, RegisterInstanceRequest,
    SetMaintenanceWindowRequest, StartUpgradeRequest, Weekday,
};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tonic::Code;

const INSTANCE: &str = "pg-w1";
/// A Tuesday (2030-01-01), 02:00 UTC: the window's start in the agent's moved clock.
const WINDOW_START_UNIX: i64 = 1_893_463_200;
/// How long before the window the agent's clock is put at start: room for a start, three calls
/// and a restart on a loaded machine.
const LEAD: i64 = 40;
const WAIT: Duration = Duration::from_secs(60);

/// The suite's usual agent config, with a data root and the agent's clock moved by `offset`.
fn config(ctx: &LaunchContext, pki: &PkiFiles, offset: i64) -> String {
    format!(
        "{base}\n[instances]\ndata_roots = [{data}]\n\n[testing]\nclock_offset_secs = {offset}\n",
        base = custom_config(ctx, pki, &[], &["orchestrator"], &[]),
        data = toml_path(&ctx.work_dir.join("data")),
    )
}

fn unix_now() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs()).expect("fits")
}

fn seconds(ts: Option<&prost_types::Timestamp>) -> i64 {
    ts.expect("timestamp set").seconds
}

#[tokio::test]
async fn a_disruptive_operation_waits_for_the_window_survives_a_restart_and_starts_at_the_window() {
    // The agent's clock = the host's + offset: now it reads LEAD seconds before the window.
    let offset = WINDOW_START_UNIX - LEAD - unix_now();
    let pki = Rc::new(ServerPki::new());
    let for_config = pki.clone();
    let mut agent = AgentBuilder::config(move |ctx: &LaunchContext| {
        std::fs::create_dir_all(ctx.work_dir.join("data")).expect("create the data root");
        config(ctx, &for_config.write(&ctx.work_dir.join("pki")), offset)
    })
    .start();
    let identity = ClientIdentity::issued(pki.ca.cert_pem(), &pki.ca.client("orchestrator", Validity::Current));
    let channel = agent.channel(&identity).await;
    let spec = instance_spec(INSTANCE, &agent.work_dir().join("data"));
    let req = RegisterInstanceRequest { request_id: "reg".into(), id: INSTANCE.into(), spec: Some(spec) };
    InstancesClient::new(channel.clone()).register_instance(req).await.expect("RegisterInstance");

    // SetMaintenanceWindow: validated, stored with the instance, replayed by request_id.
    let mut upgrades = UpgradesClient::new(channel.clone());
    let window = MaintenanceWindow { weekday: Weekday::Tuesday as i32, start_minute_utc: 120, duration_minutes: 30 };
    let set = |request_id: &str, window: MaintenanceWindow| SetMaintenanceWindowRequest {
        request_id: request_id.into(),
        instance_id: INSTANCE.into(),
        window: Some(window),
    };
    let short = MaintenanceWindow { duration_minutes: 10, ..window };
    let err = upgrades.set_maintenance_window(set("w-bad", short)).await.expect_err("a 10-minute window");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("window.duration_minutes"), "names the field: {err:?}");
    let stored = upgrades.set_maintenance_window(set("w-1", window)).await.expect("SetMaintenanceWindow").into_inner();
    assert_eq!(stored, window);
    let again = upgrades.set_maintenance_window(set("w-1", window)).await.expect("the same request again");
    assert_eq!(again.into_inner(), window);
    let other = MaintenanceWindow { start_minute_utc: 180, ..window };
    let err = upgrades.set_maintenance_window(set("w-1", other)).await.expect_err("request_id reused");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    let err = upgrades
        .start_upgrade(StartUpgradeRequest {
            request_id: "up-1".into(),
            instance_id: INSTANCE.into(),
            target_version: "17".into(),
            force: false,
            ..Default::default()
        })
        .await
        .expect_err("this host has no PostgreSQL 17 binaries or the instance no recent backup");
    // StartUpgrade is served (PostgreSQL majors): its preconditions are checked at submission,
    // before any wait for the window, and a refusal says which one failed.
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("is not installed") || err.message().contains("max_backup_age_hours"),
        "names the missing precondition: {err:?}"
    );

    // Forced, disruptive work runs at once, outside the window.
    let mut ops = OperationsClient::new(channel.clone());
    let mut forced = sleep_request("forced", INSTANCE, Duration::from_millis(100));
    forced.disruptive = true;
    forced.force = true;
    let forced = ops.start_sleep(forced).await.expect("forced StartSleep").into_inner();
    let forced = wait_for_state(&mut ops, &forced.id, WAIT, |s| s == OperationState::Succeeded).await;
    assert!(
        unix_now() + offset < WINDOW_START_UNIX,
        "the forced operation must finish before the window to show it did not wait; the machine is too slow"
    );
    assert_eq!(forced.window_end, None, "forced outside a window: {forced:?}");

    // Unforced, it waits for the window, visibly.
    let mut waiting = sleep_request("gated", INSTANCE, Duration::from_millis(500));
    waiting.disruptive = true;
    let op = ops.start_sleep(waiting).await.expect("disruptive StartSleep").into_inner();
    let op = wait_for_state(&mut ops, &op.id, WAIT, |s| s == OperationState::WaitingForWindow).await;
    assert_eq!(seconds(op.window_start.as_ref()), WINDOW_START_UNIX, "{op:?}");
    assert!(op.started.is_none(), "{op:?}");

    // The wait survives a restart: still waiting, for the same window, with the window stored.
    agent.restart();
    let channel = agent.channel(&identity).await;
    let mut ops = OperationsClient::new(channel.clone());
    let after = ops.get_operation(GetOperationRequest { id: op.id.clone() }).await.expect("GetOperation").into_inner();
    assert!(
        unix_now() + offset < WINDOW_START_UNIX,
        "the restart must end before the window to show the wait survived it; the machine is too slow"
    );
    assert_eq!(state_of(&after), OperationState::WaitingForWindow, "{after:?}\n{}", agent.log());
    assert_eq!(seconds(after.window_start.as_ref()), WINDOW_START_UNIX);
    let instance = InstancesClient::new(channel.clone())
        .get_instance(GetInstanceRequest { id: INSTANCE.into() })
        .await
        .expect("GetInstance")
        .into_inner();
    assert_eq!(instance.spec.and_then(|s| s.maintenance_window), Some(window), "the window survives the restart");

    // It starts by itself when the window opens, and not before.
    let done = wait_for_state(&mut ops, &op.id, Duration::from_secs(LEAD as u64) + WAIT, |s| {
        s == OperationState::Succeeded || s == OperationState::Failed || s == OperationState::Interrupted
    })
    .await;
    assert_eq!(state_of(&done), OperationState::Succeeded, "{done:?}\n{}", agent.log());
    let started = seconds(done.started.as_ref()) + offset;
    assert!(started >= WINDOW_START_UNIX, "started {} s before the window", WINDOW_START_UNIX - started);
    assert!(started < WINDOW_START_UNIX + 60, "started {} s after the window opened", started - WINDOW_START_UNIX);
    assert_eq!(seconds(done.window_end.as_ref()), WINDOW_START_UNIX + 30 * 60, "{done:?}");
    assert!(!done.overrunning, "{done:?}");
}
