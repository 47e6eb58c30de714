//! dbagent's drain pipeline (the `logship-test` helper runs the library code the agent runs) against
//! a real rsyslogd, over TCP and TLS: rotation while writing, SIGKILL during shipping, drain outage.
//! Every arrived line is compared with the line written, byte for byte (rsyslogd writes each
//! message's MSG, the line without its newline).

use dbagent_integration::logship::{Deliveries, Shipper, drop_torn_at_kills, numbered_line};
use dbagent_integration::rsyslog::{Rsyslog, TlsFiles};
use dbagent_integration::servers::ReservedPort;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_logship-test");

fn open_append(path: &Path) -> BufWriter<File> {
    BufWriter::new(OpenOptions::new().create(true).append(true).open(path).expect("open log"))
}

/// Waits until rsyslogd wrote at least `n` messages; panics with the count after `timeout`.
fn wait_received(rsyslog: &Rsyslog, n: usize, timeout: Duration) -> Vec<String> {
    let got = rsyslog.wait_for(n, timeout);
    assert!(got.len() >= n, "rsyslogd received {} of {n} lines within {timeout:?}", got.len());
    got
}

#[test]
fn tcp_rotation_by_rename_and_copytruncate_delivers_every_line_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let rsyslog = Rsyslog::start(dir.path(), None);
    let logs = dir.path().join("pg");
    std::fs::create_dir(&logs).unwrap();
    let log = logs.join("postgresql.log");
    File::create(&log).unwrap();
    let address = format!("127.0.0.1:{}", rsyslog.port);
    let _shipper = Shipper::start(BIN, &dir.path().join("state"), &log.display().to_string(), &address, &[]);
    const N: usize = 40_000;
    let mut w = open_append(&log);
    let mut rotated = false;
    for i in 0..N {
        writeln!(w, "{}", numbered_line(i)).unwrap();
        if i % 200 == 199 {
            w.flush().unwrap();
            if rotated {
                // Real rotations are hours apart; a file that is created and rotated away again
                // before the follower's first look is a documented limit. So before the next
                // rotation, the first lines of the new file must have arrived: the follower found it.
                wait_received(&rsyslog, i + 1, Duration::from_secs(60));
                rotated = false;
            }
            // The server writes over time, not all at once.
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
            rotated = true;
        }
    }
    w.flush().unwrap();
    let got = Deliveries::check(&rsyslog.wait_for(N, Duration::from_secs(90)), N);
    assert_eq!(got.distinct(), N, "received {} of {N} lines; first missing: {:?}", got.distinct(), got.missing());
    let seqs = got.seqs();
    let first_bad = seqs.iter().enumerate().find(|(i, s)| *i != **s).map(|(i, _)| i);
    assert!(
        first_bad.is_none() && seqs.len() == N,
        "every line once, in order; {} arrived, first difference at {first_bad:?}: {:?}",
        seqs.len(),
        first_bad.map(|i| &seqs[i.saturating_sub(3)..(i + 5).min(seqs.len())])
    );
}

#[test]
fn tls_drain_receives_everything() {
    let dir = tempfile::tempdir().unwrap();
    let tls = TlsFiles::generate(dir.path());
    let rsyslog = Rsyslog::start(dir.path(), Some(&tls));
    let log = dir.path().join("mariadb.log");
    let mut w = open_append(&log);
    for i in 0..3000 {
        writeln!(w, "{}", numbered_line(i)).unwrap();
    }
    w.flush().unwrap();
    let address = format!("127.0.0.1:{}", rsyslog.port);
    let ca = tls.ca.display().to_string();
    let _shipper =
        Shipper::start(BIN, &dir.path().join("state"), &log.display().to_string(), &address, &["--tls-ca", &ca]);
    let got = Deliveries::check(&rsyslog.wait_for(3000, Duration::from_secs(60)), 3000);
    assert!(got.seqs().iter().copied().eq(0..3000), "got {} lines", got.seqs().len());
}

#[test]
fn sigkill_ten_times_loses_nothing_and_duplicates_at_most_a_batch_per_crash() {
    let dir = tempfile::tempdir().unwrap();
    let rsyslog = Rsyslog::start(dir.path(), None);
    let log = dir.path().join("pg.log");
    const N: usize = 200_000;
    const BATCH: usize = 128 * 1024;
    const KILLS: usize = 10;
    let mut w = open_append(&log);
    for i in 0..N / 2 {
        writeln!(w, "{}", numbered_line(i)).unwrap();
    }
    w.flush().unwrap();
    let address = format!("127.0.0.1:{}", rsyslog.port);
    let batch = BATCH.to_string();
    let mut shipper =
        Shipper::start(BIN, &dir.path().join("state"), &log.display().to_string(), &address, &["--batch", &batch]);
    let writer = std::thread::spawn(move || {
        for i in N / 2..N {
            writeln!(w, "{}", numbered_line(i)).unwrap();
            if i % 1000 == 999 {
                w.flush().unwrap();
                // The server writes over time, not all at once.
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        w.flush().unwrap();
    });
    // Where the arrivals of each run of the shipper start: run k (k >= 1) follows crash k - 1.
    let mut run_starts = vec![0];
    for k in 0..KILLS {
        // Kill while shipping: once this run delivered more than a batch of redelivered lines could
        // account for (a different amount each time, to hit batches at different points).
        let target = rsyslog.received_bytes() + 2 * BATCH as u64 + 40_000 * k as u64;
        let deadline = Instant::now() + Duration::from_secs(60);
        while rsyslog.received_bytes() < target {
            assert!(Instant::now() < deadline, "run {k} of the shipper delivered nothing new within 60 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        shipper.kill9();
        // All the dead run sent is written before the next run starts, so each arrival belongs to
        // exactly one run.
        rsyslog.wait_connections_closed(Duration::from_secs(30));
        run_starts.push(rsyslog.received().len());
        shipper.spawn();
    }
    writer.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let (got, torn) = loop {
        // A kill in the middle of a frame leaves rsyslogd the frame's first bytes, which it writes as
        // a message when the connection closes: forgiven only just before a kill.
        let (kept, kills, torn) = drop_torn_at_kills(&rsyslog.received(), &run_starts[1..], N);
        let got = Deliveries::check(&kept, N);
        if got.distinct() >= N || Instant::now() > deadline {
            run_starts.truncate(1);
            run_starts.extend(kills);
            break (got, torn);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    run_starts.push(got.seqs().len());
    // One batch is at most BATCH bytes of wire data, and each record on the wire is its line plus a
    // header: no batch holds more records than BATCH / the shortest line.
    let per_batch = BATCH / (0..N).map(|i| numbered_line(i).len()).min().unwrap();
    let repeats: Vec<usize> = run_starts.windows(2).map(|r| got.repeats_in(r[0], r[1])).collect();
    eprintln!(
        "received {} lines, {} distinct, {torn} cut by a kill; runs start at {run_starts:?}; repeated lines per run: {repeats:?} (bound {per_batch} after a crash)",
        got.seqs().len(),
        got.distinct(),
    );
    assert_eq!(got.distinct(), N, "every line written arrived; first missing: {:?}", got.missing());
    assert_eq!(repeats[0], 0, "before the first crash nothing arrives twice");
    for (k, &r) in repeats.iter().enumerate().skip(1) {
        assert!(
            r <= per_batch,
            "crash {} was followed by {r} repeated lines, more than one batch ({per_batch})",
            k - 1
        );
    }
    assert!(repeats.iter().any(|&r| r > 0), "no kill hit a batch in flight, so redelivery was not tested");
    shipper.sigterm();
}

#[test]
fn drain_outage_buffers_on_disk_and_delivers_when_back() {
    let dir = tempfile::tempdir().unwrap();
    // Held until rsyslogd takes it over: the drain sees connections refused meanwhile.
    let reserved = ReservedPort::new();
    let log = dir.path().join("redis.log");
    File::create(&log).unwrap();
    let state = dir.path().join("state");
    let address = format!("127.0.0.1:{}", reserved.port());
    let _shipper = Shipper::start(BIN, &state, &log.display().to_string(), &address, &[]);
    let mut w = open_append(&log);
    for i in 0..5000 {
        writeln!(w, "{}", numbered_line(i)).unwrap();
    }
    w.flush().unwrap();
    // Records reach the buffer in order, so the last line in a segment file means all are there.
    let last = numbered_line(4999);
    let buffered = || -> bool {
        std::fs::read_dir(&state)
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
            .any(|e| String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()).contains(&last))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !buffered() {
        assert!(
            Instant::now() < deadline,
            "the records were not buffered on disk within 60 s while the drain was down"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The source file goes away: only the buffer still has the lines.
    std::fs::remove_file(&log).unwrap();
    let rsyslog = Rsyslog::start_on(dir.path(), reserved, None);
    let got = Deliveries::check(&rsyslog.wait_for(5000, Duration::from_secs(60)), 5000);
    assert!(got.seqs().iter().copied().eq(0..5000), "got {} lines", got.seqs().len());
}
