use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use super::checkpoint::Checkpoint;
use super::file_source::{FileFollower, FollowSettings, StartAt};
use super::lines::{Joined, LineFormat};
use super::open_beneath::LogRoots;

fn settings() -> FollowSettings {
    FollowSettings {
        rotate_wait: Duration::from_millis(50),
        flush_after: Duration::from_millis(20),
        rescan: Duration::ZERO,
    }
}

/// The test's folder as the only log root.
fn roots(dir: &std::path::Path) -> LogRoots {
    LogRoots::new(Arc::from(vec![dir.to_path_buf()]))
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
        roots(dir.path()),
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
    let mut f = FileFollower::new(
        log.display().to_string(),
        roots(dir.path()),
        LineFormat::Plain,
        settings(),
        StartAt::Beginning,
    );
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
    let mut f = FileFollower::new(glob.clone(), roots(dir.path()), LineFormat::Plain, settings(), StartAt::Beginning);
    assert_eq!(drain(&mut f), expected(0..5));
    let Checkpoint::Files { files } = f.checkpoint() else { panic!() };
    drop(f);
    append(&log, 5..8);
    std::fs::rename(&log, dir.path().join("m.log.1")).unwrap();
    append(&log, 8..10);
    let mut f = FileFollower::new(glob, roots(dir.path()), LineFormat::Plain, settings(), StartAt::Beginning);
    f.restore(&files);
    assert_eq!(drain(&mut f), expected(5..10));
}

#[test]
fn multi_line_records_flush_when_quiet_and_hold_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("pg.log");
    std::fs::write(&log, "t [1] ERROR:  boom\n\tdetail\n").unwrap();
    let mut f = FileFollower::new(
        log.display().to_string(),
        roots(dir.path()),
        LineFormat::Postgresql,
        settings(),
        StartAt::Beginning,
    );
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
    let mut f = FileFollower::new(
        log.display().to_string(),
        roots(dir.path()),
        LineFormat::Plain,
        settings(),
        StartAt::Tail(1000),
    );
    let got = drain(&mut f);
    assert!(got.len() < 200 && got.len() > 50, "{}", got.len());
    assert_eq!(got.last().unwrap(), "line 19999");
    assert!(got[0].starts_with("line "), "{}", got[0]);
}

/// A folder outside the roots holding a file whose content must never be read.
struct Secret {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

fn secret() -> Secret {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "secret-key-material\n".repeat(20)).unwrap();
    Secret { _dir: dir, path }
}

fn no_secret(lines: &[String]) {
    assert!(!lines.iter().any(|l| l.contains("secret-key-material")), "the secret was read: {lines:?}");
}

fn follower(dir: &std::path::Path, glob: &str) -> FileFollower {
    let glob = dir.join(glob).display().to_string();
    FileFollower::new(glob, roots(dir), LineFormat::Plain, settings(), StartAt::Beginning)
}

#[test]
fn a_link_matched_by_the_glob_or_in_a_folder_of_its_path_is_never_opened_and_is_counted() {
    let root = tempfile::tempdir().unwrap();
    let secret = secret();
    append(&root.path().join("pg.log"), 0..3);
    std::os::unix::fs::symlink(&secret.path, root.path().join("planted.log")).unwrap();
    // A link inside the root to a file inside the root is refused too: no link is followed at all.
    std::os::unix::fs::symlink(root.path().join("pg.log"), root.path().join("inside.log")).unwrap();
    let mut f = follower(root.path(), "*.log");
    assert_eq!(drain(&mut f), expected(0..3), "the real file is read, the planted links are not");
    assert!(f.refused_opens() >= 2, "both links were refused and counted: {}", f.refused_opens());

    // A folder of the path that is a link out of the root.
    std::fs::create_dir(root.path().join("real")).unwrap();
    append(&root.path().join("real/m.log"), 0..2);
    std::os::unix::fs::symlink(secret.path.parent().unwrap(), root.path().join("escape")).unwrap();
    std::fs::rename(&secret.path, secret.path.with_file_name("m.log")).unwrap();
    let mut f = follower(root.path(), "*/m.log");
    let got = drain(&mut f);
    no_secret(&got);
    assert_eq!(got, expected(0..2), "the file below a real folder is read");
    assert!(f.refused_opens() >= 1);
}

#[test]
fn a_fifo_matched_by_the_glob_is_skipped_without_blocking_the_reader() {
    let root = tempfile::tempdir().unwrap();
    nix::unistd::mkfifo(&root.path().join("a.log"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    append(&root.path().join("b.log"), 0..4);
    let dir = root.path().to_path_buf();
    // A blocking open of the FIFO would never return: the poll runs on a thread with a deadline.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut f = follower(&dir, "*.log");
        let _ = tx.send((drain(&mut f), f.refused_opens()));
    });
    let (got, refused) = rx.recv_timeout(Duration::from_secs(20)).expect("the reader blocked on the FIFO");
    assert_eq!(got, expected(0..4));
    assert!(refused >= 1, "the FIFO was counted");
}

#[test]
fn a_tracked_file_swapped_for_a_link_is_read_through_the_vetted_descriptor_only() {
    let root = tempfile::tempdir().unwrap();
    let secret = secret();
    let log = root.path().join("pg.log");
    append(&log, 0..3);
    let mut f = follower(root.path(), "pg.log");
    assert_eq!(drain(&mut f), expected(0..3));
    // What a tenant's RENAME_EXCHANGE leaves at one instant: the real file moved aside, a link in
    // its place. The link is refused; the file already open goes on being read to its end.
    let aside = root.path().join("pg.aside");
    std::fs::rename(&log, &aside).unwrap();
    std::os::unix::fs::symlink(&secret.path, &log).unwrap();
    append(&aside, 3..6);
    let got = drain(&mut f);
    no_secret(&got);
    assert_eq!(got, expected(3..6));
    assert!(f.refused_opens() >= 1);
}

#[test]
fn restore_never_follows_a_checkpointed_path_that_became_a_link() {
    let root = tempfile::tempdir().unwrap();
    let secret = secret();
    let log = root.path().join("pg.log");
    append(&log, 0..3);
    let mut f = follower(root.path(), "pg.log");
    assert_eq!(drain(&mut f), expected(0..3));
    let Checkpoint::Files { files } = f.checkpoint() else { panic!() };
    drop(f);
    // Allowed path first: the file renamed within its folder is found again by its inode.
    std::fs::rename(&log, root.path().join("pg.log.1")).unwrap();
    append(&root.path().join("pg.log.1"), 3..5);
    let mut again = follower(root.path(), "none");
    again.restore(&files);
    assert_eq!(drain(&mut again), expected(3..5));
    // The renamed file replaced by a link to the secret: not the vetted inode, never opened.
    std::fs::remove_file(root.path().join("pg.log.1")).unwrap();
    std::os::unix::fs::symlink(&secret.path, &log).unwrap();
    let mut f = follower(root.path(), "none");
    f.restore(&files);
    no_secret(&drain(&mut f));
    assert!(matches!(f.checkpoint(), Checkpoint::Files { files } if files.is_empty()), "nothing was opened");
}

#[test]
fn copytruncate_never_reads_a_link_planted_as_the_copy() {
    let root = tempfile::tempdir().unwrap();
    let secret = secret();
    let log = root.path().join("redis.log");
    append(&log, 0..10);
    let mut f = follower(root.path(), "redis.log");
    assert_eq!(drain(&mut f), expected(0..10));
    // A file outside the roots that looks like the copy: the bytes read so far, then the secret.
    let mut fake = std::fs::read(&log).unwrap();
    fake.extend_from_slice(&std::fs::read(&secret.path).unwrap());
    std::fs::write(&secret.path, fake).unwrap();
    std::os::unix::fs::symlink(&secret.path, root.path().join("redis.log.1")).unwrap();
    std::fs::OpenOptions::new().write(true).open(&log).unwrap().set_len(0).unwrap();
    append(&log, 10..12);
    let got = drain(&mut f);
    no_secret(&got);
    assert_eq!(got, expected(10..12), "reading goes on in the truncated file");
}

#[test]
fn a_huge_sparse_file_is_skipped_hole_by_hole_and_never_starves_the_real_log() {
    let root = tempfile::tempdir().unwrap();
    let huge = root.path().join("a-huge.log");
    let file = std::fs::File::create(&huge).unwrap();
    file.set_len(1 << 40).unwrap();
    append(&root.path().join("b.log"), 0..5);
    let mut f = follower(root.path(), "*.log");
    let started = std::time::Instant::now();
    let got = drain(&mut f);
    assert_eq!(got, expected(0..5), "no NUL bytes from the hole, and the real log is read");
    assert!(started.elapsed() < Duration::from_secs(10), "the hole was read instead of skipped");
    // Data written after a hole is still read.
    use std::os::unix::fs::FileExt;
    file.write_all_at(b"after the hole\n", (1 << 40) + (1 << 20)).unwrap();
    assert_eq!(drain(&mut f), vec!["after the hole".to_string()]);
}

#[test]
fn a_file_with_a_second_hard_link_is_not_read() {
    let root = tempfile::tempdir().unwrap();
    // Stands for a file outside the roots, linked in where fs.protected_hardlinks is off.
    let elsewhere = root.path().join("elsewhere");
    std::fs::write(&elsewhere, "secret-key-material\n").unwrap();
    std::fs::hard_link(&elsewhere, root.path().join("linked.log")).unwrap();
    append(&root.path().join("pg.log"), 0..2);
    let mut f = follower(root.path(), "*.log");
    let got = drain(&mut f);
    no_secret(&got);
    assert_eq!(got, expected(0..2), "the file with one name is read");
    assert!(f.refused_opens() >= 1);
}
