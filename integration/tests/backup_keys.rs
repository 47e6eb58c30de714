//! Backup data keys held off the host (docs/backups.md, "Key hierarchy"): the KeyService test server
//! itself, then real agents and a real PostgreSQL: agent 1 backs up to `dir` destinations and is
//! lost with its state and KEK; agent 2, with a new state folder and a new KEK, restores from the
//! same destinations with only the off-host key: the operator's recovery key, or the KeyService.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use dbagent_integration::agent::LaunchContext;
use dbagent_integration::backup_config::{BackupAgentConfig, recovery_key_file};
use dbagent_integration::keyservice::{KeyServiceHandle, MASTER_KEY_ID, RemoteKeyFiles};
use dbagent_integration::ops::{instance_spec, state_of, wait_for_state};
use dbagent_integration::pki::{ServerPki, Validity};
use dbagent_integration::servers::PgServer;
use dbagent_integration::{Agent, AgentBuilder, ClientIdentity};
use dbagent_proto::v1 as pb;
use pb::backups_client::BackupsClient;
use pb::key_service_client::KeyServiceClient;
use pb::operations_client::OperationsClient;
use pb::{Operation, OperationState};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

async fn keyservice_client(keys: &KeyServiceHandle, files: &RemoteKeyFiles) -> KeyServiceClient<Channel> {
    let read = |p: &std::path::Path| std::fs::read(p).expect("read a TLS file");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&files.ca)))
        .identity(Identity::from_pem(read(&files.cert), read(&files.key)))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(keys.endpoint.clone())
        .expect("endpoint")
        .tls_config(tls)
        .expect("TLS config")
        .connect()
        .await
        .expect("connect to the KeyService");
    KeyServiceClient::new(channel)
}

fn wrap(purpose: &str, plaintext: &[u8]) -> pb::WrapKeyRequest {
    pb::WrapKeyRequest { host: "ignored".into(), purpose: purpose.into(), plaintext: plaintext.to_vec() }
}

fn unwrap(purpose: &str, wrapped: &pb::WrappedKey) -> pb::UnwrapKeyRequest {
    pb::UnwrapKeyRequest {
        host: "ignored".into(),
        purpose: purpose.into(),
        key_id: wrapped.key_id.clone(),
        ciphertext: wrapped.ciphertext.clone(),
    }
}

#[tokio::test]
async fn keyservice_test_server_binds_wraps_to_their_purpose_and_enforces_its_allow_list() {
    let keys = KeyServiceHandle::start(&[("host-1", "pg-a"), ("host-1", "pg-b"), ("host-2", "pg-a")]).await;
    let (mut host1, mut host2) = (
        keyservice_client(&keys, &keys.client("host-1")).await,
        keyservice_client(&keys, &keys.client("host-2")).await,
    );
    let (purpose_a, purpose_b) = ("dbagent-backup-data-key/v1/pg-a/b1", "dbagent-backup-data-key/v1/pg-b/b1");
    let key = [7u8; 32];

    let wrapped_a = host1.wrap_key(wrap(purpose_a, &key)).await.unwrap().into_inner();
    assert_eq!(wrapped_a.key_id, MASTER_KEY_ID);
    assert!(!wrapped_a.ciphertext.windows(key.len()).any(|w| w == key), "the key is not in the ciphertext in clear");
    let wrapped_b = host1.wrap_key(wrap(purpose_b, &key)).await.unwrap().into_inner();

    // Another host allowed for pg-a unwraps pg-a's key.
    let plain = host2.unwrap_key(unwrap(purpose_a, &wrapped_a)).await.unwrap().into_inner().plaintext;
    assert_eq!(plain, key);
    // ... but not pg-b's, which it is not allowed.
    let refused = host2.unwrap_key(unwrap(purpose_b, &wrapped_b)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("host-2") && refused.message().contains("pg-b"), "{refused:?}");
    // pg-b's wrap presented under pg-a's purpose does not open: the purpose is the associated data.
    let moved = host2.unwrap_key(unwrap(purpose_a, &wrapped_b)).await.unwrap_err();
    assert_eq!(moved.code(), tonic::Code::InvalidArgument, "{moved:?}");
    // Allowed later, it does.
    keys.allow("host-2", "pg-b");
    assert_eq!(host2.unwrap_key(unwrap(purpose_b, &wrapped_b)).await.unwrap().into_inner().plaintext, key);

    let calls = keys.calls();
    assert_eq!((calls.wrap_ok, calls.unwrap_ok, calls.denied, calls.failed), (2, 2, 1, 1), "{calls:?}");
}

const OP_TIMEOUT: Duration = Duration::from_secs(120);
const CHECKSUM: &str = "SELECT count(*) || ':' || md5(string_agg(o::text, ',' ORDER BY o.id)) FROM orders o";

/// A PostgreSQL cluster with database `shop` and a table of `rows` orders; returns it and its checksum.
fn shop(rows: u32) -> (PgServer, String) {
    let pg = PgServer::init();
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.psql(
        "shop",
        &format!(
            "CREATE TABLE orders (id int PRIMARY KEY, item text NOT NULL); \
             INSERT INTO orders SELECT i, 'item-' || i FROM generate_series(1, {rows}) i"
        ),
    );
    let sum = pg.psql("shop", CHECKSUM);
    (pg, sum)
}

/// A production agent (config file, not --dev) with three `dir` destinations, its own recovery key
/// (`recovery_key_file`), the KEK `kek_byte` repeated and, if given, `extra` applied to its TOML.
fn agent(
    pki: &Rc<ServerPki>,
    pg_roots: Vec<PathBuf>,
    pg_port: u16,
    kek_byte: u8,
    extra: impl Fn(String) -> String + 'static,
) -> Agent {
    let pki = pki.clone();
    AgentBuilder::config(move |ctx: &LaunchContext| {
        let roots: Vec<PathBuf> = std::iter::once(ctx.work_dir.join("data")).chain(pg_roots.iter().cloned()).collect();
        let toml = BackupAgentConfig {
            write_kek: true,
            data_roots: &roots,
            destinations: &["az1", "az2", "az3"],
            pg_port,
            pg_database: "shop",
            redis_port: None,
            // The destinations are folders on this host; this file tests the keys, not the zones.
            accept_on_host_destinations: true,
            scheduler_interval_secs: None,
        }
        .toml(ctx, &pki);
        // Each agent its own KEK: agent 2 holds nothing of agent 1's.
        std::fs::write(ctx.work_dir.join("kek"), [kek_byte; 32]).expect("write the KEK");
        extra(toml)
    })
    .start()
}

async fn orchestrator(pki: &ServerPki, agent: &Agent) -> Channel {
    let identity = ClientIdentity::issued(pki.ca.cert_pem(), &pki.ca.client("orchestrator", Validity::Current));
    agent.channel(&identity).await
}

async fn register(channel: &Channel, agent: &Agent, id: &str, pg: &PgServer) {
    let mut spec = instance_spec(id, &agent.work_dir().join("data"));
    spec.data_dir = pg.data.to_string_lossy().into_owned();
    pb::instances_client::InstancesClient::new(channel.clone())
        .register_instance(pb::RegisterInstanceRequest {
            request_id: format!("reg-{id}"),
            id: id.into(),
            spec: Some(spec),
        })
        .await
        .unwrap_or_else(|s| panic!("RegisterInstance {id}: {s:?}\n{}", agent.log()));
}

async fn finished(channel: &Channel, op: &Operation) -> Operation {
    let mut ops = OperationsClient::new(channel.clone());
    wait_for_state(&mut ops, &op.id, OP_TIMEOUT, |s| {
        matches!(s, OperationState::Succeeded | OperationState::Failed | OperationState::Cancelled)
    })
    .await
}

async fn succeeded(channel: &Channel, op: &Operation, agent: &Agent) -> Operation {
    let done = finished(channel, op).await;
    assert_eq!(state_of(&done), OperationState::Succeeded, "{} failed: {:?}\n{}", done.kind, done.error, agent.log());
    done
}

/// The error of a FAILED operation: (code, message).
async fn failed(channel: &Channel, op: &Operation) -> (String, String) {
    let done = finished(channel, op).await;
    assert_eq!(state_of(&done), OperationState::Failed, "{done:?}");
    let e = done.error.expect("a failed operation carries its error");
    (e.code, e.message)
}

/// A logical backup of `instance`, taken to success; returns its id.
async fn back_up(channel: &Channel, agent: &Agent, instance: &str) -> String {
    let op = BackupsClient::new(channel.clone())
        .start_backup(pb::StartBackupRequest {
            request_id: format!("backup-{instance}"),
            instance_id: instance.into(),
            method: pb::BackupMethod::Logical as i32,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|s| panic!("StartBackup {instance}: {s:?}\n{}", agent.log()))
        .into_inner();
    let done = succeeded(channel, &op, agent).await;
    let result: serde_json::Value = serde_json::from_str(&done.result_json).expect("result_json is JSON");
    result["backup_id"].as_str().expect("a backup_id in the result").to_owned()
}

fn restore(request_id: &str, instance: &str, backup_id: &str, database: &str, key: &[u8]) -> pb::RestoreBackupRequest {
    pb::RestoreBackupRequest {
        request_id: request_id.into(),
        instance_id: instance.into(),
        backup_id: backup_id.into(),
        target_database: database.into(),
        recovery_key: key.to_vec(),
        ..Default::default()
    }
}

/// The stored manifest of `backup_id` on az1 of `dest`, as JSON.
fn manifest(dest: &Path, instance: &str, backup_id: &str) -> serde_json::Value {
    let path = dest.join("az1").join(instance).join(backup_id).join("manifest.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())))
        .expect("the manifest is JSON")
}

/// The wrappers and key ids of a manifest's `key_wraps`.
fn wraps(m: &serde_json::Value) -> Vec<(String, String)> {
    m["key_wraps"]
        .as_array()
        .unwrap_or_else(|| panic!("format 3 lists key_wraps: {m}"))
        .iter()
        .map(|w| (w["wrapper"].as_str().expect("wrapper").to_owned(), w["key_id"].as_str().expect("key_id").to_owned()))
        .collect()
}

/// The host is lost: its destinations survive (copied here before agent 1 and its folder go).
fn keep_destinations(agent: &Agent, into: &Path) {
    copy_tree(&agent.work_dir().join("dest"), into);
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy folder");
    for entry in std::fs::read_dir(from).expect("list the destination").flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a stored object");
        }
    }
}

/// Every file below `dir` whose content contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file()
                && std::fs::read(entry.path()).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
            {
                out.push(entry.path());
            }
        }
    }
    out
}

fn database_exists(pg: &PgServer, name: &str) -> bool {
    pg.psql("postgres", &format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'")) == "1"
}

/// Agent 1 seals its backup's data key to its recovery recipient. Agent 2 (new state, new KEK)
/// refuses to restore it without the recovery key (naming both wraps) and with another age key,
/// verifies and restores it with the recovery key; the key text never reaches its log or state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_agent_restores_a_backup_with_the_recovery_key_and_only_with_it() {
    let (pg, expected) = shop(3000);
    let pki = Rc::new(ServerPki::new());
    let kept = tempfile::tempdir().unwrap();
    let (dest, operator_key) = (kept.path().join("dest"), kept.path().join("operator.key"));

    let agent1 = agent(&pki, vec![pg.root.path().to_path_buf()], pg.port, 0x11, |t| t);
    let channel = orchestrator(&pki, &agent1).await;
    register(&channel, &agent1, "pg-a", &pg).await;
    let backup_id = back_up(&channel, &agent1, "pg-a").await;
    std::fs::copy(recovery_key_file_of(&agent1), &operator_key).unwrap();
    keep_destinations(&agent1, &dest);
    drop(channel);
    drop(agent1);

    let key_text = std::fs::read(&operator_key).unwrap();
    let identity = dbagent::recovery_key::RecoveryIdentity::parse(&key_text).unwrap();
    let m = manifest(&dest, "pg-a", &backup_id);
    assert_eq!(m["format"], 3, "{m}");
    let w = wraps(&m);
    assert_eq!(w.len(), 2, "{w:?}");
    assert_eq!(w[0].0, "kek-aes-256-gcm-v2");
    assert_eq!(w[1], ("age-x25519-v1".to_owned(), identity.recipient()));

    let agent2 = agent(&pki, vec![pg.root.path().to_path_buf()], pg.port, 0x22, |t| t);
    copy_tree(&dest, &agent2.work_dir().join("dest"));
    let channel = orchestrator(&pki, &agent2).await;
    register(&channel, &agent2, "pg-a", &pg).await;
    let mut backups = BackupsClient::new(channel.clone());

    // Without the recovery key: the operation fails naming both wraps and what to bring.
    let op = backups.restore_backup(restore("r-none", "pg-a", &backup_id, "shop_r1", b"")).await.unwrap().into_inner();
    let (code, message) = failed(&channel, &op).await;
    assert_eq!(code, "FAILED_PRECONDITION", "{message}");
    for part in ["kek-aes-256-gcm-v2", &w[0].1, "age-x25519-v1", &identity.recipient(), "no recovery key was given"] {
        assert!(message.contains(part), "{part:?} in {message}");
    }
    assert!(!database_exists(&pg, "shop_r1"), "nothing is restored before the key opens");

    // With another age key (agent 2's own): refused, naming the key given.
    let stranger = std::fs::read(recovery_key_file_of(&agent2)).unwrap();
    let stranger_public = dbagent::recovery_key::RecoveryIdentity::parse(&stranger).unwrap().recipient();
    let op = backups
        .restore_backup(restore("r-other", "pg-a", &backup_id, "shop_r1", &stranger))
        .await
        .unwrap()
        .into_inner();
    let (code, message) = failed(&channel, &op).await;
    assert_eq!(code, "PERMISSION_DENIED", "{message}");
    assert!(message.contains("does not open") && message.contains(&stranger_public), "{message}");
    assert!(!database_exists(&pg, "shop_r1"));

    // Not an identity at all: refused at the call.
    let refused = backups
        .restore_backup(restore("r-bad", "pg-a", &backup_id, "shop_r1", b"AGE-SECRET-KEY-1NOTAKEY"))
        .await
        .expect_err("a malformed recovery key is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");

    // With the recovery key: verified, then restored; the table is identical.
    let verify = backups
        .verify_backup(pb::VerifyBackupRequest {
            request_id: "v-key".into(),
            instance_id: "pg-a".into(),
            backup_id: backup_id.clone(),
            recovery_key: key_text.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    succeeded(&channel, &verify, &agent2).await;
    let op =
        backups.restore_backup(restore("r-key", "pg-a", &backup_id, "shop_r1", &key_text)).await.unwrap().into_inner();
    succeeded(&channel, &op, &agent2).await;
    assert_eq!(pg.psql("shop_r1", CHECKSUM), expected);

    // The key was used and kept nowhere: not in the log, not in any file of the state folder; the
    // journal says only that one was given.
    let secret_line = key_text.split(|b| *b == b'\n').find(|l| l.starts_with(b"AGE-SECRET-KEY-1")).unwrap().to_vec();
    assert!(!agent2.log().as_bytes().windows(secret_line.len()).any(|w| w == secret_line), "the key is in the log");
    assert_eq!(files_containing(agent2.state_dir(), &secret_line), Vec::<PathBuf>::new());
    assert!(!files_containing(agent2.state_dir(), b"kept in memory for this operation only").is_empty());
}

fn recovery_key_file_of(agent: &Agent) -> PathBuf {
    let ctx = LaunchContext {
        work_dir: agent.work_dir().to_owned(),
        state_dir: agent.state_dir().to_owned(),
        listen: ([127, 0, 0, 1], 0).into(),
    };
    recovery_key_file(&ctx)
}

/// Agent 1 (host-1) wraps both backups' keys through the KeyService; its backup of pg-b fails
/// while the KeyService refuses it, and succeeds once allowed.
/// Agent 2 (host-2, new state and KEK, allowed only pg-a) restores pg-a's through the KeyService
/// and is refused pg-b's with PERMISSION_DENIED from the KeyService, nothing restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_keyservice_a_new_host_restores_only_the_instances_it_is_allowed() {
    let keys = Rc::new(KeyServiceHandle::start(&[("host-1", "pg-a"), ("host-2", "pg-a")]).await);
    let ((pg_a, sum_a), (pg_b, _)) = (shop(2000), shop(500));
    let roots = vec![pg_a.root.path().to_path_buf(), pg_b.root.path().to_path_buf()];
    let pki = Rc::new(ServerPki::new());
    let kept = tempfile::tempdir().unwrap();
    let dest = kept.path().join("dest");

    let for_agent1 = keys.clone();
    let agent1 = agent(&pki, roots.clone(), pg_a.port, 0x33, move |t| for_agent1.configure(&t, "host-1"));
    let channel = orchestrator(&pki, &agent1).await;
    register(&channel, &agent1, "pg-a", &pg_a).await;
    register(&channel, &agent1, "pg-b", &pg_b).await;
    let backup_a = back_up(&channel, &agent1, "pg-a").await;
    // A KeyService refusal fails the backup with its reason: the off-host wrap is never left out.
    let op = BackupsClient::new(channel.clone())
        .start_backup(pb::StartBackupRequest {
            request_id: "backup-pg-b-denied".into(),
            instance_id: "pg-b".into(),
            method: pb::BackupMethod::Logical as i32,
            ..Default::default()
        })
        .await
        .expect("StartBackup")
        .into_inner();
    let (code, message) = failed(&channel, &op).await;
    assert_eq!(code, "PERMISSION_DENIED", "{message}");
    assert!(
        message.contains("WrapKey") && message.contains("host-1 may not use the keys of instance pg-b"),
        "{message}"
    );
    let listed = BackupsClient::new(channel.clone())
        .list_backups(pb::ListBackupsRequest { instance_id: "pg-b".into(), ..Default::default() })
        .await
        .expect("ListBackups")
        .into_inner();
    assert!(listed.backups.is_empty(), "a failed backup leaves none: {listed:?}");
    keys.allow("host-1", "pg-b");
    let backup_b = back_up(&channel, &agent1, "pg-b").await;
    assert_eq!(keys.calls().wrap_ok, 2, "{:?}", keys.calls());
    keep_destinations(&agent1, &dest);
    drop(channel);
    drop(agent1);
    for (instance, id) in [("pg-a", &backup_a), ("pg-b", &backup_b)] {
        let w = wraps(&manifest(&dest, instance, id));
        assert!(w.contains(&("keyservice-v1".to_owned(), MASTER_KEY_ID.to_owned())), "{w:?}");
    }

    let for_agent2 = keys.clone();
    let agent2 = agent(&pki, roots, pg_a.port, 0x44, move |t| for_agent2.configure(&t, "host-2"));
    copy_tree(&dest, &agent2.work_dir().join("dest"));
    let channel = orchestrator(&pki, &agent2).await;
    register(&channel, &agent2, "pg-a", &pg_a).await;
    register(&channel, &agent2, "pg-b", &pg_b).await;
    let mut backups = BackupsClient::new(channel.clone());

    let op = backups.restore_backup(restore("r-a", "pg-a", &backup_a, "shop_r2", b"")).await.unwrap().into_inner();
    succeeded(&channel, &op, &agent2).await;
    assert_eq!(pg_a.psql("shop_r2", CHECKSUM), sum_a);
    assert_eq!(keys.calls().unwrap_ok, 1, "pg-a's key came from the KeyService: {:?}", keys.calls());

    let op = backups.restore_backup(restore("r-b", "pg-b", &backup_b, "shop_r2", b"")).await.unwrap().into_inner();
    let (code, message) = failed(&channel, &op).await;
    assert_eq!(code, "PERMISSION_DENIED", "{message}");
    assert!(
        message.contains("keyservice-v1")
            && message.contains("PermissionDenied")
            && message.contains("host-2 may not use the keys of instance pg-b"),
        "{message}"
    );
    assert!(!database_exists(&pg_b, "shop_r2"), "nothing of pg-b is restored");
    assert_eq!(keys.calls().denied, 2, "the refused WrapKey and UnwrapKey: {:?}", keys.calls());
}

/// The config of [`agent`] without its recovery recipient: only the host KEK.
fn host_only(toml: &str) -> String {
    toml.lines().filter(|l| !l.starts_with("recovery_recipients")).collect::<Vec<_>>().join("\n")
}

/// A production agent with only its host KEK refuses backups, naming the config keys; the same
/// agent with `backup.allow_host_only_keys = true` takes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_production_agent_without_an_off_host_key_refuses_backups_unless_told_so_in_so_many_words() {
    let (pg, _) = shop(10);
    let pki = Rc::new(ServerPki::new());
    let refusing = agent(&pki, vec![pg.root.path().to_path_buf()], pg.port, 0x55, |t| host_only(&t));
    let channel = orchestrator(&pki, &refusing).await;
    register(&channel, &refusing, "pg-a", &pg).await;
    let refused = BackupsClient::new(channel)
        .start_backup(pb::StartBackupRequest {
            request_id: "b-1".into(),
            instance_id: "pg-a".into(),
            method: pb::BackupMethod::Logical as i32,
            ..Default::default()
        })
        .await
        .expect_err("a host-only backup must be refused in production");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    for key in ["keys.recovery_recipients", "keys.provider", "backup.allow_host_only_keys = true"] {
        assert!(refused.message().contains(key), "{key:?} in {}", refused.message());
    }
    drop(refusing);

    let allowed = agent(&pki, vec![pg.root.path().to_path_buf()], pg.port, 0x55, |t| {
        dbagent_integration::config::with_lines(&host_only(&t), "backup", "allow_host_only_keys = true")
    });
    let channel = orchestrator(&pki, &allowed).await;
    register(&channel, &allowed, "pg-a", &pg).await;
    let id = back_up(&channel, &allowed, "pg-a").await;
    let w = wraps(&manifest(&allowed.work_dir().join("dest"), "pg-a", &id));
    assert_eq!(w.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(), ["kek-aes-256-gcm-v2"], "{w:?}");
}
