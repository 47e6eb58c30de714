//! The instance id of every Logs call answers the registry's code: a malformed (here empty) id is
//! INVALID_ARGUMENT, an unknown instance NOT_FOUND, and a registered instance goes through.

use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use super::drain::{DrainSpec, DrainTarget};
use super::hub::TailRequest;
use super::manager::LogManager;
use super::record::Severity;
use super::settings::LogsConfig;
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
    let manager =
        LogManager::new(dir.path().join("logs"), LogsConfig::default(), "h".into(), Arc::new(registry), cancel.clone());
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
