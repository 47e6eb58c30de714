//! After a whole lifecycle, driven through the operations engine like the API does, no key bytes
//! appear in any file under the state folder, in operation records, or in the log output.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::KeyProvider;
use super::jobs::{self, VolumeAction};
use super::test_fixture::fixture;
use crate::locks::ResourceLocks;
use crate::ops::{OpState, OperationEngine, OperationRecord, OpsSettings, Outcome};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn run(
    engine: &OperationEngine,
    volumes: &super::Volumes,
    request: &str,
    action: VolumeAction,
) -> OperationRecord {
    let new = jobs::new_operation(request.into(), "pg-1", &action);
    let (record, _) = engine.submit(new, jobs::job(volumes.clone(), "pg-1".into(), action)).await.unwrap();
    let mut rx = engine.watch(&record.id).unwrap();
    loop {
        let r = rx.borrow_and_update().clone();
        if r.state.is_finished() {
            return r;
        }
        tokio::time::timeout(Duration::from_secs(10), rx.changed()).await.unwrap().unwrap();
    }
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() { files(&p, out) } else { out.push(p) }
    }
}

#[tokio::test]
async fn no_key_bytes_in_state_records_or_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let f = fixture();
    f.register("pg-1", None).await;
    let settings = OpsSettings { max_concurrent: 2, retention: Duration::from_secs(3600), max_finished: 100 };
    let (engine, _) =
        OperationEngine::open(&f.dir.path().join("operations"), settings, ResourceLocks::default(), Default::default())
            .unwrap();

    let created = run(&engine, &f.volumes, "c1", VolumeAction::Create { force: false }).await;
    assert_eq!(created.state, OpState::Succeeded, "{created:?}");
    assert_eq!(created.result.as_ref().unwrap()["outcome"], "created");
    // Idempotency: the same request_id gives the same operation, not a second create.
    let (again, outcome) = engine
        .submit(
            jobs::new_operation("c1".into(), "pg-1", &VolumeAction::Create { force: false }),
            jobs::job(f.volumes.clone(), "pg-1".into(), VolumeAction::Create { force: false }),
        )
        .await
        .unwrap();
    assert_eq!((again.id.as_str(), outcome), (created.id.as_str(), Outcome::Existing));

    let mut keys = vec![f.keys.key("pg-1", 1, false, 256).await.unwrap()];
    for (req, action) in [
        ("o1", VolumeAction::Close),
        ("o2", VolumeAction::Open),
        ("g1", VolumeAction::Grow { new_size_bytes: 11 << 30 }),
    ] {
        let r = run(&engine, &f.volumes, req, action).await;
        assert_eq!(r.state, OpState::Succeeded, "{r:?}");
    }
    let r = run(&engine, &f.volumes, "r1", VolumeAction::RotateKey).await;
    assert_eq!(r.state, OpState::Succeeded, "{r:?}");
    keys.push(f.keys.key("pg-1", 2, false, 256).await.unwrap());
    let r = run(&engine, &f.volumes, "b1", VolumeAction::BackupHeader).await;
    assert_eq!(r.state, OpState::Succeeded, "{r:?}");
    // A failing operation's error message must not carry key material either.
    f.keys.forget("pg-1", None).await.unwrap();
    let r = run(&engine, &f.volumes, "r2", VolumeAction::RotateKey).await;
    assert_eq!(r.state, OpState::Failed);

    let mut all = Vec::new();
    files(f.dir.path(), &mut all);
    assert!(all.iter().any(|p| p.starts_with(f.dir.path().join("operations"))), "the journal was written");
    let log = captured.0.lock().unwrap().clone();
    assert!(!log.is_empty());
    for key in &keys {
        let raw = key.as_bytes();
        let hex = crate::hex::encode(raw);
        for path in &all {
            let bytes = std::fs::read(path).unwrap();
            assert!(!bytes.windows(raw.len()).any(|w| w == raw), "raw key bytes in {}", path.display());
            assert!(
                !String::from_utf8_lossy(&bytes).to_lowercase().contains(&hex[..16]),
                "hex key in {}",
                path.display()
            );
        }
        assert!(!log.windows(raw.len()).any(|w| w == raw), "raw key bytes in the log");
        assert!(!String::from_utf8_lossy(&log).contains(&hex[..16]), "hex key in the log");
    }
}
