use super::*;
use std::process::Command;

fn pair() -> (RecoveryIdentity, RecoveryRecipients) {
    let id = RecoveryIdentity::generate();
    let recipients = RecoveryRecipients::parse(&[id.recipient()]).unwrap();
    (id, recipients)
}

#[test]
fn a_sealed_key_opens_with_the_identity_for_its_own_context_only() {
    let (id, recipients) = pair();
    let sealed = recipients.seal("backup/pg-1/b1", b"0123456789abcdef0123456789abcdef").unwrap();
    let key = open(&id, "backup/pg-1/b1", "backup b1", &sealed).unwrap();
    assert_eq!(&key[..], b"0123456789abcdef0123456789abcdef");
    // The same sealed key presented for another backup or instance is refused by its context.
    for other in ["backup/pg-1/b2", "backup/pg-2/b1", "backup/pg-1/b1\0x", "volume/pg-1/1"] {
        let e = open(&id, other, "backup", &sealed).unwrap_err();
        assert!(matches!(e, RecoveryKeyError::WrongContext { .. }), "{other:?}: {e}");
    }
}

#[test]
fn another_identity_or_an_altered_seal_does_not_open() {
    let (_, recipients) = pair();
    let sealed = recipients.seal("c", b"secret-key-bytes").unwrap();
    let stranger = RecoveryIdentity::generate();
    assert!(matches!(open(&stranger, "c", "x", &sealed).unwrap_err(), RecoveryKeyError::WrongKey { .. }));
    let (id2, recipients2) = pair();
    let mut altered = recipients2.seal("c", b"secret-key-bytes").unwrap();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    assert!(matches!(open(&id2, "c", "x", &altered).unwrap_err(), RecoveryKeyError::WrongKey { .. }));
    let huge = vec![0u8; MAX_SEALED_BYTES + 1];
    assert!(matches!(open(&id2, "c", "x", &huge).unwrap_err(), RecoveryKeyError::TooLarge(_)));
}

#[test]
fn every_configured_recipient_can_open_alone() {
    let a = RecoveryIdentity::generate();
    let b = RecoveryIdentity::generate();
    let recipients = RecoveryRecipients::parse(&[a.recipient(), b.recipient()]).unwrap();
    let sealed = recipients.seal("ctx", b"k").unwrap();
    assert_eq!(&open(&a, "ctx", "x", &sealed).unwrap()[..], b"k");
    assert_eq!(&open(&b, "ctx", "x", &sealed).unwrap()[..], b"k");
}

#[test]
fn recipients_and_identities_are_validated_without_echoing_secrets() {
    assert!(RecoveryRecipients::parse(&[]).unwrap().is_empty());
    assert!(matches!(RecoveryRecipients::parse(&[]).unwrap().seal("c", b"k"), Err(RecoveryKeyError::NoRecipients)));
    let e = RecoveryRecipients::parse(&["age1nope".into()]).unwrap_err();
    assert!(matches!(e, RecoveryKeyError::BadRecipient { index: 0, .. }), "{e}");
    let id = RecoveryIdentity::generate();
    let e = RecoveryRecipients::parse(&[id.recipient(), id.recipient()]).unwrap_err();
    assert!(matches!(e, RecoveryKeyError::DuplicateRecipient(_)), "{e}");
    let many: Vec<String> = (0..=MAX_RECIPIENTS).map(|_| RecoveryIdentity::generate().recipient()).collect();
    assert!(matches!(RecoveryRecipients::parse(&many).unwrap_err(), RecoveryKeyError::TooManyRecipients(_)));

    let text = id.to_file_text();
    let parsed = RecoveryIdentity::parse(text.as_bytes()).unwrap();
    assert_eq!(parsed.recipient(), id.recipient());
    // Two secret lines, garbage, or a public key where the secret belongs are refused, and the
    // error says nothing of the text it was given.
    let secret_line = text.lines().find(|l| l.starts_with("AGE-SECRET-KEY-1")).unwrap().to_owned();
    for bad in [format!("{secret_line}\n{secret_line}\n"), "hello".into(), id.recipient(), String::new()] {
        let e = RecoveryIdentity::parse(bad.as_bytes()).unwrap_err();
        assert!(matches!(e, RecoveryKeyError::BadIdentity));
        assert!(!e.to_string().contains(&secret_line[16..]), "{e}");
    }
    assert!(!format!("{parsed:?}").contains(&secret_line[16..]));
}

/// The sealed form is a standard age file: the operator's own `age` tool opens it with the same
/// identity file, and the agent opens what `age` sealed to the recipient (Debian package `age`).
#[test]
fn sealed_keys_interoperate_with_the_age_tool() {
    let dir = tempfile::tempdir().unwrap();
    let (id, recipients) = pair();
    let id_file = dir.path().join("recovery.key");
    std::fs::write(&id_file, id.to_file_text().as_bytes()).unwrap();
    let sealed_file = dir.path().join("sealed.age");
    std::fs::write(&sealed_file, recipients.seal("ctx", b"KEYBYTES").unwrap()).unwrap();
    let out = Command::new("age")
        .arg("--decrypt")
        .arg("-i")
        .arg(&id_file)
        .arg(&sealed_file)
        .output()
        .expect("the `age` tool (Debian package `age`, installed by integration/apt-deps.sh) must be installed");
    assert!(out.status.success(), "age --decrypt: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"dbagent-recovery-v1\0ctx\0KEYBYTES");

    let plain = dir.path().join("plain");
    std::fs::write(&plain, b"dbagent-recovery-v1\0ctx\0FROMAGE").unwrap();
    let by_age = dir.path().join("by-age.age");
    let st =
        Command::new("age").args(["--encrypt", "-r", &id.recipient(), "-o"]).arg(&by_age).arg(&plain).status().unwrap();
    assert!(st.success());
    assert_eq!(&open(&id, "ctx", "x", &std::fs::read(&by_age).unwrap()).unwrap()[..], b"FROMAGE");
}
