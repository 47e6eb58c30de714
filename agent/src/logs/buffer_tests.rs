use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::buffer::{BufferLimits, DrainBuffer};
use super::checkpoint::{Checkpoint, FilePos};

fn limits(max: u64, segment: u64) -> BufferLimits {
    BufferLimits { max_bytes: max, segment_bytes: segment, sync_interval: Duration::ZERO }
}

fn ckpt(offset: u64) -> Checkpoint {
    Checkpoint::Files { files: vec![FilePos { dev: 1, ino: 2, path: PathBuf::from("/x.log"), offset }] }
}

#[test]
fn delivered_frames_commit_their_checkpoint_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let key: Arc<str> = "file:/x.log".into();
    let (mut b, pos) = DrainBuffer::open(dir.path(), limits(1 << 20, 1 << 16)).unwrap();
    assert!(pos.is_empty());
    for i in 1..=3u64 {
        b.append(&key, &ckpt(i * 10), 2, format!("batch{i}").as_bytes()).unwrap();
    }
    let batch = b.read_batch(12).unwrap().unwrap();
    assert_eq!(batch.data, b"batch1batch2");
    assert_eq!(batch.records, 4);
    b.ack(batch.last_frame).unwrap();
    assert_eq!(b.status().buffered_records, 2);
    drop(b);
    // Reopen as after SIGKILL: the unacknowledged frame is still there, and the source resumes after it.
    let (b, pos) = DrainBuffer::open(dir.path(), limits(1 << 20, 1 << 16)).unwrap();
    assert_eq!(pos.get("file:/x.log"), Some(&ckpt(30)));
    let batch = b.read_batch(1 << 20).unwrap().unwrap();
    assert_eq!(batch.data, b"batch3");
    assert!(b.status().last_ack.is_some());
}

#[test]
fn torn_tail_is_cut_and_its_data_reread_from_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let key: Arc<str> = "k".into();
    let (mut b, _) = DrainBuffer::open(dir.path(), limits(1 << 20, 1 << 16)).unwrap();
    b.append(&key, &ckpt(10), 1, b"one").unwrap();
    b.append(&key, &ckpt(20), 1, b"two").unwrap();
    drop(b);
    let seg = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .unwrap()
        .path();
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(len - 2).unwrap();
    let (b, pos) = DrainBuffer::open(dir.path(), limits(1 << 20, 1 << 16)).unwrap();
    assert_eq!(pos.get("k"), Some(&ckpt(10)), "the torn frame's checkpoint must not count");
    assert_eq!(b.read_batch(1 << 20).unwrap().unwrap().data, b"one");
}

#[test]
fn full_buffer_drops_oldest_segments_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let key: Arc<str> = "k".into();
    let (mut b, _) = DrainBuffer::open(dir.path(), limits(256 * 1024, 64 * 1024)).unwrap();
    let data = vec![b'x'; 16 * 1024];
    for i in 0..40u64 {
        b.append(&key, &ckpt(i), 10, &data).unwrap();
    }
    let s = b.status();
    assert!(s.dropped_records > 0, "{s:?}");
    assert_eq!(s.dropped_records + s.buffered_records, 400);
    let on_disk: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(on_disk <= 256 * 1024 + 64 * 1024, "{on_disk}");
    drop(b);
    let (b, pos) = DrainBuffer::open(dir.path(), limits(256 * 1024, 64 * 1024)).unwrap();
    assert_eq!(b.status().dropped_records, s.dropped_records, "the drop count is persisted");
    assert_eq!(pos.get("k"), Some(&ckpt(39)));
}

#[test]
fn an_unparsable_state_file_is_internal_and_names_its_path() {
    use super::error::LogsError;
    use crate::error::{ErrorCode, HasErrorCode};
    let dir = tempfile::tempdir().unwrap();
    let (mut b, _) = DrainBuffer::open(dir.path(), limits(1 << 20, 1 << 16)).unwrap();
    b.append(&Arc::from("file:/x.log"), &ckpt(10), 1, b"line").unwrap();
    let batch = b.read_batch(1 << 20).unwrap().unwrap();
    b.ack(batch.last_frame).unwrap();
    drop(b);
    // The allowed path first: the committed checkpoint comes back.
    let (_, pos) = DrainBuffer::open(dir.path(), limits(1 << 20, 1 << 16)).unwrap();
    assert_eq!(pos.get("file:/x.log"), Some(&ckpt(10)));

    let state = dir.path().join("state.json");
    std::fs::write(&state, b"{ torn").unwrap();
    let Err(e) = DrainBuffer::open(dir.path(), limits(1 << 20, 1 << 16)) else { panic!("a torn state.json opened") };
    assert!(matches!(&e, LogsError::BufferStateCorrupt { path, .. } if *path == state), "{e}");
    assert_eq!(e.code(), ErrorCode::Internal);
}

#[test]
fn a_damaged_frame_mid_segment_is_skipped_and_counted_and_the_frames_after_it_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let key: Arc<str> = "file:/x.log".into();
    let (mut b, _) = DrainBuffer::open(dir.path(), limits(1 << 20, 1 << 16)).unwrap();
    for i in 1..=3u64 {
        b.append(&key, &ckpt(i * 10), 2, format!("batch{i}").as_bytes()).unwrap();
    }
    drop(b);
    let segment = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = bytes.windows(6).position(|w| w == b"batch2").unwrap();
    bytes[at] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();

    let (b, pos) = DrainBuffer::open(dir.path(), limits(1 << 20, 1 << 16)).unwrap();
    assert_eq!(b.status().corrupt_frames, 1, "the damaged frame is counted");
    assert_eq!(b.status().buffered_records, 4, "frames 1 and 3 are still buffered");
    let batch = b.read_batch(1 << 20).unwrap().unwrap();
    assert_eq!(batch.data, b"batch1batch3");
    assert_eq!(pos.get("file:/x.log"), Some(&ckpt(30)), "the source resumes after the last kept frame");
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), bytes.len() as u64, "nothing was cut off");
}
