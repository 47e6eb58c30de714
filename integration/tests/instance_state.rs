//! The real agent over its state: an unreadable instance record quarantines that one instance at
//! start-up (the agent serves the others and says so in GetStatus), and RemoveInstance refuses while
//! the instance's volume remains (dev mode with `--sim`: in-memory volumes).

use dbagent_integration::AgentBuilder;
use dbagent_integration::ops::{instance_spec, state_of, wait_for_state};
use dbagent_proto::v1::agent_client::AgentClient;
use dbagent_proto::v1::instances_client::InstancesClient;
use dbagent_proto::v1::operations_client::OperationsClient;
use dbagent_proto::v1::volumes_client::VolumesClient;
use dbagent_proto::v1::{
    CreateVolumeRequest, DestroyVolumeRequest, GetInstanceRequest, GetStatusRequest, OperationState,
    RegisterInstanceRequest, RemoveInstanceRequest,
};
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;

async fn register(client: &mut InstancesClient<Channel>, data_root: &std::path::Path, id: &str) {
    let req = RegisterInstanceRequest {
        request_id: format!("reg-{id}"),
        id: id.into(),
        spec: Some(instance_spec(id, data_root)),
    };
    client.register_instance(req).await.unwrap_or_else(|e| panic!("RegisterInstance {id}: {e:?}"));
}

#[tokio::test]
async fn a_corrupt_instance_record_quarantines_that_instance_and_the_agent_serves_the_others() {
    let mut agent = AgentBuilder::dev().start();
    let mut instances = InstancesClient::new(agent.orchestrator().await);
    for id in ["pg-1", "pg-2"] {
        register(&mut instances, &agent.dev_data_root(), id).await;
    }
    agent.sigterm(Duration::from_secs(15));
    let record = agent.state_dir().join("instances/pg-2.json");
    let torn = std::fs::read(&record).expect("pg-2's record")[..40].to_vec();
    std::fs::write(&record, &torn).expect("tear pg-2's record");
    agent.restart();

    let channel = agent.orchestrator().await;
    let status =
        AgentClient::new(channel.clone()).get_status(GetStatusRequest {}).await.expect("GetStatus").into_inner();
    assert_eq!(status.instance_count, 1, "pg-1 is served");
    let [q] = status.quarantined.as_slice() else { panic!("one quarantined record: {:?}", status.quarantined) };
    assert_eq!((q.instance_id.as_str(), q.record.as_str()), ("pg-2", "instance"));
    assert!(q.file.ends_with("instances/pg-2.json") && q.reason.contains("not a valid instance file"), "{q:?}");

    let mut instances = InstancesClient::new(channel);
    instances.get_instance(GetInstanceRequest { id: "pg-1".into() }).await.expect("pg-1 is served");
    let e = instances.get_instance(GetInstanceRequest { id: "pg-2".into() }).await.expect_err("pg-2 is quarantined");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("quarantined") && e.message().contains("pg-2.json"), "{}", e.message());
    let req = RegisterInstanceRequest {
        request_id: "reg-pg-2-again".into(),
        id: "pg-2".into(),
        spec: Some(instance_spec("pg-2", &agent.dev_data_root())),
    };
    let e = instances.register_instance(req).await.expect_err("the quarantined id cannot be registered over");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!(std::fs::read(&record).unwrap(), torn, "the record is left for the operator");
    let log = agent.log();
    assert!(log.contains("left in place and its instance quarantined"), "the start-up log says so: {log}");
    assert!(log.contains("1 instances; volumes: 0 opened, 0 failed, 0 quarantined"), "pg-2 had no volume: {log}");
}

#[tokio::test]
async fn remove_instance_refuses_while_its_volume_remains_then_removes_it() {
    let agent = AgentBuilder::dev().arg("--sim").start();
    let channel = agent.orchestrator().await;
    let mut instances = InstancesClient::new(channel.clone());
    let (mut volumes, mut ops) = (VolumesClient::new(channel.clone()), OperationsClient::new(channel));
    register(&mut instances, &agent.dev_data_root(), "pg-1").await;
    let req = CreateVolumeRequest { request_id: "create".into(), instance_id: "pg-1".into(), force: false };
    let op = volumes.create_volume(req).await.expect("CreateVolume").into_inner();
    let done = wait_for_state(&mut ops, &op.id, Duration::from_secs(30), |s| s == OperationState::Succeeded).await;
    assert_eq!(state_of(&done), OperationState::Succeeded);

    let remove = |request_id: &str| RemoveInstanceRequest { request_id: request_id.into(), id: "pg-1".into() };
    let e = instances.remove_instance(remove("rm-1")).await.expect_err("the volume remains");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("destroy it with DestroyVolume") && e.message().contains("its keys v1"),
        "{}",
        e.message()
    );
    instances.get_instance(GetInstanceRequest { id: "pg-1".into() }).await.expect("still registered");

    let req = DestroyVolumeRequest {
        request_id: "destroy".into(),
        instance_id: "pg-1".into(),
        confirm_instance_id: "pg-1".into(),
    };
    let op = volumes.destroy_volume(req).await.expect("DestroyVolume").into_inner();
    wait_for_state(&mut ops, &op.id, Duration::from_secs(30), |s| s == OperationState::Succeeded).await;
    let removed = instances.remove_instance(remove("rm-2")).await.expect("nothing remains").into_inner();
    assert_eq!(removed.id, "pg-1");
}
