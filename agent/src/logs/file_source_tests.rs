use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use super::checkpoint::Checkpoint;
use super::file_source::{FileFollower, FollowSettings, StartAt};
use super::lines::{Joined, LineFormat};

fn settings() -> FollowSettings {
    FollowSettings {
        rotate_wait: Duration::from_millis(50),
        flush_after: Duration::from_millis(20),
        rescan: Duration::ZERO,
    }
}

fn drain(f: &mut FileFollower) -> Vec<String> {
    let mut out: Vec<(Arc<str>, Joined)> = Vec::new();
    for _ in 0..3 {
        f.poll(1 << 20, &mut out);
    }
    out.into_iter().map(|(_, j)| j.message).collect()
}

fn append(path: &std::path::Path, lines: std::ops::Range<usize>) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    for i in lines {
        writeln!(f, "line {i}").unwrap();
    }
}

fn expected(lines: std::ops::Range<usize>) -> Vec<String> {
    lines.map(|i| format!("line {i}")).collect()
}

#[test]
fn rename_rotation_reads_old_file_to_its_end_then_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("pg.log");
    append(&log, 0..10);
    let mut f = FileFollower::new(
        dir.path().join("*.log").display().to_string(),
        LineFormat::Plain,
        settings(),
        StartAt::Beginning,
    );
    assert_eq!(drain(&mut f), expected(0..10));
    append(&log, 10..15);
    std::fs::rename(&log, dir.path().join("pg.log.1")).unwrap();
    // The writer still has the old file open for a moment after the rename.
    append(&dir.path().join("pg.log.1"), 15..20);
    append(&log, 20..25);
    let got = drain(&mut f);
    assert_eq!(got, expected(10..25));
    // The rotated file is closed once quiet for `rotate_wait`, with nothing more read from either file.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert!(drain(&mut f).is_empty());
        match f.checkpoint() {
            Checkpoint::Files { files } if files.len() == 1 => break,
            Checkpoint::Files { files } => {
                assert!(std::time::Instant::now() < deadline, "the rotated file is still open: {files:?}");
            }
            other => panic!("{other:?}"),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn copytruncate_recovers_the_unread_rest_from_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("redis.log");
    append(&log, 0..10);
    let mut f = FileFollower::new(log.display().to_string(), LineFormat::Plain, settings(), StartAt::Beginning);
    assert_eq!(drain(&mut f), expected(0..10));
    append(&log, 10..20);
    std::fs::copy(&log, dir.path().join("redis.log.1")).unwrap();
    std::fs::OpenOptions::new().write(true).open(&log).unwrap().set_len(0).unwrap();
    // Written again past our old offset before we look: the size alone would hide the truncation.
    append(&log, 20..60);
    assert_eq!(drain(&mut f), expected(10..60));
}

#[test]
fn restore_continues_at_the_checkpoint_even_after_a_rename() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("m.log");
    append(&log, 0..5);
    let glob = log.display().to_string();
    let mut f = FileFollower::new(glob.clone(), LineFormat::Plain, settings(), StartAt::Beginning);
    assert_eq!(drain(&mut f), expected(0..5));
    let Checkpoint::Files { files } = f.checkpoint() else { panic!() };
    drop(f);
    append(&log, 5..8);
    std::fs::rename(&log, dir.path().join("m.log.1")).unwrap();
    append(&log, 8..10);
    let mut f = FileFollower::new(glob, LineFormat::Plain, settings(), StartAt::Beginning);
    f.restore(&files);
    assert_eq!(drain(&mut f), expected(5..10));
}

#[test]
fn multi_line_records_flush_when_quiet_and_hold_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("pg.log");
    std::fs::write(&log, "t [1] ERROR:  boom\n\tdetail\n").unwrap();
    let mut f = FileFollower::new(log.display().to_string(), LineFormat::Postgresql, settings(), StartAt::Beginning);
    let mut out = Vec::new();
    f.poll(1 << 20, &mut out);
    assert!(out.is_empty(), "held until the record is complete or quiet");
    assert!(matches!(f.checkpoint(), Checkpoint::Files { files } if files[0].offset == 0));
    // Handed on once quiet for `flush_after`.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while out.is_empty() {
        assert!(std::time::Instant::now() < deadline, "the record was not handed on when quiet");
        std::thread::sleep(Duration::from_millis(5));
        f.poll(1 << 20, &mut out);
    }
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1.message, "t [1] ERROR:  boom\n\tdetail");
    assert!(matches!(f.checkpoint(), Checkpoint::Files { files } if files[0].offset == 27));
}

#[test]
fn tail_mode_starts_near_the_end_on_a_line_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("big.log");
    append(&log, 0..20000);
    let mut f = FileFollower::new(log.display().to_string(), LineFormat::Plain, settings(), StartAt::Tail(1000));
    let got = drain(&mut f);
    assert!(got.len() < 200 && got.len() > 50, "{}", got.len());
    assert_eq!(got.last().unwrap(), "line 19999");
    assert!(got[0].starts_with("line "), "{}", got[0]);
}

#[test]
fn a_confined_follower_never_reads_through_a_link_out_of_its_roots() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    append(&root.path().join("pg.log"), 0..3);
    let secret = outside.path().join("kek");
    std::fs::write(&secret, "secret-key-material\n").unwrap();
    std::os::unix::fs::symlink(&secret, root.path().join("planted.log")).unwrap();
    let glob = root.path().join("*.log").display().to_string();

    let mut f = FileFollower::new(glob.clone(), LineFormat::Plain, settings(), StartAt::Beginning);
    f.confine_to(Arc::from(vec![root.path().to_path_buf()]));
    assert_eq!(drain(&mut f), expected(0..3), "the real file is read, the planted link is not");

    // Unconfined (library use without roots), the link would be followed: the test can tell.
    let mut open = FileFollower::new(glob, LineFormat::Plain, settings(), StartAt::Beginning);
    assert!(drain(&mut open).iter().any(|l| l.contains("secret-key-material")));
}
