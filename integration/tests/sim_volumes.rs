//! `dbagent --dev --sim`: the Volumes API end to end against the real binary on the in-memory volume
//! backends, on any host and without device-mapper. The VM tests (`vm_volumes`) remain the proof on
//! real dm-crypt; this shows that the API, the operations and their results hold together.

use dbagent_integration::agent::{AgentBuilder, run_to_exit};
use dbagent_integration::ops::{instance_spec, state_of, wait_for_state};
use dbagent_proto::v1::instances_client::InstancesClient;
use dbagent_proto::v1::operations_client::OperationsClient;
use dbagent_proto::v1::volumes_client::VolumesClient;
use dbagent_proto::v1::{
    CloseVolumeRequest, CreateVolumeRequest, DestroyVolumeRequest, GetVolumeRequest, GrowVolumeRequest,
    OpenVolumeRequest, Operation, OperationState, RegisterInstanceRequest, RotateVolumeKeyRequest, Volume,
};
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;

const INSTANCE: &str = "pg-sim";
const GIB: u64 = 1 << 30;

struct Clients {
    volumes: VolumesClient<Channel>,
    ops: OperationsClient<Channel>,
}

impl Clients {
    /// Waits until the operation `started` finished, and returns its final record.
    async fn finished(&mut self, started: Result<tonic::Response<Operation>, tonic::Status>) -> Operation {
        let op = started.expect("the volume call was refused").into_inner();
        wait_for_state(&mut self.ops, &op.id, Duration::from_secs(20), |s| {
            !matches!(s, OperationState::Queued | OperationState::Running)
        })
        .await
    }

    /// Waits for the operation and asserts that it succeeded with `outcome`.
    async fn succeeded(&mut self, started: Result<tonic::Response<Operation>, tonic::Status>, outcome: &str) {
        let op = self.finished(started).await;
        assert_eq!(state_of(&op), OperationState::Succeeded, "{} did not succeed: {op:?}", op.kind);
        let result: serde_json::Value = serde_json::from_str(&op.result_json).expect("result_json is JSON");
        assert_eq!(result["outcome"], outcome, "{} result: {result}", op.kind);
    }

    /// DestroyVolume with the confirmation, to success.
    async fn destroy(&mut self) {
        let req = DestroyVolumeRequest {
            request_id: "destroy".into(),
            instance_id: INSTANCE.into(),
            confirm_instance_id: INSTANCE.into(),
        };
        let started = self.volumes.destroy_volume(req).await;
        self.succeeded(started, "destroyed").await;
    }

    async fn volume(&mut self) -> Volume {
        self.volumes
            .get_volume(GetVolumeRequest { instance_id: INSTANCE.into() })
            .await
            .expect("GetVolume")
            .into_inner()
    }

    async fn grow(&mut self, request_id: &str, new_size_bytes: u64) -> Operation {
        let req = GrowVolumeRequest { request_id: request_id.into(), instance_id: INSTANCE.into(), new_size_bytes };
        let started = self.volumes.grow_volume(req).await;
        self.finished(started).await
    }
}

/// Registers INSTANCE on `agent` and returns clients for its volume.
async fn registered(agent: &dbagent_integration::agent::Agent) -> Clients {
    let channel = agent.orchestrator().await;
    let spec = instance_spec(INSTANCE, &agent.dev_data_root());
    let req = RegisterInstanceRequest { request_id: "reg-sim".into(), id: INSTANCE.into(), spec: Some(spec) };
    InstancesClient::new(channel.clone()).register_instance(req).await.expect("RegisterInstance");
    Clients { volumes: VolumesClient::new(channel.clone()), ops: OperationsClient::new(channel) }
}

fn failed_with(op: &Operation, code: &str) {
    assert_eq!(state_of(op), OperationState::Failed, "{op:?}");
    let error = op.error.as_ref().expect("a failed operation carries its error");
    assert_eq!(error.code, code, "{error:?}");
}

#[tokio::test]
async fn every_volume_call_works_on_simulated_volumes() {
    let agent = AgentBuilder::dev().arg("--sim").start();
    assert!(agent.log().contains("volumes are SIMULATED"), "the agent must say so at start:\n{}", agent.log());
    let mut c = registered(&agent).await;

    let req = CreateVolumeRequest { request_id: "create".into(), instance_id: INSTANCE.into(), force: false };
    let started = c.volumes.create_volume(req).await;
    c.succeeded(started, "created").await;
    let v = c.volume().await;
    assert!(v.active && v.mounted, "a created volume is open: {v:?}");
    assert_eq!((v.size_bytes, v.key_version), (10 * GIB, 1), "{v:?}");
    assert_eq!(v.cipher, "aes-xts-plain64");
    assert_eq!(v.mapper_path, format!("/dev/mapper/dbagent-{INSTANCE}"));
    assert!(v.backing.ends_with(&format!("volumes/{INSTANCE}.img")), "a managed file: {v:?}");
    assert!(!Path::new(&v.backing).exists(), "a simulated volume writes no backing file: {}", v.backing);

    let req = CloseVolumeRequest { request_id: "close".into(), instance_id: INSTANCE.into() };
    let started = c.volumes.close_volume(req).await;
    c.succeeded(started, "closed").await;
    let v = c.volume().await;
    assert!(!v.active && !v.mounted, "{v:?}");
    // Growing is online only: refused while closed, and nothing changes.
    failed_with(&c.grow("grow-closed", 20 * GIB).await, "FAILED_PRECONDITION");

    let req = OpenVolumeRequest { request_id: "open".into(), instance_id: INSTANCE.into(), ..Default::default() };
    let started = c.volumes.open_volume(req).await;
    c.succeeded(started, "opened").await;
    assert!(c.volume().await.mounted);

    // A recovery key that is not an age identity is refused before any work, without echoing it;
    // a real identity finds no escrow (this agent has no recovery recipients) and changes nothing.
    let req = OpenVolumeRequest {
        request_id: "open-bad-key".into(),
        instance_id: INSTANCE.into(),
        recovery_key: b"not-a-key-5e1f".to_vec(),
    };
    let refused = c.volumes.open_volume(req).await.expect_err("a malformed recovery key");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("recovery_key") && !refused.message().contains("5e1f"), "{refused:?}");
    let identity = dbagent::recovery_key::RecoveryIdentity::generate();
    let req = OpenVolumeRequest {
        request_id: "open-recovery".into(),
        instance_id: INSTANCE.into(),
        recovery_key: identity.to_file_text().as_bytes().to_vec(),
    };
    let started = c.volumes.open_volume(req).await;
    let op = c.finished(started).await;
    failed_with(&op, "FAILED_PRECONDITION");
    assert!(op.error.as_ref().is_some_and(|e| e.message.contains("no escrowed key")), "{op:?}");
    let v = c.volume().await;
    assert!(v.mounted && v.escrow_key_version == 0 && v.escrow_recipients.is_empty(), "{v:?}");

    // Shrinking is refused; growing beside it works.
    failed_with(&c.grow("shrink", 5 * GIB).await, "FAILED_PRECONDITION");
    assert_eq!(c.volume().await.size_bytes, 10 * GIB, "a refused shrink changes nothing");
    let grown = c.grow("grow", 20 * GIB).await;
    assert_eq!(state_of(&grown), OperationState::Succeeded, "{grown:?}");
    let v = c.volume().await;
    assert_eq!(v.size_bytes, 20 * GIB, "{v:?}");
    assert!(v.active && v.mounted, "growing keeps the volume open: {v:?}");

    let req = RotateVolumeKeyRequest { request_id: "rotate".into(), instance_id: INSTANCE.into() };
    let started = c.volumes.rotate_volume_key(req).await;
    c.succeeded(started, "rotated").await;
    assert_eq!(c.volume().await.key_version, 2);

    let wrong = DestroyVolumeRequest {
        request_id: "destroy-wrong".into(),
        instance_id: INSTANCE.into(),
        confirm_instance_id: "pg-other".into(),
    };
    let refused = c.volumes.destroy_volume(wrong).await.expect_err("destroy without the confirmation");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(c.volume().await.active, "a refused destroy leaves the volume");
    c.destroy().await;
    let gone = c
        .volumes
        .get_volume(GetVolumeRequest { instance_id: INSTANCE.into() })
        .await
        .expect_err("GetVolume after destroy");
    assert_eq!(gone.code(), Code::FailedPrecondition, "{gone:?}");
}

#[tokio::test]
async fn a_device_backed_volume_is_refused_beside_a_managed_file() {
    let agent = AgentBuilder::dev().arg("--sim").start();
    let channel = agent.orchestrator().await;
    let mut instances = InstancesClient::new(channel.clone());
    for (id, device) in [("pg-disk", "/dev/disk/by-id/virtio-pg-disk"), ("pg-file", "")] {
        let mut spec = instance_spec(id, &agent.dev_data_root());
        spec.volume.as_mut().expect("the spec has a volume").device = device.into();
        let req = RegisterInstanceRequest { request_id: format!("reg-{id}"), id: id.into(), spec: Some(spec) };
        instances.register_instance(req).await.expect("RegisterInstance");
    }
    let mut c = Clients { volumes: VolumesClient::new(channel.clone()), ops: OperationsClient::new(channel) };
    let req = CreateVolumeRequest { request_id: "create-disk".into(), instance_id: "pg-disk".into(), force: false };
    let started = c.volumes.create_volume(req).await;
    let op = c.finished(started).await;
    failed_with(&op, "FAILED_PRECONDITION");
    let message = &op.error.as_ref().expect("an error").message;
    assert!(message.contains("/dev/disk/by-id/virtio-pg-disk"), "the refusal names the device: {message}");

    let req = CreateVolumeRequest { request_id: "create-file".into(), instance_id: "pg-file".into(), force: false };
    let started = c.volumes.create_volume(req).await;
    let op = c.finished(started).await;
    assert_eq!(state_of(&op), OperationState::Succeeded, "a managed file works on the same agent: {op:?}");
}

#[test]
fn sim_is_refused_without_dev_and_no_configuration_can_express_it() {
    let refused = run_to_exit(&["--sim".into()], Duration::from_secs(30));
    assert_eq!(refused.status.and_then(|s| s.code()), Some(2), "{refused:?}");
    assert!(
        refused.stderr.contains("--dev") && refused.stderr.contains("required"),
        "the message must say that --sim needs --dev: {}",
        refused.stderr
    );

    // Allowed beside it: --dev --sim starts, and its effective configuration is that of --dev.
    let dir = tempfile::tempdir().expect("temp dir");
    let check = |sim: bool| {
        let mut args: Vec<OsString> = vec!["--dev".into(), "--state-dir".into(), dir.path().into()];
        if sim {
            args.push("--sim".into());
        }
        args.push("--check-config".into());
        let run = run_to_exit(&args, Duration::from_secs(30));
        assert_eq!(run.status.and_then(|s| s.code()), Some(0), "{run:?}");
        run.stdout
    };
    assert_eq!(check(true), check(false), "--check-config must not be able to express --sim");
}

/// Simulated volumes are gone with the process: a restart finds records it cannot open, reports
/// them, and DestroyVolume clears them.
#[tokio::test]
async fn after_a_restart_simulated_volumes_are_reported_and_can_be_destroyed() {
    let mut agent = AgentBuilder::dev().arg("--sim").start();
    let mut c = registered(&agent).await;
    let req = CreateVolumeRequest { request_id: "create".into(), instance_id: INSTANCE.into(), force: false };
    let started = c.volumes.create_volume(req).await;
    c.succeeded(started, "created").await;

    agent.restart();
    assert!(
        agent.log().contains("volumes (simulated): 0 opened, 1 failed"),
        "the restarted agent must report the volume it could not open:\n{}",
        agent.log()
    );
    let channel = agent.orchestrator().await;
    let mut c = Clients { volumes: VolumesClient::new(channel.clone()), ops: OperationsClient::new(channel) };
    let lost = c
        .volumes
        .get_volume(GetVolumeRequest { instance_id: INSTANCE.into() })
        .await
        .expect_err("GetVolume of a simulated volume after a restart");
    assert!(lost.message().contains(&format!("{INSTANCE}.img")), "GetVolume names the lost volume: {lost:?}");
    c.destroy().await;
}
