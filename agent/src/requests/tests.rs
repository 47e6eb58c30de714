use super::*;
use dbagent_proto::v1 as pb;
use std::sync::atomic::{AtomicUsize, Ordering};
use tonic::Code;

#[derive(Debug)]
enum TestError {
    Ledger(LedgerError),
    Work,
}

impl From<LedgerError> for TestError {
    fn from(e: LedgerError) -> Self {
        TestError::Ledger(e)
    }
}

const HOUR: Duration = Duration::from_secs(3600);

fn settings(max_entries: usize) -> LedgerSettings {
    LedgerSettings { retention: HOUR, max_entries }
}

fn open(dir: &std::path::Path, max_entries: usize) -> RequestLedger {
    RequestLedger::open(dir.join("requests"), settings(max_entries)).unwrap()
}

fn remove(request_id: &str, id: &str) -> pb::RemoveInstanceRequest {
    pb::RemoveInstanceRequest { request_id: request_id.into(), id: id.into() }
}

/// Runs a RemoveInstance through `ledger` whose work answers generation `runs + 1`, counting runs.
async fn call(
    ledger: &RequestLedger,
    req: &pb::RemoveInstanceRequest,
    runs: &AtomicUsize,
) -> Result<pb::Instance, TestError> {
    ledger
        .once("RemoveInstance", &req.request_id, req, || async {
            let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(pb::Instance { id: req.id.clone(), generation: n as u64, ..Default::default() })
        })
        .await
}

fn files(dir: &std::path::Path) -> usize {
    crate::fsutil::json_files(&dir.join("requests")).unwrap().len()
}

#[tokio::test]
async fn a_repeat_gets_the_stored_response_without_running_again() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path(), 10);
    let runs = AtomicUsize::new(0);
    let first = call(&ledger, &remove("r-1", "pg-1"), &runs).await.unwrap();
    let second = call(&ledger, &remove("r-1", "pg-1"), &runs).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(first.generation, 1);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the work must not run twice");
    // Another request_id, or the same one on another RPC, is another call.
    call(&ledger, &remove("r-2", "pg-1"), &runs).await.unwrap();
    let req = remove("r-1", "pg-1");
    let other: Result<pb::Instance, TestError> =
        ledger.once("UpdateInstance", "r-1", &req, || async { Ok(Default::default()) }).await;
    other.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(ledger.len(), 3);
    assert_eq!(files(dir.path()), 3);
}

#[tokio::test]
async fn a_request_id_reused_for_another_request_is_already_exists() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path(), 10);
    let runs = AtomicUsize::new(0);
    call(&ledger, &remove("r-1", "pg-1"), &runs).await.unwrap();
    let Err(TestError::Ledger(e)) = call(&ledger, &remove("r-1", "pg-2"), &runs).await else {
        panic!("a different request with the same request_id must be refused");
    };
    assert!(matches!(e, LedgerError::RequestIdReused { .. }), "{e:?}");
    let status = tonic::Status::from(e);
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(status.message().contains("already used for a different"), "{}", status.message());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_bad_request_id_is_invalid_argument_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path(), 10);
    let runs = AtomicUsize::new(0);
    let Err(TestError::Ledger(e)) = call(&ledger, &remove("", "pg-1"), &runs).await else {
        panic!("an empty request_id")
    };
    assert_eq!(tonic::Status::from(e).code(), Code::InvalidArgument);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_failed_call_is_not_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path(), 10);
    let req = remove("r-1", "pg-1");
    let failed: Result<pb::Instance, TestError> =
        ledger.once("RemoveInstance", "r-1", &req, || async { Err(TestError::Work) }).await;
    assert!(matches!(failed, Err(TestError::Work)));
    assert!(ledger.is_empty());
    assert_eq!(files(dir.path()), 0);
    let runs = AtomicUsize::new(0);
    assert_eq!(call(&ledger, &req, &runs).await.unwrap().generation, 1, "the retry must run the work");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn entries_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let runs = AtomicUsize::new(0);
    let first = call(&open(dir.path(), 10), &remove("r-1", "pg-1"), &runs).await.unwrap();
    // A leftover of an interrupted write and a file not named by its key are dropped at start.
    std::fs::write(dir.path().join("requests/.x.json.tmp"), b"torn").unwrap();
    std::fs::write(dir.path().join("requests/garbage.json"), b"{").unwrap();

    let ledger = open(dir.path(), 10);
    assert_eq!(ledger.len(), 1);
    assert_eq!(files(dir.path()), 1);
    let again = call(&ledger, &remove("r-1", "pg-1"), &runs).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the reopened ledger must replay, not run again");
    assert!(matches!(
        call(&ledger, &remove("r-1", "pg-2"), &runs).await,
        Err(TestError::Ledger(LedgerError::RequestIdReused { .. }))
    ));
}

#[tokio::test]
async fn entries_older_than_the_retention_are_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path(), 10);
    let runs = AtomicUsize::new(0);
    call(&ledger, &remove("r-1", "pg-1"), &runs).await.unwrap();
    assert_eq!(ledger.prune(SystemTime::now() + HOUR / 2).unwrap(), 0, "still within the retention");
    assert_eq!(ledger.prune(SystemTime::now() + HOUR * 2).unwrap(), 1);
    assert!(ledger.is_empty());
    assert_eq!(files(dir.path()), 0);
    call(&ledger, &remove("r-1", "pg-1"), &runs).await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2, "a pruned request runs again");

    // At start-up too: an entry written long ago is gone after the open.
    let old =
        Entry::new("RemoveInstance", "r-old", "00".into(), &pb::Instance::default(), SystemTime::now() - HOUR * 2);
    Store::new(dir.path().join("requests")).save(&entry_key("RemoveInstance", "r-old"), &old).unwrap();
    assert_eq!(files(dir.path()), 2);
    let reopened = open(dir.path(), 10);
    assert_eq!(reopened.len(), 1);
    assert_eq!(files(dir.path()), 1);
}

#[tokio::test]
async fn the_oldest_entries_go_beyond_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path(), 3);
    let runs = AtomicUsize::new(0);
    for n in 1..=5 {
        call(&ledger, &remove(&format!("r-{n}"), "pg-1"), &runs).await.unwrap();
        // Distinct creation times, so "oldest" is well defined.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(ledger.len(), 3);
    assert_eq!(files(dir.path()), 3);
    assert_eq!(call(&ledger, &remove("r-5", "pg-1"), &runs).await.unwrap().generation, 5, "the newest is kept");
    assert_eq!(runs.load(Ordering::SeqCst), 5);
    assert_eq!(call(&ledger, &remove("r-1", "pg-1"), &runs).await.unwrap().generation, 6, "the oldest was dropped");
}

#[tokio::test]
async fn simultaneous_identical_calls_do_the_work_once() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path(), 10);
    let runs = AtomicUsize::new(0);
    let req = remove("r-1", "pg-1");
    let slow = || {
        let (ledger, runs, req) = (&ledger, &runs, &req);
        async move {
            ledger
                .once("RemoveInstance", "r-1", req, || async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                    Ok::<_, TestError>(pb::Instance { generation: n as u64, ..Default::default() })
                })
                .await
        }
    };
    let (a, b) = tokio::join!(slow(), slow());
    assert_eq!(a.unwrap(), b.unwrap());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(ledger.inner.running_locks().is_empty(), "released key locks must not accumulate");
}
