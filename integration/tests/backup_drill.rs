//! Restore drills against real servers: PostgreSQL (physical and logical), MariaDB (logical and
//! physical) and Redis backups are restored into a scratch folder, started as throw-away servers on
//! a private socket, and a table the instance owns is counted. The count must equal the source's,
//! the scratch folder must be gone afterwards, and no drill server may listen on TCP (watched from
//! /proc while the drill runs). A corrupted backup fails the drill loudly; a scheduled drill runs
//! by itself.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dbagent::backup::manifest::data_key;
use dbagent::backup::settings::EngineConnection;
use dbagent::backup::{BackupConfig, BackupKind, BackupMethod, BackupService};
use dbagent::instances::{Engine, Instance};
use dbagent::ops::{OpState, OperationRecord};
use dbagent_integration::backup_harness::{Harness, backup_id, instance};
use dbagent_integration::servers::{MariaServer, PgServer, RedisServer};

/// A drill folder below a folder of /tmp that the engines' users can pass through (a tempdir is
/// 0700), removed on drop.
struct DrillDir {
    _parent: tempfile::TempDir,
    path: PathBuf,
}

impl DrillDir {
    fn new() -> Self {
        let parent = tempfile::Builder::new().prefix("dbagent-drill-").tempdir_in("/tmp").expect("tempdir");
        std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod 0711");
        let path = parent.path().join("drills");
        Self { _parent: parent, path }
    }

    /// What is left in the drill folder (nothing, after a drill).
    fn leftovers(&self) -> Vec<String> {
        match std::fs::read_dir(&self.path) {
            Ok(entries) => {
                entries.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect()
            }
            Err(_) => Vec::new(),
        }
    }
}

/// Watches, every 10 ms while a drill runs, the processes working in the drill folder (the
/// throw-away servers: a server's working folder is its data folder) and whether any holds a TCP
/// listening socket.
struct TcpWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(usize, Vec<String>)>>,
}

impl TcpWatch {
    fn start(dir: &Path) -> Self {
        let (stop, dir) = (Arc::new(AtomicBool::new(false)), dir.to_path_buf());
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let (mut servers_seen, mut listening) = (std::collections::HashSet::new(), Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    for pid in dbagent::backup::drill_scratch::processes_in(&dir) {
                        let in_dir = std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| c.starts_with(&dir));
                        if !in_dir {
                            continue;
                        }
                        servers_seen.insert(pid);
                        if dbagent::backup::drill_scratch::listens_on_tcp(pid).unwrap_or(false) {
                            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                            listening.push(String::from_utf8_lossy(&cmd).replace('\0', " "));
                        }
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                (servers_seen.len(), listening)
            }
        });
        Self { stop, thread: Some(thread) }
    }

    /// Stops watching; asserts a server was seen and none listened on TCP.
    fn assert_private(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let (seen, listening) = self.thread.take().expect("thread").join().expect("watch thread");
        assert!(seen > 0, "no throw-away server was seen working in the drill folder: the check saw nothing");
        assert!(listening.is_empty(), "drill servers listened on TCP: {listening:?}");
    }
}

fn config(h: &Harness, drills: &DrillDir) -> BackupConfig {
    BackupConfig { destinations: h.dir_destinations(), drill_dir: drills.path.clone(), ..BackupConfig::default() }
}

fn with_version(mut inst: Instance, version: &str) -> Instance {
    inst.spec.engine_version = version.into();
    inst
}

/// Runs a drill and asserts it succeeded, with no TCP port and nothing left; returns its record.
async fn drill_ok(
    h: &Harness,
    svc: &Arc<BackupService>,
    drills: &DrillDir,
    inst: &Instance,
    backup: &str,
    request: &str,
) -> OperationRecord {
    let watch = TcpWatch::start(&drills.path);
    let op = svc.drill(inst, backup, request).await.expect("DrillBackup");
    assert_eq!(op.kind, "backup.drill");
    let done = h.succeed(&op).await;
    watch.assert_private();
    assert_eq!(drills.leftovers(), Vec::<String>::new(), "the drill left its scratch folder");
    let took = svc.last_drill(&inst.id).map(|r| r.last.duration_ms).unwrap_or_default();
    eprintln!("drill {request} of {} ({backup:?}): {took} ms", inst.id);
    done
}

fn result_rows(op: &OperationRecord) -> (String, u64) {
    let r = op.result.as_ref().expect("a drill's result");
    (r["table"].as_str().unwrap_or_default().to_owned(), r["rows"].as_u64().expect("rows"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_physical_and_logical_drills_count_the_source_table() {
    let source = PgServer::init();
    source.psql("postgres", "CREATE DATABASE shop");
    source.psql("shop", "CREATE TABLE items AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 23456) g");
    source.psql("shop", "CREATE TABLE few AS SELECT g AS id FROM generate_series(1, 10) g");
    source.psql("shop", "ANALYZE");
    let expected: u64 = source.psql("shop", "SELECT count(*) FROM items").parse().unwrap();

    let h = Harness::new();
    let drills = DrillDir::new();
    let svc = h.service(BackupConfig { postgresql: source.connection("shop"), ..config(&h, &drills) });
    let inst = with_version(instance("pg1", Engine::Postgresql, "postgres", &source.data), "15");

    let phys = backup_id(
        &h.succeed(&svc.start(&inst, BackupMethod::Physical, BackupKind::Manual, "p-1").await.unwrap()).await,
    );
    let logical =
        backup_id(&h.succeed(&svc.start(&inst, BackupMethod::Logical, BackupKind::Manual, "l-1").await.unwrap()).await);

    // Physical, named: the cluster itself runs on the restored data folder.
    let done = drill_ok(&h, &svc, &drills, &inst, &phys, "drill-phys").await;
    assert_eq!(result_rows(&done), ("public.items".to_owned(), expected), "{:?}", done.result);
    assert_eq!(done.result.as_ref().unwrap()["database"], "shop");
    let record = svc.last_drill("pg1").expect("the drill is recorded");
    assert!(record.last.ok && record.last.backup_id == phys && record.last.rows == expected, "{record:?}");
    assert!(record.last_success.is_some() && record.last.duration_ms > 0, "{record:?}");

    // Empty backup id: the newest complete backup, the logical one, loaded into an empty server.
    let done = drill_ok(&h, &svc, &drills, &inst, "", "drill-newest").await;
    assert_eq!(done.params["backup_id"], logical.as_str(), "the newest backup is drilled");
    assert_eq!(result_rows(&done), ("public.items".to_owned(), expected), "{:?}", done.result);
    // A retried request returns the same operation, not a second drill.
    assert_eq!(svc.drill(&inst, "", "drill-newest").await.unwrap().id, done.id);

    let text = svc.drill_metrics_text();
    assert!(text.contains("dbagent_backup_drill_last_success_timestamp_seconds{instance=\"pg1\"} "), "{text}");
    assert!(text.contains("dbagent_backup_drill_failures_total{instance=\"pg1\"} 0\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_logical_and_physical_drills_count_the_largest_user_table() {
    let source = MariaServer::start_debian_auth();
    source.sql("CREATE DATABASE shop; CREATE TABLE shop.items (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(64)) ENGINE=InnoDB");
    source.sql("INSERT INTO shop.items (v) SELECT MD5(seq) FROM shop.seq_1_to_15000");
    source.sql("CREATE TABLE shop.few (id INT PRIMARY KEY) ENGINE=InnoDB; INSERT INTO shop.few VALUES (1), (2)");
    let expected: u64 = source.sql("SELECT COUNT(*) FROM shop.items").parse().unwrap();

    let h = Harness::new();
    let drills = DrillDir::new();
    let maria = EngineConnection { host: source.socket.display().to_string(), ..EngineConnection::default() };
    let svc = h.service(BackupConfig { mariadb: maria, ..config(&h, &drills) });
    let inst = instance("maria1", Engine::Mariadb, "mysql", &source.data);
    // InnoDB's statistics must know the table's size before the physical copy is taken.
    source.sql("ANALYZE TABLE shop.items, shop.few");

    let logical =
        backup_id(&h.succeed(&svc.start(&inst, BackupMethod::Logical, BackupKind::Manual, "ml").await.unwrap()).await);
    let done = drill_ok(&h, &svc, &drills, &inst, &logical, "drill-logical").await;
    assert_eq!(result_rows(&done), ("`shop`.`items`".to_owned(), expected), "{:?}", done.result);

    let physical =
        backup_id(&h.succeed(&svc.start(&inst, BackupMethod::Physical, BackupKind::Manual, "mp").await.unwrap()).await);
    let done = drill_ok(&h, &svc, &drills, &inst, &physical, "drill-physical").await;
    assert_eq!(result_rows(&done), ("`shop`.`items`".to_owned(), expected), "{:?}", done.result);
}

async fn redis_source_with_backup(
    h: &Harness,
    drills: &DrillDir,
) -> (RedisServer, Arc<BackupService>, Instance, String, u64) {
    let source = RedisServer::start(None);
    for i in 0..1500 {
        source.cli(&["SET", &format!("key:{i}"), &format!("value-{i}")]);
    }
    let expected: u64 = source.cli(&["DBSIZE"]).parse().expect("DBSIZE is a number");
    let conn = EngineConnection { host: "127.0.0.1".into(), port: source.port, ..EngineConnection::default() };
    let svc = h.service(BackupConfig { redis: conn, chunk_size: 64 << 10, ..config(h, drills) });
    let inst = instance("redis1", Engine::Redis, "redis", source.root.path());
    let id = backup_id(
        &h.succeed(&svc.start(&inst, BackupMethod::Physical, BackupKind::Manual, "r-1").await.expect("StartBackup"))
            .await,
    );
    (source, svc, inst, id, expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_drill_counts_the_keys_and_reads_one() {
    let h = Harness::new();
    let drills = DrillDir::new();
    let (_source, svc, inst, id, expected) = redis_source_with_backup(&h, &drills).await;
    let done = drill_ok(&h, &svc, &drills, &inst, &id, "drill-redis").await;
    let (key, rows) = result_rows(&done);
    assert_eq!(rows, expected);
    assert!(key.starts_with("key:"), "a key of the instance was read: {key:?}");
}

/// A byte flipped in the data object of the destination the drill reads: the drill fails naming
/// the step and the chunk, the failure is recorded and counted, and nothing is left in scratch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_of_a_corrupted_backup_fails_loudly_and_leaves_nothing() {
    let h = Harness::new();
    let drills = DrillDir::new();
    let (_source, svc, inst, id, expected) = redis_source_with_backup(&h, &drills).await;
    // The allowed path first: the same backup drills fine.
    drill_ok(&h, &svc, &drills, &inst, &id, "drill-good").await;

    // The drill reads the first complete copy, az1's.
    let object = h.state.join("dest/az1").join(data_key("redis1", &id));
    let mut bytes = std::fs::read(&object).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x01;
    std::fs::write(&object, &bytes).unwrap();

    let failed = h.wait(&svc.drill(&inst, &id, "drill-corrupt").await.unwrap()).await;
    assert_eq!(failed.state, OpState::Failed, "{failed:?}");
    let message = failed.error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
    assert!(message.contains("restore drill failed at step \"restore the backup\""), "names the step: {message}");
    assert!(message.contains("chunk "), "names the chunk: {message}");
    assert_eq!(drills.leftovers(), Vec::<String>::new(), "a failed drill left its scratch folder");

    let record = svc.last_drill("redis1").unwrap();
    assert!(!record.last.ok && record.last.reason.contains("chunk "), "{record:?}");
    assert_eq!(record.failures_total, 1);
    assert!(record.last_success.is_some(), "the earlier success is kept");
    let text = svc.drill_metrics_text();
    assert!(text.contains("dbagent_backup_drill_failures_total{instance=\"redis1\"} 1\n"), "{text}");
    let _ = expected;
}

/// With a two-second interval (the test-only knob), the scheduler drills by itself, again after
/// the interval, one at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_drill_runs_by_itself() {
    use dbagent::instances::{Registry, ValidationRules};
    let h = Harness::new();
    let drills = DrillDir::new();
    let source = RedisServer::start(None);
    source.cli(&["SET", "only", "one"]);
    let conn = EngineConnection { host: "127.0.0.1".into(), port: source.port, ..EngineConnection::default() };
    let svc = h.service(BackupConfig { redis: conn, drill_interval_secs_for_tests: 2, ..config(&h, &drills) });
    let rules = ValidationRules {
        data_roots: vec!["/tmp".into()],
        device_prefixes: vec!["/dev/vd".into()],
        log_roots: Vec::new(),
    };
    let registry = Arc::new(Registry::open(h.state.join("instances"), rules, Default::default()).unwrap());
    let spec = with_version(instance("redis1", Engine::Redis, "redis", source.root.path()), "7.0").spec;
    let (inst, _) = registry.register("redis1", spec).await.unwrap();

    let root = tokio_util::sync::CancellationToken::new();
    let scheduler = tokio::spawn(dbagent::backup::scheduler::run(
        svc.clone(),
        registry.clone(),
        dbagent::backup::scheduler::Schedule {
            interval: Duration::from_millis(200),
            clock: Arc::new(dbagent::maintenance::SystemClock),
            avoid_windows: true,
        },
        root.clone(),
    ));
    // No complete backup yet: no drill.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(svc.last_drill("redis1").is_none());
    assert!(h.engine.list(None, false, 100).iter().all(|op| op.kind != "backup.drill"), "a drill without a backup");

    let id = backup_id(
        &h.succeed(&svc.start(&inst, BackupMethod::Physical, BackupKind::Manual, "r-1").await.unwrap()).await,
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut finished = Vec::new();
    while finished.len() < 2 {
        assert!(Instant::now() < deadline, "scheduled drills did not run: {finished:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        finished = h
            .engine
            .list(None, false, 100)
            .into_iter()
            .filter(|op| op.kind == "backup.drill" && op.state.is_finished())
            .collect();
    }
    root.cancel();
    scheduler.await.unwrap();
    for op in &finished {
        assert_eq!(op.state, OpState::Succeeded, "{op:?}");
        assert!(op.request_id.starts_with("scheduled-drill:redis1:"), "{}", op.request_id);
        assert_eq!(op.params["backup_id"], id.as_str());
    }
    assert_ne!(finished[0].request_id, finished[1].request_id);
    let record = svc.last_drill("redis1").unwrap();
    assert!(record.last.ok && record.last.rows == 1, "{record:?}");
    assert_eq!(drills.leftovers(), Vec::<String>::new());
}

/// What a crash in the middle of a drill leaves (a scratch folder, a server working in it) is
/// removed at the next start: the server killed, the folder gone; a process working elsewhere
/// (beside the drill folder) is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_cut_short_by_a_crash_is_cleaned_at_the_next_start() {
    let h = Harness::new();
    let drills = DrillDir::new();
    let data = drills.path.join("op-crashed").join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("PG_VERSION"), "15\n").unwrap();
    let mut server = std::process::Command::new("sleep").arg("600").current_dir(&data).spawn().unwrap();
    let beside = drills.path.parent().unwrap();
    let mut bystander = std::process::Command::new("sleep").arg("600").current_dir(beside).spawn().unwrap();

    let svc = h.service(config(&h, &drills));
    let removed = svc.clean_drills().await;
    assert_eq!(removed, ["op-crashed"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the left-over server still runs");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "killed, not exited: {status:?}");
    assert_eq!(drills.leftovers(), Vec::<String>::new());
    assert!(bystander.try_wait().unwrap().is_none(), "a process outside the drill folder was killed");
    bystander.kill().unwrap();
    let _ = bystander.wait();
    // Nothing left: the next start has nothing to do.
    assert!(svc.clean_drills().await.is_empty());
}
