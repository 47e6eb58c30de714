//! dbagent's drain pipeline (the `logship-test` helper runs the library code the agent runs) against
//! a real rsyslogd, over TCP and TLS: rotation while writing, SIGKILL during shipping, drain outage.

use dbagent_integration::logship::Shipper;
use dbagent_integration::rsyslog::{Rsyslog, TlsFiles, free_port, rsyslogd_available};
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_logship-test");

fn line(i: usize) -> String {
    format!("2024-05-01 10:00:00.000 UTC [7] LOG:  seq={i:08} connection authorized: user=app database=app")
}

fn seqs(received: &[String]) -> Vec<usize> {
    received
        .iter()
        .filter_map(|l| l.split("seq=").nth(1).and_then(|s| s.get(..8)).and_then(|s| s.parse().ok()))
        .collect()
}

fn open_append(path: &Path) -> BufWriter<File> {
    BufWriter::new(OpenOptions::new().create(true).append(true).open(path).expect("open log"))
}

fn skip() -> bool {
    if !rsyslogd_available() {
        // Never pass quietly: a missing drain server is a broken test machine.
        panic!(
            "/usr/sbin/rsyslogd is not installed: apt-get install rsyslog rsyslog-gnutls (integration/run-tests.sh installs it)"
        );
    }
    false
}

#[test]
fn tcp_rotation_by_rename_and_copytruncate_delivers_every_line_once_in_order() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rsyslog = Rsyslog::start(dir.path(), free_port(), None);
    let logs = dir.path().join("pg");
    std::fs::create_dir(&logs).unwrap();
    let log = logs.join("postgresql.log");
    File::create(&log).unwrap();
    let address = format!("127.0.0.1:{}", rsyslog.port);
    let _shipper = Shipper::start(BIN, &dir.path().join("state"), &log.display().to_string(), &address, &[]);
    const N: usize = 40_000;
    let mut w = open_append(&log);
    for i in 0..N {
        writeln!(w, "{}", line(i)).unwrap();
        if i % 200 == 199 {
            w.flush().unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        if i % 5000 == 4999 {
            w.flush().unwrap();
            let n = i / 5000;
            if n % 2 == 0 {
                // logrotate's default: rename, then the server reopens its log.
                std::fs::rename(&log, logs.join(format!("postgresql.log.{n}"))).unwrap();
                w = open_append(&log);
            } else {
                // copytruncate: the server keeps writing to the same (truncated) file.
                std::fs::copy(&log, logs.join(format!("postgresql.log.{n}"))).unwrap();
                OpenOptions::new().write(true).open(&log).unwrap().set_len(0).unwrap();
            }
            // Real rotations are hours apart; a file that is created and rotated away again before
            // the follower's next look (poll interval plus scheduling) is a documented limit.
            std::thread::sleep(Duration::from_millis(400));
        }
    }
    w.flush().unwrap();
    let got = seqs(&rsyslog.wait_for(N, Duration::from_secs(90)));
    if got.len() != N {
        let set: HashSet<_> = got.iter().copied().collect();
        let missing: Vec<_> = (0..N).filter(|s| !set.contains(s)).take(20).collect();
        panic!("received {} of {N} lines; first missing: {missing:?}", got.len());
    }
    let first_bad = got.iter().enumerate().find(|(i, s)| *i != **s).map(|(i, _)| i);
    assert!(
        first_bad.is_none(),
        "every line once, in order; first difference at {first_bad:?}: {:?}",
        first_bad.map(|i| &got[i.saturating_sub(3)..(i + 5).min(got.len())])
    );
}

#[test]
fn tls_drain_receives_everything() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tls = TlsFiles::generate(dir.path());
    let rsyslog = Rsyslog::start(dir.path(), free_port(), Some(&tls));
    let log = dir.path().join("mariadb.log");
    let mut w = open_append(&log);
    for i in 0..3000 {
        writeln!(w, "{}", line(i)).unwrap();
    }
    w.flush().unwrap();
    let address = format!("127.0.0.1:{}", rsyslog.port);
    let ca = tls.ca.display().to_string();
    let _shipper =
        Shipper::start(BIN, &dir.path().join("state"), &log.display().to_string(), &address, &["--tls-ca", &ca]);
    let got = seqs(&rsyslog.wait_for(3000, Duration::from_secs(60)));
    assert!(got.iter().copied().eq(0..3000), "got {} lines", got.len());
}

#[test]
fn sigkill_ten_times_loses_nothing_and_duplicates_at_most_a_batch_per_crash() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rsyslog = Rsyslog::start(dir.path(), free_port(), None);
    let log = dir.path().join("pg.log");
    const N: usize = 200_000;
    const BATCH: usize = 128 * 1024;
    let mut w = open_append(&log);
    for i in 0..N / 2 {
        writeln!(w, "{}", line(i)).unwrap();
    }
    w.flush().unwrap();
    let address = format!("127.0.0.1:{}", rsyslog.port);
    let batch = BATCH.to_string();
    let mut shipper =
        Shipper::start(BIN, &dir.path().join("state"), &log.display().to_string(), &address, &["--batch", &batch]);
    let writer = std::thread::spawn(move || {
        for i in N / 2..N {
            writeln!(w, "{}", line(i)).unwrap();
            if i % 1000 == 999 {
                w.flush().unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        w.flush().unwrap();
    });
    let mut at_kill = Vec::new();
    for k in 0..10u64 {
        std::thread::sleep(Duration::from_millis(150 + 37 * k));
        shipper.kill9();
        at_kill.push(rsyslog.received().len());
        shipper.spawn();
    }
    writer.join().unwrap();
    let mut got = Vec::new();
    for _ in 0..120 {
        got = seqs(&rsyslog.received());
        if got.iter().collect::<HashSet<_>>().len() >= N {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let distinct: HashSet<_> = got.iter().copied().collect();
    let duplicates = got.len() - distinct.len();
    let mut seen = HashSet::new();
    let dups: Vec<usize> = got.iter().copied().filter(|s| !seen.insert(*s)).collect();
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for d in dups {
        match ranges.last_mut() {
            Some(r) if r.1 + 1 == d => r.1 = d,
            _ => ranges.push((d, d)),
        }
    }
    eprintln!("duplicated ranges: {ranges:?}");
    // One batch is at most BATCH bytes of wire data; each record here is well over 100 bytes on the wire.
    let per_batch = BATCH / 100;
    eprintln!(
        "received {} lines, {} distinct, {duplicates} duplicates over 10 kills (bound {}); received at kills: {at_kill:?}",
        got.len(),
        distinct.len(),
        10 * per_batch
    );
    assert_eq!(distinct.len(), N, "every line written arrived");
    assert!(distinct.iter().all(|&s| s < N));
    assert!(at_kill.windows(2).any(|w| w[1] > w[0]), "kills happened while shipping: {at_kill:?}");
    assert!(duplicates <= 10 * per_batch, "{duplicates} duplicates");
    shipper.sigterm();
}

#[test]
fn drain_outage_buffers_on_disk_and_delivers_when_back() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("redis.log");
    File::create(&log).unwrap();
    let state = dir.path().join("state");
    let address = format!("127.0.0.1:{port}");
    let _shipper = Shipper::start(BIN, &state, &log.display().to_string(), &address, &[]);
    let mut w = open_append(&log);
    for i in 0..5000 {
        writeln!(w, "{}", line(i)).unwrap();
    }
    w.flush().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let buffered: u64 = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(buffered > 5000 * 100, "records are buffered on disk while the drain is down: {buffered} bytes");
    // The source file goes away: only the buffer still has the lines.
    std::fs::remove_file(&log).unwrap();
    let rsyslog = Rsyslog::start(dir.path(), port, None);
    let got = seqs(&rsyslog.wait_for(5000, Duration::from_secs(60)));
    assert!(got.iter().copied().eq(0..5000), "got {} lines", got.len());
}
