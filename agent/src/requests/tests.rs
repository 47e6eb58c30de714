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
    // A leftover of an interrupted write is removed at start and never read.
    std::fs::write(dir.path().join("requests/.x.json.tmp"), b"torn").unwrap();

    let ledger = open(dir.path(), 10);
    assert_eq!(ledger.len(), 1);
    assert_eq!(files(dir.path()), 1);
    assert!(!dir.path().join("requests/.x.json.tmp").exists());
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
    let (store, _) = JsonStore::<Entry>::open(dir.path().join("requests"), OnCorrupt::RefuseToStart).unwrap();
    store.put(&old).unwrap();
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

/// The ledger's policy is `Quarantine`: a corrupt entry is moved aside as
/// `<key>.json.corrupt-<time>`, and the ledger opens and replays the rest.
#[tokio::test]
async fn a_corrupt_entry_is_quarantined_and_the_rest_still_replay() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("requests");
    let runs = AtomicUsize::new(0);
    let ledger = open(dir.path(), 10);
    let first = call(&ledger, &remove("r-1", "pg-1"), &runs).await.unwrap();
    call(&ledger, &remove("r-2", "pg-1"), &runs).await.unwrap();
    call(&ledger, &remove("r-3", "pg-1"), &runs).await.unwrap();
    drop(ledger);
    let name = |request_id: &str| format!("{}.json", entry_key("RemoveInstance", request_id));
    // r-2 torn in half; r-3's entry copied under the name of r-4, whose key it does not have.
    let r2 = std::fs::read(folder.join(name("r-2"))).unwrap();
    std::fs::write(folder.join(name("r-2")), &r2[..r2.len() / 2]).unwrap();
    std::fs::copy(folder.join(name("r-3")), folder.join(name("r-4"))).unwrap();

    let ledger = open(dir.path(), 10);
    assert_eq!(ledger.len(), 2);
    let names: Vec<String> =
        std::fs::read_dir(&folder).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    for request_id in ["r-2", "r-4"] {
        assert!(!folder.join(name(request_id)).exists(), "{request_id}");
        let aside = format!("{}.corrupt-", name(request_id));
        assert!(names.iter().any(|n| n.starts_with(&aside)), "{request_id} quarantined: {names:?}");
    }
    assert_eq!(files(dir.path()), 2);
    assert_eq!(call(&ledger, &remove("r-1", "pg-1"), &runs).await.unwrap(), first, "the good entry replays");
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    call(&ledger, &remove("r-2", "pg-1"), &runs).await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 4, "without its entry, a retry of r-2 runs again");
}

/// What an agent before the shared JSON store wrote (file name and content): an upgraded agent
/// replays it.
#[tokio::test]
async fn replays_an_entry_in_the_format_written_before() {
    // RemoveInstance r-1 on pg-1, answered with instance pg-1 at generation 3.
    const NAME: &str = "11881d8940b4126e618bee3b8f394f9fa1258869cea9e220322a4342d259032b.json";
    const ENTRY: &str = r#"{"rpc":"RemoveInstance","request_id":"r-1","request_digest":"64c322449043cb70002a42ba39758c521b15c4ed24f20d2ac6af23298b92c959","created":"2024-05-01T10:00:00.123Z","response":"0a0470672d312803"}"#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("requests")).unwrap();
    std::fs::write(dir.path().join("requests").join(NAME), ENTRY).unwrap();
    // A retention that still covers the entry's date.
    let settings = LedgerSettings { retention: Duration::from_secs(100 * 365 * 24 * 3600), max_entries: 10 };
    let ledger = RequestLedger::open(dir.path().join("requests"), settings).unwrap();
    assert_eq!(ledger.len(), 1);
    let runs = AtomicUsize::new(0);
    let replayed = call(&ledger, &remove("r-1", "pg-1"), &runs).await.unwrap();
    assert_eq!(replayed, pb::Instance { id: "pg-1".into(), generation: 3, ..Default::default() });
    assert_eq!(runs.load(Ordering::SeqCst), 0, "replayed, not run");
}
