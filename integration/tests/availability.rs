//! Availability through the real agent binary: GetAvailability's figures and the alerting metrics
//! from the durable ledger, after a SIGKILL in the middle of an outage.
//!
//! The probes are off here (`health.enabled = false`; `availability_probes.rs` tests them against
//! real servers): the test writes the ledger's own records (`<state>/availability/instances/<id>.json`, `agent/agent.json`, the format
//! `agent/src/availability/ledger.rs` writes) while the agent is down, as a crash would leave them:
//! one closed unplanned interval, one planned, one still open, and a last heartbeat. The agent reads
//! its clock moved by `testing.clock_offset_secs` into February 2030 (28 days), so the month and
//! every figure are known exactly.

use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dbagent_integration::agent::{AgentBuilder, LaunchContext};
use dbagent_integration::config::{custom_config, toml_path};
use dbagent_integration::ops::instance_spec;
use dbagent_integration::pki::{PkiFiles, ServerPki};
use dbagent_integration::prometheus::{address as prometheus_addr, scrape, value};
use dbagent_integration::{ClientIdentity, Validity};
use dbagent_proto::v1::instances_client::InstancesClient;
use dbagent_proto::v1::upgrades_client::UpgradesClient;
use dbagent_proto::v1::{GetAvailabilityRequest, RegisterInstanceRequest};
use tonic::Code;

const INSTANCE: &str = "pg-a1";
/// 2030-02-01T00:00:00Z.
const FEB_2030: u64 = 1_896_134_400;
const DAY: u64 = 86_400;
/// Where the agent's moved clock starts: 2030-02-15T00:00:00Z.
const AGENT_NOW: u64 = FEB_2030 + 14 * DAY;
/// The Starter plan's allowed downtime in a 28-day month: 2% of 2 419 200 s.
const STARTER_FEB_ALLOWED: u64 = 48_384;

/// The suite's usual agent config, with a data root and the agent's clock moved by `offset`.
fn config(ctx: &LaunchContext, pki: &PkiFiles, offset: i64) -> String {
    format!(
        "{base}\n[instances]\ndata_roots = [{data}]\n\n[testing]\nclock_offset_secs = {offset}\n\n[health]\nenabled = false\n",
        base = custom_config(ctx, pki, &[], &["orchestrator"], &[]),
        data = toml_path(&ctx.work_dir.join("data")),
    )
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs()
}

fn request(month: &str) -> GetAvailabilityRequest {
    GetAvailabilityRequest { instance_id: INSTANCE.into(), month: month.into() }
}

#[tokio::test]
async fn get_availability_and_the_metrics_count_a_crash_mid_outage_as_closed_downtime_and_unknown() {
    let offset = AGENT_NOW as i64 - unix_now() as i64;
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

    // A new instance: nothing down, the month so far measured, the Starter budget whole.
    let mut upgrades = UpgradesClient::new(channel.clone());
    let fresh = upgrades.get_availability(request("")).await.expect("GetAvailability").into_inner();
    assert_eq!(fresh.month, "2030-02", "the current month of the agent's clock: {fresh:?}");
    assert_eq!((fresh.uptime_percent, fresh.unplanned_downtime_seconds, fresh.objective_percent), (100.0, 0, 98.0));
    assert_eq!((fresh.month_seconds, fresh.allowed_downtime_seconds), (28 * DAY, STARTER_FEB_ALLOWED));
    assert!(!fresh.complete && fresh.measured_seconds >= 14 * DAY, "{fresh:?}");

    // Validation, beside the allowed path above.
    let err = upgrades.get_availability(request("2030-13")).await.expect_err("month 13");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("month"), "names the field: {err:?}");
    let err = upgrades
        .get_availability(GetAvailabilityRequest { instance_id: "pg-none".into(), month: String::new() })
        .await
        .expect_err("unknown instance");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // The crash in the middle of an outage, as it leaves the ledger: 600 s unplanned on the 3rd,
    // 1 h planned on the 5th, an outage open since 40 min before the start, and the last heartbeat
    // 10 min into it.
    agent.kill9();
    let open_at = AGENT_NOW - 2400;
    let heartbeat = open_at + 600;
    let ledger = agent.state_dir().join("availability");
    let record = serde_json::json!({
        "instance_id": INSTANCE,
        "intervals": [
            {"start": FEB_2030 + 2 * DAY + 36_000, "end": FEB_2030 + 2 * DAY + 36_600, "kind": "unplanned", "reason": "t"},
            {"start": FEB_2030 + 4 * DAY, "end": FEB_2030 + 4 * DAY + 3600, "kind": "planned", "reason": "upgrade"},
            {"start": open_at, "end": null, "kind": "unplanned", "reason": "probe failed"},
        ],
    });
    std::fs::write(ledger.join(format!("instances/{INSTANCE}.json")), record.to_string()).expect("write the record");
    let evidence = serde_json::json!({"last_evidence": heartbeat, "gaps": []});
    std::fs::write(ledger.join("agent/agent.json"), evidence.to_string()).expect("write the evidence");
    let restarted_at = unix_now() as i64 + offset;
    agent.restart();
    assert!(agent.log().contains("closed at the last heartbeat"), "{}", agent.log());

    let channel = agent.channel(&identity).await;
    let mut upgrades = UpgradesClient::new(channel.clone());
    let a = upgrades.get_availability(request("")).await.expect("GetAvailability").into_inner();
    // The open outage is closed at the heartbeat: 600 s, with the 600 s of the 3rd.
    assert_eq!(a.unplanned_downtime_seconds, 1200, "{a:?}");
    assert_eq!(a.downtime_seconds, 1200);
    assert_eq!(a.planned_downtime_seconds, 3600, "{a:?}");
    // The agent's own gap, from the heartbeat to the restart, is unknown, not down.
    let gap = (restarted_at as u64).saturating_sub(heartbeat);
    assert!(
        a.unknown_seconds >= gap && a.unknown_seconds <= gap + 30,
        "unknown {} for a gap of {gap} s",
        a.unknown_seconds
    );
    assert_eq!(a.budget_left_seconds, STARTER_FEB_ALLOWED - 1200);
    let expect_uptime = (a.measured_seconds - 1200) as f64 * 100.0 / a.measured_seconds as f64;
    assert!((a.uptime_percent - expect_uptime).abs() < 1e-9, "{a:?}");
    assert_eq!(a.picture.chars().count(), 28 * 4, "one character per 6 hours: {:?}", a.picture);
    assert_eq!(a.picture.chars().nth(2 * 4 + 1), Some('X'), "the 3rd, 06:00-12:00: {:?}", a.picture);
    assert_eq!(a.picture.chars().nth(4 * 4), Some('p'), "the 5th, 00:00-06:00: {:?}", a.picture);

    // A past month: complete, its real length, nothing in it.
    let jan = upgrades.get_availability(request("2030-01")).await.expect("January").into_inner();
    assert!(jan.complete, "{jan:?}");
    assert_eq!((jan.month_seconds, jan.unplanned_downtime_seconds, jan.uptime_percent), (31 * DAY, 0, 100.0));
    // 2% of 31 days.
    assert_eq!(jan.allowed_downtime_seconds, 53_568);

    // The metrics an alert reads: the budget used ratio and the unplanned seconds of this month.
    let addr = prometheus_addr(&agent);
    let deadline = Instant::now() + Duration::from_secs(30);
    let series = format!("dbagent_availability_budget_used_ratio{{instance=\"{INSTANCE}\"}}");
    let text = loop {
        let text = scrape(&addr);
        if value(&text, &series).is_some() || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let ratio = value(&text, &series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    assert!((ratio - 1200.0 / STARTER_FEB_ALLOWED as f64).abs() < 1e-9, "{ratio}");
    let unplanned = format!("dbagent_availability_unplanned_downtime_seconds{{instance=\"{INSTANCE}\"}}");
    assert_eq!(value(&text, &unplanned), Some(1200.0), "{text}");
}
