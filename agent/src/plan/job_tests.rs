use super::*;
use crate::error::HasErrorCode;
use crate::instances::fixtures::{GIB, rules, spec};
use crate::instances::{Engine, InstanceSpec};
use crate::locks::ResourceLocks;
use crate::maintenance::clock::FixedClock;
use crate::ops::{OpState, OpsSettings};
use crate::plan::engine::{InMemoryEngineControl, debian_cluster, write_beneath};
use crate::plan::engine_settings::{EngineSetting, settings_for};
use crate::plan::limits::{cpu_memory_properties, io_properties};
use crate::systemd::{InMemoryServiceManager, UnitProperty};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tokio_util::sync::CancellationToken;

const MIB: u64 = 1 << 20;
const UNIT: &str = "postgresql@15-main.service";
const MAPPING: &str = "/dev/mapper/dbagent-pg-1";

#[derive(Default)]
struct FakeVolumes {
    view: Mutex<Option<VolumeView>>,
    grown: Mutex<Vec<u64>>,
}

#[async_trait::async_trait]
impl PlanVolumes for FakeVolumes {
    async fn view(&self, _id: &str) -> Result<Option<VolumeView>, PlanError> {
        Ok(self.view.lock().unwrap().clone())
    }
    async fn grow(&self, _id: &str, size_bytes: u64) -> Result<VolumeOutcome, PlanError> {
        self.grown.lock().unwrap().push(size_bytes);
        Ok(VolumeOutcome::Grown)
    }
}

/// The in-memory engine, where a restart of the unit makes the written settings the running ones
/// (as a real server reads its file at start).
struct RestartingEngine {
    engines: Arc<InMemoryEngineControl>,
    services: Arc<InMemoryServiceManager>,
}

#[async_trait::async_trait]
impl EngineControl for RestartingEngine {
    async fn read(&self, instance: &Instance, setting: &str) -> Result<u64, PlanError> {
        let restarted = self.services.unit(&instance.spec.systemd_unit).is_some_and(|u| u.restarts > 0);
        if restarted {
            self.engines.restarted(&instance.id);
        }
        self.engines.read(instance, setting).await
    }
    async fn set_runtime(&self, instance: &Instance, setting: &EngineSetting) -> Result<(), PlanError> {
        self.engines.set_runtime(instance, setting).await
    }
    async fn write_for_restart(&self, instance: &Instance, s: &[EngineSetting]) -> Result<PathBuf, PlanError> {
        self.engines.write_for_restart(instance, s).await
    }
    async fn keep_for_next_start(&self, instance: &Instance, s: &[EngineSetting]) -> Result<String, PlanError> {
        self.engines.keep_for_next_start(instance, s).await
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    plans: PlanChanges,
    services: Arc<InMemoryServiceManager>,
    engines: Arc<InMemoryEngineControl>,
    volumes: Arc<FakeVolumes>,
    registry: Arc<Registry>,
    operations: OperationEngine,
}

/// A PostgreSQL instance `pg-1` (window: Sundays 02:00 UTC) on a running unit, its volume of 10 GiB
/// open with 6 GiB used, the server running with the settings a 4 GiB plan gives; the window
/// clock on a Tuesday, so a restart that waits for the window is seen waiting.
async fn fixture(spec: InstanceSpec) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let locks = ResourceLocks::default();
    let registry = Arc::new(Registry::open(dir.path().join("instances"), rules(), locks.clone()).unwrap());
    let settings = OpsSettings { max_concurrent: 4, retention: Duration::from_secs(3600), max_finished: 100 };
    let (operations, _) =
        OperationEngine::open(&dir.path().join("ops"), settings, locks, CancellationToken::new()).unwrap();
    let tuesday = humantime::parse_rfc3339("2026-12-01T12:00:00Z").unwrap();
    operations.set_window_clock(Arc::new(FixedClock(tuesday)));
    let engine = spec.engine;
    let unit = spec.systemd_unit.clone();
    let running = settings_for(engine, &spec.plan);
    registry.register("pg-1", spec).await.unwrap();
    let services = Arc::new(InMemoryServiceManager::new());
    services.add_running(&unit);
    let engines = Arc::new(InMemoryEngineControl::default());
    for s in running {
        engines.set("pg-1", &s.name, s.value);
    }
    let volumes = Arc::new(FakeVolumes::default());
    *volumes.view.lock().unwrap() =
        Some(VolumeView { size_bytes: 10 * GIB, used_bytes: Some(6 * GIB), mapping: Some(PathBuf::from(MAPPING)) });
    let plans = PlanChanges {
        registry: registry.clone(),
        volumes: volumes.clone(),
        operations: operations.clone(),
        services: services.clone(),
        engines: Arc::new(RestartingEngine { engines: engines.clone(), services: services.clone() }),
        restart_timeout: Duration::from_secs(5),
    };
    Fixture { _dir: dir, plans, services, engines, volumes, registry, operations }
}

fn base_plan() -> Plan {
    spec("pg-1").plan
}

async fn wait_done(ops: &OperationEngine, id: &str) -> OperationRecord {
    let mut rx = ops.watch(id).unwrap();
    rx.wait_for(|r| r.state.is_finished()).await.unwrap().clone()
}

async fn change(f: &Fixture, rid: &str, plan: Plan, force: bool) -> Result<OperationRecord, PlanError> {
    let (record, _) = f.plans.change(rid, "pg-1", plan, force).await?;
    Ok(wait_done(&f.operations, &record.id).await)
}

#[test]
fn the_plans_numbers_become_cpu_memory_and_io_properties() {
    let plan = Plan { cpu_millis: 1500, memory_bytes: 2 * GIB, io_read_bps: 50 * MIB, io_write_iops: 0, ..base_plan() };
    let props = cpu_memory_properties(&plan);
    assert_eq!(
        props,
        vec![
            UnitProperty::CpuQuotaPerSecUsec(1_500_000),
            UnitProperty::CpuWeight(150),
            UnitProperty::MemoryMax(2 * GIB),
            UnitProperty::MemoryHigh(2 * GIB / 100 * 90 / 4096 * 4096),
        ]
    );
    let io = io_properties(&plan, Path::new(MAPPING));
    assert_eq!(io[0], UnitProperty::IoReadBandwidthMax(MAPPING.into(), 50 * MIB));
    // 0 in the plan lifts the limit on the unit: systemd's "max".
    assert_eq!(io[3], UnitProperty::IoWriteIopsMax(MAPPING.into(), u64::MAX));
    assert_eq!(io[3].shown(), format!("{MAPPING} max"));
    // The smallest plan still gets a CPU weight systemd accepts.
    assert_eq!(cpu_memory_properties(&Plan { cpu_millis: 100, ..plan })[1], UnitProperty::CpuWeight(10));
}

#[test]
fn engine_settings_follow_the_documented_formula() {
    let plan = |m: u64| Plan { memory_bytes: m, ..base_plan() };
    let pg = settings_for(Engine::Postgresql, &plan(2 * GIB));
    assert_eq!((pg[0].name.as_str(), pg[0].value, pg[0].config_value()), ("shared_buffers", 512 * MIB, "512MB".into()));
    assert_eq!((pg[1].name.as_str(), pg[1].value), ("max_connections", 256));
    assert!(pg.iter().all(|s| s.needs_restart));
    // Bounds of max_connections.
    assert_eq!(settings_for(Engine::Postgresql, &plan(64 * MIB))[1].value, 20);
    assert_eq!(settings_for(Engine::Postgresql, &plan(64 * GIB))[1].value, 1000);
    let maria = settings_for(Engine::Mariadb, &plan(2 * GIB));
    assert_eq!(
        (maria[0].name.as_str(), maria[0].value, maria[0].needs_restart),
        ("innodb_buffer_pool_size", GIB, false)
    );
    assert_eq!(settings_for(Engine::Mariadb, &plan(64 * MIB))[0].value, 32 * MIB);
    let redis = settings_for(Engine::Redis, &plan(GIB));
    assert_eq!((redis[0].name.as_str(), redis[0].value, redis[0].needs_restart), ("maxmemory", 768 * MIB, false));
}

#[tokio::test]
async fn limits_are_set_on_the_unit_at_runtime_and_the_server_keeps_running() {
    let f = fixture(spec("pg-1")).await;
    let pid = f.services.unit(UNIT).unwrap().main_pid;
    // Same memory (so the same engine settings), other CPU and I/O.
    let plan = Plan { cpu_millis: 3000, io_read_bps: 200 * MIB, io_write_iops: 0, ..base_plan() };
    let record = change(&f, "r1", plan.clone(), false).await.unwrap();
    assert_eq!(record.state, OpState::Succeeded, "{:?}", record.error);
    let unit = f.services.unit(UNIT).unwrap();
    assert_eq!(unit.properties["CPUQuotaPerSecUSec"], "3000000");
    assert_eq!(unit.properties["CPUWeight"], "300");
    assert_eq!(unit.properties["MemoryMax"], (4 * GIB).to_string());
    assert_eq!(unit.properties["MemoryHigh"], (4 * GIB / 100 * 90 / 4096 * 4096).to_string());
    assert_eq!(unit.properties[&format!("IOReadBandwidthMax {MAPPING}")], (200 * MIB).to_string());
    assert_eq!(unit.properties[&format!("IOWriteIOPSMax {MAPPING}")], "max");
    assert_eq!((unit.main_pid, unit.restarts, unit.reloads), (pid, 0, 0), "only limits changed: no restart");
    let result = record.result.unwrap();
    assert_eq!(result["restart"], serde_json::Value::Null);
    assert!(result["settings"].as_array().unwrap().iter().all(|s| s["applied"] == "unchanged"), "{result}");
    assert_eq!(result["io_device"], MAPPING);
    assert_eq!(f.registry.get("pg-1").unwrap().spec.plan, plan, "the plan is stored");
    // A replay of the request is the same operation, not a second change.
    let (again, outcome) = f.plans.change("r1", "pg-1", plan, false).await.unwrap();
    assert_eq!((again.id, outcome), (record.id, Outcome::Existing));
}

#[tokio::test]
async fn memory_below_the_engines_buffers_is_refused_with_the_numbers_unless_forced() {
    let f = fixture(spec("pg-1")).await;
    // The server runs with shared_buffers = 1 GiB (a 4 GiB plan); 512 MiB is less.
    let small = Plan { memory_bytes: 512 * MIB, ..base_plan() };
    let e = f.plans.change("r1", "pg-1", small.clone(), false).await.unwrap_err();
    assert!(
        matches!(e, PlanError::MemoryBelowBuffers { configured, requested, .. } if configured == GIB && requested == 512 * MIB)
    );
    assert_eq!(e.code(), ErrorCode::FailedPrecondition);
    let message = e.to_string();
    assert!(message.contains("536870912") && message.contains("1073741824") && message.contains("shared_buffers"));
    assert!(f.services.unit(UNIT).unwrap().properties.is_empty(), "a refused change sets no limit");
    assert_eq!(f.registry.get("pg-1").unwrap().spec.plan, base_plan());
    // Beside it: a memory at the buffers' size passes, and force applies the small one.
    let record = change(&f, "r2", Plan { memory_bytes: GIB, ..base_plan() }, false).await.unwrap();
    assert_eq!(record.state, OpState::Succeeded, "{:?}", record.error);
    let record = change(&f, "r3", small, true).await.unwrap();
    assert_eq!(record.state, OpState::Succeeded, "{:?}", record.error);
    assert_eq!(f.services.unit(UNIT).unwrap().properties["MemoryMax"], (512 * MIB).to_string());
}

#[tokio::test]
async fn a_server_that_does_not_answer_is_not_given_a_memory_limit_unchecked() {
    let f = fixture(spec("pg-1")).await;
    f.engines.set_down("pg-1", true);
    let plan = Plan { cpu_millis: 1000, ..base_plan() };
    let e = f.plans.change("r1", "pg-1", plan.clone(), false).await.unwrap_err();
    assert!(matches!(e, PlanError::EngineDown { .. }), "{e}");
    assert!(e.to_string().contains("force"));
    // Forced: limits applied, the restart settings written for the next start.
    let record = change(&f, "r2", plan, true).await.unwrap();
    assert_eq!(record.state, OpState::Succeeded, "{:?}", record.error);
    assert_eq!(f.services.unit(UNIT).unwrap().properties["CPUQuotaPerSecUSec"], "1000000");
}

#[tokio::test]
async fn a_disk_smaller_than_what_is_used_is_refused_and_a_larger_one_grows_the_volume() {
    let f = fixture(spec("pg-1")).await;
    let e = f.plans.change("r1", "pg-1", Plan { disk_bytes: 5 * GIB, ..base_plan() }, false).await.unwrap_err();
    assert!(matches!(e, PlanError::DiskBelowUsed { requested, used, .. } if requested == 5 * GIB && used == 6 * GIB));
    assert_eq!(e.code(), ErrorCode::FailedPrecondition);
    assert!(e.to_string().contains(&(6 * GIB).to_string()));
    // Above what is used but below the volume: volumes do not shrink.
    let e = f.plans.change("r2", "pg-1", Plan { disk_bytes: 8 * GIB, ..base_plan() }, false).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
    assert!(f.volumes.grown.lock().unwrap().is_empty());
    // Larger: the volume grows through the Volumes service.
    let record = change(&f, "r3", Plan { disk_bytes: 20 * GIB, ..base_plan() }, false).await.unwrap();
    assert_eq!(record.state, OpState::Succeeded, "{:?}", record.error);
    assert_eq!(*f.volumes.grown.lock().unwrap(), vec![20 * GIB]);
    assert_eq!(record.result.unwrap()["volume"], "grown");
}

#[tokio::test]
async fn io_limits_need_the_volume_open_and_other_limits_do_not() {
    let f = fixture(spec("pg-1")).await;
    f.volumes.view.lock().unwrap().as_mut().unwrap().mapping = None;
    let e = f.plans.change("r1", "pg-1", base_plan(), false).await.unwrap_err();
    assert!(matches!(e, PlanError::VolumeNotOpen { .. }), "{e}");
    let no_io = Plan { io_read_iops: 0, io_write_iops: 0, io_read_bps: 0, io_write_bps: 0, ..base_plan() };
    let record = change(&f, "r2", no_io, false).await.unwrap();
    assert_eq!(record.state, OpState::Succeeded, "{:?}", record.error);
    let unit = f.services.unit(UNIT).unwrap();
    assert!(unit.properties.contains_key("MemoryMax"));
    assert!(!unit.properties.keys().any(|k| k.starts_with("IO")), "{:?}", unit.properties);
}

#[tokio::test]
async fn every_plan_field_is_bounded_and_named() {
    let f = fixture(spec("pg-1")).await;
    for (plan, field) in [
        (Plan { cpu_millis: 50, ..base_plan() }, "plan.cpu_millis"),
        (Plan { memory_bytes: MIB, ..base_plan() }, "plan.memory_bytes"),
        (Plan { io_read_iops: 5, ..base_plan() }, "plan.io_read_iops"),
        (Plan { io_write_bps: 1000, ..base_plan() }, "plan.io_write_bps"),
        (Plan { disk_bytes: 1 << 51, ..base_plan() }, "plan.disk_bytes"),
    ] {
        let e = f.plans.change("r1", "pg-1", plan, false).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
        assert!(e.to_string().contains(field), "{e} does not name {field}");
    }
    let e = f.plans.change("r1", "nope", base_plan(), false).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    assert!(f.services.unit(UNIT).unwrap().properties.is_empty());
    let record = change(&f, "r1", base_plan(), false).await.unwrap();
    assert_eq!(record.state, OpState::Succeeded, "{:?}", record.error);
}

#[tokio::test]
async fn restart_settings_wait_for_the_window_and_a_forced_change_restarts_at_once() {
    let f = fixture(spec("pg-1")).await;
    let pid = f.services.unit(UNIT).unwrap().main_pid;
    // 8 GiB: shared_buffers 2 GiB and max_connections 1000, both need a restart.
    let bigger = Plan { memory_bytes: 8 * GIB, ..base_plan() };
    let record = change(&f, "r1", bigger.clone(), false).await.unwrap();
    assert_eq!(record.state, OpState::Succeeded, "{:?}", record.error);
    let result = record.result.unwrap();
    assert!(result["settings"].as_array().unwrap().iter().all(|s| s["applied"] == "restart"), "{result}");
    let restart_id = result["restart"]["operation_id"].as_str().unwrap().to_owned();
    let mut rx = f.operations.watch(&restart_id).unwrap();
    let waiting = rx.wait_for(|r| r.state == OpState::WaitingForWindow).await.unwrap().clone();
    assert!(waiting.window_start.is_some());
    assert_eq!(f.services.unit(UNIT).unwrap().restarts, 0, "no restart outside the window");
    assert_eq!(f.services.unit(UNIT).unwrap().properties["MemoryMax"], (8 * GIB).to_string(), "limits at once");
    let written = f.engines.engine("pg-1").written;
    assert_eq!(
        written.iter().map(|s| (s.name.as_str(), s.value)).collect::<Vec<_>>(),
        [("shared_buffers", 2 * GIB), ("max_connections", 1000)]
    );
    f.operations.cancel(&restart_id).await.unwrap();

    // Forced: the restart runs now, and the server runs with the new settings afterwards.
    let record = change(&f, "r2", Plan { memory_bytes: 16 * GIB, ..base_plan() }, true).await.unwrap();
    assert_eq!(record.state, OpState::Succeeded, "{:?}", record.error);
    let restart_id = record.result.unwrap()["restart"]["operation_id"].as_str().unwrap().to_owned();
    let restart = wait_done(&f.operations, &restart_id).await;
    assert_eq!(restart.state, OpState::Succeeded, "{:?}", restart.error);
    let unit = f.services.unit(UNIT).unwrap();
    assert_eq!(unit.restarts, 1);
    let result = restart.result.unwrap();
    assert_eq!(result["main_pid_before"], pid);
    assert_ne!(result["main_pid_after"], pid);
    assert_eq!(f.engines.engine("pg-1").running["shared_buffers"], 4 * GIB);
}

#[tokio::test]
async fn a_restart_after_which_the_server_runs_other_settings_fails_saying_so() {
    let f = fixture(spec("pg-1")).await;
    // The plain in-memory engine ignores what was written: as if the server did not read the file.
    let plans = PlanChanges { engines: f.engines.clone(), ..f.plans.clone() };
    let (record, _) = plans.change("r1", "pg-1", Plan { memory_bytes: 8 * GIB, ..base_plan() }, true).await.unwrap();
    let record = wait_done(&f.operations, &record.id).await;
    let restart_id = record.result.unwrap()["restart"]["operation_id"].as_str().unwrap().to_owned();
    let restart = wait_done(&f.operations, &restart_id).await;
    assert_eq!(restart.state, OpState::Failed);
    let error = restart.error.unwrap();
    assert_eq!(error.code, ErrorCode::FailedPrecondition);
    assert!(error.message.contains("shared_buffers is 1073741824, not 2147483648"), "{}", error.message);
}

#[tokio::test]
async fn dynamic_settings_are_set_in_the_running_server() {
    let mut redis = spec("pg-1");
    redis.engine = Engine::Redis;
    redis.systemd_unit = "redis-server@pg-1.service".into();
    redis.os_user = "redis".into();
    redis.log_sources.clear();
    let f = fixture(redis).await;
    let record = change(&f, "r1", Plan { memory_bytes: 8 * GIB, ..base_plan() }, false).await.unwrap();
    assert_eq!(record.state, OpState::Succeeded, "{:?}", record.error);
    let result = record.result.unwrap();
    assert_eq!(result["settings"][0]["applied"], "runtime", "{result}");
    assert_eq!(result["restart"], serde_json::Value::Null);
    assert_eq!(f.engines.engine("pg-1").running["maxmemory"], 6 * GIB);
    assert_eq!(f.services.unit("redis-server@pg-1.service").unwrap().restarts, 0);
    // Kept for the next start, and said where.
    assert_eq!(
        f.engines.engine("pg-1").kept.iter().map(|s| (s.name.as_str(), s.value)).collect::<Vec<_>>(),
        [("maxmemory", 6 * GIB)]
    );
    assert_eq!(result["settings"][0]["kept_in"], "/in-memory/pg-1/kept", "{result}");
}

/// A value the server already runs (set at runtime by an earlier change) is kept too: it lives
/// only in the server until written down.
#[tokio::test]
async fn runtime_settings_are_kept_for_the_next_start_even_when_unchanged() {
    let mut maria = spec("pg-1");
    maria.engine = Engine::Mariadb;
    maria.systemd_unit = "mariadb.service".into();
    maria.os_user = "mysql".into();
    maria.log_sources.clear();
    let f = fixture(maria).await;
    f.engines.set("pg-1", "innodb_buffer_pool_size", 4 * GIB);
    let record = change(&f, "r1", Plan { memory_bytes: 8 * GIB, ..base_plan() }, false).await.unwrap();
    assert_eq!(record.state, OpState::Succeeded, "{:?}", record.error);
    let result = record.result.unwrap();
    assert_eq!(result["settings"][0]["applied"], "unchanged", "{result}");
    assert_eq!(f.engines.engine("pg-1").kept[0].value, 4 * GIB);
    // PostgreSQL's settings go to the restart file, nothing is kept at runtime.
    let pg = fixture(spec("pg-1")).await;
    change(&pg, "r2", Plan { memory_bytes: 8 * GIB, ..base_plan() }, true).await.unwrap();
    assert!(pg.engines.engine("pg-1").kept.is_empty());
}

#[test]
fn a_mariadb_unit_names_the_option_group_its_server_reads() {
    use crate::plan::engine_settings::{mariadb_cnf, mariadb_group};
    assert_eq!(mariadb_group("mariadb.service"), "mariadbd");
    assert_eq!(mariadb_group("mariadb@shop.service"), "mariadbd.shop");
    let setting = EngineSetting { name: "innodb_buffer_pool_size".into(), value: 64 << 20, needs_restart: false };
    let cnf = mariadb_cnf("mariadb@shop.service", &[setting]);
    assert!(cnf.ends_with("[mariadbd.shop]\ninnodb_buffer_pool_size = 67108864\n"), "{cnf}");
}

#[test]
fn debian_cluster_units_name_their_configuration_folder() {
    assert_eq!(debian_cluster("postgresql@15-main.service"), Some(("15", "main")));
    assert_eq!(debian_cluster("postgresql@17-my-cluster"), Some(("17", "my-cluster")));
    for unit in ["postgresql.service", "postgresql@15.service", "postgresql@..-main.service", "postgresql@15-../x"] {
        assert_eq!(debian_cluster(unit), None, "{unit}");
    }
}

#[test]
fn the_settings_file_is_written_beneath_the_config_folder_and_a_planted_link_is_refused() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("15/main/conf.d")).unwrap();
    let path =
        write_beneath(root.path(), Path::new("15/main/conf.d"), "90-dbagent-plan.conf", b"shared_buffers = '1MB'\n")
            .unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "shared_buffers = '1MB'\n");
    // Written again (a later change): replaced, not appended.
    write_beneath(root.path(), Path::new("15/main/conf.d"), "90-dbagent-plan.conf", b"x = 1\n").unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "x = 1\n");

    // The engine's user replaces conf.d with a link to a folder of root's: nothing is written there.
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("16/main")).unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), root.path().join("16/main/conf.d")).unwrap();
    let e = write_beneath(root.path(), Path::new("16/main/conf.d"), "90-dbagent-plan.conf", b"x\n").unwrap_err();
    assert!(!e.is_empty());
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0, "nothing written through the link");

    // A link planted as the temporary file is removed, never written through.
    let victim = elsewhere.path().join("victim");
    std::fs::write(&victim, "keep").unwrap();
    std::os::unix::fs::symlink(&victim, root.path().join("15/main/conf.d/.90-dbagent-plan.conf.dbagent-tmp")).unwrap();
    write_beneath(root.path(), Path::new("15/main/conf.d"), "90-dbagent-plan.conf", b"y = 2\n").unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "y = 2\n");
}
