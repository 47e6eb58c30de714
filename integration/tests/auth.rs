//! Who may call what: mTLS identities, roles, refused certificates, unimplemented services, health.

use dbagent_integration::agent::{AgentBuilder, LaunchContext};
use dbagent_integration::config::custom_config;
use dbagent_integration::ops::{instance_spec, sleep_request};
use dbagent_integration::pki::ServerPki;
use dbagent_integration::{Agent, CertAuthority, ClientIdentity, IssuedCert, Validity, first_get_status};
use dbagent_proto::v1::agent_client::AgentClient;
use dbagent_proto::v1::backups_client::BackupsClient;
use dbagent_proto::v1::instances_client::InstancesClient;
use dbagent_proto::v1::logs_client::LogsClient;
use dbagent_proto::v1::operations_client::OperationsClient;
use dbagent_proto::v1::upgrades_client::UpgradesClient;
use dbagent_proto::v1::volumes_client::VolumesClient;
use dbagent_proto::v1::*;
use std::rc::Rc;
use std::time::Duration;
use tonic::Code;

fn ok<T>(what: &str, r: Result<tonic::Response<T>, tonic::Status>) -> T {
    match r {
        Ok(resp) => resp.into_inner(),
        Err(s) => panic!("{what} failed: {:?}: {}", s.code(), s.message()),
    }
}

#[tokio::test]
async fn orchestrator_can_read_and_mutate() {
    let agent = Agent::start_dev();
    let channel = agent.orchestrator().await;
    let status = ok("GetStatus", AgentClient::new(channel.clone()).get_status(GetStatusRequest {}).await);
    assert_eq!(status.state, "serving");
    let info = ok("GetInfo", AgentClient::new(channel.clone()).get_info(GetInfoRequest {}).await);
    assert_eq!(info.caller_identity, "orchestrator");
    assert!(info.dev_mode);

    let req = RegisterInstanceRequest {
        request_id: "reg-1".into(),
        id: "pg-1".into(),
        spec: Some(instance_spec("pg-1", &agent.dev_data_root())),
    };
    let inst = ok("RegisterInstance", InstancesClient::new(channel.clone()).register_instance(req).await);
    assert_eq!(inst.id, "pg-1");

    let op = ok(
        "StartSleep",
        OperationsClient::new(channel).start_sleep(sleep_request("sleep-1", "pg-1", Duration::from_millis(10))).await,
    );
    assert!(!op.id.is_empty());
    assert_eq!(op.kind, "sleep");
}

#[tokio::test]
async fn monitor_reads_but_every_mutation_is_denied() {
    let agent = Agent::start_dev();
    // Something to look at, made by the orchestrator.
    let orch = agent.orchestrator().await;
    let op = ok(
        "StartSleep",
        OperationsClient::new(orch)
            .start_sleep(sleep_request("seen-by-monitor", "pg-1", Duration::from_millis(10)))
            .await,
    );

    let ch = agent.monitor().await;
    ok("GetStatus", AgentClient::new(ch.clone()).get_status(GetStatusRequest {}).await);
    ok("ListInstances", InstancesClient::new(ch.clone()).list_instances(ListInstancesRequest {}).await);
    let listed =
        ok("ListOperations", OperationsClient::new(ch.clone()).list_operations(ListOperationsRequest::default()).await);
    assert!(listed.operations.iter().any(|o| o.id == op.id), "the monitor sees the orchestrator's operation");
    ok(
        "GetOperation",
        OperationsClient::new(ch.clone()).get_operation(GetOperationRequest { id: op.id.clone() }).await,
    );

    let (rid, iid) = (|| "monitor-req-1".to_owned(), || "pg-1".to_owned());
    let mut ins = InstancesClient::new(ch.clone());
    let mut ops = OperationsClient::new(ch.clone());
    let mut vol = VolumesClient::new(ch.clone());
    let mut bak = BackupsClient::new(ch.clone());
    let mut logs = LogsClient::new(ch.clone());
    let mut upg = UpgradesClient::new(ch);
    let results: Vec<(&str, Result<(), tonic::Status>)> = vec![
        (
            "RegisterInstance",
            ins.register_instance(RegisterInstanceRequest {
                request_id: rid(),
                id: iid(),
                spec: Some(instance_spec("pg-1", &agent.dev_data_root())),
            })
            .await
            .map(drop),
        ),
        (
            "UpdateInstance",
            ins.update_instance(UpdateInstanceRequest {
                request_id: rid(),
                id: iid(),
                spec: Some(instance_spec("pg-1", &agent.dev_data_root())),
                expected_generation: 0,
            })
            .await
            .map(drop),
        ),
        ("RemoveInstance", ins.remove_instance(RemoveInstanceRequest { request_id: rid(), id: iid() }).await.map(drop)),
        ("StartSleep", ops.start_sleep(sleep_request(&rid(), &iid(), Duration::from_millis(10))).await.map(drop)),
        ("CancelOperation", ops.cancel_operation(CancelOperationRequest { id: op.id.clone() }).await.map(drop)),
        (
            "CreateVolume",
            vol.create_volume(CreateVolumeRequest { request_id: rid(), instance_id: iid(), force: false })
                .await
                .map(drop),
        ),
        ("OpenVolume", vol.open_volume(OpenVolumeRequest { request_id: rid(), instance_id: iid() }).await.map(drop)),
        ("CloseVolume", vol.close_volume(CloseVolumeRequest { request_id: rid(), instance_id: iid() }).await.map(drop)),
        (
            "GrowVolume",
            vol.grow_volume(GrowVolumeRequest { request_id: rid(), instance_id: iid(), new_size_bytes: 20 << 30 })
                .await
                .map(drop),
        ),
        (
            "RotateVolumeKey",
            vol.rotate_volume_key(RotateVolumeKeyRequest { request_id: rid(), instance_id: iid() }).await.map(drop),
        ),
        (
            "BackupVolumeHeader",
            vol.backup_volume_header(BackupVolumeHeaderRequest { request_id: rid(), instance_id: iid() })
                .await
                .map(drop),
        ),
        (
            "DestroyVolume",
            vol.destroy_volume(DestroyVolumeRequest {
                request_id: rid(),
                instance_id: iid(),
                confirm_instance_id: iid(),
            })
            .await
            .map(drop),
        ),
        (
            "StartBackup",
            bak.start_backup(StartBackupRequest {
                request_id: rid(),
                instance_id: iid(),
                method: BackupMethod::Physical as i32,
            })
            .await
            .map(drop),
        ),
        (
            "DeleteBackup",
            bak.delete_backup(DeleteBackupRequest { request_id: rid(), instance_id: iid(), backup_id: "b-1".into() })
                .await
                .map(drop),
        ),
        (
            "VerifyBackup",
            bak.verify_backup(VerifyBackupRequest {
                request_id: rid(),
                instance_id: iid(),
                backup_id: "b-1".into(),
                destination: String::new(),
            })
            .await
            .map(drop),
        ),
        (
            "RestoreBackup",
            bak.restore_backup(RestoreBackupRequest {
                request_id: rid(),
                instance_id: iid(),
                backup_id: "b-1".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        ),
        (
            "RepairBackup",
            bak.repair_backup(RepairBackupRequest { request_id: rid(), instance_id: iid(), backup_id: "b-1".into() })
                .await
                .map(drop),
        ),
        (
            "SetBackupPolicy",
            bak.set_backup_policy(SetBackupPolicyRequest {
                request_id: rid(),
                instance_id: iid(),
                policy: Some(BackupPolicy { daily_at_minute_utc: 60, keep_daily: 7, enabled: true }),
            })
            .await
            .map(drop),
        ),
        (
            "SetDrains",
            logs.set_drains(SetDrainsRequest { request_id: rid(), instance_id: iid(), drains: vec![] }).await.map(drop),
        ),
        (
            "StartUpgrade",
            upg.start_upgrade(StartUpgradeRequest {
                request_id: rid(),
                instance_id: iid(),
                target_version: "16".into(),
                force: false,
            })
            .await
            .map(drop),
        ),
        (
            "ChangePlan",
            upg.change_plan(ChangePlanRequest {
                request_id: rid(),
                instance_id: iid(),
                plan: instance_spec("pg-1", &agent.dev_data_root()).plan,
                force: false,
            })
            .await
            .map(drop),
        ),
        (
            "SetMaintenanceWindow",
            upg.set_maintenance_window(SetMaintenanceWindowRequest {
                request_id: rid(),
                instance_id: iid(),
                window: instance_spec("pg-1", &agent.dev_data_root()).maintenance_window,
            })
            .await
            .map(drop),
        ),
        (
            "InstallCertificate",
            upg.install_certificate(InstallCertificateRequest {
                request_id: rid(),
                instance_id: iid(),
                ..Default::default()
            })
            .await
            .map(drop),
        ),
    ];
    let wrong: Vec<String> = results
        .iter()
        .filter_map(|(name, r)| match r {
            Err(s) if s.code() == Code::PermissionDenied => None,
            Err(s) => Some(format!("{name}: {:?}: {}", s.code(), s.message())),
            Ok(()) => Some(format!("{name}: succeeded")),
        })
        .collect();
    assert!(wrong.is_empty(), "monitor mutations not denied:\n{}", wrong.join("\n"));

    // Nothing the monitor tried may have happened.
    let orch = agent.orchestrator().await;
    let instances =
        ok("ListInstances", InstancesClient::new(orch.clone()).list_instances(ListInstancesRequest {}).await);
    assert!(instances.instances.is_empty(), "the monitor registered an instance: {instances:?}");
    let op = ok("GetOperation", OperationsClient::new(orch).get_operation(GetOperationRequest { id: op.id }).await);
    assert!(!op.cancel_requested, "the monitor's cancel took effect: {op:?}");
}

#[tokio::test]
async fn client_cert_from_another_ca_is_refused() {
    let agent = Agent::start_dev();
    let foreign = CertAuthority::new("not the agent's CA");
    let cert = foreign.client("orchestrator", Validity::Current);
    let identity = ClientIdentity { ca_pem: agent.dev_ca_pem(), cert: Some((cert.cert_pem, cert.key_pem)) };
    assert_refused(&agent, &identity).await;
}

#[tokio::test]
async fn client_without_cert_is_refused() {
    let agent = Agent::start_dev();
    assert_refused(&agent, &ClientIdentity::anonymous(&agent.dev_ca_pem())).await;
}

/// An agent with a PKI the test controls: orchestrator CN "orchestrator", monitor CN "monitor",
/// and a CRL (possibly empty) listing revoked client serials.
struct CustomAgent {
    agent: Agent,
    pki: Rc<ServerPki>,
}

fn start_custom(revoke: impl Fn(&CertAuthority) -> Vec<IssuedCert>) -> (CustomAgent, Vec<IssuedCert>) {
    let pki = Rc::new(ServerPki::new());
    let revoked = revoke(&pki.ca);
    let crl_revoked = revoked.clone();
    let for_config = pki.clone();
    // The files go into the agent's own work dir, so they vanish with the fixture.
    let agent = AgentBuilder::config(move |ctx: &LaunchContext| {
        let files = for_config.write(&ctx.work_dir.join("pki"));
        let crl = ctx.work_dir.join("pki").join("revoked.crl.pem");
        for_config.write_crl(&crl, &crl_revoked.iter().collect::<Vec<_>>());
        custom_config(ctx, &files, &[crl.as_path()], &["orchestrator"], &["monitor"])
    })
    .start();
    (CustomAgent { agent, pki }, revoked)
}

#[tokio::test]
async fn custom_pki_orchestrator_is_accepted() {
    let (custom, _) = start_custom(|_| vec![]);
    let cert = custom.pki.ca.client("orchestrator", Validity::Current);
    let status = first_get_status(custom.agent.addr(), &ClientIdentity::issued(custom.pki.ca.cert_pem(), &cert)).await;
    assert!(status.is_ok(), "a valid orchestrator cert was refused: {status:?}\n{}", custom.agent.log());
}

#[tokio::test]
async fn expired_client_cert_is_refused() {
    let (custom, _) = start_custom(|_| vec![]);
    let cert = custom.pki.ca.client("orchestrator", Validity::Expired);
    assert_refused(&custom.agent, &ClientIdentity::issued(custom.pki.ca.cert_pem(), &cert)).await;
}

#[tokio::test]
async fn revoked_client_cert_is_refused() {
    let (custom, revoked) = start_custom(|ca| vec![ca.client("orchestrator", Validity::Current)]);
    assert_refused(&custom.agent, &ClientIdentity::issued(custom.pki.ca.cert_pem(), &revoked[0])).await;
    // A sibling certificate with the same CN but another serial still works: the CRL is by serial.
    let fresh = custom.pki.ca.client("orchestrator", Validity::Current);
    let status = first_get_status(custom.agent.addr(), &ClientIdentity::issued(custom.pki.ca.cert_pem(), &fresh)).await;
    assert!(status.is_ok(), "an unrevoked cert was refused: {status:?}\n{}", custom.agent.log());
}

#[tokio::test]
async fn known_ca_unknown_cn_is_permission_denied() {
    let (custom, _) = start_custom(|_| vec![]);
    let cert = custom.pki.ca.client("intruder", Validity::Current);
    let result = first_get_status(custom.agent.addr(), &ClientIdentity::issued(custom.pki.ca.cert_pem(), &cert)).await;
    match result {
        Err(dbagent_integration::CallFailure::Status(s)) if s.code() == Code::PermissionDenied => {}
        other => panic!("an unknown CN must get PERMISSION_DENIED, got {other:?}\n{}", custom.agent.log()),
    }
}

#[tokio::test]
async fn unimplemented_service_names_the_capability() {
    let agent = Agent::start_dev();
    // Upgrades are not built in this version (no issue for them yet).
    let err = UpgradesClient::new(agent.orchestrator().await)
        .get_availability(GetAvailabilityRequest { instance_id: "pg-1".into(), month: String::new() })
        .await
        .expect_err("GetAvailability is not implemented yet");
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    assert!(err.message().contains("availability"), "the message should name the capability: {:?}", err.message());
}

#[tokio::test]
async fn grpc_health_check_serves() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let agent = Agent::start_dev();
    for channel in [agent.orchestrator().await, agent.monitor().await] {
        let resp = HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await;
        let resp = ok("Health.Check", resp);
        assert_eq!(resp.status, ServingStatus::Serving as i32, "{resp:?}");
    }
}

async fn assert_refused(agent: &Agent, identity: &ClientIdentity) {
    match first_get_status(agent.addr(), identity).await {
        Ok(status) => panic!("the agent served a client it must refuse: {status:?}"),
        Err(failure) => assert!(
            failure.is_transport_refusal(),
            "expected the TLS handshake to refuse the client, got {failure:?}\n{}",
            agent.log()
        ),
    }
}
