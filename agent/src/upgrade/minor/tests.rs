use super::memory::MemoryMinorHost;
use super::packages::{Owner, belongs_to, check_packages, check_repository, check_repository_path, valid_name};
use super::service::{MinorRequest, MinorSettings, MinorUpgrades};
use super::version::{Target, Version, classify, current_major};
use super::{KIND, MinorError};
use crate::error::{ErrorCode, HasErrorCode};
use crate::health::{Healthy, ProbeError, Prober};
use crate::instances::fixtures::{rules, spec};
use crate::instances::{Engine, Instance, Registry};
use crate::locks::ResourceLocks;
use crate::maintenance::Clock;
use crate::ops::{OpState, OperationEngine, OperationRecord, OpsSettings};
use crate::systemd::InMemoryServiceManager;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

fn v(text: &str) -> Version {
    Version::parse(text).unwrap()
}

#[test]
fn targets_within_the_major_are_minor_a_newer_postgresql_major_is_the_major_upgrades_and_the_rest_refused() {
    let pg = current_major("pg-1", Engine::Postgresql, "15.4").unwrap();
    assert_eq!(pg, v("15"));
    assert_eq!(classify("pg-1", Engine::Postgresql, &pg, "15").unwrap(), Target::Minor { major: v("15"), exact: None });
    assert_eq!(
        classify("pg-1", Engine::Postgresql, &pg, "15.20").unwrap(),
        Target::Minor { major: v("15"), exact: Some(v("15.20")) }
    );
    assert_eq!(classify("pg-1", Engine::Postgresql, &pg, "17").unwrap(), Target::PostgresqlMajor);
    let e = classify("pg-1", Engine::Postgresql, &pg, "14").unwrap_err();
    assert!(matches!(e, MinorError::Downgrade { .. }) && e.code() == ErrorCode::FailedPrecondition, "{e}");

    let maria = current_major("m-1", Engine::Mariadb, "10.11").unwrap();
    assert_eq!(
        classify("m-1", Engine::Mariadb, &maria, "10.11.19").unwrap(),
        Target::Minor { major: v("10.11"), exact: Some(v("10.11.19")) }
    );
    let e = classify("m-1", Engine::Mariadb, &maria, "11.4").unwrap_err();
    assert!(matches!(e, MinorError::MajorNotOffered { .. }), "{e}");
    assert_eq!(e.code(), ErrorCode::FailedPrecondition);
    assert!(e.to_string().contains("within its major only"), "{e}");
    for bad in ["", "10", "10.11.19.1.2", "10.11.x", "v10.11", "10..11"] {
        let e = classify("m-1", Engine::Mariadb, &maria, bad).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument, "{bad:?}: {e}");
        assert!(e.to_string().starts_with("target_version: "), "{e}");
    }
    let redis = current_major("r-1", Engine::Redis, "7.0.15").unwrap();
    assert!(matches!(classify("r-1", Engine::Redis, &redis, "7.0").unwrap(), Target::Minor { exact: None, .. }));
    assert!(matches!(classify("r-1", Engine::Redis, &redis, "7.2").unwrap_err(), MinorError::MajorNotOffered { .. }));
    assert!(current_major("r-1", Engine::Redis, "7").is_err(), "a Redis major has two numbers");
}

#[test]
fn server_versions_are_read_from_what_each_server_says() {
    assert_eq!(Version::from_server("15.14 (Debian 15.14-0+deb12u1)"), Some(v("15.14")));
    assert_eq!(Version::from_server("10.11.18-MariaDB-0+deb12u1"), Some(v("10.11.18")));
    assert_eq!(Version::from_server("7.0.15"), Some(v("7.0.15")));
    assert_eq!(Version::from_server("memory"), None);
    assert!(v("10.11.18").compare(&v("10.11.19")).is_lt());
    assert!(v("15.9").compare(&v("15.10")).is_lt(), "numbers compare as numbers");
}

#[test]
fn package_names_follow_debians_rules_and_must_be_the_instances_engines() {
    for ok in ["mariadb-server", "libpq5", "postgresql-15", "g++", "redis-tools"] {
        assert!(valid_name(ok), "{ok}");
    }
    for bad in ["", "a", "Mariadb", "mariadb-server=1:10.11.19", "mariadb/bookworm", "-x", "../x", "a b"] {
        assert!(!valid_name(bad), "{bad}");
    }
    assert!(belongs_to(Engine::Postgresql, "15", "postgresql-15"));
    assert!(belongs_to(Engine::Postgresql, "15", "postgresql-client-15"));
    assert!(belongs_to(Engine::Postgresql, "15", "postgresql-15-postgis-3"));
    assert!(belongs_to(Engine::Postgresql, "15", "libpq5"));
    assert!(!belongs_to(Engine::Postgresql, "15", "postgresql-16"), "another major's server");
    assert!(!belongs_to(Engine::Postgresql, "15", "postgresql-150"));
    assert!(!belongs_to(Engine::Postgresql, "15", "postgresql-common"));
    assert!(belongs_to(Engine::Mariadb, "10.11", "mariadb-server"));
    assert!(belongs_to(Engine::Mariadb, "10.11", "mysql-common"));
    assert!(!belongs_to(Engine::Mariadb, "10.11", "redis-server"));
    assert!(!belongs_to(Engine::Mariadb, "10.11", "mariadb-"));
    assert!(belongs_to(Engine::Redis, "7.0", "redis-server"));
    assert!(!belongs_to(Engine::Redis, "7.0", "openssh-server"));

    let e = check_packages(Engine::Redis, "7.0", &["redis-server".into(), "mariadb-server".into()]).unwrap_err();
    assert!(matches!(&e, MinorError::ForeignPackage { name, .. } if name == "mariadb-server"), "{e}");
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    let e = check_packages(Engine::Redis, "7.0", &["redis-server".into(), "redis-server".into()]).unwrap_err();
    assert!(e.to_string().contains("twice"), "{e}");
    let ok = check_packages(Engine::Redis, "7.0", &["redis-server".into(), "redis-tools".into()]).unwrap();
    assert_eq!(ok, ["redis-server", "redis-tools"]);
}

#[test]
fn the_repository_path_must_be_absolute_beneath_the_root_without_dot_dot() {
    let root = Path::new("/var/lib/dbagent/packages");
    assert_eq!(
        check_repository_path(root, "/var/lib/dbagent/packages/mariadb-10.11.19").unwrap(),
        PathBuf::from("mariadb-10.11.19")
    );
    for bad in [
        "relative/repo",
        "/var/lib/dbagent/packages/../../../tmp",
        "/var/lib/dbagent/packages/./x",
        "/var/lib/dbagent/packages",
        "/var/lib/dbagent/packages-evil/x",
        "/srv/db/pg-1/repo",
        "/var/lib/dbagent/packages/a b",
        "/var/lib/dbagent/packages//x",
    ] {
        let e = check_repository_path(root, bad).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument, "{bad}: {e}");
        assert!(e.to_string().starts_with("package_repository: "), "{e}");
    }
}

/// A repository root beneath a fresh folder: `<tmp>/packages` (0755) with `repo` (0755) holding
/// `Packages` and one .deb (0644).
fn repository() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = dir.path().join("packages");
    let repo = root.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&repo, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (name, text) in [("Packages", "Package: redis-server\n"), ("redis-server_7.0.15_amd64.deb", "deb")] {
        std::fs::write(repo.join(name), text).unwrap();
        std::fs::set_permissions(repo.join(name), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    (dir, root)
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_repository_an_engine_user_could_change_is_refused_and_a_root_only_one_is_accepted() {
    let owner = Owner::agent();
    let refused = |root: &Path, rel: &str, why: &str| {
        let e = check_repository(root, Path::new(rel), owner).unwrap_err();
        assert!(matches!(e, MinorError::Repository { .. }), "{why}: {e}");
        assert_eq!(e.code(), ErrorCode::FailedPrecondition, "{why}: {e}");
        e.to_string()
    };
    let (_dir, root) = repository();
    let repo = root.join("repo");
    assert_eq!(check_repository(&root, Path::new("repo"), owner).unwrap(), 1, "the allowed path: one .deb");

    chmod(&repo, 0o775);
    assert!(refused(&root, "repo", "group-writable folder").contains("writable by its group or others"));
    chmod(&repo, 0o755);
    chmod(&root, 0o1777);
    assert!(refused(&root, "repo", "a sticky world-writable root").contains("writable"));
    chmod(&root, 0o755);
    chmod(&repo.join("Packages"), 0o666);
    assert!(refused(&root, "repo", "writable index").contains("Packages"));
    chmod(&repo.join("Packages"), 0o644);

    // A link where the repository is: a planted folder elsewhere is not read.
    std::os::unix::fs::symlink(&repo, root.join("linked")).unwrap();
    assert!(refused(&root, "linked", "link to the folder").contains("not a folder"));
    // A link inside the repository (to a package an engine user can write).
    let tenant = root.parent().unwrap().join("tenant.deb");
    std::fs::write(&tenant, "evil").unwrap();
    std::os::unix::fs::symlink(&tenant, repo.join("evil.deb")).unwrap();
    assert!(refused(&root, "repo", "a link among the files").contains("regular file"));
    std::fs::remove_file(repo.join("evil.deb")).unwrap();
    // A package of another owner.
    if rustix::process::geteuid().is_root() {
        std::fs::write(repo.join("other.deb"), "x").unwrap();
        chmod(&repo.join("other.deb"), 0o644);
        std::os::unix::fs::chown(repo.join("other.deb"), Some(998), Some(998)).unwrap();
        assert!(refused(&root, "repo", "a file of another user").contains("uid 998"));
        std::fs::remove_file(repo.join("other.deb")).unwrap();
    }
    std::fs::remove_file(repo.join("Packages")).unwrap();
    assert!(refused(&root, "repo", "no index").contains("no Packages index"));
    assert!(refused(&root, "missing", "missing").contains("does not exist"));
}

/// The fixture's window is Sunday 02:00 UTC for an hour: a clock three seconds before it.
struct StartedAt {
    base: SystemTime,
    start: Instant,
}

impl Clock for StartedAt {
    fn now(&self) -> SystemTime {
        self.base + self.start.elapsed()
    }
}

fn sunday_before_two() -> Arc<StartedAt> {
    Arc::new(StartedAt { base: humantime::parse_rfc3339("2026-12-06T01:59:57Z").unwrap(), start: Instant::now() })
}

/// What each server says: `before` until its unit was restarted, `after` from then on; down while
/// its unit is not active.
struct RestartProber {
    services: Arc<InMemoryServiceManager>,
    before: String,
    after: String,
}

#[async_trait::async_trait]
impl Prober for RestartProber {
    async fn check(&self, instance: &Instance, _deadline: Duration) -> Result<Healthy, ProbeError> {
        let unit = self.services.unit(&instance.spec.systemd_unit).unwrap_or_default();
        if unit.active_state != "active" {
            return Err(ProbeError::Connect {
                engine: instance.spec.engine.as_str(),
                target: instance.id.clone(),
                user: "dbagent_monitor".into(),
                message: "No such file or directory (os error 2)".into(),
            });
        }
        let said = if unit.restarts == 0 { &self.before } else { &self.after };
        Ok(Healthy { server_version: said.clone(), latency: Duration::from_millis(1) })
    }
}

struct Setup {
    upgrades: MinorUpgrades,
    services: Arc<InMemoryServiceManager>,
    host: Arc<MemoryMinorHost>,
    root: PathBuf,
    _dir: tempfile::TempDir,
    _repo: tempfile::TempDir,
    ops_dir: PathBuf,
}

async fn setup(before: &str, after: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let locks = ResourceLocks::default();
    let registry = Arc::new(Registry::open(dir.path().join("instances"), rules(), locks.clone()).unwrap());
    let mut maria = spec("maria-1");
    (maria.engine, maria.engine_version, maria.systemd_unit, maria.os_user) =
        (Engine::Mariadb, "10.11".into(), "mariadb.service".into(), "mysql".into());
    maria.log_sources.clear();
    registry.register("maria-1", maria).await.unwrap();
    let mut redis = spec("redis-1");
    (redis.engine, redis.engine_version, redis.systemd_unit, redis.os_user) =
        (Engine::Redis, "7.0".into(), "redis-server.service".into(), "redis".into());
    redis.log_sources.clear();
    registry.register("redis-1", redis).await.unwrap();
    let ops_dir = dir.path().join("ops");
    let operations = open_ops(&ops_dir, locks).0;
    let services = Arc::new(InMemoryServiceManager::new());
    services.add_running("mariadb.service");
    services.add_running("redis-server.service");
    let host = Arc::new(MemoryMinorHost::default());
    let (repo_dir, root) = repository();
    let upgrades = upgrades_on(registry, operations, services.clone(), host.clone(), &root, before, after);
    Setup { upgrades, services, host, root, _dir: dir, _repo: repo_dir, ops_dir }
}

fn open_ops(dir: &Path, locks: ResourceLocks) -> (OperationEngine, CancellationToken) {
    let root = CancellationToken::new();
    let settings = OpsSettings { max_concurrent: 2, retention: Duration::from_secs(3600), max_finished: 100 };
    let (operations, _) = OperationEngine::open(dir, settings, locks, root.clone()).unwrap();
    operations.set_window_clock(sunday_before_two());
    (operations, root)
}

fn upgrades_on(
    registry: Arc<Registry>,
    operations: OperationEngine,
    services: Arc<InMemoryServiceManager>,
    host: Arc<MemoryMinorHost>,
    root: &Path,
    before: &str,
    after: &str,
) -> MinorUpgrades {
    let prober = RestartProber { services: services.clone(), before: before.into(), after: after.into() };
    MinorUpgrades {
        registry,
        operations,
        prober: Arc::new(prober),
        services,
        host,
        settings: MinorSettings {
            repository_root: root.to_path_buf(),
            expected: Duration::from_secs(60),
            restart_timeout: Duration::from_secs(5),
            health_deadline: Duration::from_millis(600),
            probe_deadline: Duration::from_millis(100),
            owner: Owner::agent(),
        },
        install_lock: Arc::default(),
    }
}

fn request(id: &str, instance: &str, target: &str) -> MinorRequest {
    MinorRequest {
        request_id: id.into(),
        instance_id: instance.into(),
        target_version: target.into(),
        force: true,
        ..MinorRequest::default()
    }
}

async fn finished(ops: &OperationEngine, id: &str) -> OperationRecord {
    ops.watch(id).unwrap().wait_for(|r| r.state.is_finished()).await.unwrap().clone()
}

#[tokio::test]
async fn a_mariadb_minor_upgrade_installs_from_the_repository_restarts_runs_mariadb_upgrade_and_reports_both_versions()
{
    let s = setup("10.11.18-MariaDB-0+deb12u1", "10.11.19-MariaDB-0+deb12u1").await;
    s.host.installed.lock().unwrap().insert("mariadb-server".into(), "1:10.11.18-0+deb12u1".into());
    s.host.repository.lock().unwrap().insert("mariadb-server".into(), "1:10.11.19-0+deb12u1".into());
    let repo = s.root.join("repo");
    let req = MinorRequest {
        package_repository: repo.display().to_string(),
        packages: vec!["mariadb-server".into()],
        ..request("r1", "maria-1", "10.11.19")
    };
    assert!(s.upgrades.takes(&req).unwrap(), "MariaDB upgrades are minor ones");
    let op = s.upgrades.start(req.clone()).await.unwrap();
    assert_eq!(op.kind, KIND);
    let done = finished(&s.upgrades.operations, &op.id).await;
    assert_eq!(done.state, OpState::Succeeded, "{:?}", done.error);
    let r = done.result.unwrap();
    assert_eq!(r["version_before"], "10.11.18");
    assert_eq!(r["version_after"], "10.11.19");
    assert_eq!(r["packages"][0]["before"], "1:10.11.18-0+deb12u1");
    assert_eq!(r["packages"][0]["after"], "1:10.11.19-0+deb12u1");
    assert_eq!(r["mariadb_upgrade"]["ran"], true);
    assert_eq!(r["restarted_by_packages"], false);
    assert!(r["downtime_ms"].is_u64());
    assert_ne!(r["main_pid_before"], r["main_pid_after"], "the unit was restarted");
    assert_eq!(s.services.unit("mariadb.service").unwrap().restarts, 1);
    assert_eq!(*s.host.mariadb_upgrades.lock().unwrap(), 1);
    assert_eq!(s.host.installs.lock().unwrap().as_slice(), [(repo, vec!["mariadb-server".to_owned()])]);
    // The same request again is the same operation, not a second upgrade.
    assert_eq!(s.upgrades.start(req).await.unwrap().id, op.id);
    assert_eq!(s.services.unit("mariadb.service").unwrap().restarts, 1);
}

#[tokio::test]
async fn a_server_that_does_not_come_back_fails_the_operation_with_its_units_state_and_journal() {
    let s = setup("7.0.15", "7.0.15").await;
    s.services.fail_next_job("redis-server.service", "exit-code");
    *s.host.journal.lock().unwrap() = "*** FATAL CONFIG FILE ERROR (Redis 7.0.15) *** Bad directive".into();
    let op = s.upgrades.start(request("r1", "redis-1", "7.0")).await.unwrap();
    let done = finished(&s.upgrades.operations, &op.id).await;
    assert_eq!(done.state, OpState::Failed);
    let e = done.error.unwrap();
    assert_eq!(e.code, ErrorCode::Unavailable, "{}", e.message);
    for said in ["did not come back", "unit failed", "exit-code", "Bad directive", "No package was installed"] {
        assert!(e.message.contains(said), "{said:?} in {}", e.message);
    }
    assert!(s.host.installs.lock().unwrap().is_empty());

    // The allowed path beside it (the operator fixed the unit): the unit restarts, the server
    // answers, Redis needs no upgrade tool.
    s.services.add_running("redis-server.service");
    let op = s.upgrades.start(request("r2", "redis-1", "7.0.15")).await.unwrap();
    let done = finished(&s.upgrades.operations, &op.id).await;
    assert_eq!(done.state, OpState::Succeeded, "{:?}", done.error);
    let r = done.result.unwrap();
    assert_eq!((r["version_before"].as_str(), r["version_after"].as_str()), (Some("7.0.15"), Some("7.0.15")));
    assert_eq!(r["mariadb_upgrade"]["ran"], false);
    assert!(r["packages"].is_null());
}

#[tokio::test]
async fn an_exact_target_the_server_does_not_report_after_the_restart_fails_naming_both() {
    let s = setup("10.11.18-MariaDB", "10.11.18-MariaDB").await;
    let op = s.upgrades.start(request("r1", "maria-1", "10.11.19")).await.unwrap();
    let done = finished(&s.upgrades.operations, &op.id).await;
    let e = done.error.unwrap();
    assert_eq!(e.code, ErrorCode::FailedPrecondition);
    assert!(e.message.contains("reports 10.11.18") && e.message.contains("requested 10.11.19"), "{}", e.message);
    assert_eq!(s.services.unit("mariadb.service").unwrap().restarts, 1, "it restarted, then compared");
}

#[tokio::test]
async fn refused_requests_install_nothing_and_restart_nothing() {
    let s = setup("10.11.18-MariaDB", "10.11.19-MariaDB").await;
    let repo = s.root.join("repo").display().to_string();
    let with = |packages: &[&str], repository: &str, target: &str| MinorRequest {
        package_repository: repository.into(),
        packages: packages.iter().map(|p| p.to_string()).collect(),
        ..request("r1", "maria-1", target)
    };
    let outside = s.root.parent().unwrap().join("elsewhere").display().to_string();
    let cases: Vec<(MinorRequest, ErrorCode, &str)> = vec![
        (with(&["redis-server"], &repo, "10.11"), ErrorCode::InvalidArgument, "not a package of mariadb"),
        (
            with(&["mariadb-server"], &outside, "10.11"),
            ErrorCode::InvalidArgument,
            "not beneath the package repository root",
        ),
        (with(&["mariadb-server"], &format!("{repo}/../../etc"), "10.11"), ErrorCode::InvalidArgument, "\"..\""),
        (with(&["mariadb-server"], "", "10.11"), ErrorCode::InvalidArgument, "package_repository: is required"),
        (with(&[], "", "11.4"), ErrorCode::FailedPrecondition, "newer major"),
    ];
    for (req, code, said) in cases {
        let e = s.upgrades.start(req).await.unwrap_err();
        assert_eq!(e.code(), code, "{e}");
        assert!(e.to_string().contains(said), "{said:?} in {e}");
    }
    chmod(&s.root.join("repo"), 0o777);
    let e = s.upgrades.start(with(&["mariadb-server"], &repo, "10.11")).await.unwrap_err();
    assert!(e.to_string().contains("writable by its group or others"), "{e}");
    chmod(&s.root.join("repo"), 0o755);
    assert!(s.host.installs.lock().unwrap().is_empty(), "nothing installed");
    assert_eq!(s.services.unit("mariadb.service").unwrap().restarts, 0, "nothing restarted");
    assert!(s.upgrades.operations.by_request("r1").is_none(), "no operation recorded");

    // Older than what the server reports (the record says only 10.11): refused by the job before
    // anything is touched.
    let op = s.upgrades.start(with(&["mariadb-server"], &repo, "10.11.17")).await.unwrap();
    let e = finished(&s.upgrades.operations, &op.id).await.error.unwrap();
    assert_eq!(e.code, ErrorCode::FailedPrecondition);
    assert!(e.message.contains("runs 10.11.18; 10.11.17 is older: downgrades are never offered"), "{}", e.message);
    assert!(s.host.installs.lock().unwrap().is_empty(), "nothing installed");
    assert_eq!(s.services.unit("mariadb.service").unwrap().restarts, 0, "nothing restarted");
}

#[tokio::test]
async fn an_upgrade_waits_for_its_window_survives_an_agent_restart_and_runs_at_the_window() {
    let s = setup("10.11.18-MariaDB", "10.11.19-MariaDB").await;
    let req = MinorRequest { force: false, ..request("r1", "maria-1", "10.11") };
    let id = {
        let (operations, root) = open_ops(&s.ops_dir.join("second"), ResourceLocks::default());
        let first = MinorUpgrades { operations: operations.clone(), ..s.upgrades.clone() };
        let op = first.start(req.clone()).await.unwrap();
        operations.watch(&op.id).unwrap().wait_for(|r| r.state == OpState::WaitingForWindow).await.unwrap();
        root.cancel();
        assert!(operations.drain(Duration::from_secs(5)).await);
        assert_eq!(s.services.unit("mariadb.service").unwrap().restarts, 0, "nothing ran before the window");
        op.id
    };
    let (operations, _root) = open_ops(&s.ops_dir.join("second"), ResourceLocks::default());
    let waiting = operations.waiting_for_window();
    assert_eq!(waiting.len(), 1, "still waiting after the restart");
    let again = MinorUpgrades { operations: operations.clone(), ..s.upgrades.clone() };
    again.rearm(&waiting[0]).unwrap();
    let done = finished(&operations, &id).await;
    assert_eq!(done.state, OpState::Succeeded, "{:?}", done.error);
    assert_eq!(done.result.unwrap()["version_after"], "10.11.19");
    assert_eq!(s.services.unit("mariadb.service").unwrap().restarts, 1);
}

#[tokio::test]
async fn a_postgresql_request_within_its_major_is_minor_and_a_newer_major_stays_the_major_upgrades() {
    let s = setup("15.14", "15.20").await;
    s.upgrades.registry.register("pg-1", spec("pg-1")).await.unwrap();
    assert!(s.upgrades.takes(&request("a", "pg-1", "15")).unwrap());
    assert!(s.upgrades.takes(&request("b", "pg-1", "15.20")).unwrap());
    assert!(!s.upgrades.takes(&request("c", "pg-1", "17")).unwrap());
    let with_packages = MinorRequest { packages: vec!["postgresql-17".into()], ..request("d", "pg-1", "17") };
    let e = s.upgrades.takes(&with_packages).unwrap_err();
    assert!(e.to_string().contains("minor upgrades only"), "{e}");
    let e = s.upgrades.takes(&request("e", "nope", "15")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
}

#[test]
fn the_config_reads_the_minor_upgrade_keys_and_refuses_a_relative_or_root_repository_root() {
    let parse = |text: &str| crate::config::Config::parse(Path::new("agent.toml"), text);
    let c = parse(
        "[upgrade]\npackage_repository_root = \"/srv/packages\"\nminor_expected_minutes = 5\nminor_health_deadline_secs = 60\n",
    )
    .unwrap();
    assert_eq!(c.upgrade.package_repository_root, PathBuf::from("/srv/packages"));
    assert_eq!((c.upgrade.minor_expected_minutes, c.upgrade.minor_health_deadline_secs), (5, 60));
    assert_eq!(parse("").unwrap().upgrade.package_repository_root, PathBuf::from("/var/lib/dbagent/packages"));
    for (text, key) in [
        ("package_repository_root = \"packages\"", "upgrade.package_repository_root"),
        ("package_repository_root = \"/\"", "upgrade.package_repository_root"),
        ("minor_expected_minutes = 0", "upgrade.minor_expected_minutes"),
        ("minor_health_deadline_secs = 1", "upgrade.minor_health_deadline_secs"),
    ] {
        let e = parse(&format!("[upgrade]\n{text}\n")).unwrap_err().to_string();
        assert!(e.contains(key), "{text}: {e}");
    }
}
