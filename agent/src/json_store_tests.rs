use super::*;
use serde::Deserialize;
use std::os::unix::fs::PermissionsExt;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Note {
    name: String,
    text: String,
}

impl JsonRecord for Note {
    const KIND: &'static str = "note";

    fn key(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.name)
    }

    fn check(&self) -> Result<(), String> {
        if self.text.is_empty() { Err("its text is empty".into()) } else { Ok(()) }
    }
}

fn note(name: &str) -> Note {
    Note { name: name.into(), text: format!("about {name}") }
}

fn open(dir: &Path, on_corrupt: OnCorrupt) -> Result<(JsonStore<Note>, Loaded<Note>), JsonStoreError> {
    JsonStore::open(dir.to_path_buf(), on_corrupt)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A folder with the good notes `a` and `c`, a truncated `b.json`, a `d.json` holding note `a`
/// (stored under another key than its own) and an `e.json` whose note fails its check.
fn folder_with_corrupt_files() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), OnCorrupt::RefuseToStart).unwrap();
    store.put(&note("a")).unwrap();
    store.put(&note("c")).unwrap();
    std::fs::write(dir.path().join("b.json"), br#"{"name": "b", "te"#).unwrap();
    std::fs::copy(dir.path().join("a.json"), dir.path().join("d.json")).unwrap();
    std::fs::write(dir.path().join("e.json"), br#"{"name": "e", "text": ""}"#).unwrap();
    dir
}

#[test]
fn records_round_trip_with_private_modes() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("state/notes");
    let (store, loaded) = open(&dir, OnCorrupt::RefuseToStart).unwrap();
    assert!(loaded.records.is_empty());
    assert_eq!(mode(&dir), 0o700);

    store.put(&note("b")).unwrap();
    store.put(&note("a")).unwrap();
    assert_eq!(mode(&dir.join("a.json")), 0o600);
    let mut changed = note("a");
    changed.text = "changed".into();
    store.put(&changed).unwrap();
    assert_eq!(store.get("a").unwrap(), Some(changed.clone()));
    assert_eq!(store.get("z").unwrap(), None);

    let (_, loaded) = open(&dir, OnCorrupt::RefuseToStart).unwrap();
    assert_eq!(loaded.records, vec![changed, note("b")], "sorted by key");

    store.remove("b").unwrap();
    assert!(!dir.join("b.json").exists());
    store.remove("b").unwrap();
    assert_eq!(store.get("b").unwrap(), None);
}

#[test]
fn keys_that_could_leave_the_folder_are_refused() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("notes");
    let (store, _) = open(&dir, OnCorrupt::RefuseToStart).unwrap();
    let long = "a".repeat(MAX_KEY_LEN + 1);
    for bad in ["", "..", "../x", "a/b", "/etc/passwd", ".hidden", "-a", "a..b", "a b", "é", &long] {
        assert!(check_key(bad).is_err(), "{bad:?}");
        let e = store.put(&note(bad)).unwrap_err();
        assert!(matches!(&e, JsonStoreError::InvalidKey { kind: "note", .. }), "{bad:?}: {e}");
        assert!(matches!(store.get(bad), Err(JsonStoreError::InvalidKey { .. })), "{bad:?}");
        assert!(matches!(store.remove(bad), Err(JsonStoreError::InvalidKey { .. })), "{bad:?}");
    }
    assert!(!parent.path().join("x.json").exists());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "nothing was written");
    // What the stores use as keys passes.
    for good in ["pg-1", "op-0123456789abcdef0123", &"f".repeat(64), "a.b_c-D", &"a".repeat(MAX_KEY_LEN)] {
        check_key(good).unwrap();
        store.put(&note(good)).unwrap();
        assert!(store.get(good).unwrap().is_some(), "{good}");
    }
}

#[test]
fn temporary_and_quarantined_files_are_never_records() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), OnCorrupt::RefuseToStart).unwrap();
    store.put(&note("a")).unwrap();
    // A complete record in a temporary file: its write never reached the rename, so it does not exist.
    let valid = serde_json::to_vec(&note("b")).unwrap();
    std::fs::write(dir.path().join(".b.json.tmp"), &valid).unwrap();
    std::fs::write(dir.path().join("c.json.corrupt-20240501T100000Z"), &valid).unwrap();

    let (_, loaded) = open(dir.path(), OnCorrupt::RefuseToStart).unwrap();
    assert_eq!(loaded.records, vec![note("a")]);
    assert!(!dir.path().join(".b.json.tmp").exists(), "leftover temporary files are removed");
    assert!(dir.path().join("c.json.corrupt-20240501T100000Z").exists(), "quarantined files are kept");
}

#[test]
fn refuse_to_start_fails_the_open_naming_the_file() {
    for (file, content, reason) in [
        ("b.json", &br#"{"name": "b", "te"#[..], "not a valid note file"),
        ("d.json", &br#"{"name": "a", "text": "about a"}"#[..], "\"a\""),
        ("e.json", &br#"{"name": "e", "text": ""}"#[..], "text is empty"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path(), OnCorrupt::RefuseToStart).unwrap();
        store.put(&note("a")).unwrap();
        std::fs::write(dir.path().join(file), content).unwrap();
        let e = open(dir.path(), OnCorrupt::RefuseToStart).unwrap_err();
        let JsonStoreError::Corrupt { kind: "note", path, reason: why } = &e else { panic!("{file}: {e}") };
        assert_eq!(path, &dir.path().join(file));
        assert!(why.contains(reason), "{file}: {e}");
        assert!(e.to_string().contains(file) && e.to_string().contains("restore it"), "{e}");
        // Nothing was moved or deleted, and the good record is intact.
        assert!(dir.path().join(file).exists());
        assert_eq!(store.get("a").unwrap(), Some(note("a")));
        assert!(store.get(file.trim_end_matches(".json")).is_err(), "get refuses it too");
    }
}

#[test]
fn quarantine_moves_corrupt_files_aside_and_opens_with_the_rest() {
    let dir = folder_with_corrupt_files();
    let (_, loaded) = open(dir.path(), OnCorrupt::Quarantine).unwrap();
    assert_eq!(loaded.records, vec![note("a"), note("c")]);
    let files: Vec<_> = loaded.corrupt.iter().map(|c| c.file.clone()).collect();
    assert_eq!(files, ["b.json", "d.json", "e.json"].map(|f| dir.path().join(f)));
    for c in &loaded.corrupt {
        let aside = c.moved_to.as_ref().unwrap();
        let name = aside.file_name().unwrap().to_string_lossy().into_owned();
        let original = c.file.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(&format!("{original}.corrupt-")), "{name}");
        assert!(aside.exists() && !c.file.exists(), "{name}");
    }
    assert!(loaded.corrupt[0].reason.contains("not a valid note file"), "{:?}", loaded.corrupt[0]);
    assert_eq!(std::fs::read(dir.path().join("a.json")).unwrap(), serde_json::to_vec_pretty(&note("a")).unwrap());

    // The next open finds nothing wrong, and the quarantined files stay where they are.
    let (_, again) = open(dir.path(), OnCorrupt::Quarantine).unwrap();
    assert_eq!((again.records.len(), again.corrupt.len()), (2, 0));
    assert!(loaded.corrupt.iter().all(|c| c.moved_to.as_ref().unwrap().exists()));
}

#[test]
fn quarantine_never_replaces_an_earlier_quarantined_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b.json");
    let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_714_557_600);
    let first = quarantine_path(&file, at);
    assert_eq!(first, dir.path().join("b.json.corrupt-20240501T100000Z"));
    std::fs::write(&first, b"earlier").unwrap();
    assert_eq!(quarantine_path(&file, at), dir.path().join("b.json.corrupt-20240501T100000Z-2"));
}

#[test]
fn keep_leaves_corrupt_files_in_place_reports_their_keys_and_opens_with_the_rest() {
    let dir = folder_with_corrupt_files();
    let before: Vec<Vec<u8>> =
        ["b", "d", "e"].iter().map(|k| std::fs::read(dir.path().join(format!("{k}.json"))).unwrap()).collect();
    let (_, loaded) = open(dir.path(), OnCorrupt::Keep).unwrap();
    assert_eq!(loaded.records, vec![note("a"), note("c")]);
    let keys: Vec<String> = loaded.corrupt.iter().map(CorruptRecord::key).collect();
    assert_eq!(keys, ["b", "d", "e"]);
    assert!(loaded.corrupt.iter().all(|c| c.moved_to.as_ref() == Some(&c.file)), "{:?}", loaded.corrupt);
    let after: Vec<Vec<u8>> =
        ["b", "d", "e"].iter().map(|k| std::fs::read(dir.path().join(format!("{k}.json"))).unwrap()).collect();
    assert_eq!(before, after, "the files are left as they were");
    // The next open reports them again.
    assert_eq!(open(dir.path(), OnCorrupt::Keep).unwrap().1.corrupt.len(), 3);
}

#[test]
fn drop_deletes_corrupt_files_and_opens_with_the_rest() {
    let dir = folder_with_corrupt_files();
    let (_, loaded) = open(dir.path(), OnCorrupt::Drop).unwrap();
    assert_eq!(loaded.records, vec![note("a"), note("c")]);
    assert_eq!(loaded.corrupt.len(), 3);
    assert!(loaded.corrupt.iter().all(|c| c.moved_to.is_none() && !c.file.exists()));
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 2, "only the good records are left: {left:?}");
}

#[test]
fn a_read_error_is_not_corruption_and_fails_every_policy() {
    for on_corrupt in [OnCorrupt::Quarantine, OnCorrupt::Keep, OnCorrupt::Drop] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), serde_json::to_vec(&note("a")).unwrap()).unwrap();
        // A folder where a record belongs cannot be read as a file.
        std::fs::create_dir(dir.path().join("b.json")).unwrap();
        let e = open(dir.path(), on_corrupt).unwrap_err();
        assert!(matches!(&e, JsonStoreError::Io { path, .. } if path.ends_with("b.json")), "{e}");
        assert!(dir.path().join("b.json").is_dir(), "nothing was moved");
        std::fs::remove_dir(dir.path().join("b.json")).unwrap();
        assert_eq!(open(dir.path(), on_corrupt).unwrap().1.records, vec![note("a")]);
    }
}
