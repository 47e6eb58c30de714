//! Long-running operations: idempotency across restarts, interruption, watching, cancelling, queuing.

use dbagent_integration::Agent;
use dbagent_integration::ops::{sleep_request, state_of, wait_for_state};
use dbagent_proto::v1::operations_client::OperationsClient;
use dbagent_proto::v1::{CancelOperationRequest, GetOperationRequest, OperationState, WatchOperationRequest};
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;

/// How long a state change may take before the test fails: generous, so a loaded machine does not
/// fail a test; the durations the tests rely on are an hour, far beyond it.
const WAIT: Duration = Duration::from_secs(60);

async fn operations(agent: &Agent) -> OperationsClient<Channel> {
    OperationsClient::new(agent.orchestrator().await)
}

#[tokio::test]
async fn same_request_id_returns_same_operation_even_after_kill9() {
    let mut agent = Agent::start_dev();
    let mut ops = operations(&agent).await;
    let req = sleep_request("idem-1", "pg-1", Duration::from_millis(200));
    let first = ops.start_sleep(req.clone()).await.expect("first StartSleep").into_inner();
    let second = ops.start_sleep(req.clone()).await.expect("repeated StartSleep").into_inner();
    assert_eq!(first.id, second.id, "a repeated request_id must return the existing operation");
    wait_for_state(&mut ops, &first.id, WAIT, |s| s == OperationState::Succeeded).await;

    agent.kill9();
    agent.restart();
    let mut ops = operations(&agent).await;
    let third = ops.start_sleep(req).await.expect("StartSleep after restart").into_inner();
    assert_eq!(first.id, third.id, "the request_id must survive a SIGKILL: {third:?}");
    assert_eq!(state_of(&third), OperationState::Succeeded, "the finished operation is not run again: {third:?}");
}

#[tokio::test]
async fn running_operation_is_interrupted_by_kill9() {
    let mut agent = Agent::start_dev();
    let mut ops = operations(&agent).await;
    let op = ops
        .start_sleep(sleep_request("long-1", "pg-1", Duration::from_secs(3600)))
        .await
        .expect("StartSleep")
        .into_inner();
    wait_for_state(&mut ops, &op.id, WAIT, |s| s == OperationState::Running).await;

    agent.kill9();
    agent.restart();
    let mut ops = operations(&agent).await;
    let after = ops.get_operation(GetOperationRequest { id: op.id.clone() }).await.expect("GetOperation").into_inner();
    assert_eq!(state_of(&after), OperationState::Interrupted, "{after:?}");
    assert!(after.finished.is_some(), "an interrupted operation is finished: {after:?}");
}

#[tokio::test]
async fn watch_streams_progress_until_succeeded() {
    let agent = Agent::start_dev();
    let mut ops = operations(&agent).await;
    let op = ops
        .start_sleep(sleep_request("watch-1", "pg-1", Duration::from_secs(3)))
        .await
        .expect("StartSleep")
        .into_inner();
    let mut stream =
        ops.watch_operation(WatchOperationRequest { id: op.id.clone() }).await.expect("WatchOperation").into_inner();
    let mut seen = Vec::new();
    let collect = async {
        while let Some(update) = stream.message().await.expect("the watch stream fails") {
            seen.push(update);
        }
    };
    tokio::time::timeout(WAIT, collect).await.expect("the watch stream did not end");
    let last = seen.last().expect("the watch stream sent nothing");
    assert_eq!(state_of(last), OperationState::Succeeded, "{last:?}");
    assert!(seen.iter().all(|o| o.id == op.id));
    let progress: Vec<u64> = seen.iter().filter_map(|o| o.progress.as_ref().map(|p| p.done)).collect();
    // The sleep reports every 100 ms and a watch sends the latest state, so a slow reader sees
    // fewer than 30; three (the start, one in between, the end) leave seconds of margin.
    assert!(progress.len() >= 3, "expected several progress updates, got {progress:?}");
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "progress went backwards: {progress:?}");
    let p = last.progress.as_ref().expect("final progress");
    assert_eq!((p.done, p.total), (3000, 3000), "{p:?}");
}

#[tokio::test]
async fn cancel_stops_a_running_sleep() {
    let agent = Agent::start_dev();
    let mut ops = operations(&agent).await;
    let op = ops
        .start_sleep(sleep_request("cancel-1", "pg-1", Duration::from_secs(3600)))
        .await
        .expect("StartSleep")
        .into_inner();
    wait_for_state(&mut ops, &op.id, WAIT, |s| s == OperationState::Running).await;
    let cancelled =
        ops.cancel_operation(CancelOperationRequest { id: op.id.clone() }).await.expect("CancelOperation").into_inner();
    assert!(cancelled.cancel_requested, "{cancelled:?}");
    let done = wait_for_state(&mut ops, &op.id, WAIT, |s| s != OperationState::Running).await;
    assert_eq!(state_of(&done), OperationState::Cancelled, "{done:?}");
}

#[tokio::test]
async fn same_request_id_with_other_parameters_is_already_exists() {
    let agent = Agent::start_dev();
    let mut ops = operations(&agent).await;
    ops.start_sleep(sleep_request("reuse-1", "pg-1", Duration::from_secs(1))).await.expect("StartSleep");
    let err = ops
        .start_sleep(sleep_request("reuse-1", "pg-1", Duration::from_secs(2)))
        .await
        .expect_err("a reused request_id with another duration must be refused");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(err.message().contains("reuse-1") || err.message().contains("request_id"), "{:?}", err.message());
}

#[tokio::test]
async fn sleeps_on_one_target_run_one_after_the_other() {
    let agent = Agent::start_dev();
    let mut ops = operations(&agent).await;
    // The first runs until the test cancels it, so what is checked while it runs cannot be
    // outrun by a slow machine.
    let first = ops
        .start_sleep(sleep_request("serial-1", "pg-1", Duration::from_secs(3600)))
        .await
        .expect("first")
        .into_inner();
    wait_for_state(&mut ops, &first.id, WAIT, |s| s == OperationState::Running).await;
    let second = ops
        .start_sleep(sleep_request("serial-2", "pg-1", Duration::from_millis(300)))
        .await
        .expect("second")
        .into_inner();
    // Another target is not held up by pg-1.
    let other = ops
        .start_sleep(sleep_request("serial-3", "pg-2", Duration::from_millis(300)))
        .await
        .expect("other")
        .into_inner();

    wait_for_state(&mut ops, &other.id, WAIT, |s| s == OperationState::Succeeded).await;
    let second_now = ops.get_operation(GetOperationRequest { id: second.id.clone() }).await.expect("get").into_inner();
    let first_now = ops.get_operation(GetOperationRequest { id: first.id.clone() }).await.expect("get").into_inner();
    assert_eq!(state_of(&first_now), OperationState::Running, "{first_now:?}");
    assert_eq!(
        state_of(&second_now),
        OperationState::Queued,
        "the second sleep must wait for the first: {second_now:?}"
    );

    ops.cancel_operation(CancelOperationRequest { id: first.id.clone() }).await.expect("CancelOperation");
    let first_done = wait_for_state(&mut ops, &first.id, WAIT, |s| s != OperationState::Running).await;
    assert_eq!(state_of(&first_done), OperationState::Cancelled, "{first_done:?}");
    let second_done = wait_for_state(&mut ops, &second.id, WAIT, |s| s == OperationState::Succeeded).await;
    let (Some(first_end), Some(second_start)) = (first_done.finished, second_done.started) else {
        panic!("missing timestamps: {first_done:?} {second_done:?}");
    };
    let as_nanos = |t: prost_types::Timestamp| i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos);
    assert!(as_nanos(second_start) >= as_nanos(first_end), "the second started before the first finished");
}
