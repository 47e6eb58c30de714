use std::time::{Duration, SystemTime};

use std::sync::Arc;

use super::*;
use crate::backup::keywrap::{KEK_WRAPPER, KekWrapper, KeyWrapper};
use crate::backup::manifest::{BackupKind, BackupMethod, KeyWrap};
use crate::instances::Engine;
use crate::recovery_key::{RecoveryIdentity, RecoveryRecipients};

const ID: &str = "b0000000000000000000a";
const OTHER_ID: &str = "b0000000000000000000b";

fn kek(byte: u8) -> Arc<KekWrapper> {
    Arc::new(KekWrapper::from_kek(&[byte; 32]).unwrap())
}

fn host() -> BackupKeys {
    BackupKeys::host_only(kek(7))
}

/// Runs a future to completion: the KEK and age wraps need no I/O.
fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
}

fn auth(keys: &BackupKeys, m: Manifest) -> Result<AuthenticManifest, BackupError> {
    run(authenticate(keys, m, "i1", ID, "az1"))
}

/// A signed manifest of four 64 KiB chunks (the last one short), as a backup job writes it.
fn signed(keys: &BackupKeys) -> Manifest {
    let data_key = [5u8; 32];
    let mut m = Manifest::for_tests("i1", ID);
    m.started = SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_123);
    m.finished = m.started + Duration::from_secs(60);
    m.expires = Some(m.started + Duration::from_secs(7 * 86_400));
    m.kind = BackupKind::Scheduled;
    m.chunk_size = 65536;
    m.chunk_count = 4;
    m.stored_bytes = 3 * (65536 + 16) + 1000;
    m.raw_bytes = 1 << 20;
    m.sha256 = "ab".repeat(32);
    m.key_wraps = run(keys.wrap_all("i1", ID, &data_key)).unwrap();
    sign(&mut m, &data_key);
    m
}

fn check(m: &Manifest) -> Result<AuthenticManifest, BackupError> {
    auth(&host(), m.clone())
}

/// Asserts a refusal as "manifest not authenticated", naming the backup, the destination and `why`.
fn assert_not_authenticated(what: &str, e: BackupError, why: &str) {
    let msg = e.to_string();
    assert!(matches!(e, BackupError::ManifestNotAuthenticated { .. }), "{what}: {e:?}");
    assert!(msg.contains("manifest not authenticated") && msg.contains(ID) && msg.contains("az1"), "{what}: {msg}");
    assert!(msg.contains(why), "{what}: {msg}");
    assert_eq!(crate::error::HasErrorCode::code(&e), crate::error::ErrorCode::FailedPrecondition);
}

#[test]
fn the_untouched_manifest_is_accepted_and_survives_a_json_round_trip() {
    let m = signed(&host());
    let a = check(&m).unwrap();
    assert_eq!(a.key.as_slice(), [5u8; 32]);
    assert_eq!(a.data_object(), "i1/b0000000000000000000a/data");
    let stored: Manifest = serde_json::from_slice(&serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    check(&stored).unwrap();
    // The destination lists are outside the MAC: repair rewrites them without the key.
    let repaired = Manifest { failed_destinations: vec!["az3".into()], destinations: vec!["x".into()], ..m };
    check(&repaired).unwrap();
}

#[test]
fn every_covered_field_changed_in_storage_fails_the_mac() {
    let m = signed(&host());
    check(&m).unwrap();
    type Tampering = (&'static str, fn(&mut Manifest));
    let tamperings: Vec<Tampering> = vec![
        ("engine", |m| m.engine = Engine::Postgresql),
        ("method", |m| m.method = BackupMethod::Logical),
        ("kind", |m| m.kind = BackupKind::Manual),
        ("expires", |m| m.expires = Some(SystemTime::UNIX_EPOCH)),
        ("started", |m| m.started += Duration::from_secs(1)),
        ("raw size", |m| m.raw_bytes += 1),
        ("stored size", |m| m.stored_bytes += 1),
        ("sha256", |m| m.sha256 = "cd".repeat(32)),
        ("zstd level", |m| m.zstd_level = 19),
        ("tool", |m| m.tool = "pg_dump".into()),
        ("mac", |m| m.mac = "00".repeat(32)),
        ("mac not hex", |m| m.mac = "zz".into()),
    ];
    for (what, tamper) in tamperings {
        let mut t = m.clone();
        tamper(&mut t);
        let why = if what == "mac not hex" { "not hex" } else { "MAC does not match" };
        assert_not_authenticated(what, check(&t).unwrap_err(), why);
    }
}

#[test]
fn a_manifest_naming_another_instance_or_backup_is_refused_as_foreign() {
    let m = signed(&host());
    for (what, t) in [
        ("instance", Manifest { instance_id: "i2".into(), ..m.clone() }),
        ("backup", Manifest { backup_id: OTHER_ID.into(), ..m.clone() }),
    ] {
        let e = check(&t).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, BackupError::ManifestForeign { .. }), "{what}: {e:?}");
        assert!(msg.contains("names another instance") && msg.contains("az1") && msg.contains(ID), "{msg}");
    }
    // Asked for under the instance it names, the same manifest is accepted.
    check(&m).unwrap();
}

#[test]
fn a_whole_manifest_copied_under_another_instance_does_not_open_even_when_its_ids_are_rewritten() {
    // Instance i2's backup with the same id, whose manifest the attacker rewrites to name i1:
    // the wrapped key is bound to i2, so it does not open under i1.
    let keys = host();
    let mut m = signed(&keys);
    let data_key = [6u8; 32];
    m.key_wraps = run(keys.wrap_all("i2", ID, &data_key)).unwrap();
    sign(&mut m, &data_key);
    let e = check(&m).unwrap_err();
    assert!(matches!(e, BackupError::KeyUnwrap { .. }), "{e:?}");
}

#[test]
fn sizes_and_counts_are_bounded_before_any_key_is_touched() {
    let m = signed(&host());
    // A host with another KEK would refuse at the key (WrongKek); these are refused before it.
    let other = BackupKeys::host_only(kek(8));
    let huge = MAX_CHUNK_SIZE + 1;
    let cases: Vec<(&str, Manifest, &str)> = vec![
        ("huge chunk", Manifest { chunk_size: huge, ..m.clone() }, "chunk_size"),
        ("usize::MAX chunk", Manifest { chunk_size: usize::MAX - 8, ..m.clone() }, "chunk_size"),
        ("zero chunk", Manifest { chunk_size: 0, ..m.clone() }, "chunk_size"),
        ("smaller chunk", Manifest { chunk_size: 4096, ..m.clone() }, "cannot be 4 chunks"),
        ("zero chunks", Manifest { chunk_count: 0, ..m.clone() }, "chunk_count"),
        ("more chunks", Manifest { chunk_count: 5, ..m.clone() }, "cannot be 5 chunks"),
        ("fewer chunks", Manifest { chunk_count: 3, ..m.clone() }, "cannot be 3 chunks"),
        ("too many chunks", Manifest { chunk_count: u64::MAX, ..m.clone() }, "chunk_count"),
        ("stored size", Manifest { stored_bytes: 10, ..m.clone() }, "cannot be 4 chunks"),
        ("mac removed", Manifest { mac: String::new(), ..m.clone() }, "no MAC"),
        ("version 1", Manifest { format: 1, ..m.clone() }, "format 1"),
        ("no wraps", Manifest { key_wraps: Vec::new(), ..m.clone() }, "needs 1..=8 key_wraps"),
        ("too many wraps", Manifest { key_wraps: vec![m.key_wraps[0].clone(); 9], ..m.clone() }, "needs 1..=8"),
        (
            "huge wrap",
            Manifest {
                key_wraps: vec![KeyWrap { wrapped: "00".repeat(20_000), ..m.key_wraps[0].clone() }],
                ..m.clone()
            },
            "larger than any wrapped key",
        ),
        ("both forms", Manifest { wrapped_key: "00".into(), ..m.clone() }, "no single wrapped_key"),
        ("format 2 with a list", Manifest { format: 2, ..m.clone() }, "not a list of key_wraps"),
    ];
    for (what, t, why) in cases {
        assert_not_authenticated(what, auth(&other, t.clone()).unwrap_err(), why);
        assert_not_authenticated(what, check(&t).unwrap_err(), why);
    }
    let e = auth(&other, m).unwrap_err();
    assert!(matches!(e, BackupError::WrongKek { .. }), "the untouched one gets as far as the key: {e:?}");
}

#[test]
fn a_version_1_manifest_as_earlier_agents_wrote_it_is_refused() {
    let mut m = signed(&host());
    m.format = 1;
    m.mac = String::new();
    m.key_wraps = Vec::new();
    m.key_wrapper = "kek-aes-256-gcm-v1".into();
    let text = serde_json::to_string(&m).unwrap().replace(",\"mac\":\"\"", "");
    assert!(!text.contains("\"mac\""));
    let old: Manifest = serde_json::from_str(&text).unwrap();
    assert_not_authenticated("version 1", check(&old).unwrap_err(), "format 1");
}

/// A format 2 manifest as the previous build wrote it: one KEK wrap in three fields.
fn format_2(keys: &KekWrapper, data_key: &[u8]) -> Manifest {
    let mut m = signed(&host());
    m.format = 2;
    m.key_wraps = Vec::new();
    m.wrapped_key = crate::hex::encode(&keys.wrap("i1", ID, data_key).unwrap());
    m.key_wrapper = KEK_WRAPPER.into();
    m.key_id = keys.key_id();
    sign(&mut m, data_key);
    m
}

#[test]
fn a_format_2_manifest_of_the_previous_build_is_still_read_and_still_authenticated() {
    let m = format_2(&kek(7), &[4u8; 32]);
    let text = serde_json::to_string(&m).unwrap();
    assert!(!text.contains("key_wraps") && text.contains("\"wrapped_key\""), "{text}");
    let a = check(&serde_json::from_str(&text).unwrap()).unwrap();
    assert_eq!(a.key.as_slice(), [4u8; 32]);
    // Its three key fields are covered like the rest.
    for (what, t) in [
        ("key id", Manifest { key_id: kek(8).key_id(), ..m.clone() }),
        ("raw size", Manifest { raw_bytes: 1, ..m.clone() }),
    ] {
        assert!(check(&t).is_err(), "{what}");
    }
    let e = check(&Manifest { key_id: kek(8).key_id(), ..m }).unwrap_err();
    assert!(matches!(e, BackupError::WrongKek { .. }), "{e:?}");
}

/// Host KEK plus the recovery recipient of `identity`.
fn with_recovery(identity: &RecoveryIdentity) -> BackupKeys {
    host().with_recipients(RecoveryRecipients::parse(&[identity.recipient()]).unwrap())
}

#[test]
fn the_mac_covers_the_list_of_wraps_removing_adding_or_changing_one_is_refused() {
    let identity = RecoveryIdentity::generate();
    let keys = with_recovery(&identity);
    let m = signed(&keys);
    assert_eq!(m.format, 3);
    let schemes: Vec<_> = m.key_wraps.iter().map(|w| w.wrapper.as_str()).collect();
    assert_eq!(schemes, [KEK_WRAPPER, "age-x25519-v1"]);
    auth(&keys, m.clone()).unwrap();

    let mut removed = m.clone();
    removed.key_wraps.pop();
    let mut added = m.clone();
    added.key_wraps.push(KeyWrap { wrapper: "age-x25519-v1".into(), key_id: "age1x".into(), wrapped: "00".into() });
    let mut changed_id = m.clone();
    changed_id.key_wraps[1].key_id = RecoveryIdentity::generate().recipient();
    let mut changed_bytes = m.clone();
    changed_bytes.key_wraps[1].wrapped.replace_range(0..2, "ff");
    let mut reordered = m.clone();
    reordered.key_wraps.reverse();
    for (what, t) in [
        ("removed", removed),
        ("added", added),
        ("changed key id", changed_id),
        ("changed bytes", changed_bytes),
        ("reordered", reordered),
    ] {
        assert_not_authenticated(what, auth(&keys, t).unwrap_err(), "MAC does not match");
    }
}

#[test]
fn a_new_host_opens_the_backup_with_the_recovery_key_only() {
    let identity = Arc::new(RecoveryIdentity::generate());
    let m = signed(&with_recovery(&identity));
    // New host, new KEK, no recovery key: the refusal names both wraps and why each failed.
    let new_host = BackupKeys::host_only(kek(9));
    let e = auth(&new_host, m.clone()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, BackupError::NoKeyOpens { denied: false, .. }), "{e:?}");
    assert!(msg.contains(KEK_WRAPPER) && msg.contains(&m.key_wraps[0].key_id), "{msg}");
    assert!(msg.contains("age-x25519-v1") && msg.contains(&identity.recipient()), "{msg}");
    assert!(msg.contains("no recovery key was given"), "{msg}");
    // With another age key: refused, naming the key given.
    let stranger = RecoveryIdentity::generate();
    let e = auth(&new_host.with_identity(Some(Arc::new(stranger))), m.clone()).unwrap_err();
    assert!(e.to_string().contains("does not open") && e.to_string().contains(&identity.recipient()), "{e}");
    assert_eq!(crate::error::HasErrorCode::code(&e), crate::error::ErrorCode::PermissionDenied, "{e}");
    // With the recovery key: opened, MAC checked.
    let a = auth(&new_host.with_identity(Some(identity)), m).unwrap();
    assert_eq!(a.key.as_slice(), [5u8; 32]);
}

/// The format 2 MAC as the previous build computed it, pinned from an independent implementation
/// of its documented encoding (HKDF-SHA256 and HMAC-SHA256 over the v2 canonical bytes, computed
/// with Python's hmac/hashlib): a change to the v2 encoding would make every earlier backup
/// unrestorable, so it fails here first.
#[test]
fn the_format_2_encoding_is_byte_for_byte_the_previous_builds() {
    let mut m = Manifest::for_tests("i1", ID);
    m.format = 2;
    m.wrapped_key = "aabb".into();
    m.key_wrapper = KEK_WRAPPER.into();
    m.key_id = "0011223344556677".into();
    sign(&mut m, &[5u8; 32]);
    assert_eq!(m.mac, "c55fbf2268030067f7bee508c1d5f512066d5f64b3e6d108d24d5eb75ef20e86");
}
