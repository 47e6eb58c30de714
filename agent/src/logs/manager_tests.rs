//! The instance id of every Logs call answers the registry's code: a malformed (here empty) id is
//! INVALID_ARGUMENT, an unknown instance NOT_FOUND, and a registered instance goes through.

use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use super::drain::{DrainSpec, DrainTarget};
use super::hub::TailRequest;
use super::manager::LogManager;
use super::record::Severity;
use super::settings::{DrainPolicyConfig, LogsConfig};
use crate::error::{ErrorCode, HasErrorCode};
use crate::instances::{Registry, fixtures};
use crate::locks::ResourceLocks;

const REGISTERED: &str = "pg-1";
const UNKNOWN: &str = "pg-9";

/// A manager over a registry holding [`REGISTERED`], without log sources (nothing to read here).
struct Fixture {
    manager: LogManager,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path().join("instances"), fixtures::rules(), ResourceLocks::default()).unwrap();
    let spec = crate::instances::InstanceSpec { log_sources: Vec::new(), ..fixtures::spec(REGISTERED) };
    registry.register(REGISTERED, spec).await.unwrap();
    let cancel = CancellationToken::new();
    // The drains of these tests are on 127.0.0.1, as in --dev.
    let cfg = LogsConfig { drain_policy: DrainPolicyConfig::loopback(), ..LogsConfig::default() };
    let manager = LogManager::new(dir.path().join("logs"), cfg, "h".into(), Arc::new(registry), cancel.clone());
    Fixture { manager, cancel, _dir: dir }
}

fn code<T>(r: Result<T, super::error::LogsError>) -> Result<T, ErrorCode> {
    r.map_err(|e| e.code())
}

/// A syslog drain to a closed port: it is set up and buffers; delivery is not what these tests check.
fn drain(name: &str) -> DrainSpec {
    DrainSpec {
        name: name.into(),
        target: DrainTarget::Syslog { address: "127.0.0.1:9".into(), tls: false, ca_pem: String::new() },
    }
}

fn tail_of(instance: &str) -> TailRequest {
    TailRequest {
        instance: Some(instance.into()),
        last_lines: 10,
        since: None,
        follow: false,
        min_severity: Severity::Unspecified,
    }
}

#[tokio::test]
async fn list_drains_answers_invalid_argument_not_found_or_the_list() {
    let f = fixture().await;
    assert_eq!(code(f.manager.list_drains("")).err(), Some(ErrorCode::InvalidArgument));
    assert_eq!(code(f.manager.list_drains(UNKNOWN)).err(), Some(ErrorCode::NotFound));
    assert_eq!(f.manager.list_drains(REGISTERED).unwrap(), Vec::new());
}

#[tokio::test]
async fn set_drains_answers_invalid_argument_not_found_or_the_drains() {
    let f = fixture().await;
    assert_eq!(code(f.manager.set_drains("", vec![drain("a")]).await).err(), Some(ErrorCode::InvalidArgument));
    assert_eq!(code(f.manager.set_drains(UNKNOWN, vec![drain("a")]).await).err(), Some(ErrorCode::NotFound));
    assert_eq!(f.manager.set_drains(REGISTERED, vec![drain("a")]).await.unwrap(), vec![drain("a")]);
    assert_eq!(f.manager.list_drains(REGISTERED).unwrap(), vec![drain("a")], "the drain was stored");
}

#[tokio::test]
async fn set_drains_refuses_a_destination_outside_the_policy_naming_the_field() {
    let f = fixture().await;
    let private = DrainSpec {
        name: "a".into(),
        target: DrainTarget::Syslog { address: "10.0.0.5:514".into(), tls: true, ca_pem: String::new() },
    };
    let e = f.manager.set_drains(REGISTERED, vec![private]).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    assert!(e.to_string().contains("drains[0].syslog.address") && e.to_string().contains("private"), "{e}");
    assert_eq!(f.manager.list_drains(REGISTERED).unwrap(), Vec::new(), "nothing was stored");
    // Allowed path beside it: loopback is listed in this policy.
    assert_eq!(f.manager.set_drains(REGISTERED, vec![drain("a")]).await.unwrap(), vec![drain("a")]);
}

#[tokio::test]
async fn get_drain_status_answers_invalid_argument_not_found_or_the_status() {
    let f = fixture().await;
    f.manager.set_drains(REGISTERED, vec![drain("a")]).await.unwrap();
    assert_eq!(code(f.manager.drain_status("", "a").await).err(), Some(ErrorCode::InvalidArgument));
    assert_eq!(code(f.manager.drain_status(UNKNOWN, "a").await).err(), Some(ErrorCode::NotFound));
    assert_eq!(code(f.manager.drain_status(REGISTERED, "b").await).err(), Some(ErrorCode::NotFound));
    assert_eq!(f.manager.drain_status(REGISTERED, "a").await.unwrap().name, "a");
}

#[tokio::test]
async fn tail_answers_invalid_argument_not_found_or_a_tail() {
    let f = fixture().await;
    assert_eq!(code(f.manager.tail(&tail_of(""))).err(), Some(ErrorCode::InvalidArgument));
    assert_eq!(code(f.manager.tail(&tail_of(UNKNOWN))).err(), Some(ErrorCode::NotFound));
    let tail = f.manager.tail(&tail_of(REGISTERED)).unwrap();
    assert!(tail.backlog.is_empty() && tail.follow.is_none(), "nothing was logged and follow was not asked");
    // No instance at all is every instance's records (the API sends an empty instance_id as None).
    assert!(f.manager.tail(&TailRequest { instance: None, ..tail_of(REGISTERED) }).is_ok());
}

/// Journalctl processes of the fake journalctl still running (not exited, not a zombie).
fn live_journalctls(pids: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(pids) else { return 0 };
    entries
        .flatten()
        .filter(|e| {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", e.file_name().to_string_lossy()));
            stat.is_ok_and(|s| s.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
        })
        .count()
}

/// Waits up to 10 s for `f` to hold.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_stops_the_sources_and_journalctl_it_started_on_every_retry() {
    use crate::instances::LogSource;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (logs_root, pids) = (dir.path().join("pglog"), dir.path().join("pids"));
    std::fs::create_dir_all(&logs_root).unwrap();
    std::fs::create_dir_all(&pids).unwrap();
    let script = dir.path().join("journalctl");
    std::fs::write(&script, format!("#!/bin/sh\necho $$ > {}/$$\nexec sleep 600\n", pids.display())).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let rules = crate::instances::ValidationRules { log_roots: vec![logs_root.clone()], ..fixtures::rules() };
    let registry = Registry::open(dir.path().join("instances"), rules, ResourceLocks::default()).unwrap();
    let log_sources = vec![
        LogSource::FileGlob(logs_root.join("*.log").display().to_string()),
        LogSource::JournaldUnit("postgresql@15-main.service".into()),
    ];
    registry
        .register(REGISTERED, crate::instances::InstanceSpec { log_sources, ..fixtures::spec(REGISTERED) })
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let cfg = LogsConfig { journalctl: script, drain_policy: DrainPolicyConfig::loopback(), ..LogsConfig::default() };
    let manager = LogManager::new(dir.path().join("logs"), cfg, "h".into(), Arc::new(registry), cancel);

    // The drain's buffer state is corrupt: every start of the instance fails at its drain, after
    // its tail sources (a file glob and journalctl) were started.
    let state = dir.path().join("logs").join(REGISTERED).join("a").join("state.json");
    std::fs::create_dir_all(state.parent().unwrap()).unwrap();
    std::fs::write(&state, "{not json").unwrap();
    for _ in 0..5 {
        let e = manager.set_drains(REGISTERED, vec![drain("a")]).await.expect_err("the corrupt buffer fails the start");
        assert!(matches!(e, super::error::LogsError::BufferStateCorrupt { .. }), "{e}");
        assert_eq!(manager.live_sources(), 0, "the failed start stopped its sources before answering");
    }
    // Anything leaked would have started its journalctl by now.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(manager.live_sources(), 0);
    eventually("no journalctl outlives a failed start", || live_journalctls(&pids) == 0).await;

    // Allowed path: with the buffer fixed, the start succeeds and both readers of the tail and of
    // the drain run, each with its journalctl.
    std::fs::remove_file(&state).unwrap();
    manager.set_drains(REGISTERED, vec![drain("a")]).await.unwrap();
    assert_eq!(manager.live_sources(), 4, "tail and drain each follow the file glob and the unit");
    eventually("both journalctl readers run", || live_journalctls(&pids) == 2).await;
}
