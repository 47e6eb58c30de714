use super::*;
use crate::instances::Registry;
use crate::instances::fixtures::{rules, spec};
use crate::locks::ResourceLocks;
use crate::ops::{NewOperation, OpState, OperationEngine, OpsSettings, Progress};
use crate::upgrade::KIND;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[test]
fn the_decision_follows_the_recorded_step_and_the_instance_record() {
    // Committed (the record names the target): the new cluster, whatever the step.
    assert_eq!(decide(6, 17, 17), Decision::StartNew);
    assert_eq!(decide(7, 17, 17), Decision::StartNew);
    // Not committed, old cluster never stopped: nothing to roll back; drop the new one if begun.
    assert_eq!(decide(0, 15, 17), Decision::BeforeDowntime { drop_new: false });
    assert_eq!(decide(1, 15, 17), Decision::BeforeDowntime { drop_new: false });
    assert_eq!(decide(STEP_CREATE_NEW, 15, 17), Decision::BeforeDowntime { drop_new: true });
    assert_eq!(decide(3, 15, 17), Decision::BeforeDowntime { drop_new: true });
    // The downtime had begun (stop, pg_upgrade, the switch before it was recorded): roll back.
    for step in [STEP_STOP_OLD, 5, 6] {
        assert_eq!(decide(step, 15, 17), Decision::RollBack, "step {step}");
    }
}

/// Records what recovery asked for; `health_fails`: the health check of every cluster fails.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
    existing: Mutex<Vec<String>>,
    health_fails: bool,
}

impl Recorder {
    fn with_cluster(shown: &str) -> Self {
        let r = Recorder::default();
        r.existing.lock().unwrap().push(shown.to_owned());
        r
    }
    fn note(&self, s: String) {
        self.calls.lock().unwrap().push(s);
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

#[tonic::async_trait]
impl ClusterControl for Recorder {
    async fn start(&self, c: &Cluster) -> Result<(), String> {
        self.note(format!("start {}", c.shown()));
        Ok(())
    }
    async fn stop(&self, c: &Cluster) -> Result<(), String> {
        self.note(format!("stop {}", c.shown()));
        Ok(())
    }
    async fn stop_stray_server(&self, major: u32, data_dir: &Path) {
        self.note(format!("pg_ctl stop {major} {}", data_dir.display()));
    }
    async fn set_start(&self, c: &Cluster, mode: &str) -> Result<(), String> {
        self.note(format!("start.conf {} {mode}", c.shown()));
        Ok(())
    }
    fn exists(&self, c: &Cluster) -> bool {
        self.existing.lock().unwrap().contains(&c.shown())
    }
    async fn drop_cluster(&self, c: &Cluster) -> Result<(), String> {
        self.note(format!("drop {}", c.shown()));
        self.existing.lock().unwrap().retain(|e| *e != c.shown());
        Ok(())
    }
    async fn healthy(&self, c: &Cluster, data_dir: &Path) -> Result<String, String> {
        self.note(format!("health {} {}", c.shown(), data_dir.display()));
        if self.health_fails { Err("connection refused".into()) } else { Ok("1000 rows read".into()) }
    }
}

const OLD_DATA: &str = "/srv/db/pg-1/15/main";
const NEW_DATA: &str = "/srv/db/pg-1/17/main";

struct Crashed {
    _dir: tempfile::TempDir,
    engine: OperationEngine,
    registry: Arc<Registry>,
    op: String,
    dir: std::path::PathBuf,
}

fn open_engine(dir: &Path) -> OperationEngine {
    let settings = OpsSettings { max_concurrent: 2, retention: Duration::from_secs(3600), max_finished: 100 };
    OperationEngine::open(&dir.join("ops"), settings, ResourceLocks::default(), CancellationToken::new()).unwrap().0
}

/// An upgrade 15 -> 17 of pg-1 whose job checkpointed `step` and then the agent died (the engine
/// dropped without a drain, as after SIGKILL), reopened; `committed`: the instance record was
/// switched to 17 before the crash.
async fn crashed_at(step: u64, committed: bool) -> Crashed {
    let dir = tempfile::tempdir().unwrap();
    let registry = Arc::new(Registry::open(dir.path().join("instances"), rules(), ResourceLocks::default()).unwrap());
    let mut s = spec("pg-1");
    s.data_dir = OLD_DATA.into();
    s.engine_version = "15".into();
    registry.register("pg-1", s.clone()).await.unwrap();
    if committed {
        s.engine_version = "17".into();
        s.systemd_unit = "postgresql@17-main.service".into();
        s.data_dir = NEW_DATA.into();
        registry.record_major_upgrade("pg-1", s).await.unwrap();
    }
    let op = {
        let engine = open_engine(dir.path());
        let new = NewOperation {
            request_id: "up-1".into(),
            kind: KIND,
            target: "pg-1".into(),
            params: serde_json::json!({ "target_version": "17", "force": true }),
            exclusive: true,
        };
        let job: crate::ops::engine::JobFn = Box::new(move |ctx| {
            Box::pin(async move {
                ctx.checkpoint(Progress { done: step, total: 8, unit: "steps".into(), message: "pg_upgrade".into() })
                    .await;
                std::future::pending::<()>().await;
                Ok(None)
            })
        });
        let (record, _) = engine.submit(new, job).await.unwrap();
        engine.watch(&record.id).unwrap().wait_for(|r| r.progress.done == step).await.unwrap();
        record.id
    };
    let engine = open_engine(dir.path());
    let path = dir.path().to_path_buf();
    Crashed { _dir: dir, engine, registry, op, dir: path }
}

async fn recover_and_conclude(c: &Crashed, control: &Recorder) -> crate::ops::OperationRecord {
    let pending = c.engine.interrupted_running(KIND);
    assert_eq!(pending.len(), 1, "the crashed upgrade is found to recover");
    let instance = c.registry.get("pg-1").unwrap();
    let error = recover(&pending[0], &instance, control).await;
    c.engine.conclude_interrupted(&c.op, error).await.unwrap()
}

#[tokio::test]
async fn a_crash_during_pg_upgrade_rolls_back_to_the_old_cluster_and_the_operation_says_so() {
    let c = crashed_at(5, false).await;
    let record = c.engine.get(&c.op).unwrap();
    assert_eq!(record.state, OpState::Interrupted);
    assert_eq!(record.progress.done, 5, "the checkpointed step survived the crash");
    let control = Recorder::with_cluster("17/main");
    let done = recover_and_conclude(&c, &control).await;
    assert_eq!(
        control.calls(),
        vec![
            "stop 17/main".to_owned(),
            format!("pg_ctl stop 15 {OLD_DATA}"),
            format!("pg_ctl stop 17 {NEW_DATA}"),
            "start.conf 15/main auto".into(),
            "drop 17/main".into(),
            "start 15/main".into(),
            format!("health 15/main {OLD_DATA}"),
        ]
    );
    assert_eq!(done.state, OpState::Failed);
    let error = done.error.unwrap();
    assert_eq!(error.code, ErrorCode::Aborted);
    for says in [
        "the agent stopped during the upgrade",
        "step 5 (pg_upgrade)",
        "17/main was dropped",
        "15/main was started again and serves",
    ] {
        assert!(error.message.contains(says), "{says:?} missing: {}", error.message);
    }
    // Concluded durably: the next start finds nothing left to recover.
    drop(c.engine);
    let again = open_engine(&c.dir);
    assert!(again.interrupted_running(KIND).is_empty());
    assert_eq!(again.get(&c.op).unwrap().state, OpState::Failed);
}

#[tokio::test]
async fn a_crash_after_the_switch_was_recorded_starts_the_new_cluster_and_leaves_the_old_alone() {
    let c = crashed_at(6, true).await;
    let control = Recorder::default();
    let done = recover_and_conclude(&c, &control).await;
    assert_eq!(
        control.calls(),
        vec!["start.conf 17/main auto".to_owned(), "start 17/main".into(), format!("health 17/main {NEW_DATA}")]
    );
    let error = done.error.unwrap();
    assert_eq!(error.code, ErrorCode::Aborted);
    assert!(error.message.contains("started it and it serves"), "{}", error.message);
}

#[tokio::test]
async fn a_crash_before_the_old_cluster_stopped_drops_only_the_new_cluster() {
    let c = crashed_at(3, false).await;
    let control = Recorder::with_cluster("17/main");
    let done = recover_and_conclude(&c, &control).await;
    assert_eq!(
        control.calls(),
        vec!["drop 17/main".to_owned(), "start 15/main".into(), format!("health 15/main {OLD_DATA}")]
    );
    assert!(done.error.unwrap().message.contains("nothing was changed"));
    // Before step 2 the new cluster is not the job's: one of that name is never dropped.
    let c = crashed_at(1, false).await;
    let control = Recorder::with_cluster("17/main");
    recover_and_conclude(&c, &control).await;
    assert_eq!(control.calls(), vec!["start 15/main".to_owned(), format!("health 15/main {OLD_DATA}")]);
}

#[tokio::test]
async fn an_old_cluster_that_does_not_come_back_is_reported_down_for_an_operator() {
    let c = crashed_at(5, false).await;
    let control = Recorder { health_fails: true, ..Recorder::default() };
    let done = recover_and_conclude(&c, &control).await;
    let error = done.error.unwrap();
    assert_eq!(error.code, ErrorCode::Internal);
    assert!(error.message.contains("connection refused") && error.message.contains("DOWN"), "{}", error.message);
}

#[tokio::test]
async fn only_interrupted_records_are_concluded() {
    let c = crashed_at(5, false).await;
    let control = Recorder::default();
    recover_and_conclude(&c, &control).await;
    let e = c.engine.conclude_interrupted(&c.op, OpError { code: ErrorCode::Aborted, message: "x".into() }).await;
    assert!(matches!(e, Err(crate::ops::OpsError::AlreadyFinished { state: "failed", .. })), "{e:?}");
}

/// The start-up recovery holds the instance's lock (taken before the API serves): an exclusive
/// operation on that instance — a new StartUpgrade — waits until the recovery is done, and
/// operations on other instances do not.
#[tokio::test]
async fn an_operation_on_the_instance_waits_for_its_recovery_and_others_do_not() {
    let c = crashed_at(5, false).await;
    let held = c.engine.try_lock_target("pg-1").expect("nobody holds pg-1's lock at start");
    let submit = |request_id: &str, target: &str| NewOperation {
        request_id: request_id.into(),
        kind: "test.noop",
        target: target.into(),
        params: serde_json::json!({}),
        exclusive: true,
    };
    let noop = || -> crate::ops::engine::JobFn { Box::new(|_ctx| Box::pin(async { Ok(None) })) };
    let (same, _) = c.engine.submit(submit("same-1", "pg-1"), noop()).await.unwrap();
    let (other, _) = c.engine.submit(submit("other-1", "pg-2"), noop()).await.unwrap();
    let mut other_watch = c.engine.watch(&other.id).unwrap();
    other_watch.wait_for(|r| r.state == OpState::Succeeded).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!c.engine.get(&same.id).unwrap().state.is_finished(), "ran while the recovery held pg-1");
    assert!(c.engine.try_lock_target("pg-1").is_none(), "the lock is held");
    drop(held);
    let mut same_watch = c.engine.watch(&same.id).unwrap();
    same_watch.wait_for(|r| r.state == OpState::Succeeded).await.unwrap();
}
