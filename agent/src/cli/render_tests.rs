//! JSON and table rendering of operations and instances.

use super::*;
use crate::cli::table::{ToTable, bytes, columns};
use prost_types::Timestamp;

fn ts(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 250_000_000 })
}

fn operation() -> pb::Operation {
    pb::Operation {
        id: "op-0123456789abcdef0123".into(),
        request_id: "r1".into(),
        kind: "volume.create".into(),
        target: "pg-42".into(),
        state: pb::OperationState::Failed as i32,
        progress: Some(pb::Progress { done: 512, total: 1024, unit: "bytes".into(), message: "formatting".into() }),
        created: ts(1_700_000_000),
        started: ts(1_700_000_001),
        finished: None,
        error: Some(pb::OperationError { code: "FAILED_PRECONDITION".into(), message: "device busy".into() }),
        result_json: r#"{"mapper":"/dev/mapper/dbagent-pg-42"}"#.into(),
        cancel_requested: false,
        submitted_by: Some(pb::OperationSubmitter {
            identity: "orchestrator".into(),
            subject: "CN=orchestrator".into(),
            role: "orchestrator".into(),
        }),
        window_start: None,
        window_end: ts(1_700_003_600),
        overrunning: true,
    }
}

#[test]
fn operation_json() {
    let v = operation().to_json();
    assert_eq!(v["state"], "failed");
    assert_eq!(v["created"], "2023-11-14T22:13:20.250Z");
    assert_eq!(v["finished"], Value::Null);
    assert_eq!(v["window_start"], Value::Null);
    assert_eq!(
        (v["window_end"].as_str().map(|s| s.starts_with("2023-11-14T23:13:20")), &v["overrunning"]),
        (Some(true), &Value::Bool(true))
    );
    assert_eq!(v["progress"]["total"], 1024);
    assert_eq!(v["error"]["code"], "FAILED_PRECONDITION");
    assert_eq!(v["result"]["mapper"], "/dev/mapper/dbagent-pg-42", "result_json is embedded as JSON");
    let not_json = pb::Operation { result_json: "plain".into(), ..operation() }.to_json();
    assert_eq!(not_json["result"], "plain");
    assert_eq!(v["submitted_by"]["subject"], "CN=orchestrator");
    assert_eq!(v["submitted_by"]["role"], "orchestrator");
    let by_agent = pb::Operation { submitted_by: None, ..operation() }.to_json();
    assert_eq!(by_agent["submitted_by"], Value::Null, "work the agent started has no submitter");
}

#[test]
fn instance_json() {
    let instance = pb::Instance {
        id: "pg-42".into(),
        spec: Some(pb::InstanceSpec {
            engine: pb::Engine::Postgresql as i32,
            engine_version: "15".into(),
            systemd_unit: "postgresql@15-main.service".into(),
            data_dir: "/var/lib/postgresql/15/main".into(),
            os_user: "postgres".into(),
            volume: Some(pb::VolumeSpec { device: String::new(), size_bytes: 10 << 30, filesystem: "ext4".into() }),
            log_sources: vec![pb::LogSource {
                source: Some(pb::log_source::Source::JournaldUnit("postgresql@15-main.service".into())),
            }],
            plan: Some(pb::Plan {
                name: pb::PlanName::Starter as i32,
                cpu_millis: 1000,
                memory_bytes: 2 << 30,
                ..Default::default()
            }),
            maintenance_window: Some(pb::MaintenanceWindow {
                weekday: pb::Weekday::Monday as i32,
                start_minute_utc: 120,
                duration_minutes: 60,
            }),
            backup_policy: None,
        }),
        created: ts(0),
        updated: None,
        generation: 3,
    };
    let v = instance.to_json();
    assert_eq!(v["spec"]["engine"], "postgresql");
    assert_eq!(v["spec"]["plan"]["name"], "starter");
    assert_eq!(v["spec"]["volume"]["device"], Value::Null);
    assert_eq!(
        v["spec"]["maintenance_window"],
        serde_json::json!({"weekday": "monday", "start_utc": "02:00", "duration_minutes": 60})
    );
    assert_eq!(v["spec"]["log_sources"][0]["journald_unit"], "postgresql@15-main.service");
    assert_eq!(v["spec"]["backup_policy"], Value::Null);
    assert_eq!(v["created"], "1970-01-01T00:00:00.250Z");
    assert_eq!(v["generation"], 3);
    let table = instance.to_table();
    assert!(table.contains("engine:      postgresql 15\n"), "{table}");
    assert!(table.contains("10 GiB ext4 on agent-managed file"), "{table}");
}

#[test]
fn unknown_enum_values_stay_visible() {
    assert_eq!(engine_name(99), "unknown(99)");
    assert_eq!(op_state_name(0), "unspecified");
}

#[test]
fn tables_align_columns() {
    let text =
        columns(&["ID", "STATE"], &[vec!["op-1".into(), "running".into()], vec!["op-22222".into(), "failed".into()]]);
    assert_eq!(text, "ID        STATE\nop-1      running\nop-22222  failed\n");
    assert_eq!(bytes(10 << 30), "10 GiB");
    assert_eq!(bytes(1536), "1.5 KiB");
    assert_eq!(bytes(100), "100 B");
    let op_table = operation().to_table();
    assert!(op_table.contains("512 B/1 KiB (50%) formatting"), "{op_table}");
}

fn agent_info(host: Option<pb::HostInventory>) -> pb::AgentInfo {
    pb::AgentInfo { version: "0.1.0".into(), hostname: "db-7".into(), host, ..Default::default() }
}

#[test]
fn agent_info_shows_the_host() {
    let host = pb::HostInventory {
        os_name: "Debian GNU/Linux".into(),
        os_version: "12".into(),
        kernel_version: "6.1.0-18-amd64".into(),
        cpu_model: "AMD EPYC 7B13".into(),
        cpu_count: 8,
        memory_bytes: 32 << 30,
    };
    let info = agent_info(Some(host));
    let table = info.to_table();
    for line in ["os:            Debian GNU/Linux 12\n", "kernel:        6.1.0-18-amd64\n"] {
        assert!(table.contains(line), "{line:?} in\n{table}");
    }
    assert!(table.contains("cpus:          8 x AMD EPYC 7B13\n"), "{table}");
    assert!(table.contains("memory:        32 GiB\n"), "{table}");
    let v = info.to_json();
    assert_eq!(v["host"]["os_version"], "12");
    assert_eq!(v["host"]["cpu_count"], 8);
    assert_eq!(v["host"]["memory_bytes"], 32u64 << 30);

    // An agent from before the inventory: dashes and null, not zeros.
    let old = agent_info(None);
    assert!(old.to_table().contains("memory:        -\n"), "{}", old.to_table());
    assert_eq!(old.to_json()["host"], Value::Null);
}

#[test]
fn status_warns_when_volumes_are_simulated() {
    use crate::cli::table::SIMULATED_VOLUMES_WARNING;
    let simulated = pb::AgentStatus { state: "serving".into(), volumes_simulated: true, ..Default::default() };
    let table = simulated.to_table();
    assert!(table.starts_with(&format!("{SIMULATED_VOLUMES_WARNING}\n")), "{table}");
    assert_eq!(simulated.to_json()["volumes_simulated"], true);

    let real = pb::AgentStatus { volumes_simulated: false, ..simulated };
    assert!(!real.to_table().contains("simulated"), "{}", real.to_table());
    assert!(real.to_table().starts_with("state:"), "{}", real.to_table());
    assert_eq!(real.to_json()["volumes_simulated"], false);
}

#[test]
fn status_shows_each_instances_backup_redundancy_and_says_when_backups_die_with_the_host() {
    let r = |id: &str, off: u32, accepted: bool| pb::BackupRedundancy {
        instance_id: id.into(),
        destinations: 3,
        off_host_destinations: off,
        on_host_accepted: accepted,
        newest_backup_id: "b0000000000000000000a".into(),
        newest_backup_copies: 3,
        newest_backup_off_host_copies: off,
        degraded_backups: 1,
        ..Default::default()
    };
    let status = pb::AgentStatus {
        state: "serving".into(),
        backup_redundancy: vec![r("pg-1", 2, false), r("pg-2", 0, true), r("pg-3", 1, false)],
        ..Default::default()
    };
    let table = status.to_table();
    assert!(
        table.contains(
            "backups of pg-1: 2 of 3 destinations off the host; newest b0000000000000000000a on 3 destinations, 2 off the host; last good -; 1 degraded"
        ),
        "{table}"
    );
    assert!(table.contains("backups of pg-2: 0 of 3 destinations off the host (accepted: backups die with this host)"));
    assert!(table.contains("backups of pg-3: 1 of 3 destinations off the host (backups refused"), "{table}");
    let json = status.to_json();
    assert_eq!(json["backup_redundancy"][0]["off_host_destinations"], 2);
    assert_eq!(json["backup_redundancy"][1]["on_host_accepted"], true);
}

#[test]
fn backup_list_shows_the_last_drill() {
    let drill = pb::BackupDrill {
        operation_id: "op-1".into(),
        backup_id: "b0123456789abcdef0123".into(),
        ok: false,
        reason: "restore drill failed at step \"restore the backup\": chunk 3 does not authenticate".into(),
        database: String::new(),
        table: String::new(),
        rows: 0,
        duration_ms: 2500,
        finished: ts(1_700_000_100),
        last_success: ts(1_700_000_000),
        failures_total: 2,
    };
    let list = pb::ListBackupsResponse { backups: Vec::new(), last_drill: Some(drill.clone()), ..Default::default() };
    let v = list.to_json();
    assert_eq!(v["last_drill"]["ok"], false);
    assert_eq!(v["last_drill"]["failures_total"], 2);
    assert_eq!(v["last_drill"]["last_success"], "2023-11-14T22:13:20.250Z");
    let table = list.to_table();
    let line = table.lines().find(|l| l.starts_with("last drill: ")).unwrap_or_else(|| panic!("{table}"));
    assert!(line.contains("FAILED") && line.contains("chunk 3") && line.contains("2 failures"), "{line}");
    let ok = pb::ListBackupsResponse {
        backups: Vec::new(),
        last_drill: Some(pb::BackupDrill { ok: true, table: "public.items".into(), rows: 42, ..drill }),
        ..Default::default()
    };
    let line = ok.to_table().lines().find(|l| l.starts_with("last drill: ")).unwrap().to_owned();
    assert!(line.starts_with("last drill: ok at ") && line.contains("42 rows in public.items"), "{line}");
    let none = pb::ListBackupsResponse { backups: Vec::new(), last_drill: None, ..Default::default() };
    assert_eq!(none.to_json()["last_drill"], Value::Null);
    assert!(none.to_table().contains("last drill: none"));
}

fn found_backup(authenticated: bool) -> pb::Backup {
    pb::Backup {
        id: "b01a0000000000000000a".into(),
        instance_id: "pg-42".into(),
        state: pb::BackupState::Complete as i32,
        authenticated,
        authentication_error: if authenticated { String::new() } else { "needs the recovery key".into() },
        key_wraps: vec![pb::KeyWrap { wrapper: "age-x25519-v1".into(), key_id: "age1abc".into() }],
        ..Default::default()
    }
}

#[test]
fn backups_listed_from_the_destinations_show_authentication_and_keys_in_both_forms() {
    let list = pb::ListBackupsResponse {
        backups: vec![found_backup(true), found_backup(false)],
        destination_errors: vec!["az2: connection refused".into()],
        ..Default::default()
    };
    let table = list.to_table();
    assert!(table.contains("AUTHENTICATED") && table.contains("KEYS"), "{table}");
    assert!(table.contains("yes") && table.contains("no: needs the recovery key"), "{table}");
    assert!(table.contains("age-x25519-v1 age1abc"), "{table}");
    assert!(table.contains("unreachable: az2: connection refused"), "{table}");
    let v = list.to_json();
    assert_eq!(v["backups"][1]["authenticated"], false);
    assert_eq!(v["backups"][1]["authentication_error"], "needs the recovery key");
    assert_eq!(v["backups"][0]["key_wraps"][0]["wrapper"], "age-x25519-v1");
    assert_eq!(v["destination_errors"][0], "az2: connection refused");

    // A registered instance's list keeps its columns; instance discovery lists ids.
    let plain = pb::ListBackupsResponse {
        backups: vec![pb::Backup { id: "b1".into(), ..Default::default() }],
        ..Default::default()
    };
    assert!(!plain.to_table().contains("AUTHENTICATED"), "{}", plain.to_table());
    let ids = pb::ListBackupsResponse { instance_ids: vec!["pg-42".into(), "redis-7".into()], ..Default::default() };
    let table = ids.to_table();
    assert!(table.starts_with("INSTANCE") && table.contains("pg-42") && table.contains("redis-7"), "{table}");
}

#[test]
fn availability_shows_the_months_figures_budget_and_picture_in_table_and_json() {
    let a = pb::Availability {
        instance_id: "pg-1".into(),
        month: "2026-02".into(),
        objective_percent: 99.96,
        allowed_downtime_seconds: 967,
        downtime_seconds: 600,
        uptime_percent: 99.975,
        unplanned_downtime_seconds: 600,
        planned_downtime_seconds: 3600,
        unknown_seconds: 30,
        month_seconds: 28 * 86_400,
        measured_seconds: 28 * 86_400,
        budget_left_seconds: 367,
        budget_used_ratio: 600.0 / 967.0,
        complete: true,
        picture: "X.p?".into(),
        ..Default::default()
    };
    let table = a.to_table();
    for expected in [
        "2026-02 (28 days, whole month)",
        "99.9750%",
        "unplanned downtime: 600s (0.17 h)",
        "planned downtime:   3600s (1.00 h)",
        "budget left:        367s (0.10 h) (62% used)",
        "|X.p?|",
    ] {
        assert!(table.contains(expected), "{expected:?} missing from\n{table}");
    }
    let json = a.to_json();
    assert_eq!(json["unplanned_downtime_seconds"], 600);
    assert_eq!(json["budget_left_seconds"], 367);
    assert_eq!(json["picture"], "X.p?");
    assert_eq!(json["complete"], true);
    // The current month says "so far".
    let so_far = pb::Availability { complete: false, measured_seconds: 3 * 86_400, ..a };
    assert!(so_far.to_table().contains("so far: 259200s"), "{}", so_far.to_table());
}
