//! Restores attacked as a tenant would, through the real agent over gRPC: the engine's OS user
//! (postgres, redis) owns the data root and, while the root agent restores beneath it, swaps the
//! target folder for a link to a folder outside every root (a sentinel folder, the agent's own
//! state folder) in a tight loop, or plants `dump.rdb` as a link to a root-owned file. New folder
//! and in place; the rollback path (a copy damaged on az2) and the success path (az1).
//!
//! Whatever the interleaving, each attempt may be refused or may fail, but the sentinels are never
//! read, written, chowned or deleted, the agent's state survives, the API answers during the attack,
//! and once the attack stops the same restore succeeds with the data checked.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use dbagent_integration::agent::LaunchContext;
use dbagent_integration::backup_config::BackupAgentConfig;
use dbagent_integration::ops::{instance_spec, state_of, wait_for_state};
use dbagent_integration::pki::{ServerPki, Validity};
use dbagent_integration::servers::{OwnedDir, PgServer, RedisServer};
use dbagent_integration::tenant::{Exchange, Planter, Sentinels, TenantUser, plant_fifo, plant_huge_file, plant_link};
use dbagent_integration::{Agent, AgentBuilder, ClientIdentity};
use dbagent_proto::v1::agent_client::AgentClient;
use dbagent_proto::v1::backups_client::BackupsClient;
use dbagent_proto::v1::instances_client::InstancesClient;
use dbagent_proto::v1::operations_client::OperationsClient;
use dbagent_proto::v1::{
    BackupMethod, Engine, GetInfoRequest, ListInstancesRequest, Operation, OperationState, RegisterInstanceRequest,
    RestoreBackupRequest, StartBackupRequest,
};
use tonic::transport::Channel;

const OP_TIMEOUT: Duration = Duration::from_secs(180);
const PG_CHECK: &str = "SELECT count(*) || ':' || md5(string_agg(v, ',' ORDER BY id)) FROM t";

/// An agent whose data roots are `roots`, with two `dir` destinations and the dump tools aimed
/// at the test's PostgreSQL and Redis servers.
fn agent_config(ctx: &LaunchContext, pki: &ServerPki, pg_port: u16, redis_port: u16, roots: &[PathBuf]) -> String {
    BackupAgentConfig {
        write_kek: true,
        data_roots: roots,
        destinations: &["az1", "az2"],
        pg_port,
        pg_database: "postgres",
        redis_port: Some(redis_port),
        accept_on_host_destinations: true,
        scheduler_interval_secs: None,
    }
    .toml(ctx, pki)
}

struct Setup {
    agent: Agent,
    channel: Channel,
    monitor: Channel,
}

async fn start_agent(pg_port: u16, redis_port: u16, roots: Vec<PathBuf>) -> Setup {
    let pki = Rc::new(ServerPki::new());
    let for_config = pki.clone();
    let agent =
        AgentBuilder::config(move |ctx: &LaunchContext| agent_config(ctx, &for_config, pg_port, redis_port, &roots))
            .start();
    let orchestrator = ClientIdentity::issued(pki.ca.cert_pem(), &pki.ca.client("orchestrator", Validity::Current));
    let monitor = ClientIdentity::issued(pki.ca.cert_pem(), &pki.ca.client("monitor", Validity::Current));
    let channel = agent.channel(&orchestrator).await;
    let monitor = agent.channel(&monitor).await;
    Setup { agent, channel, monitor }
}

impl Setup {
    async fn register(&self, id: &str, engine: Engine, os_user: &str, data_dir: &Path) {
        let mut spec = instance_spec(id, data_dir);
        spec.engine = engine as i32;
        spec.engine_version = if engine == Engine::Redis { "7".into() } else { "15".into() };
        spec.os_user = os_user.into();
        spec.data_dir = data_dir.to_string_lossy().into_owned();
        // No such unit: the instance counts as stopped unless its server's pid file says otherwise.
        spec.systemd_unit = format!("dbagent-test-{id}.service");
        InstancesClient::new(self.channel.clone())
            .register_instance(RegisterInstanceRequest {
                request_id: format!("reg-{id}"),
                id: id.into(),
                spec: Some(spec),
            })
            .await
            .unwrap_or_else(|s| panic!("RegisterInstance {id}: {s:?}\n{}", self.agent.log()));
    }

    async fn backup(&self, id: &str) -> String {
        let op = BackupsClient::new(self.channel.clone())
            .start_backup(StartBackupRequest {
                request_id: format!("backup-{id}"),
                instance_id: id.into(),
                method: BackupMethod::Physical as i32,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("StartBackup {id}: {s:?}"))
            .into_inner();
        let done = self.finish(&op).await;
        assert_eq!(state_of(&done), OperationState::Succeeded, "{:?}\n{}", done.error, self.agent.log());
        let result: serde_json::Value = serde_json::from_str(&done.result_json).expect("result_json");
        result["backup_id"].as_str().expect("backup_id").to_owned()
    }

    /// RestoreBackup; `Err` if the call itself was refused (the handler's early check), else the
    /// finished operation.
    async fn restore(
        &self,
        id: &str,
        backup: &str,
        into: Option<&Path>,
        source: &str,
        request: &str,
    ) -> Result<Operation, tonic::Status> {
        let op = BackupsClient::new(self.channel.clone())
            .restore_backup(RestoreBackupRequest {
                request_id: request.into(),
                instance_id: id.into(),
                backup_id: backup.into(),
                target_data_dir: into.map(|p| p.to_string_lossy().into_owned()).unwrap_or_default(),
                destination: source.into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        Ok(self.finish(&op).await)
    }

    async fn finish(&self, op: &Operation) -> Operation {
        let mut ops = OperationsClient::new(self.channel.clone());
        wait_for_state(&mut ops, &op.id, OP_TIMEOUT, |s| {
            matches!(s, OperationState::Succeeded | OperationState::Failed | OperationState::Cancelled)
        })
        .await
    }

    /// GetInfo and ListInstances (as the monitor) answer promptly, and the instances are all there.
    async fn assert_api_answers(&self, instances: usize) {
        let started = Instant::now();
        let within = Duration::from_secs(10);
        let mut agent = AgentClient::new(self.monitor.clone());
        let info = tokio::time::timeout(within, agent.get_info(GetInfoRequest {}));
        info.await.expect("GetInfo hung during the attack").expect("GetInfo");
        let mut client = InstancesClient::new(self.monitor.clone());
        let list = tokio::time::timeout(within, client.list_instances(ListInstancesRequest::default()));
        let list = list.await.expect("ListInstances hung").expect("ListInstances");
        assert_eq!(list.into_inner().instances.len(), instances, "an instance record was lost");
        assert!(started.elapsed() < within, "the API answered slowly: {:?}", started.elapsed());
    }

    /// The agent's state folder and its records survived (the bait aimed at it).
    fn assert_state_intact(&self, ids: &[&str]) {
        for id in ids {
            let record = self.agent.state_dir().join("instances").join(format!("{id}.json"));
            assert!(record.is_file(), "{} was deleted\n{}", record.display(), self.agent.log());
        }
        assert!(self.agent.state_dir().join("operations").is_dir(), "the operations journal was deleted");
    }

    /// Damages the middle of az2's copy: a restore from az2 fails part-way and rolls back.
    fn damage_az2(&self, id: &str, backup: &str) {
        let object = self.agent.work_dir().join("dest/az2").join(id).join(backup).join("data");
        let mut bytes = std::fs::read(&object).unwrap_or_else(|e| panic!("read {}: {e}", object.display()));
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(&object, bytes).expect("damage az2");
    }
}

/// What an attempt under attack came to: refused by the handler, failed in the job, or succeeded.
#[derive(Debug, Default)]
struct Outcomes {
    refused: usize,
    failed: usize,
    succeeded: usize,
}

impl Outcomes {
    fn add(&mut self, r: &Result<Operation, tonic::Status>) {
        match r.as_ref().map(state_of) {
            Err(_) => self.refused += 1,
            Ok(OperationState::Succeeded) => self.succeeded += 1,
            Ok(_) => self.failed += 1,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restore_while_the_folder_flips_to_a_link_never_touches_anything_outside_the_data_root() {
    let pg = PgServer::init();
    pg.psql("postgres", "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g");
    let expected = pg.psql("postgres", PG_CHECK);
    // A second data root, the tenant's: new folders are restored into it.
    let tenant_root = OwnedDir::new("postgres");
    let setup = start_agent(pg.port, 1, vec![pg.root.path().to_path_buf(), tenant_root.path().to_path_buf()]).await;
    setup.register("pg1", Engine::Postgresql, "postgres", &pg.data).await;
    let backup = setup.backup("pg1").await;
    setup.damage_az2("pg1", &backup);

    let postgres = TenantUser::named("postgres");
    let sentinels = Sentinels::new();
    let to_sentinel = tenant_root.path().join("bait-sentinel");
    let to_state = tenant_root.path().join("bait-state");
    plant_link(&postgres, &sentinels.folder, &to_sentinel);
    plant_link(&postgres, setup.agent.state_dir(), &to_state);

    // New folder: the empty target flips with a link to the sentinel folder, then to the agent's
    // state folder (the keystore and registry of every tenant), while restores from the damaged
    // copy (rollback) and the good one run.
    // The handler's early check refuses most attempts (it sees the link); attempts go on until,
    // for each bait, a restore from each copy got past it into the job, where the handles are.
    let mut attempt = 0;
    for bait in [&to_sentinel, &to_state] {
        for source in ["az2", "az1"] {
            let mut outcomes = Outcomes::default();
            while outcomes.failed + outcomes.succeeded == 0 {
                assert!(attempt < 200, "no attempt got past the handler in 200 tries: {outcomes:?}");
                attempt += 1;
                let target = tenant_root.path().join(format!("new-{attempt}"));
                std::fs::create_dir(&target).expect("target folder");
                postgres.own(&target);
                let attack = Exchange::start(&postgres, &target, bait);
                let request = format!("new-{attempt}");
                let (result, ()) = tokio::join!(
                    setup.restore("pg1", &backup, Some(&target), source, &request),
                    setup.assert_api_answers(1)
                );
                attack.stop();
                outcomes.add(&result);
                sentinels.assert_untouched();
                setup.assert_state_intact(&["pg1"]);
                let still_link = std::fs::symlink_metadata(bait).is_ok_and(|m| m.file_type().is_symlink());
                assert!(still_link, "the bait {} is still a link", bait.display());
            }
            eprintln!("new folder, bait {}, {source}: {outcomes:?}", bait.display());
        }
    }

    // In place: the stopped cluster's own folder flips with a link to the sentinel folder.
    pg.stop();
    let in_place_bait = pg.root.path().join("bait");
    plant_link(&postgres, &sentinels.folder, &in_place_bait);
    let mut in_place = Outcomes::default();
    for (n, source) in ["az2", "az1", "az2", "az1"].iter().enumerate() {
        let attack = Exchange::start(&postgres, &pg.data, &in_place_bait);
        let request = format!("in-place-{n}");
        let (result, ()) =
            tokio::join!(setup.restore("pg1", &backup, None, source, &request), setup.assert_api_answers(1));
        attack.stop();
        in_place.add(&result);
        sentinels.assert_untouched();
        setup.assert_state_intact(&["pg1"]);
    }
    assert!(in_place.failed + in_place.succeeded > 0, "no in-place attempt reached the job: {in_place:?}");
    eprintln!("in place: {in_place:?}");

    // The allowed path, the attack over: the damaged copy rolls back and leaves the folder as it
    // was; the good copy restores, in place and into a new folder, and the data is the backup's.
    let failed = setup.restore("pg1", &backup, None, "az2", "in-place-bad").await.expect("RestoreBackup");
    assert_eq!(state_of(&failed), OperationState::Failed, "a damaged copy must fail");
    let message = failed.error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
    assert!(message.contains("chunk"), "the rollback was caused by the damaged chunk: {message}");
    let ok = setup.restore("pg1", &backup, None, "az1", "in-place-good").await.expect("RestoreBackup");
    assert_eq!(state_of(&ok), OperationState::Succeeded, "{:?}\n{}", ok.error, setup.agent.log());
    pg.start();
    assert_eq!(pg.psql("postgres", PG_CHECK), expected, "restore in place");
    let fresh = tenant_root.path().join("fresh");
    let ok = setup.restore("pg1", &backup, Some(&fresh), "az1", "new-good").await.expect("RestoreBackup");
    assert_eq!(state_of(&ok), OperationState::Succeeded, "{:?}\n{}", ok.error, setup.agent.log());
    sentinels.assert_untouched();
    let restored = PgServer::on(tenant_root, fresh);
    assert_eq!(restored.psql("postgres", PG_CHECK), expected, "restore into a new folder");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restore_with_dump_rdb_planted_as_a_link_never_writes_or_chowns_through_it() {
    // The server's folder is strictly below its root, which is a data root of the agent.
    let root = OwnedDir::new("redis");
    let data = root.path().join("data");
    std::fs::create_dir(&data).expect("redis data folder");
    let redis = TenantUser::named("redis");
    redis.own(&data);
    let source = RedisServer::start_at(root, &data);
    for i in 0..500 {
        source.cli(&["SET", &format!("key:{i}"), &format!("value-{i}")]);
    }
    let tenant_root = OwnedDir::new("redis");
    let roots = vec![source.root.path().to_path_buf(), tenant_root.path().to_path_buf()];
    let setup = start_agent(1, source.port, roots).await;
    setup.register("r1", Engine::Redis, "redis", &data).await;
    let backup = setup.backup("r1").await;
    setup.damage_az2("r1", &backup);
    let sentinels = Sentinels::new();

    // New folders: as soon as the agent has made the folder and given it to redis, dump.rdb is
    // planted as a link to the sentinel file, again and again.
    let (mut outcomes, mut planted) = (Outcomes::default(), 0);
    for (n, source_az) in ["az1", "az2", "az1", "az2", "az1", "az2"].iter().enumerate() {
        let target = tenant_root.path().join(format!("new-{n}"));
        let attack = Planter::start(&redis, &sentinels.file, &target.join("dump.rdb"));
        let request = format!("new-{n}");
        let (result, ()) =
            tokio::join!(setup.restore("r1", &backup, Some(&target), source_az, &request), setup.assert_api_answers(1));
        planted += attack.stop();
        outcomes.add(&result);
        sentinels.assert_untouched();
        setup.assert_state_intact(&["r1"]);
    }
    // The agent usually wins this race (it creates dump.rdb right after giving the folder to redis):
    // the in-place attempts below are where the planted link reliably takes the name first.
    assert!(outcomes.failed + outcomes.succeeded == 6, "every attempt reached the job: {outcomes:?}");
    eprintln!("new folders: {outcomes:?}, {planted} links planted");

    // In place: the instance's folder holds dump.rdb as a link to the sentinel file, and the tenant
    // plants it again whenever the name is free while the restore runs.
    let dump = data.join("dump.rdb");
    let _ = std::fs::remove_file(&dump);
    plant_link(&redis, &sentinels.file, &dump);
    let mut refused_link = 0;
    for (n, source_az) in ["az2", "az1", "az2", "az1"].iter().enumerate() {
        let attack = Planter::start(&redis, &sentinels.file, &dump);
        let request = format!("in-place-{n}");
        let (result, ()) =
            tokio::join!(setup.restore("r1", &backup, None, source_az, &request), setup.assert_api_answers(1));
        planted += attack.stop();
        let op = result.expect("an in-place restore of a stopped instance is not refused by the handler");
        let message = op.error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
        assert!(!message.contains("set aside by an earlier restore"), "a rollback left the old data aside: {message}");
        if message.contains("dump.rdb") && message.contains("exists") {
            refused_link += 1;
        }
        sentinels.assert_untouched();
        setup.assert_state_intact(&["r1"]);
    }
    assert!(planted > 0, "the tenant never got a link planted");
    assert!(refused_link > 0, "no restore met the planted dump.rdb (create O_EXCL refused it): {planted} planted");

    // The allowed path, the attack over: into a new folder and in place (the planted link is set
    // aside and removed), and a server on each restored file has the data.
    let fresh = tenant_root.path().join("fresh");
    let ok = setup.restore("r1", &backup, Some(&fresh), "az1", "new-good").await.expect("RestoreBackup");
    assert_eq!(state_of(&ok), OperationState::Succeeded, "{:?}\n{}", ok.error, setup.agent.log());
    let _ = std::fs::remove_file(&dump);
    plant_link(&redis, &sentinels.file, &dump);
    let ok = setup.restore("r1", &backup, None, "az1", "in-place-good").await.expect("RestoreBackup");
    assert_eq!(state_of(&ok), OperationState::Succeeded, "{:?}\n{}", ok.error, setup.agent.log());
    sentinels.assert_untouched();
    let meta = std::fs::symlink_metadata(&dump).expect("dump.rdb");
    assert!(meta.file_type().is_file(), "the restored dump.rdb is a new regular file, not the link");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), redis.uid, "dump.rdb belongs to redis");
    for restored_file in [fresh.join("dump.rdb"), dump] {
        let check = OwnedDir::new("redis");
        std::fs::copy(&restored_file, check.path().join("dump.rdb")).expect("copy the restored dump.rdb");
        redis.own(check.path());
        let server = RedisServer::start(Some(check));
        assert_eq!(server.cli(&["DBSIZE"]), "500", "{}", restored_file.display());
        assert_eq!(server.cli(&["GET", "key:499"]), "value-499");
    }
}

/// `postmaster.pid` is the tenant's file: planted as a FIFO (an open for reading would wait for a
/// writer forever), as a link to a root-only file, or as a huge sparse file, it neither hangs the
/// agent, nor is followed, nor is read whole. A FIFO or a link is not a running cluster (the
/// in-place restore goes ahead and replaces it); a regular file, however large, is one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_postmaster_pid_neither_hangs_nor_is_followed_nor_read_whole() {
    let pg = PgServer::init();
    pg.psql("postgres", "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 1000) g");
    let expected = pg.psql("postgres", PG_CHECK);
    let setup = start_agent(pg.port, 1, vec![pg.root.path().to_path_buf()]).await;
    setup.register("pg1", Engine::Postgresql, "postgres", &pg.data).await;
    let backup = setup.backup("pg1").await;
    pg.stop();
    let postgres = TenantUser::named("postgres");
    let sentinels = Sentinels::new();
    let pid = pg.data.join("postmaster.pid");
    let within = Duration::from_secs(60);

    for (n, plant) in ["fifo", "link"].iter().enumerate() {
        match *plant {
            "fifo" => plant_fifo(&postgres, &pid),
            _ => plant_link(&postgres, &sentinels.file, &pid),
        }
        let request = format!("in-place-{plant}");
        let restore = setup.restore("pg1", &backup, None, "az1", &request);
        let (result, ()) = tokio::join!(tokio::time::timeout(within, restore), setup.assert_api_answers(1));
        let op = result.unwrap_or_else(|_| panic!("a {plant} as postmaster.pid hung the restore"));
        let op = op.unwrap_or_else(|s| panic!("a {plant} as postmaster.pid counted as a running cluster: {s:?}"));
        assert_eq!(state_of(&op), OperationState::Succeeded, "{n}: {:?}\n{}", op.error, setup.agent.log());
        assert!(std::fs::symlink_metadata(&pid).is_err(), "the planted {plant} was set aside and removed");
        sentinels.assert_untouched();
    }

    // A huge regular file counts as a running cluster: refused at once, only 4 KiB of it read.
    plant_huge_file(&postgres, &pid, 64 << 30);
    let restore = setup.restore("pg1", &backup, None, "az1", "in-place-huge");
    let refused = tokio::time::timeout(within, restore).await.expect("a huge postmaster.pid hung the restore");
    let status = refused.expect_err("a regular postmaster.pid means a running cluster");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("is running"), "{}", status.message());
    setup.assert_api_answers(1).await;
    std::fs::remove_file(&pid).expect("remove the huge file");

    pg.start();
    assert_eq!(pg.psql("postgres", PG_CHECK), expected, "the restored cluster has the backup's data");
}
