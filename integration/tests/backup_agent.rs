//! Backups through the real agent binary over gRPC and mutual TLS: a private PostgreSQL 15 with a
//! little data, an agent whose `[backup]` config points at it with three `dir` destinations, and the
//! whole manual-backup life: start, watch, list, verify, restore into a new database, idempotent
//! retry, role check and the Starter plan's quota; and the destinations as untrusted storage:
//! manifests rewritten there are refused, a retried request never reuses a backup id.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use dbagent_integration::agent::LaunchContext;
use dbagent_integration::backup_config::BackupAgentConfig;
use dbagent_integration::ops::instance_spec;
use dbagent_integration::pki::{ServerPki, Validity};
use dbagent_integration::servers::PgServer;
use dbagent_integration::{Agent, AgentBuilder, ClientIdentity};
use dbagent_proto::v1::backups_client::BackupsClient;
use dbagent_proto::v1::instances_client::InstancesClient;
use dbagent_proto::v1::operations_client::OperationsClient;
use dbagent_proto::v1::{
    BackupMethod, BackupState, ListBackupsRequest, ListBackupsResponse, Operation, OperationState,
    RegisterInstanceRequest, RepairBackupRequest, RestoreBackupRequest, StartBackupRequest, VerifyBackupRequest,
    WatchOperationRequest,
};
use tonic::transport::Channel;

const INSTANCE: &str = "pg-backup";
const OP_TIMEOUT: Duration = Duration::from_secs(120);

/// The agent's TOML: a KEK file (written unless `with_kek` is false), data roots (the agent's and
/// the one holding the PostgreSQL cluster), three `dir` destinations and the connection of the dump
/// tools to `pg_port`.
fn agent_config(ctx: &LaunchContext, pki: &ServerPki, pg_port: u16, pg_root: Option<&Path>, with_kek: bool) -> String {
    let data_roots: Vec<PathBuf> =
        [Some(data_root(&ctx.work_dir)), pg_root.map(Path::to_path_buf)].into_iter().flatten().collect();
    BackupAgentConfig {
        write_kek: with_kek,
        data_roots: &data_roots,
        destinations: &["az1", "az2", "az3"],
        pg_port,
        pg_database: "shop",
        redis_port: None,
        accept_on_host_destinations: true,
        scheduler_interval_secs: None,
    }
    .toml(ctx, pki)
}

fn data_root(work_dir: &Path) -> PathBuf {
    work_dir.join("data")
}

fn state_of(op: &Operation) -> OperationState {
    OperationState::try_from(op.state).unwrap_or(OperationState::Unspecified)
}

/// Follows WatchOperation to the end and asserts it SUCCEEDED.
async fn watch_to_success(channel: &Channel, op: &Operation, agent: &Agent) -> Operation {
    let mut ops = OperationsClient::new(channel.clone());
    let mut stream = ops
        .watch_operation(WatchOperationRequest { id: op.id.clone() })
        .await
        .unwrap_or_else(|s| panic!("WatchOperation {}: {s:?}", op.id))
        .into_inner();
    let deadline = Instant::now() + OP_TIMEOUT;
    let mut last = op.clone();
    while !matches!(state_of(&last), OperationState::Succeeded | OperationState::Failed | OperationState::Cancelled) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, stream.message()).await {
            Ok(Ok(Some(next))) => last = next,
            Ok(Ok(None)) => break,
            Ok(Err(s)) => panic!("WatchOperation {} broke: {s:?}", op.id),
            Err(_) => panic!(
                "operation {} ({}) did not finish within {OP_TIMEOUT:?}: {last:?}\n{}",
                op.id,
                op.kind,
                agent.log()
            ),
        }
    }
    assert_eq!(state_of(&last), OperationState::Succeeded, "{} failed: {:?}\n{}", last.kind, last.error, agent.log());
    last
}

fn backup_id_of(op: &Operation) -> String {
    let result: serde_json::Value = serde_json::from_str(&op.result_json).expect("result_json is JSON");
    result["backup_id"].as_str().unwrap_or_else(|| panic!("no backup_id in {}", op.result_json)).to_owned()
}

fn start_request(request_id: &str) -> StartBackupRequest {
    StartBackupRequest {
        request_id: request_id.into(),
        instance_id: INSTANCE.into(),
        method: BackupMethod::Logical as i32,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_backup_through_the_agent_over_grpc() {
    let pg = PgServer::init();
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.psql(
        "shop",
        "CREATE TABLE orders (id int PRIMARY KEY, item text NOT NULL, qty int NOT NULL); \
         INSERT INTO orders SELECT i, 'item-' || i, i % 7 FROM generate_series(1, 5000) i",
    );
    let checksum = "SELECT count(*) || ':' || md5(string_agg(o::text, ',' ORDER BY o.id)) FROM orders o";
    let expected = pg.psql("shop", checksum);
    assert!(expected.starts_with("5000:"), "{expected}");

    let pki = Rc::new(ServerPki::new());
    let for_config = pki.clone();
    let (pg_port, pg_root) = (pg.port, pg.root.path().to_path_buf());
    let agent =
        AgentBuilder::config(move |ctx: &LaunchContext| agent_config(ctx, &for_config, pg_port, Some(&pg_root), true))
            .start();
    let orchestrator = ClientIdentity::issued(pki.ca.cert_pem(), &pki.ca.client("orchestrator", Validity::Current));
    let monitor = ClientIdentity::issued(pki.ca.cert_pem(), &pki.ca.client("monitor", Validity::Current));
    let channel = agent.channel(&orchestrator).await;
    let mut backups = BackupsClient::new(channel.clone());

    // The instance is the cluster itself: a backup checks that its server serves this data_dir.
    register(&channel, &agent, Some(&pg.data)).await;

    // StartBackup (logical) -> WatchOperation until SUCCEEDED.
    let op = backups
        .start_backup(start_request("backup-1"))
        .await
        .unwrap_or_else(|s| panic!("StartBackup: {s:?}\n{}", agent.log()))
        .into_inner();
    assert_eq!(op.kind, "backup.start");
    let done = watch_to_success(&channel, &op, &agent).await;
    let backup_id = backup_id_of(&done);

    // ListBackups: complete on all three destinations.
    let list = list_backups(&mut backups).await;
    assert_eq!(list.backups.len(), 1, "{list:?}");
    let b = &list.backups[0];
    assert_eq!(b.id, backup_id);
    assert_eq!(BackupState::try_from(b.state), Ok(BackupState::Complete), "{b:?}");
    assert_eq!(BackupMethod::try_from(b.method), Ok(BackupMethod::Logical));
    let mut names: Vec<_> = b.destinations.iter().map(|d| (d.name.as_str(), d.state.as_str())).collect();
    names.sort_unstable();
    assert_eq!(names, [("az1", "complete"), ("az2", "complete"), ("az3", "complete")], "{b:?}");
    assert!(b.size_bytes > 0 && b.stored_bytes > 0, "{b:?}");

    // The manifest names the host-KEK wrap and the recovery key's (the config has a recipient).
    let manifest_path = agent.work_dir().join("dest/az2").join(INSTANCE).join(&backup_id).join("manifest.json");
    let manifest =
        std::fs::read_to_string(&manifest_path).unwrap_or_else(|e| panic!("read {}: {e}", manifest_path.display()));
    assert!(
        manifest.contains("kek-aes-256-gcm-v2") && manifest.contains("age-x25519-v1") && manifest.contains("\"mac\""),
        "{manifest}"
    );
    assert!(!agent.state_dir().join("backups/host.key").exists(), "no separate backup host key is made");

    // VerifyBackup on one destination.
    let verify = backups
        .verify_backup(VerifyBackupRequest {
            request_id: "verify-1".into(),
            instance_id: INSTANCE.into(),
            backup_id: backup_id.clone(),
            destination: "az3".into(),
            ..Default::default()
        })
        .await
        .expect("VerifyBackup")
        .into_inner();
    let verified = watch_to_success(&channel, &verify, &agent).await;
    assert!(verified.result_json.contains("\"ok\":true"), "{}", verified.result_json);

    // RestoreBackup into a new database of the same server; the table is identical.
    let restore = backups
        .restore_backup(RestoreBackupRequest {
            request_id: "restore-1".into(),
            instance_id: INSTANCE.into(),
            backup_id: backup_id.clone(),
            target_database: "shop_restored".into(),
            destination: "az1".into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|s| panic!("RestoreBackup: {s:?}"))
        .into_inner();
    watch_to_success(&channel, &restore, &agent).await;
    assert_eq!(pg.psql("shop_restored", checksum), expected);

    // A retried StartBackup (same request_id) is the same operation, not a second backup.
    let again = backups.start_backup(start_request("backup-1")).await.expect("StartBackup again").into_inner();
    assert_eq!(again.id, op.id);
    let list = list_backups(&mut backups).await;
    assert_eq!(list.backups.len(), 1, "a retry made a second backup: {list:?}");

    // A monitor may read but not start backups.
    let mut as_monitor = BackupsClient::new(agent.channel(&monitor).await);
    let denied =
        as_monitor.start_backup(start_request("monitor-1")).await.expect_err("a monitor must not start backups");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    as_monitor
        .list_backups(ListBackupsRequest { instance_id: INSTANCE.into(), ..Default::default() })
        .await
        .expect("a monitor may list backups");

    // Starter plan: 10 manual backups; the 11th is refused naming the quota.
    for n in 2..=10 {
        let op = backups
            .start_backup(start_request(&format!("backup-{n}")))
            .await
            .unwrap_or_else(|s| panic!("backup {n}: {s:?}"))
            .into_inner();
        watch_to_success(&channel, &op, &agent).await;
    }
    let list = list_backups(&mut backups).await;
    assert_eq!(list.backups.len(), 10);
    let refused =
        backups.start_backup(start_request("backup-11")).await.expect_err("the 11th manual backup must be refused");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("starter") && refused.message().contains("10"), "{}", refused.message());
}

/// Without the host KEK the agent still starts and serves; backups are refused with
/// FAILED_PRECONDITION naming the KEK file it looked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_kek_the_agent_serves_and_refuses_backups() {
    let pki = Rc::new(ServerPki::new());
    let for_config = pki.clone();
    // No server is needed: the refusal comes before any dump. Port 1 is never contacted.
    let agent = AgentBuilder::config(move |ctx: &LaunchContext| agent_config(ctx, &for_config, 1, None, false)).start();
    let orchestrator = ClientIdentity::issued(pki.ca.cert_pem(), &pki.ca.client("orchestrator", Validity::Current));
    let channel = agent.channel(&orchestrator).await;
    register(&channel, &agent, None).await;
    let refused = BackupsClient::new(channel)
        .start_backup(start_request("backup-1"))
        .await
        .expect_err("a backup without a KEK must be refused");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    let kek = agent.work_dir().join("kek");
    assert!(
        refused.message().contains("key-encryption key") && refused.message().contains(&kek.display().to_string()),
        "{}",
        refused.message()
    );
}

/// Registers the test's PostgreSQL instance with the agent, on `data_dir` if given.
async fn register(channel: &Channel, agent: &Agent, data_dir: Option<&Path>) {
    let mut spec = instance_spec(INSTANCE, &data_root(agent.work_dir()));
    if let Some(dir) = data_dir {
        spec.data_dir = dir.to_string_lossy().into_owned();
    }
    InstancesClient::new(channel.clone())
        .register_instance(RegisterInstanceRequest {
            request_id: "reg-1".into(),
            id: INSTANCE.into(),
            spec: Some(spec),
        })
        .await
        .unwrap_or_else(|s| panic!("RegisterInstance: {s:?}\n{}", agent.log()));
}

/// ListBackups of the test's instance.
async fn list_backups(backups: &mut BackupsClient<Channel>) -> ListBackupsResponse {
    backups
        .list_backups(ListBackupsRequest { instance_id: INSTANCE.into(), ..Default::default() })
        .await
        .expect("ListBackups")
        .into_inner()
}

/// The manifest of `backup_id` on destination `az`.
fn manifest_file(agent: &Agent, az: &str, backup_id: &str) -> std::path::PathBuf {
    agent.work_dir().join("dest").join(az).join(INSTANCE).join(backup_id).join("manifest.json")
}

/// Rewrites fields of the stored manifest on `azs`, as anyone who can write to a destination can.
fn rewrite_manifest(agent: &Agent, azs: &[&str], backup_id: &str, fields: &[(&str, serde_json::Value)]) {
    for az in azs {
        let path = manifest_file(agent, az, backup_id);
        let mut m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read manifest")).expect("manifest is JSON");
        for (field, value) in fields {
            m[*field] = value.clone();
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&m).expect("encode manifest")).expect("write manifest");
    }
}

fn verify_request(request_id: &str, backup_id: &str, destination: &str) -> VerifyBackupRequest {
    VerifyBackupRequest {
        request_id: request_id.into(),
        instance_id: INSTANCE.into(),
        backup_id: backup_id.into(),
        destination: destination.into(),
        ..Default::default()
    }
}

/// Every path below `dir` whose name contains `needle`.
fn paths_named(dir: &Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().contains(needle) {
                out.push(entry.path());
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    out
}

/// The destinations are not trusted. Manifests rewritten in `dir` destinations to name another
/// instance, declare a huge chunk size or carry other object names are refused by restore and
/// verify with a clear FAILED_PRECONDITION, repair replaces such a copy from a good one and
/// writes nothing outside the destinations; and a backup request retried after its operation
/// record is gone gets a fresh id and leaves the completed backup as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_rewritten_in_storage_are_refused_and_backup_ids_are_never_reused() {
    let pg = PgServer::init();
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.psql("shop", "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)");
    let pki = Rc::new(ServerPki::new());
    let for_config = pki.clone();
    let (pg_port, pg_root) = (pg.port, pg.root.path().to_path_buf());
    let mut agent =
        AgentBuilder::config(move |ctx: &LaunchContext| agent_config(ctx, &for_config, pg_port, Some(&pg_root), true))
            .start();
    let orchestrator = ClientIdentity::issued(pki.ca.cert_pem(), &pki.ca.client("orchestrator", Validity::Current));
    let channel = agent.channel(&orchestrator).await;
    let mut backups = BackupsClient::new(channel.clone());
    register(&channel, &agent, Some(&pg.data)).await;
    let op = backups.start_backup(start_request("backup-1")).await.expect("StartBackup").into_inner();
    let backup_id = backup_id_of(&watch_to_success(&channel, &op, &agent).await);
    let all = ["az1", "az2", "az3"];
    let originals: Vec<Vec<u8>> =
        all.iter().map(|az| std::fs::read(manifest_file(&agent, az, &backup_id)).unwrap()).collect();
    let put_back = || {
        for (az, bytes) in all.iter().zip(&originals) {
            std::fs::write(manifest_file(&agent, az, &backup_id), bytes).unwrap();
        }
    };
    let restore_request = |request_id: &str| RestoreBackupRequest {
        request_id: request_id.into(),
        instance_id: INSTANCE.into(),
        backup_id: backup_id.clone(),
        target_database: "shop_tampered".into(),
        ..Default::default()
    };
    let database_exists = || pg.psql("postgres", "SELECT count(*) FROM pg_database WHERE datname = 'shop_tampered'");

    // Another instance's name: restore and verify refuse, and no database is made.
    rewrite_manifest(&agent, &all, &backup_id, &[("instance_id", "pg-other".into())]);
    let refused = backups.restore_backup(restore_request("restore-foreign")).await.expect_err("restore must refuse");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("names another instance"), "{}", refused.message());
    let refused = backups.verify_backup(verify_request("verify-foreign", &backup_id, "")).await.expect_err("verify");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("names another instance"), "{}", refused.message());
    assert_eq!(database_exists(), "0");
    put_back();

    // A chunk size that would exhaust memory: refused before anything is read or allocated.
    rewrite_manifest(&agent, &all, &backup_id, &[("chunk_size", serde_json::json!(1u64 << 40))]);
    let refused = backups.verify_backup(verify_request("verify-huge", &backup_id, "az2")).await.expect_err("verify");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("manifest not authenticated") && refused.message().contains("chunk_size"),
        "{}",
        refused.message()
    );
    let refused = backups.restore_backup(restore_request("restore-huge")).await.expect_err("restore must refuse");
    assert!(refused.message().contains("manifest not authenticated"), "{}", refused.message());
    assert_eq!(database_exists(), "0");
    put_back();

    // Other object names in the manifest on az1, az3's copy gone: verify refuses az1 by name,
    // repair copies from a good destination into az1 and az3 under the requested ids only.
    let escape = "../../../../escaped";
    rewrite_manifest(&agent, &["az1"], &backup_id, &[("instance_id", escape.into()), ("backup_id", escape.into())]);
    std::fs::remove_dir_all(agent.work_dir().join("dest/az3").join(INSTANCE).join(&backup_id)).unwrap();
    let refused = backups.verify_backup(verify_request("verify-names", &backup_id, "az1")).await.expect_err("verify");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("az1") && refused.message().contains("names another instance"),
        "{}",
        refused.message()
    );
    let repair = backups
        .repair_backup(RepairBackupRequest {
            request_id: "repair-1".into(),
            instance_id: INSTANCE.into(),
            backup_id: backup_id.clone(),
        })
        .await
        .unwrap_or_else(|s| panic!("RepairBackup: {s:?}\n{}", agent.log()))
        .into_inner();
    let repaired = watch_to_success(&channel, &repair, &agent).await;
    assert!(repaired.result_json.contains("az1") && repaired.result_json.contains("az3"), "{}", repaired.result_json);
    let top = agent.work_dir().parent().expect("the work dir has a parent");
    assert_eq!(paths_named(agent.work_dir(), "escaped"), Vec::<std::path::PathBuf>::new());
    assert!(!top.join("escaped").exists());
    for az in ["az1", "az3"] {
        let v = backups.verify_backup(verify_request(&format!("verify-{az}"), &backup_id, az)).await.expect("verify");
        watch_to_success(&channel, &v.into_inner(), &agent).await;
    }
    // The untouched manifest still restores.
    let restore = backups.restore_backup(restore_request("restore-good")).await.expect("restore").into_inner();
    watch_to_success(&channel, &restore, &agent).await;
    assert_eq!(pg.psql("shop_tampered", "SELECT count(*) FROM t"), "100");

    // The operation record of backup-1 is gone (pruned); the same request again is a new backup
    // with a fresh id, and the completed one is untouched.
    let first_data = agent.work_dir().join("dest/az1").join(INSTANCE).join(&backup_id).join("data");
    let before = std::fs::read(&first_data).unwrap();
    agent.sigterm(Duration::from_secs(15));
    std::fs::remove_file(agent.state_dir().join("operations").join(format!("{}.json", op.id))).expect("remove record");
    agent.restart();
    let channel = agent.channel(&orchestrator).await;
    let mut backups = BackupsClient::new(channel.clone());
    let retry = backups.start_backup(start_request("backup-1")).await.expect("StartBackup again").into_inner();
    assert_ne!(retry.id, op.id, "the record was pruned: a new operation");
    let retried = backup_id_of(&watch_to_success(&channel, &retry, &agent).await);
    assert_ne!(retried, backup_id, "a backup id is never reused");
    assert!(retried > backup_id, "ids sort by time: {retried} after {backup_id}");
    assert_eq!(std::fs::read(&first_data).unwrap(), before);
    // (The restarted scheduler may add a scheduled backup of its own beside these two.)
    let listed: Vec<String> = list_backups(&mut backups).await.backups.into_iter().map(|b| b.id).collect();
    assert!(listed.contains(&backup_id) && listed.contains(&retried), "{listed:?}");
    let v =
        backups.verify_backup(verify_request("verify-first", &backup_id, "az1")).await.expect("verify").into_inner();
    watch_to_success(&channel, &v, &agent).await;
}
