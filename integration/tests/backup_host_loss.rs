//! The host is lost (issue 13). Agent 1 backs up a PostgreSQL (pgbench data and a checksum table),
//! a MariaDB and a Redis instance to three buckets of a real Garage; then its state folder and its
//! KEK are deleted and its servers stopped, the PostgreSQL data folder moved away. A fresh agent 2,
//! with new state, a new KEK and only an off-host key source, finds the instances and their backups
//! on the buckets (ListBackups from_destinations), verifies and restores them in place, and the
//! servers started on the restored data hold the same checksums. Twice: with the KeyService test
//! server over mTLS as the key source, and with the operator's recovery key given in the request.
//!
//! Also: the new agent refuses instance X's backup as instance Y's (planted under Y's prefix in a
//! bucket, as is and renamed) before anything is written, and a tampered manifest in one bucket is
//! refused while the untampered copies in the others still restore.
//!
//! Needs Garage (integration/run-tests.sh installs it; the test panics naming how otherwise) and
//! Debian's PostgreSQL 15, MariaDB and Redis packages.

#[path = "backup_host_loss/support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::rc::Rc;

use dbagent_integration::garage::Garage;
use dbagent_integration::pki::ServerPki;
use dbagent_integration::servers::{MariaServer, OwnedDir, PgServer, RedisServer};
use dbagent_proto::v1::{
    Backup, BackupMethod, BackupState, Engine, OperationState, RestoreBackupRequest, VerifyBackupRequest,
};
use support::*;

const PG: &str = "pg-lost";
const MARIA: &str = "maria-lost";
const REDIS: &str = "redis-lost";

// --- the test ------------------------------------------------------------------------------------

/// What agent 1 left on the buckets.
struct Lost {
    pg_backup: String,
    maria_backup: String,
    redis_backup: String,
    pg_expected: String,
    maria_expected: String,
    redis_expected: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_is_lost_and_a_new_agent_with_only_an_off_host_key_restores_every_engine() {
    let garage = Garage::start(&["lost-a", "lost-b", "lost-c"]);
    let keys = OffHostKeys::start(&[PG, MARIA, REDIS]).await;
    let pki = Rc::new(ServerPki::new());

    let lost = {
        // --- agent 1: the host that will be lost ---
        let pg = PgServer::init();
        let maria = MariaServer::start();
        let redis_root = OwnedDir::new("redis");
        let redis_dir = redis_root.path().join("data");
        make_owned_dir(&redis_dir, "redis");
        let redis = RedisServer::start_at(redis_root, &redis_dir);
        let (pg_expected, maria_expected, redis_expected) =
            (seed_postgres(&pg), seed_mariadb(&maria), seed_redis(&redis));

        let roots =
            vec![pg.root.path().to_path_buf(), maria.root.path().to_path_buf(), redis.root.path().to_path_buf()];
        let servers = Servers { pg_port: Some(pg.port), maria_port: Some(maria.port), redis_port: Some(redis.port) };
        let agent1 = Host::new(&garage, &pki, 0x11, roots, servers, keys.writer_config()).start();
        let c1 = Client::connect(&agent1, &pki).await;
        c1.register(&agent1, PG, Engine::Postgresql, "postgres", &pg.data).await;
        c1.register(&agent1, MARIA, Engine::Mariadb, "mysql", &maria.data).await;
        c1.register(&agent1, REDIS, Engine::Redis, "redis", &redis_dir).await;
        let pg_backup = c1.backup(&agent1, PG, BackupMethod::Physical).await;
        let maria_backup = c1.backup(&agent1, MARIA, BackupMethod::Logical).await;
        let redis_backup = c1.backup(&agent1, REDIS, BackupMethod::Physical).await;

        // The host is lost: its state folder and KEK go with the agent, its servers stop, and the
        // PostgreSQL data folder is moved away.
        let (state, kek) = (agent1.state_dir().to_path_buf(), agent1.work_dir().join("kek"));
        drop(agent1);
        assert!(!state.exists() && !kek.exists(), "agent 1's state folder and KEK are gone");
        pg.stop();
        std::fs::rename(&pg.data, pg.root.path().join("moved-away")).expect("move the data folder away");
        drop((maria, redis));
        Lost { pg_backup, maria_backup, redis_backup, pg_expected, maria_expected, redis_expected }
    };

    for source in [KeySource::KeyService, KeySource::RecoveryKey] {
        restore_on_a_new_host(&garage, &pki, &keys, source, &lost).await;
    }
}

/// Agent 2 with `source` as its only key: finds, verifies and restores the three instances.
async fn restore_on_a_new_host(
    garage: &Garage,
    pki: &Rc<ServerPki>,
    keys: &OffHostKeys,
    source: KeySource,
    lost: &Lost,
) {
    let pg_root = OwnedDir::new("postgres");
    let redis_root = OwnedDir::new("redis");
    // The new host's MariaDB instance: an empty server the logical backup is restored into.
    let maria = MariaServer::start();
    let roots = vec![pg_root.path().to_path_buf(), redis_root.path().to_path_buf(), maria.root.path().to_path_buf()];
    let servers = Servers { maria_port: Some(maria.port), ..Servers::default() };
    let agent2 = Host::new(garage, pki, 0x22, roots, servers, keys.reader_config(source)).start();
    let c2 = Client::connect(&agent2, pki).await;
    let unwraps_before = keys.service.calls().unwrap_ok;

    // What the buckets hold, to an agent that never knew these instances.
    let found = c2.list_found("").await;
    for id in [PG, MARIA, REDIS] {
        assert!(found.instance_ids.iter().any(|i| i == id), "{source:?}: {id} not found: {found:?}");
    }
    assert!(found.destination_errors.is_empty(), "{found:?}");
    for (id, backup) in [(PG, &lost.pg_backup), (MARIA, &lost.maria_backup), (REDIS, &lost.redis_backup)] {
        let listed = c2.list_found(id).await;
        assert_eq!(listed.backups.len(), 1, "{source:?} {id}: {listed:?}");
        let b = &listed.backups[0];
        assert_eq!(&b.id, backup);
        assert_eq!(BackupState::try_from(b.state), Ok(BackupState::Complete), "{b:?}");
        assert_found_authentication(source, b);
    }

    let pg_data = pg_root.path().join("data");
    let redis_data = redis_root.path().join("data");
    c2.register(&agent2, PG, Engine::Postgresql, "postgres", &pg_data).await;
    c2.register(&agent2, MARIA, Engine::Mariadb, "mysql", &maria.data).await;
    c2.register(&agent2, REDIS, Engine::Redis, "redis", &redis_data).await;
    let key = keys.request_key(source);
    for (n, (id, backup)) in
        [(PG, &lost.pg_backup), (MARIA, &lost.maria_backup), (REDIS, &lost.redis_backup)].into_iter().enumerate()
    {
        let dest = format!("az{}", n + 1);
        let op = c2
            .backups()
            .verify_backup(verify_request(&format!("verify-{id}"), id, backup, &dest, &key))
            .await
            .unwrap_or_else(|s| panic!("{source:?}: VerifyBackup {id}: {s:?}\n{}", agent2.log()))
            .into_inner();
        c2.succeed(&agent2, &op).await;
        // In place: the new host's data folders do not exist yet (the MariaDB one is its server).
        let op = c2
            .backups()
            .restore_backup(restore_request(&format!("restore-{id}"), id, backup, &dest, &key))
            .await
            .unwrap_or_else(|s| panic!("{source:?}: RestoreBackup {id}: {s:?}\n{}", agent2.log()))
            .into_inner();
        c2.succeed(&agent2, &op).await;
    }
    check_postgres(&PgServer::on(pg_root, pg_data), &lost.pg_expected);
    assert_eq!(maria.sql(MARIA_CHECK), lost.maria_expected);
    let redis = RedisServer::start_at(redis_root, &redis_data);
    assert_eq!(redis_digest(&redis), lost.redis_expected);
    // The key came from where it should: the KeyService, or the recovery key alone.
    let unwraps = keys.service.calls().unwrap_ok - unwraps_before;
    match source {
        KeySource::KeyService => assert!(unwraps >= 6, "{unwraps} unwraps for 3 verifies and 3 restores"),
        KeySource::RecoveryKey => assert_eq!(unwraps, 0, "agent 2 has no KeyService"),
    }
}

/// Agent 1 sealed `b`'s data key to both off-host key sources (as the manifest names them).
fn assert_sealed_off_host(b: &Backup) {
    let wrappers: Vec<&str> = b.key_wraps.iter().map(|k| k.wrapper.as_str()).collect();
    assert!(
        wrappers.contains(&KEYSERVICE_WRAPPER) && wrappers.contains(&RECOVERY_WRAPPER),
        "agent 1 sealed backup {} with {wrappers:?}, not to the KeyService ({KEYSERVICE_WRAPPER}) and the recovery \
         key ({RECOVERY_WRAPPER}): this agent has no off-host key sources (branch h-K)",
        b.id
    );
}

/// What ListBackups from_destinations says of a backup to agent 2 with `source`.
fn assert_found_authentication(source: KeySource, b: &Backup) {
    assert_sealed_off_host(b);
    match source {
        KeySource::KeyService => assert!(b.authenticated, "the KeyService opens it: {b:?}"),
        KeySource::RecoveryKey => {
            assert!(!b.authenticated, "the recovery key is given only at restore time: {b:?}");
            assert!(b.authentication_error.to_lowercase().contains("recovery key"), "{}", b.authentication_error);
        }
    }
}

fn verify_request(request_id: &str, instance: &str, backup: &str, dest: &str, key: &[u8]) -> VerifyBackupRequest {
    VerifyBackupRequest {
        request_id: request_id.into(),
        instance_id: instance.into(),
        backup_id: backup.into(),
        destination: dest.into(),
        recovery_key: key.to_vec(),
    }
}

fn restore_request(request_id: &str, instance: &str, backup: &str, dest: &str, key: &[u8]) -> RestoreBackupRequest {
    RestoreBackupRequest {
        request_id: request_id.into(),
        instance_id: instance.into(),
        backup_id: backup.into(),
        destination: dest.into(),
        recovery_key: key.to_vec(),
        ..Default::default()
    }
}

/// `dir` created and owned by `user` (a server's data folder strictly below its data root).
fn make_owned_dir(dir: &Path, user: &str) {
    std::fs::create_dir_all(dir).expect("create dir");
    let status = std::process::Command::new("chown").arg(format!("{user}:")).arg(dir).status().expect("chown");
    assert!(status.success());
}

/// `field` of the manifest of `instance`/`backup` in `bucket` set to `value`, by hand.
fn rewrite_manifest(garage: &Garage, bucket: &str, key: &str, field: &str, value: serde_json::Value) {
    let tmp = tempfile::NamedTempFile::new().expect("temp file");
    garage.download(bucket, key, tmp.path());
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path()).expect("read manifest")).expect("manifest is JSON");
    m[field] = value;
    std::fs::write(tmp.path(), serde_json::to_vec_pretty(&m).expect("encode")).expect("write manifest");
    garage.upload(bucket, key, tmp.path());
}

/// Every file below `dir` with its bytes, sorted: what a refused restore must leave as it was.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            } else {
                out.push((path.clone(), std::fs::read(&path).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

const X: &str = "redis-x";
const Y: &str = "redis-y";

/// Agent 2 (new state, new KEK, the KeyService as its key source) refuses instance X's backup
/// planted under instance Y's prefix, as is and renamed to Y, before anything of Y is written; and
/// of X's own backup with its manifest rewritten in two buckets (sizes on az2, chunk size on az3)
/// it lists those copies as refused and restores from the untouched az1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_agent_refuses_one_instances_backup_as_anothers_and_tampered_copies_but_restores_the_untouched_one() {
    let garage = Garage::start(&["swap-a", "swap-b", "swap-c"]);
    let keys = OffHostKeys::start(&[X, Y]).await;
    let pki = Rc::new(ServerPki::new());

    let (backup, expected) = {
        let x_root = OwnedDir::new("redis");
        let x_dir = x_root.path().join("data");
        make_owned_dir(&x_dir, "redis");
        let x = RedisServer::start_at(x_root, &x_dir);
        let expected = seed_redis(&x);
        let roots = vec![x.root.path().to_path_buf()];
        let servers = Servers { redis_port: Some(x.port), ..Servers::default() };
        let agent1 = Host::new(&garage, &pki, 0x11, roots, servers, keys.writer_config()).start();
        let c1 = Client::connect(&agent1, &pki).await;
        c1.register(&agent1, X, Engine::Redis, "redis", &x_dir).await;
        (c1.backup(&agent1, X, BackupMethod::Physical).await, expected)
    };

    // The new host: instance Y with data of its own (saved to its folder), X not restored yet.
    let y_root = OwnedDir::new("redis");
    let y_dir = y_root.path().join("data");
    make_owned_dir(&y_dir, "redis");
    let y = RedisServer::start_at(y_root, &y_dir);
    y.cli(&["SET", "only-in-y", "yes"]);
    y.cli(&["SAVE"]);
    let x_root = OwnedDir::new("redis");
    let x_dir = x_root.path().join("data");
    let roots = vec![y.root.path().to_path_buf(), x_root.path().to_path_buf()];
    let reader = keys.reader_config(KeySource::KeyService);
    let agent2 = Host::new(&garage, &pki, 0x22, roots, Servers::default(), reader).start();
    let c2 = Client::connect(&agent2, &pki).await;
    c2.register(&agent2, Y, Engine::Redis, "redis", &y_dir).await;
    c2.register(&agent2, X, Engine::Redis, "redis", &x_dir).await;
    let listed = c2.list_found(X).await;
    assert_eq!(listed.backups.len(), 1, "{listed:?}");
    assert_sealed_off_host(&listed.backups[0]);
    assert!(listed.backups[0].authenticated, "the KeyService opens it: {listed:?}");
    let y_before = snapshot(&y_dir);
    assert!(!y_before.is_empty(), "Y has data of its own");

    // X's backup planted under Y's prefix in swap-a, as is: its manifest names X.
    let tmp = tempfile::tempdir().expect("temp dir");
    for object in ["data", "manifest.json"] {
        let file = tmp.path().join(object);
        garage.download("swap-a", &format!("{X}/{backup}/{object}"), &file);
        garage.upload("swap-a", &format!("{Y}/{backup}/{object}"), &file);
    }
    let restore_y =
        |request: &str| restore_request(request, Y, &backup, "az1", &keys.request_key(KeySource::KeyService));
    let refused = c2.backups().restore_backup(restore_y("restore-y-as-is")).await.expect_err("X's backup as Y's");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("names another instance"), "{}", refused.message());
    // Renamed to Y: the shape passes, the gate does not (MAC and key are bound to X).
    rewrite_manifest(&garage, "swap-a", &format!("{Y}/{backup}/manifest.json"), "instance_id", Y.into());
    let listed = c2.list_found(Y).await;
    assert_eq!(listed.backups.len(), 1, "{listed:?}");
    assert!(!listed.backups[0].authenticated, "{listed:?}");
    match c2.backups().restore_backup(restore_y("restore-y-renamed")).await {
        Err(refused) => assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}"),
        Ok(op) => {
            let done = c2.finish(&agent2, &op.into_inner()).await;
            assert_eq!(state_of(&done), OperationState::Failed, "{done:?}");
        }
    }
    assert_eq!(snapshot(&y_dir), y_before, "nothing of Y was written");
    assert_eq!(y.cli(&["GET", "only-in-y"]), "yes");

    // X's own backup, its manifest rewritten on az2 (sizes that still fit: only the MAC tells) and
    // az3 (a chunk size that would exhaust memory).
    let manifest = format!("{X}/{backup}/manifest.json");
    let raw = c2.list_found(X).await.backups[0].size_bytes;
    rewrite_manifest(&garage, "swap-b", &manifest, "raw_bytes", serde_json::json!(raw + 1));
    rewrite_manifest(&garage, "swap-c", &manifest, "chunk_size", serde_json::json!(1u64 << 40));
    let listed = c2.list_found(X).await;
    let b = &listed.backups[0];
    assert!(b.authenticated, "az1 is untouched: {b:?}");
    assert_eq!(b.size_bytes, raw, "the authenticated manifest is the one shown");
    let copy = |az: &str| b.destinations.iter().find(|d| d.name == az).cloned().expect("listed");
    assert!(copy("az1").authenticated, "{b:?}");
    assert!(copy("az2").authentication_error.contains("MAC"), "{:?}", copy("az2"));
    assert!(copy("az3").state == "failed" && copy("az3").error.contains("chunk_size"), "{:?}", copy("az3"));

    let key = keys.request_key(KeySource::KeyService);
    let refused = c2.backups().restore_backup(restore_request("restore-x-az3", X, &backup, "az3", &key)).await;
    assert_eq!(refused.expect_err("az3 is refused").code(), tonic::Code::FailedPrecondition);
    let op = c2
        .backups()
        .restore_backup(restore_request("restore-x-az2", X, &backup, "az2", &key))
        .await
        .expect("az2's copy has a sane shape: the operation runs and refuses it")
        .into_inner();
    let done = c2.finish(&agent2, &op).await;
    assert_eq!(state_of(&done), OperationState::Failed, "{done:?}");
    let message = done.error.map(|e| e.message).unwrap_or_default();
    assert!(message.contains("manifest not authenticated") && message.contains("az2"), "{message}");
    assert!(snapshot(&x_dir).is_empty(), "nothing was restored from a refused copy");
    let op = c2
        .backups()
        .restore_backup(restore_request("restore-x-az1", X, &backup, "az1", &key))
        .await
        .unwrap_or_else(|s| panic!("RestoreBackup from az1: {s:?}\n{}", agent2.log()))
        .into_inner();
    c2.succeed(&agent2, &op).await;
    let restored = RedisServer::start_at(x_root, &x_dir);
    assert_eq!(redis_digest(&restored), expected);
}
