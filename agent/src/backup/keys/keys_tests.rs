use super::*;
use crate::backup::keywrap::KekWrapper;
use crate::error::{ErrorCode, HasErrorCode};

const KEY: [u8; 32] = [3u8; 32];

fn kek() -> Arc<dyn KeyWrapper> {
    Arc::new(KekWrapper::from_kek(&[7u8; 32]).unwrap())
}

fn recipients(ids: &[&RecoveryIdentity]) -> RecoveryRecipients {
    RecoveryRecipients::parse(&ids.iter().map(|i| i.recipient()).collect::<Vec<_>>()).unwrap()
}

#[test]
fn a_recovery_wrap_opens_for_its_instance_and_backup_with_any_recipient_and_nowhere_else() {
    let (a, b) = (RecoveryIdentity::generate(), RecoveryIdentity::generate());
    let wrap = recovery::wrap(&recipients(&[&a, &b]), "i1", "b1", &KEY).unwrap();
    assert_eq!(wrap.wrapper, RECOVERY_WRAPPER);
    assert_eq!(wrap.key_id, format!("{},{}", a.recipient(), b.recipient()), "the key id lists the recipients");
    for id in [&a, &b] {
        assert_eq!(recovery::unwrap(Some(id), "i1", "b1", &wrap).unwrap().as_slice(), KEY);
    }
    // Copied into another backup or another instance, the age payload's context refuses it.
    for (instance, backup) in [("i1", "b2"), ("i2", "b1")] {
        let e = recovery::unwrap(Some(&a), instance, backup, &wrap).unwrap_err();
        assert!(
            matches!(
                &e,
                BackupError::RecoveryKey { source: crate::recovery_key::RecoveryKeyError::WrongContext { .. }, .. }
            ),
            "{instance}/{backup}: {e:?}"
        );
    }
    // Without an identity, the refusal says which recipients to bring.
    let e = recovery::unwrap(None, "i1", "b1", &wrap).unwrap_err();
    assert!(e.to_string().contains(&a.recipient()) && e.to_string().contains("no recovery key was given"), "{e}");
    assert_eq!(e.code(), ErrorCode::FailedPrecondition);
    // A stranger's identity is refused, and named.
    let stranger = RecoveryIdentity::generate();
    let e = recovery::unwrap(Some(&stranger), "i1", "b1", &wrap).unwrap_err();
    assert!(e.to_string().contains(&stranger.recipient()), "{e}");
    assert_eq!(e.code(), ErrorCode::PermissionDenied);
}

fn manifest_with(wraps: Vec<KeyWrap>, instance: &str, backup: &str) -> Manifest {
    let mut m = Manifest::for_tests(instance, backup);
    m.key_wraps = wraps;
    m
}

#[tokio::test]
async fn wrap_all_writes_the_kek_wrap_first_and_the_recovery_wrap_when_configured() {
    let host_only = BackupKeys::host_only(kek());
    let wraps = host_only.wrap_all("i1", "b1", &KEY).await.unwrap();
    assert_eq!(wraps.iter().map(|w| w.wrapper.as_str()).collect::<Vec<_>>(), [KEK_WRAPPER]);
    let identity = RecoveryIdentity::generate();
    let keys = host_only.clone().with_recipients(recipients(&[&identity]));
    let wraps = keys.wrap_all("i1", "b1", &KEY).await.unwrap();
    assert_eq!(wraps.iter().map(|w| w.wrapper.as_str()).collect::<Vec<_>>(), [KEK_WRAPPER, RECOVERY_WRAPPER]);
    // The host opens it with its KEK, no recovery key needed.
    let m = manifest_with(wraps.clone(), "i1", "b1");
    assert_eq!(keys.unwrap(&m).await.unwrap().as_slice(), KEY);
    // Another host opens it only with the recovery key.
    let other = BackupKeys::host_only(Arc::new(KekWrapper::from_kek(&[8u8; 32]).unwrap()));
    assert!(matches!(other.unwrap(&m).await, Err(BackupError::NoKeyOpens { .. })));
    let with_key = other.with_identity(Some(Arc::new(identity)));
    assert_eq!(with_key.unwrap(&m).await.unwrap().as_slice(), KEY);
    // Both wraps copied into another backup's manifest: neither opens, each says why.
    let copied = manifest_with(wraps, "i1", "b2");
    let e = with_key.unwrap(&copied).await.unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(KEK_WRAPPER) && msg.contains(RECOVERY_WRAPPER) && msg.contains("another"), "{msg}");
}

#[tokio::test]
async fn a_keyservice_wrap_without_a_keyservice_and_unknown_wrappers_are_named_in_the_refusal() {
    let keys = BackupKeys::host_only(kek());
    let mut wraps = keys.wrap_all("i1", "b1", &KEY).await.unwrap();
    wraps[0].key_id = "0000000000000000".into();
    wraps.push(KeyWrap { wrapper: KEYSERVICE_WRAPPER.into(), key_id: "ks-1".into(), wrapped: "00".into() });
    wraps.push(KeyWrap { wrapper: "rot13".into(), key_id: "x".into(), wrapped: "00".into() });
    let e = keys.unwrap(&manifest_with(wraps, "i1", "b1")).await.unwrap_err();
    let msg = e.to_string();
    for part in
        ["kek-aes-256-gcm-v2 key 0000000000000000", "keyservice-v1 key ks-1", "no KeyService configured", "rot13"]
    {
        assert!(msg.contains(part), "{part:?} in {msg}");
    }
    assert_eq!(e.code(), ErrorCode::FailedPrecondition);
}

fn production_config(dir: &std::path::Path) -> Config {
    use std::os::unix::fs::PermissionsExt;
    let mut config = Config::default();
    config.keys.kek_file = dir.join("kek");
    std::fs::write(&config.keys.kek_file, [1u8; 32]).unwrap();
    std::fs::set_permissions(&config.keys.kek_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    config
}

#[test]
fn production_refuses_host_only_keys_unless_dev_a_recovery_recipient_or_the_explicit_flag() {
    let dir = tempfile::tempdir().unwrap();
    let config = production_config(dir.path());
    let e = BackupKeys::from_config(&config, false).unwrap().check_can_wrap().unwrap_err();
    assert!(matches!(e, BackupError::HostOnlyKeys), "{e:?}");
    assert_eq!(e.code(), ErrorCode::FailedPrecondition);
    let msg = e.to_string();
    for key in [
        "keys.recovery_recipients",
        "keys.provider = \"remote\"",
        "backup.allow_host_only_keys = true",
        "die with this host's KEK",
    ] {
        assert!(msg.contains(key), "{key:?} in {msg}");
    }
    // --dev: allowed.
    BackupKeys::from_config(&config, true).unwrap().check_can_wrap().unwrap();
    // The flag, in so many words.
    let mut flagged = config.clone();
    flagged.backup.allow_host_only_keys = true;
    BackupKeys::from_config(&flagged, false).unwrap().check_can_wrap().unwrap();
    // A recovery recipient: an off-host key.
    let mut with_recipient = config;
    with_recipient.keys.recovery_recipients = vec![RecoveryIdentity::generate().recipient()];
    BackupKeys::from_config(&with_recipient, false).unwrap().check_can_wrap().unwrap();
}

#[test]
fn without_a_kek_a_request_carrying_a_recovery_key_may_still_unwrap() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.keys.kek_file = dir.path().join("missing");
    let keys = BackupKeys::from_config(&config, false).unwrap();
    assert!(matches!(keys.check_can_unwrap(), Err(BackupError::KekUnavailable { .. })));
    keys.with_identity(Some(Arc::new(RecoveryIdentity::generate()))).check_can_unwrap().unwrap();
}
