//! Mutating calls that return a plain resource replay their answer for a repeated request_id, also
//! after the agent was killed and started again, instead of doing the work a second time.

use dbagent_integration::Agent;
use dbagent_integration::ops::instance_spec;
use dbagent_proto::v1::backups_client::BackupsClient;
use dbagent_proto::v1::instances_client::InstancesClient;
use dbagent_proto::v1::{
    BackupPolicy, GetInstanceRequest, Instance, RegisterInstanceRequest, RemoveInstanceRequest, SetBackupPolicyRequest,
    UpdateInstanceRequest,
};
use tonic::Code;
use tonic::transport::Channel;

async fn instances(agent: &Agent) -> InstancesClient<Channel> {
    InstancesClient::new(agent.orchestrator().await)
}

async fn register(agent: &Agent, client: &mut InstancesClient<Channel>, request_id: &str, id: &str) -> Instance {
    let req = RegisterInstanceRequest {
        request_id: request_id.into(),
        id: id.into(),
        spec: Some(instance_spec(id, &agent.dev_data_root())),
    };
    client.register_instance(req).await.unwrap_or_else(|e| panic!("RegisterInstance {id}: {e:?}")).into_inner()
}

fn remove(request_id: &str, id: &str) -> RemoveInstanceRequest {
    RemoveInstanceRequest { request_id: request_id.into(), id: id.into() }
}

async fn assert_reuse_refused(client: &mut InstancesClient<Channel>) {
    let err = client.remove_instance(remove("rm-1", "pg-2")).await.expect_err("rm-1 reused for another instance");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(err.message().contains("already used for a different"), "{:?}", err.message());
    client
        .get_instance(GetInstanceRequest { id: "pg-2".into() })
        .await
        .expect("the refused request must not remove pg-2");
}

#[tokio::test]
async fn repeated_remove_instance_gets_the_same_answer_even_after_kill9() {
    let mut agent = Agent::start_dev();
    let mut client = instances(&agent).await;
    let registered = register(&agent, &mut client, "reg-1", "pg-1").await;
    register(&agent, &mut client, "reg-2", "pg-2").await;

    let removed = client.remove_instance(remove("rm-1", "pg-1")).await.expect("RemoveInstance").into_inner();
    assert_eq!(removed.id, "pg-1");
    assert_eq!(removed.created, registered.created, "the answer is the removed instance: {removed:?}");
    let gone = client.get_instance(GetInstanceRequest { id: "pg-1".into() }).await.expect_err("pg-1 was removed");
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");

    let replay = client
        .remove_instance(remove("rm-1", "pg-1"))
        .await
        .expect("repeated RemoveInstance (not NOT_FOUND)")
        .into_inner();
    assert_eq!(replay, removed);
    // A new request_id is new work, and there is nothing left to remove.
    let fresh = client.remove_instance(remove("rm-2", "pg-1")).await.expect_err("a new request_id removes again");
    assert_eq!(fresh.code(), Code::NotFound, "{fresh:?}");
    assert_reuse_refused(&mut client).await;

    agent.kill9();
    agent.restart();
    let mut client = instances(&agent).await;
    let after =
        client.remove_instance(remove("rm-1", "pg-1")).await.expect("RemoveInstance after restart").into_inner();
    assert_eq!(after, removed, "the answer must survive a SIGKILL");
    assert_reuse_refused(&mut client).await;
}

#[tokio::test]
async fn repeated_update_with_expected_generation_is_not_aborted() {
    let agent = Agent::start_dev();
    let mut client = instances(&agent).await;
    let registered = register(&agent, &mut client, "reg-1", "pg-1").await;
    let mut spec = instance_spec("pg-1", &agent.dev_data_root());
    spec.maintenance_window.as_mut().expect("the fixture has a window").start_minute_utc = 180;
    let update = UpdateInstanceRequest {
        request_id: "upd-1".into(),
        id: "pg-1".into(),
        spec: Some(spec),
        expected_generation: registered.generation,
    };
    let first = client.update_instance(update.clone()).await.expect("UpdateInstance").into_inner();
    assert_eq!(first.generation, registered.generation + 1, "{first:?}");
    let replay =
        client.update_instance(update.clone()).await.expect("repeated UpdateInstance (not ABORTED)").into_inner();
    assert_eq!(replay, first);
    // The same update under a new request_id is checked again, and its generation is stale now.
    let stale = client
        .update_instance(UpdateInstanceRequest { request_id: "upd-2".into(), ..update })
        .await
        .expect_err("stale generation");
    assert_eq!(stale.code(), Code::Aborted, "{stale:?}");
}

#[tokio::test]
async fn set_backup_policy_replays_and_refuses_a_reused_request_id() {
    let agent = Agent::start_dev();
    let mut client = instances(&agent).await;
    register(&agent, &mut client, "reg-1", "pg-1").await;
    let mut backups = BackupsClient::new(agent.orchestrator().await);
    let policy = BackupPolicy { daily_at_minute_utc: 300, keep_daily: 3, enabled: true, ..Default::default() };
    let set = SetBackupPolicyRequest { request_id: "pol-1".into(), instance_id: "pg-1".into(), policy: Some(policy) };
    let first = backups.set_backup_policy(set.clone()).await.expect("SetBackupPolicy").into_inner();
    assert_eq!(first, policy);
    let generation = |i: Instance| i.generation;
    let after_first = generation(
        client.get_instance(GetInstanceRequest { id: "pg-1".into() }).await.expect("GetInstance").into_inner(),
    );
    let replay = backups.set_backup_policy(set.clone()).await.expect("repeated SetBackupPolicy").into_inner();
    assert_eq!(replay, first);
    let after_replay = generation(
        client.get_instance(GetInstanceRequest { id: "pg-1".into() }).await.expect("GetInstance").into_inner(),
    );
    assert_eq!(after_replay, after_first, "a replay must not update the instance again");

    let other = SetBackupPolicyRequest { policy: Some(BackupPolicy { keep_daily: 9, ..policy }), ..set };
    let err = backups.set_backup_policy(other).await.expect_err("pol-1 reused for another policy");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
}
