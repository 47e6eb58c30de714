//! Escrow in the header (simulated crypt): written at create, replaced at rotation, added or
//! renewed at open; a host that lost its keystore and KEK opens the volume with the operator's
//! recovery key and nothing else, and a wrong key or a foreign token changes nothing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::error::{ErrorCode, HasErrorCode};
use crate::ops::{OpState, OperationEngine, OpsSettings};
use crate::recovery_key::RecoveryRecipients;
use crate::volume::crypt::CryptBackend;
use crate::volume::host::HostOps;
use crate::volume::jobs::{self, VolumeAction};
use crate::volume::keystore::LocalKeystore;
use crate::volume::test_fixture::{Fixture, fixture, fixture_from, settings};
use crate::volume::{KeyError, KeyProvider, VolumeEscrow, VolumeSettings};

fn operator() -> (RecoveryIdentity, RecoveryRecipients) {
    let identity = RecoveryIdentity::generate();
    let recipients = RecoveryRecipients::parse(&[identity.recipient()]).unwrap();
    (identity, recipients)
}

fn escrowed_fixture(recipients: &RecoveryRecipients) -> Fixture {
    let mut s = settings(&["/dev/disk/by-id/", "/dev/vd"]);
    s.recovery_recipients = recipients.clone();
    fixture_from(s)
}

fn image(f: &Fixture, id: &str) -> PathBuf {
    f.dir.path().join(format!("volumes/{id}.img"))
}

fn token(f: &Fixture, id: &str) -> Option<EscrowToken> {
    f.crypt.read_token(&image(f, id), TOKEN_TYPE).unwrap().map(|json| EscrowToken::parse(id, &json).unwrap())
}

/// The same state folder, crypt and host after the keystore and the KEK were lost: a new, empty
/// keystore under a new KEK, and `recipients` configured.
fn after_keystore_loss(f: &Fixture, recipients: &RecoveryRecipients) -> (Volumes, Arc<LocalKeystore>) {
    let keystore_dir = f.dir.path().join("keystore");
    std::fs::remove_dir_all(&keystore_dir).unwrap();
    let keys = Arc::new(LocalKeystore::open(keystore_dir, &[77u8; 32]).unwrap());
    (volumes_with(f, recipients, keys.clone()), keys)
}

fn volumes_with(f: &Fixture, recipients: &RecoveryRecipients, keys: Arc<LocalKeystore>) -> Volumes {
    let mut s = settings(&["/dev/disk/by-id/", "/dev/vd"]);
    s.recovery_recipients = recipients.clone();
    Volumes::new(f.dir.path(), s, f.crypt.clone(), f.host.clone(), Arc::new(keys), f.registry.clone()).unwrap()
}

#[tokio::test]
async fn create_escrows_the_key_in_the_header_and_status_shows_it() {
    let (identity, recipients) = operator();
    let f = escrowed_fixture(&recipients);
    f.register("pg-1", None).await;
    f.volumes.create("pg-1", false).await.unwrap();
    let t = token(&f, "pg-1").expect("an escrow token in the header");
    assert_eq!((t.instance_id.as_str(), t.key_version), ("pg-1", 1));
    assert_eq!(t.recipients, recipients.ids());
    let key = f.keys.key("pg-1", 1, false, 256).await.unwrap();
    assert_eq!(t.open(&identity, "pg-1", 1).unwrap().as_bytes(), key.as_bytes(), "the escrow holds the live key");
    let status = f.volumes.get("pg-1").await.unwrap();
    assert_eq!(status.escrow, Some(VolumeEscrow { key_version: 1, recipients: recipients.ids() }));

    // Without recipients nothing is escrowed, and status says so.
    let plain = fixture();
    plain.register("pg-1", None).await;
    plain.volumes.create("pg-1", false).await.unwrap();
    assert!(token(&plain, "pg-1").is_none());
    assert_eq!(plain.volumes.get("pg-1").await.unwrap().escrow, None);
}

#[tokio::test]
async fn rotation_replaces_the_escrow_with_the_new_key() {
    let (identity, recipients) = operator();
    let f = escrowed_fixture(&recipients);
    f.register("pg-1", None).await;
    f.volumes.create("pg-1", false).await.unwrap();
    f.volumes.rotate_key("pg-1").await.unwrap();
    let t = token(&f, "pg-1").unwrap();
    assert_eq!(t.key_version, 2);
    let escrowed = t.open(&identity, "pg-1", 2).unwrap();
    assert_eq!(escrowed.as_bytes(), f.keys.key("pg-1", 2, false, 256).await.unwrap().as_bytes());
    assert!(f.crypt.verify(&image(&f, "pg-1"), escrowed.as_bytes()).is_ok(), "the escrowed key opens the keyslot");
    assert_eq!(f.volumes.get("pg-1").await.unwrap().escrow.unwrap().key_version, 2);
}

#[tokio::test]
async fn open_adds_the_escrow_to_an_older_volume_and_renews_it_for_new_recipients() {
    let f = fixture();
    f.register("pg-1", None).await;
    f.volumes.create("pg-1", false).await.unwrap();
    f.volumes.close("pg-1").await.unwrap();
    assert!(token(&f, "pg-1").is_none());

    let (identity, recipients) = operator();
    let volumes = volumes_with(&f, &recipients, f.keys.clone());
    assert_eq!(volumes.open("pg-1").await.unwrap(), VolumeOutcome::Opened);
    let t = token(&f, "pg-1").expect("the open escrowed the key");
    assert_eq!(t.recipients, recipients.ids());
    let key = f.keys.key("pg-1", 1, false, 256).await.unwrap();
    assert_eq!(t.open(&identity, "pg-1", 1).unwrap().as_bytes(), key.as_bytes());

    // The operator replaced the recipient: the next open (already open, here) re-seals to it.
    let (new_identity, new_recipients) = operator();
    let volumes = volumes_with(&f, &new_recipients, f.keys.clone());
    assert_eq!(volumes.open("pg-1").await.unwrap(), VolumeOutcome::AlreadyOpen);
    let t = token(&f, "pg-1").unwrap();
    assert_eq!(t.recipients, new_recipients.ids());
    assert!(t.open(&new_identity, "pg-1", 1).is_ok());
    assert!(t.open(&identity, "pg-1", 1).is_err(), "the replaced recipient no longer opens it");
}

#[tokio::test]
async fn after_losing_keystore_and_kek_only_the_recovery_key_opens_the_volume_and_it_is_stored_again() {
    let (identity, recipients) = operator();
    let f = escrowed_fixture(&recipients);
    f.register("pg-1", None).await;
    f.volumes.create("pg-1", false).await.unwrap();
    f.volumes.close("pg-1").await.unwrap();
    let (volumes, keys) = after_keystore_loss(&f, &recipients);

    let e = volumes.open("pg-1").await.unwrap_err();
    assert!(matches!(e, VolumeError::Key(KeyError::Missing { .. })), "{e}");
    let reported = volumes.get("pg-1").await.unwrap().last_error;

    let (stranger, _) = operator();
    let e = volumes.open_with_recovery_key("pg-1", stranger).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::PermissionDenied, "{e}");
    let status = volumes.get("pg-1").await.unwrap();
    assert!(!status.active && !status.mounted, "a wrong recovery key opened the volume");
    assert_eq!(keys.versions("pg-1").await.unwrap(), Vec::<u32>::new(), "a wrong recovery key stored a key");
    assert_eq!(status.last_error, reported, "a wrong recovery key changed the reported state");

    assert_eq!(volumes.open_with_recovery_key("pg-1", identity).await.unwrap(), VolumeOutcome::Opened);
    let status = volumes.get("pg-1").await.unwrap();
    assert!(status.active && status.mounted && status.last_error.is_none(), "{status:?}");
    assert_eq!(keys.versions("pg-1").await.unwrap(), vec![1], "the key is stored under the new KEK");
    // The next start opens it without the recovery key.
    volumes.close("pg-1").await.unwrap();
    assert_eq!(volumes.open("pg-1").await.unwrap(), VolumeOutcome::Opened);
}

#[tokio::test]
async fn a_token_copied_from_another_volume_or_missing_is_refused_and_nothing_is_stored() {
    let (identity, recipients) = operator();
    let f = escrowed_fixture(&recipients);
    for id in ["pg-1", "pg-2"] {
        f.register(id, None).await;
        f.volumes.create(id, false).await.unwrap();
        f.volumes.close(id).await.unwrap();
    }
    let theirs = f.crypt.read_token(&image(&f, "pg-1"), TOKEN_TYPE).unwrap().unwrap();
    f.crypt.plant_token(&image(&f, "pg-2"), TOKEN_TYPE, &theirs);
    let (volumes, keys) = after_keystore_loss(&f, &recipients);
    let e = volumes.open_with_recovery_key("pg-2", RecoveryIdentity::parse(&identity_text(&identity)).unwrap()).await;
    let e = e.unwrap_err();
    assert!(matches!(e, VolumeError::Escrow(EscrowError::OtherInstance { .. })), "{e}");
    assert_eq!(e.code(), ErrorCode::FailedPrecondition);
    assert!(keys.versions("pg-2").await.unwrap().is_empty());
    assert!(f.crypt.active("dbagent-pg-2").unwrap().is_none(), "no mapping for pg-2");
    // pg-1's own token still opens pg-1.
    assert_eq!(volumes.open_with_recovery_key("pg-1", identity).await.unwrap(), VolumeOutcome::Opened);

    // A volume made without recipients has nothing to open.
    let plain = fixture();
    plain.register("pg-3", None).await;
    plain.volumes.create("pg-3", false).await.unwrap();
    let e = plain.volumes.open_with_recovery_key("pg-3", RecoveryIdentity::generate()).await.unwrap_err();
    assert!(matches!(e, VolumeError::Escrow(EscrowError::Missing { .. })), "{e}");
    assert_eq!(e.code(), ErrorCode::FailedPrecondition);
}

fn identity_text(identity: &RecoveryIdentity) -> Vec<u8> {
    identity.to_file_text().as_bytes().to_vec()
}

#[test]
fn the_remote_provider_escrows_nothing() {
    let (_, recipients) = operator();
    let mut config = crate::config::Config::default();
    config.keys.recovery_recipients = recipients.ids();
    assert!(!VolumeSettings::from_config(&config).recovery_recipients.is_empty(), "local provider escrows");
    config.keys.provider = crate::config::KeyProviderKind::Remote;
    assert!(VolumeSettings::from_config(&config).recovery_recipients.is_empty());
}

/// Through the operations engine as the API runs it: the record says only that a recovery key
/// was given, no file or log line holds it, and a restart mid-operation says to submit again.
#[tokio::test]
async fn the_recovery_key_is_never_stored_and_an_interrupted_open_says_submit_again() {
    use std::io::Write;
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (identity, recipients) = operator();
    let secret = identity_text(&identity);
    let secret_line = String::from_utf8(secret.clone()).unwrap().lines().last().unwrap().to_owned();
    let f = escrowed_fixture(&recipients);
    f.register("pg-1", None).await;
    f.volumes.create("pg-1", false).await.unwrap();
    f.volumes.close("pg-1").await.unwrap();
    let (volumes, _) = after_keystore_loss(&f, &recipients);

    let ops_dir = f.dir.path().join("operations");
    let ops_settings = || OpsSettings { max_concurrent: 2, retention: Duration::from_secs(3600), max_finished: 100 };
    let (engine, _) = OperationEngine::open(&ops_dir, ops_settings(), Default::default(), Default::default()).unwrap();
    let action = VolumeAction::OpenWithRecoveryKey(RecoveryIdentity::parse(&secret).unwrap());
    let new = jobs::new_operation("rk-1".into(), "pg-1", &action);
    let (record, _) = engine.submit(new, jobs::job(volumes.clone(), "pg-1".into(), action)).await.unwrap();
    assert_eq!(record.params, serde_json::json!({ "recovery_key": crate::ops::IN_MEMORY_ONLY }));
    let mut rx = engine.watch(&record.id).unwrap();
    let done = loop {
        let r = rx.borrow_and_update().clone();
        if r.state.is_finished() {
            break r;
        }
        tokio::time::timeout(Duration::from_secs(10), rx.changed()).await.unwrap().unwrap();
    };
    assert_eq!(done.state, OpState::Succeeded, "{:?}", done.error);
    assert!(volumes.get("pg-1").await.unwrap().mounted);

    // A job that never ends stands for an open cut off by a restart.
    let new =
        jobs::new_operation("rk-2".into(), "pg-1", &VolumeAction::OpenWithRecoveryKey(RecoveryIdentity::generate()));
    let hang: crate::ops::engine::JobFn = Box::new(|_| Box::pin(std::future::pending()));
    let (hung, _) = engine.submit(new, hang).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(engine);
    let (_engine, interrupted) =
        OperationEngine::open(&ops_dir, ops_settings(), Default::default(), Default::default()).unwrap();
    let again = interrupted.iter().find(|r| r.id == hung.id).expect("the open was interrupted");
    let message = &again.error.as_ref().unwrap().message;
    assert!(message.contains("the recovery key is not kept across restarts; submit again"), "{message}");

    let mut all = Vec::new();
    files(f.dir.path(), &mut all);
    assert!(all.iter().any(|p| p.starts_with(&ops_dir)), "the journal was written");
    for path in &all {
        let text = String::from_utf8_lossy(&std::fs::read(path).unwrap()).to_uppercase();
        assert!(!text.contains(&secret_line.to_uppercase()), "the recovery key is in {}", path.display());
    }
    let log = String::from_utf8_lossy(&captured.0.lock().unwrap()).to_uppercase();
    assert!(log.contains("RECOVERED FROM ITS ESCROW"), "the recovery is logged");
    assert!(!log.contains("AGE-SECRET-KEY"), "the recovery key is in the log");
}

fn files(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() { files(&p, out) } else { out.push(p) }
    }
}

#[tokio::test]
async fn a_loop_attached_volume_reads_its_escrow_through_the_loop_device() {
    let (identity, recipients) = operator();
    let f = escrowed_fixture(&recipients);
    f.register("pg-1", None).await;
    f.volumes.create("pg-1", false).await.unwrap();
    // Open: the managed file's loop device is attached; the escrow is read through it.
    let loopdev = f.host.find_loop(&image(&f, "pg-1")).unwrap().expect("attached while open");
    let json = f.crypt.read_token(&loopdev, TOKEN_TYPE).unwrap().unwrap();
    assert!(EscrowToken::parse("pg-1", &json).unwrap().open(&identity, "pg-1", 1).is_ok());
}
