//! The real libcryptsetup on plain files (no device-mapper needed): format, keyslot verification,
//! rotation, header backup and restore. Activation needs dm-crypt and is tested in the VM.

use super::*;

fn cheap() -> PbkdfParams {
    PbkdfParams { kind: PbkdfKind::Pbkdf2, time_ms: 100, iterations: 1000, memory_kib: 32, parallel: 1 }
}

fn params(key_bits: u32, pbkdf: PbkdfParams) -> FormatParams {
    FormatParams { key_bits, sector_size: 0, pbkdf, label: "dbagent-test".into() }
}

fn image(dir: &Path, name: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().set_len(32 << 20).unwrap();
    p
}

/// Restores a header backup as an operator would (`cryptsetup luksHeaderRestore`); the agent itself
/// never restores headers, so this is not part of [`CryptBackend`].
fn restore_header(device: &Path, file: &Path) {
    let mut cd = CryptInit::init(device).unwrap();
    cd.backup_handle().header_restore(Some(EncryptionFormat::Luks2), file).unwrap();
}

const KEY_A: &[u8] = &[0x5a; 32];
const KEY_B: &[u8] = &[0xc3; 32];

#[test]
fn format_verify_rotate_and_restore_on_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "v.img");
    let c = LibCryptsetup;
    assert!(!c.is_luks(&img).unwrap());
    let slot = c.format(&img, &params(256, cheap()), KEY_A).unwrap();
    assert!(c.is_luks(&img).unwrap());
    let info = c.header_info(&img).unwrap();
    assert_eq!(info.cipher, "aes-xts-plain64");
    assert_eq!(info.key_bits, 256);
    assert_eq!(active_keyslots(&mut load(&img).unwrap()), vec![slot]);

    assert_eq!(c.verify(&img, KEY_A).unwrap(), slot);
    assert!(matches!(c.verify(&img, KEY_B), Err(CryptError::WrongKey(_))), "a wrong key is refused");

    let before = dir.path().join("before.luks");
    c.header_backup(&img, &before).unwrap();
    assert!(c.header_backup(&img, &before).is_err(), "a backup never overwrites a file");

    // Rotate: new keyslot for B, old one destroyed; A no longer opens.
    let new_slot = c.add_keyslot(&img, KEY_A, KEY_B, &cheap()).unwrap();
    c.destroy_keyslot(&img, slot).unwrap();
    assert_eq!(c.verify(&img, KEY_B).unwrap(), new_slot);
    assert!(matches!(c.verify(&img, KEY_A), Err(CryptError::WrongKey(_))));
    assert!(matches!(c.add_keyslot(&img, KEY_A, KEY_B, &cheap()), Err(CryptError::WrongKey(_))));

    // Restoring the old header brings the old keyslot back (which is why backups are key material).
    restore_header(&img, &before);
    assert!(c.verify(&img, KEY_A).is_ok());
    assert!(matches!(c.verify(&img, KEY_B), Err(CryptError::WrongKey(_))));

    c.erase_keyslots(&img).unwrap();
    assert!(matches!(c.verify(&img, KEY_A), Err(CryptError::WrongKey(_))), "destroyed: nothing opens");
    assert!(active_keyslots(&mut load(&img).unwrap()).is_empty());

    // The key bytes are nowhere in the image or the backup.
    for file in [&img, &before] {
        let bytes = std::fs::read(file).unwrap();
        for key in [KEY_A, KEY_B] {
            assert!(!bytes.windows(key.len()).any(|w| w == key), "{} holds key bytes", file.display());
        }
    }
}

#[test]
fn key_of_512_bits_and_cheap_argon2id() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "v.img");
    let argon =
        PbkdfParams { kind: PbkdfKind::Argon2id, time_ms: 100, iterations: 4, memory_kib: 32 * 1024, parallel: 1 };
    LibCryptsetup.format(&img, &params(512, argon), KEY_A).unwrap();
    assert_eq!(LibCryptsetup.header_info(&img).unwrap().key_bits, 512);
    assert!(LibCryptsetup.verify(&img, KEY_A).is_ok());
    assert!(LibCryptsetup.verify(&img, KEY_B).is_err());
}

#[test]
fn header_work_on_a_missing_file_fails_cleanly() {
    let e = LibCryptsetup.verify(Path::new("/nonexistent/dbagent.img"), KEY_A).unwrap_err();
    assert!(matches!(e, CryptError::Failed { .. }), "{e}");
    assert!(!e.to_string().contains("5a5a"), "{e}");
}

/// The keyslot a volume gets with the shipped configuration: PBKDF2-SHA256 at exactly the minimum
/// iteration count (no benchmark chose it), so opening 50 volumes at boot costs milliseconds, not
/// 50 times 2 s and 1 GiB of argon2id. Read back from the LUKS2 header by `cryptsetup luksDump`.
#[test]
fn shipped_keyslots_are_pbkdf2_at_the_minimum_iterations_and_open_in_milliseconds() {
    let settings = crate::volume::VolumeSettings::from_config(&crate::config::Config::default());
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "shipped.img");
    let c = LibCryptsetup;
    c.format(&img, &settings.format, KEY_A).unwrap();

    let dump = std::process::Command::new("cryptsetup")
        .args(["luksDump", "--dump-json-metadata"])
        .arg(&img)
        .output()
        .expect("cryptsetup luksDump (package cryptsetup-bin)");
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    let json: serde_json::Value = serde_json::from_slice(&dump.stdout).unwrap();
    let slots = json["keyslots"].as_object().unwrap();
    assert_eq!(slots.len(), 1, "{slots:?}");
    let kdf = &slots.values().next().unwrap()["kdf"];
    assert_eq!(kdf["type"], "pbkdf2", "{kdf}");
    assert_eq!(kdf["hash"], "sha256", "{kdf}");
    assert_eq!(kdf["iterations"], crate::config::MIN_PBKDF2_ITERATIONS, "{kdf}");

    let started = std::time::Instant::now();
    for _ in 0..50 {
        c.verify(&img, KEY_A).unwrap();
    }
    let fifty = started.elapsed();
    // Each open reads the header and derives the key once; argon2id at the old defaults took ~2 s each.
    assert!(fifty < std::time::Duration::from_secs(5), "50 keyslot opens took {fifty:?}");
    assert!(c.verify(&img, KEY_B).is_err(), "a wrong key still fails");
}

/// The escrow token on a real LUKS2 header: absent, written, replaced in place (one token of the
/// type, never two), carried by a header backup, and a token LUKS2 would not accept is refused.
#[test]
fn tokens_are_written_replaced_and_carried_by_header_backups() {
    use crate::volume::escrow_token::{EscrowToken, TOKEN_TYPE};
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "t.img");
    let c = LibCryptsetup;
    c.format(&img, &params(256, cheap()), KEY_A).unwrap();
    assert_eq!(c.read_token(&img, TOKEN_TYPE).unwrap(), None);

    let identity = crate::recovery_key::RecoveryIdentity::generate();
    let recipients = crate::recovery_key::RecoveryRecipients::parse(&[identity.recipient()]).unwrap();
    let key = |b: &[u8]| crate::volume::VolumeKey::new(zeroize::Zeroizing::new(b.to_vec()));
    let first = EscrowToken::seal(&recipients, "pg-1", 1, &key(KEY_A)).unwrap();
    c.write_token(&img, TOKEN_TYPE, &first.to_json()).unwrap();
    let read = EscrowToken::parse("pg-1", &c.read_token(&img, TOKEN_TYPE).unwrap().unwrap()).unwrap();
    assert_eq!(read.open(&identity, "pg-1", 1).unwrap().as_bytes(), KEY_A);

    let second = EscrowToken::seal(&recipients, "pg-1", 2, &key(KEY_B)).unwrap();
    c.write_token(&img, TOKEN_TYPE, &second.to_json()).unwrap();
    let read = EscrowToken::parse("pg-1", &c.read_token(&img, TOKEN_TYPE).unwrap().unwrap()).unwrap();
    assert_eq!(read.key_version, 2);
    assert_eq!(read.open(&identity, "pg-1", 2).unwrap().as_bytes(), KEY_B);

    let dump = std::process::Command::new("cryptsetup")
        .args(["luksDump", "--dump-json-metadata"])
        .arg(&img)
        .output()
        .expect("cryptsetup luksDump (package cryptsetup-bin)");
    let json: serde_json::Value = serde_json::from_slice(&dump.stdout).unwrap();
    let tokens = json["tokens"].as_object().unwrap();
    assert_eq!(tokens.len(), 1, "the escrow was replaced, not added: {tokens:?}");
    assert_eq!(tokens.values().next().unwrap()["type"], TOKEN_TYPE);
    assert!(c.verify(&img, KEY_A).is_ok(), "writing a token left the keyslot alone");

    let backup = dir.path().join("header.luks");
    c.header_backup(&img, &backup).unwrap();
    let carried = c.read_token(&backup, TOKEN_TYPE).unwrap().expect("the header backup carries the escrow");
    assert_eq!(EscrowToken::parse("pg-1", &carried).unwrap().key_version, 2);

    let e = c.write_token(&img, TOKEN_TYPE, r#"{"type":"dbagent-escrow"}"#).unwrap_err();
    assert!(matches!(e, CryptError::Failed { .. }), "a token without keyslots is not LUKS2: {e}");
    assert!(c.write_token(&img, TOKEN_TYPE, "not json").is_err());
    assert_eq!(c.read_token(&img, TOKEN_TYPE).unwrap().unwrap(), carried, "a refused write changed nothing");
}
