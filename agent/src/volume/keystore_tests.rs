use super::*;

fn store(dir: &Path) -> Arc<LocalKeystore> {
    Arc::new(LocalKeystore::open(dir.join("keystore"), &[7u8; 32]).unwrap())
}

#[tokio::test]
async fn keys_are_wrapped_stable_and_per_instance() {
    let dir = tempfile::tempdir().unwrap();
    let ks = store(dir.path());
    let e = ks.key("pg-1", 1, false, 256).await.unwrap_err();
    assert!(matches!(e, KeyError::Missing { version: 1, .. }), "{e}");
    let a = ks.key("pg-1", 1, true, 256).await.unwrap();
    assert_eq!(a.as_bytes().len(), 32);
    assert_eq!(ks.key("pg-1", 1, false, 256).await.unwrap().as_bytes(), a.as_bytes());
    let b = ks.key("pg-2", 1, true, 512).await.unwrap();
    assert_eq!(b.as_bytes().len(), 64);
    let raw = std::fs::read(dir.path().join("keystore/pg-1.v1.key")).unwrap();
    assert!(!raw.windows(32).any(|w| w == a.as_bytes()), "the entry holds the key in plain text");
    assert_eq!(std::fs::metadata(dir.path().join("keystore/pg-1.v1.key")).unwrap().permissions().mode() & 0o777, 0o600);

    // An entry renamed to another instance does not open: the AAD binds it.
    std::fs::copy(dir.path().join("keystore/pg-1.v1.key"), dir.path().join("keystore/pg-3.v1.key")).unwrap();
    assert!(matches!(ks.key("pg-3", 1, false, 256).await.unwrap_err(), KeyError::Corrupt(_)));
    // Another KEK does not open it either.
    let other = Arc::new(LocalKeystore::open(dir.path().join("keystore"), &[8u8; 32]).unwrap());
    assert!(matches!(other.key("pg-1", 1, false, 256).await.unwrap_err(), KeyError::Corrupt(_)));

    ks.key("pg-1", 2, true, 256).await.unwrap();
    ks.forget("pg-1", Some(2)).await.unwrap();
    assert!(ks.key("pg-1", 1, false, 256).await.is_err());
    assert!(ks.key("pg-1", 2, false, 256).await.is_ok());
    assert!(ks.key("pg-2", 1, false, 256).await.is_ok(), "forget touches only its instance");
    ks.forget("pg-1", None).await.unwrap();
    assert!(ks.key("pg-1", 2, false, 256).await.is_err());
}

#[test]
fn kek_sources() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kek");
    let src = KekSource { credentials_dir: None, file: file.clone(), generate: false };
    assert!(matches!(src.load().unwrap_err(), KeyError::KekMissing { path, .. } if path == file));
    let dev = KekSource { credentials_dir: None, file: file.clone(), generate: true };
    let kek = dev.load().unwrap();
    assert_eq!(kek.len(), 32);
    assert_eq!(src.load().unwrap(), kek);

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let e = src.load().unwrap_err();
    assert!(matches!(e, KeyError::KekExposed { mode: 0o640, .. }), "{e}");
    assert!(e.to_string().contains("chmod 600"), "the message says what to do: {e}");

    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join(KEK_CREDENTIAL), format!("{}\n", "ab".repeat(32))).unwrap();
    let cred = KekSource { credentials_dir: Some(creds), file, generate: false };
    assert_eq!(cred.load().unwrap().as_slice(), &[0xab; 32]);
}
