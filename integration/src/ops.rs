//! Request builders and waiting helpers shared by the tests and the load bench.

use dbagent_proto::v1::operations_client::OperationsClient;
use dbagent_proto::v1::{
    BackupPolicy, Engine, GetOperationRequest, InstanceSpec, MaintenanceWindow, Operation, OperationState, Plan,
    PlanName, StartSleepRequest, VolumeSpec, Weekday,
};
use std::path::Path;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

pub fn sleep_request(request_id: &str, target: &str, duration: Duration) -> StartSleepRequest {
    StartSleepRequest {
        request_id: request_id.to_owned(),
        target: target.to_owned(),
        duration: Some(prost_types::Duration::try_from(duration).expect("a test duration fits")),
    }
}

pub fn state_of(op: &Operation) -> OperationState {
    OperationState::try_from(op.state).unwrap_or(OperationState::Unspecified)
}

/// Polls the operation until `accept` holds for its state; panics with the last seen record after `timeout`.
pub async fn wait_for_state(
    client: &mut OperationsClient<Channel>,
    id: &str,
    timeout: Duration,
    accept: impl Fn(OperationState) -> bool,
) -> Operation {
    let deadline = Instant::now() + timeout;
    loop {
        let op =
            client.get_operation(GetOperationRequest { id: id.to_owned() }).await.expect("GetOperation").into_inner();
        if accept(state_of(&op)) {
            return op;
        }
        assert!(
            Instant::now() < deadline,
            "operation {id} did not reach the expected state within {timeout:?}: {op:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A complete, plausible PostgreSQL instance spec with its data dir under `data_root`.
pub fn instance_spec(id: &str, data_root: &Path) -> InstanceSpec {
    InstanceSpec {
        engine: Engine::Postgresql as i32,
        engine_version: "15".to_owned(),
        systemd_unit: "postgresql@15-main.service".to_owned(),
        data_dir: data_root.join(id).join("data").to_string_lossy().into_owned(),
        os_user: "postgres".to_owned(),
        volume: Some(VolumeSpec { device: String::new(), size_bytes: 10 << 30, filesystem: "ext4".to_owned() }),
        log_sources: Vec::new(),
        plan: Some(Plan {
            name: PlanName::Starter as i32,
            cpu_millis: 1000,
            memory_bytes: 2 << 30,
            io_read_iops: 3000,
            io_write_iops: 3000,
            io_read_bps: 100 << 20,
            io_write_bps: 100 << 20,
            disk_bytes: 10 << 30,
        }),
        maintenance_window: Some(MaintenanceWindow {
            weekday: Weekday::Sunday as i32,
            start_minute_utc: 120,
            duration_minutes: 60,
        }),
        backup_policy: Some(BackupPolicy {
            daily_at_minute_utc: 60,
            keep_daily: 7,
            enabled: true,
            ..Default::default()
        }),
    }
}
