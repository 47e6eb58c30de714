//! What the agent remembers about each volume, one `<state_dir>/volumes/<id>.json` per instance.
//! Never secrets: the key version is a number, the key lives with the key provider.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::instances::Filesystem;
use crate::json_store::{CorruptRecord, JsonRecord, JsonStore, JsonStoreError, OnCorrupt};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VolumeState {
    /// Create started but did not finish: a retry may overwrite this backing.
    Creating,
    Ready,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub instance_id: String,
    /// The block device, or the agent-managed file.
    pub backing: PathBuf,
    /// True when `backing` is a file under `<state_dir>/volumes` that the agent attaches as a loop device.
    pub managed_file: bool,
    pub key_version: u32,
    pub key_bits: u32,
    pub filesystem: Filesystem,
    pub size_bytes: u64,
    pub state: VolumeState,
    #[serde(with = "crate::timefmt")]
    pub created: SystemTime,
}

/// The volume store's errors are the JSON store's; the name stays for `VolumeError::Store`.
pub type StoreError = JsonStoreError;

/// A volume file is `<instance id>.json` and must hold a valid instance id.
impl JsonRecord for VolumeRecord {
    const KIND: &'static str = "volume record";

    fn key(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.instance_id)
    }

    fn check(&self) -> Result<(), String> {
        crate::ids::instance_id("instance_id", &self.instance_id).map_err(|e| e.to_string())
    }
}

#[derive(Clone)]
pub struct VolumeStore {
    records: JsonStore<VolumeRecord>,
    map: Arc<Mutex<BTreeMap<String, VolumeRecord>>>,
    /// Records unreadable at start-up, by instance id (the file's name); fixed until a restart.
    quarantined: Arc<BTreeMap<String, CorruptRecord>>,
}

impl VolumeStore {
    pub fn open(dir: PathBuf) -> Result<Self, StoreError> {
        // A corrupt volume record quarantines that instance's volume, not the agent: it is the only
        // place that says which backing holds the instance's encrypted data and which key version
        // opens it. The file stays in place and `Volumes` refuses every operation on the volume
        // (a CreateVolume could otherwise format over its data, a DestroyVolume forget its keys);
        // every other volume opens.
        let (records, loaded) = JsonStore::<VolumeRecord>::open(dir, OnCorrupt::Keep)?;
        let map = loaded.records.into_iter().map(|r| (r.instance_id.clone(), r)).collect();
        let quarantined = loaded.corrupt.into_iter().map(|c| (c.key(), c)).collect();
        Ok(Self { records, map: Arc::new(Mutex::new(map)), quarantined: Arc::new(quarantined) })
    }

    /// Why the volume record of `id` is quarantined, if it is.
    pub fn quarantined(&self, id: &str) -> Option<&CorruptRecord> {
        self.quarantined.get(id)
    }

    /// Every quarantined volume record, sorted by instance id.
    pub fn all_quarantined(&self) -> Vec<CorruptRecord> {
        self.quarantined.values().cloned().collect()
    }

    /// The store's folder; the agent-managed backing files live there too, as `<id>.img`.
    pub fn dir(&self) -> &Path {
        self.records.dir()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, VolumeRecord>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, id: &str) -> Option<VolumeRecord> {
        self.map().get(id).cloned()
    }

    pub fn list(&self) -> Vec<VolumeRecord> {
        self.map().values().cloned().collect()
    }

    /// Durable write first, then memory.
    pub fn put(&self, record: &VolumeRecord) -> Result<(), StoreError> {
        self.records.put(record)?;
        self.map().insert(record.instance_id.clone(), record.clone());
        Ok(())
    }

    pub fn remove(&self, id: &str) -> Result<(), StoreError> {
        self.records.remove(id)?;
        self.map().remove(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// What an agent before the shared JSON store wrote.
    const PG_1: &str = r#"{
  "instance_id": "pg-1",
  "backing": "/var/lib/dbagent/volumes/pg-1.img",
  "managed_file": true,
  "key_version": 1,
  "key_bits": 512,
  "filesystem": "ext4",
  "size_bytes": 10737418240,
  "state": "ready",
  "created": "2024-05-01T10:00:00.123Z"
}"#;

    fn pg_1() -> VolumeRecord {
        VolumeRecord {
            instance_id: "pg-1".into(),
            backing: "/var/lib/dbagent/volumes/pg-1.img".into(),
            managed_file: true,
            key_version: 1,
            key_bits: 512,
            filesystem: Filesystem::Ext4,
            size_bytes: 10 << 30,
            state: VolumeState::Ready,
            created: UNIX_EPOCH + Duration::from_millis(1_714_557_600_123),
        }
    }

    #[test]
    fn reads_a_volume_record_in_the_format_written_before() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pg-1.json"), PG_1).unwrap();
        // A managed backing file lives beside the records and is not one.
        std::fs::write(dir.path().join("pg-1.img"), b"").unwrap();
        let store = VolumeStore::open(dir.path().to_path_buf()).unwrap();
        assert_eq!(store.list(), vec![pg_1()]);
        store.put(&pg_1()).unwrap();
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("pg-1.json")).unwrap()).unwrap();
        assert_eq!(written, serde_json::from_str::<serde_json::Value>(PG_1).unwrap(), "same shape written back");
    }

    /// The volume store's policy is `Keep`: the corrupt record's instance is quarantined (by the
    /// file's name), the file is left as it was, and the other records load.
    #[test]
    fn a_corrupt_volume_record_is_quarantined_in_place_and_the_others_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = VolumeStore::open(dir.path().to_path_buf()).unwrap();
        store.put(&pg_1()).unwrap();
        let good = std::fs::read(dir.path().join("pg-1.json")).unwrap();
        let pg_2 = PG_1.replace("pg-1", "pg-2");
        for (file, key, content, says) in [
            ("pg-2.json", "pg-2", &pg_2[..pg_2.len() / 2], "not a valid volume record file"),
            ("pg-3.json", "pg-3", &pg_2[..], "\"pg-2\""),
            ("PG-2.json", "PG-2", &pg_2.replace("\"pg-2\"", "\"PG-2\"")[..], "must match"),
        ] {
            std::fs::write(dir.path().join(file), content).unwrap();
            let store = VolumeStore::open(dir.path().to_path_buf()).unwrap();
            assert_eq!(store.list(), vec![pg_1()], "{file}: the good record loads");
            let q = store.quarantined(key).unwrap_or_else(|| panic!("{file} is not quarantined"));
            assert!(q.file.ends_with(file) && q.reason.contains(says), "{q:?}");
            assert_eq!(store.all_quarantined().len(), 1);
            assert!(store.quarantined("pg-1").is_none());
            assert_eq!(std::fs::read_to_string(dir.path().join(file)).unwrap(), content, "left as it was");
            assert_eq!(std::fs::read(dir.path().join("pg-1.json")).unwrap(), good, "the good record is intact");
            std::fs::remove_file(dir.path().join(file)).unwrap();
        }
        let repaired = VolumeStore::open(dir.path().to_path_buf()).unwrap();
        assert_eq!(repaired.list(), vec![pg_1()]);
        assert!(repaired.all_quarantined().is_empty());
    }

    #[test]
    fn put_and_remove_write_through() {
        let dir = tempfile::tempdir().unwrap();
        let store = VolumeStore::open(dir.path().join("volumes")).unwrap();
        let mut creating = pg_1();
        creating.state = VolumeState::Creating;
        store.put(&creating).unwrap();
        assert_eq!(store.get("pg-1"), Some(creating.clone()));
        assert_eq!(VolumeStore::open(dir.path().join("volumes")).unwrap().get("pg-1"), Some(creating));
        store.remove("pg-1").unwrap();
        assert_eq!(store.get("pg-1"), None);
        assert!(VolumeStore::open(dir.path().join("volumes")).unwrap().list().is_empty());
        assert!(matches!(store.remove("../pg-1"), Err(StoreError::InvalidKey { .. })));
    }
}
