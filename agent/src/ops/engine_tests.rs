use super::*;
use crate::ops::sleep;

fn settings() -> OpsSettings {
    OpsSettings { max_concurrent: 4, retention: Duration::from_secs(3600), max_finished: 100 }
}

fn open(dir: &std::path::Path) -> (OperationEngine, Vec<OperationRecord>, CancellationToken) {
    let root = CancellationToken::new();
    let (e, interrupted) = OperationEngine::open(dir, settings(), ResourceLocks::default(), root.clone()).unwrap();
    (e, interrupted, root)
}

fn sleep_op(request_id: &str, target: &str, ms: u64) -> (NewOperation, JobFn) {
    let d = Duration::from_millis(ms);
    let new = NewOperation {
        request_id: request_id.into(),
        kind: sleep::KIND,
        target: target.into(),
        params: sleep::params(d),
        exclusive: true,
    };
    (new, sleep::job(d))
}

async fn wait_finished(e: &OperationEngine, id: &str) -> OperationRecord {
    let mut rx = e.watch(id).unwrap();
    rx.wait_for(|r| r.state.is_finished()).await.unwrap().clone()
}

#[tokio::test]
async fn same_request_id_returns_same_operation() {
    let dir = tempfile::tempdir().unwrap();
    let (e, _, _) = open(dir.path());
    let (n, j) = sleep_op("r1", "pg-1", 10);
    let (a, oa) = e.submit(n, j).await.unwrap();
    let (n, j) = sleep_op("r1", "pg-1", 10);
    let (b, ob) = e.submit(n, j).await.unwrap();
    assert_eq!((a.id.clone(), oa, ob), (b.id, Outcome::Created, Outcome::Existing));
    let (n, j) = sleep_op("r1", "pg-1", 20);
    assert!(matches!(e.submit(n, j).await, Err(OpsError::RequestIdReused { .. })));
    let done = wait_finished(&e, &a.id).await;
    assert_eq!(done.state, OpState::Succeeded);
    assert_eq!(done.progress.done, 10);
}

#[tokio::test]
async fn running_operations_are_interrupted_after_reopen_and_request_ids_survive() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let (e, _, _) = open(dir.path());
        let (n, j) = sleep_op("r1", "pg-1", 60_000);
        let (rec, _) = e.submit(n, j).await.unwrap();
        e.watch(&rec.id).unwrap().wait_for(|r| r.state == OpState::Running).await.unwrap();
        rec.id
        // Dropped without drain: as after SIGKILL, the journal says running.
    };
    let (e, interrupted, _) = open(dir.path());
    assert_eq!(interrupted.len(), 1);
    let rec = e.get(&id).unwrap();
    assert_eq!(rec.state, OpState::Interrupted);
    assert_eq!(rec.error.unwrap().code, ErrorCode::Aborted);
    let (n, j) = sleep_op("r1", "pg-1", 60_000);
    let (again, outcome) = e.submit(n, j).await.unwrap();
    assert_eq!((again.id, outcome), (id, Outcome::Existing));
}

/// A secret a request carried (a recovery key) is kept in memory only: after a restart the
/// interrupted operation says so, and the journal never held the secret.
#[tokio::test]
async fn an_operation_with_an_in_memory_only_parameter_asks_to_be_submitted_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let (e, _, _) = open(dir.path());
        let (mut n, j) = sleep_op("r1", "pg-1", 60_000);
        n.params["recovery_key"] = serde_json::json!(crate::ops::IN_MEMORY_ONLY);
        let (rec, _) = e.submit(n, j).await.unwrap();
        e.watch(&rec.id).unwrap().wait_for(|r| r.state == OpState::Running).await.unwrap();
        rec.id
    };
    let (e, _, _) = open(dir.path());
    let error = e.get(&id).unwrap().error.unwrap();
    assert!(error.message.contains("the recovery key is not kept across restarts; submit again"), "{}", error.message);
    // Beside it, an operation without one gets the plain message.
    let (n, j) = sleep_op("r2", "pg-2", 60_000);
    let (rec, _) = e.submit(n, j).await.unwrap();
    e.watch(&rec.id).unwrap().wait_for(|r| r.state == OpState::Running).await.unwrap();
    drop(e);
    let (e, _, _) = open(dir.path());
    assert!(!e.get(&rec.id).unwrap().error.unwrap().message.contains("not kept"));
}

#[tokio::test]
async fn cancel_and_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let (e, _, root) = open(dir.path());
    let (n, j) = sleep_op("r1", "a", 60_000);
    let (rec, _) = e.submit(n, j).await.unwrap();
    e.cancel(&rec.id).await.unwrap();
    assert_eq!(wait_finished(&e, &rec.id).await.state, OpState::Cancelled);
    assert!(matches!(e.cancel(&rec.id).await, Ok(r) if r.state == OpState::Cancelled));

    let (n, j) = sleep_op("r2", "b", 60_000);
    let (rec, _) = e.submit(n, j).await.unwrap();
    e.watch(&rec.id).unwrap().wait_for(|r| r.state == OpState::Running).await.unwrap();
    root.cancel();
    assert!(e.drain(Duration::from_secs(5)).await);
    assert_eq!(e.get(&rec.id).unwrap().state, OpState::Interrupted);
    let (n, j) = sleep_op("r3", "b", 10);
    assert!(matches!(e.submit(n, j).await, Err(OpsError::ShuttingDown)));
    drop(e);
    let (e, interrupted, _) = open(dir.path());
    assert!(interrupted.is_empty(), "a drained operation was already recorded as interrupted");
    assert_eq!(e.get(&rec.id).unwrap().state, OpState::Interrupted);
}

/// An operation whose job runs until the test sends on the returned sender: when it ends is a step
/// of the test, not a timer that a slow machine could outrun.
fn gated_op(request_id: &str, target: &str) -> (NewOperation, JobFn, tokio::sync::oneshot::Sender<()>) {
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let new = NewOperation {
        request_id: request_id.into(),
        kind: sleep::KIND,
        target: target.into(),
        params: serde_json::json!({ "gated": true }),
        exclusive: true,
    };
    let job: JobFn = Box::new(move |_ctx| {
        Box::pin(async move {
            released.await.expect("the test keeps the gate until it releases it");
            Ok(None)
        })
    });
    (new, job, release)
}

#[tokio::test]
async fn exclusive_operations_on_one_target_queue() {
    let dir = tempfile::tempdir().unwrap();
    let (e, _, _) = open(dir.path());
    let (n, j, release) = gated_op("r1", "pg-1");
    let (first, _) = e.submit(n, j).await.unwrap();
    e.watch(&first.id).unwrap().wait_for(|r| r.state == OpState::Running).await.unwrap();
    let (n, j) = sleep_op("r2", "pg-1", 10);
    let (second, _) = e.submit(n, j).await.unwrap();
    let (n, j) = sleep_op("r3", "pg-2", 10);
    let (other, _) = e.submit(n, j).await.unwrap();
    // Another target is not held up by pg-1; the second pg-1 operation waits for the first.
    assert_eq!(wait_finished(&e, &other.id).await.state, OpState::Succeeded);
    assert_eq!(e.get(&second.id).unwrap().state, OpState::Queued);
    assert_eq!(e.get(&first.id).unwrap().state, OpState::Running);
    release.send(()).unwrap();
    let a = wait_finished(&e, &first.id).await;
    let b = wait_finished(&e, &second.id).await;
    assert_eq!((a.state, b.state), (OpState::Succeeded, OpState::Succeeded));
    assert!(b.started.unwrap() >= a.finished.unwrap());
    assert_eq!(e.list(Some("pg-1"), false, 10).len(), 2);
    assert_eq!(e.open_count(), 0);
}

#[tokio::test]
async fn prune_keeps_open_and_recent() {
    let dir = tempfile::tempdir().unwrap();
    let (e, _, _) = open(dir.path());
    let (n, j) = sleep_op("r1", "a", 1);
    let (rec, _) = e.submit(n, j).await.unwrap();
    wait_finished(&e, &rec.id).await;
    assert_eq!(e.prune(SystemTime::now()).unwrap(), 0);
    assert_eq!(e.prune(SystemTime::now() + Duration::from_secs(7200)).unwrap(), 1);
    assert!(matches!(e.get(&rec.id), Err(OpsError::NotFound(_))));
    assert!(!dir.path().join(format!("{}.json", rec.id)).exists());
}

/// The journal's policy is `Quarantine`: a corrupt operation record is moved aside as
/// `<id>.json.corrupt-<time>`, and the engine opens with the other records.
#[tokio::test]
async fn a_corrupt_operation_record_is_quarantined_and_the_rest_load() {
    let dir = tempfile::tempdir().unwrap();
    let good = {
        let (e, _, _) = open(dir.path());
        let (n, j) = sleep_op("r1", "pg-1", 1);
        let (rec, _) = e.submit(n, j).await.unwrap();
        wait_finished(&e, &rec.id).await
    };
    let good_file = dir.path().join(format!("{}.json", good.id));
    let text = std::fs::read_to_string(&good_file).unwrap();
    // As stored: times in whole milliseconds.
    let good: OperationRecord = serde_json::from_str(&text).unwrap();
    let torn = "op-00000000000000000001";
    std::fs::write(dir.path().join(format!("{torn}.json")), &text[..text.len() / 2]).unwrap();
    // Parses, but its id is not one the agent makes.
    let bad_id = "op-1";
    std::fs::write(dir.path().join(format!("{bad_id}.json")), text.replace(&good.id, bad_id)).unwrap();

    let (_, loaded) = crate::ops::journal::Journal::open(dir.path()).unwrap();
    assert_eq!(loaded.records, vec![good.clone()]);
    let mut moved: Vec<_> = loaded.corrupt.iter().map(|c| (c.file.clone(), c.moved_to.clone().unwrap())).collect();
    moved.sort();
    assert_eq!(moved.len(), 2);
    for ((file, aside), id) in moved.iter().zip([torn, bad_id]) {
        assert_eq!(file, &dir.path().join(format!("{id}.json")));
        assert!(!file.exists() && aside.exists(), "{}", aside.display());
        assert!(aside.file_name().unwrap().to_string_lossy().starts_with(&format!("{id}.json.corrupt-")));
    }
    assert!(loaded.corrupt.iter().any(|c| c.reason.contains("not an operation id")), "{:?}", loaded.corrupt);

    // Quarantined before the engine's own open: the engine opens with the good record, untouched.
    std::fs::write(dir.path().join(format!("{torn}.json")), b"{").unwrap();
    let (e, interrupted, _) = open(dir.path());
    assert!(interrupted.is_empty());
    assert_eq!(e.get(&good.id).unwrap(), good);
    assert!(matches!(e.get(torn), Err(OpsError::NotFound(_))));
    assert!(!dir.path().join(format!("{torn}.json")).exists(), "the engine's open quarantines too");
    assert_eq!(std::fs::read_to_string(&good_file).unwrap(), text);
}

/// What an agent before the shared JSON store wrote: an upgraded agent reads it, and an operation
/// that was running is reported interrupted.
#[tokio::test]
async fn reads_operation_records_in_the_format_written_before() {
    const RUNNING: &str = r#"{
  "id": "op-0123456789abcdef0123",
  "request_id": "r-1",
  "request_digest": "abababababababababababababababababababababababababababababababab",
  "kind": "sleep",
  "target": "pg-1",
  "params": {
    "millis": 10
  },
  "state": "running",
  "progress": {
    "done": 5,
    "total": 10,
    "unit": "ms",
    "message": ""
  },
  "created": "2024-05-01T10:00:00.123Z",
  "started": "2024-05-01T10:00:00.123Z",
  "finished": null,
  "error": null,
  "result": null,
  "cancel_requested": false
}"#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("op-0123456789abcdef0123.json"), RUNNING).unwrap();
    let root = CancellationToken::new();
    // A retention that still covers the record's date.
    let settings = OpsSettings { retention: Duration::from_secs(100 * 365 * 24 * 3600), ..settings() };
    let (e, interrupted) = OperationEngine::open(dir.path(), settings, ResourceLocks::default(), root).unwrap();
    assert_eq!(interrupted.len(), 1);
    let rec = e.get("op-0123456789abcdef0123").unwrap();
    assert_eq!((rec.state, rec.kind.as_str(), rec.target.as_str()), (OpState::Interrupted, "sleep", "pg-1"));
    assert_eq!(rec.progress.done, 5);
    assert_eq!(rec.params, serde_json::json!({ "millis": 10 }));
    assert_eq!(rec.created, SystemTime::UNIX_EPOCH + Duration::from_millis(1_714_557_600_123));
    let (n, j) = sleep_op("r-1", "pg-1", 10);
    assert!(matches!(e.submit(n, j).await, Err(OpsError::RequestIdReused { .. })), "its request_id is known");
}

#[tokio::test]
async fn the_record_names_its_submitter_and_keeps_it_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (e, _, _) = open(dir.path());
    let orchestrator = Submitter {
        identity: "orchestrator".into(),
        subject: "CN=orchestrator,O=platform".into(),
        role: "orchestrator".into(),
    };
    let (n, j) = sleep_op("audited", "pg-1", 1);
    let (submitted, _) = orchestrator.clone().scope(e.submit(n, j)).await.unwrap();
    assert_eq!(submitted.submitted_by.as_ref(), Some(&orchestrator));
    // Beside it, work started outside an API call (the scheduler) names no caller.
    let (n, j) = sleep_op("scheduled", "pg-2", 1);
    let (by_agent, _) = e.submit(n, j).await.unwrap();
    assert_eq!(by_agent.submitted_by, None);
    wait_finished(&e, &submitted.id).await;
    wait_finished(&e, &by_agent.id).await;
    drop(e);
    let (reopened, _, _) = open(dir.path());
    assert_eq!(reopened.get(&submitted.id).unwrap().submitted_by, Some(orchestrator), "the journal keeps it");
}

#[test]
fn a_record_written_before_the_submitter_was_kept_still_reads() {
    let old = r#"{"id":"op-1","request_id":"r","request_digest":"d","kind":"sleep","target":"pg-1","params":null,
        "state":"succeeded","progress":{"done":0,"total":0,"unit":"","message":""},
        "created":"2026-01-01T00:00:00Z"}"#;
    let record: OperationRecord = serde_json::from_str(old).unwrap();
    assert_eq!((record.state, record.submitted_by), (OpState::Succeeded, None));
}
