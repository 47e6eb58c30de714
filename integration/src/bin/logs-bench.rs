//! Logs benchmark: the same input file shipped to the same counting TCP sink (syslog, octet
//! counting) by rsyslog (imfile -> omfwd) and by dbagent's drain pipeline (file -> on-disk buffer ->
//! syslog TCP, at-least-once with per-batch close handshake). Reports lines/s, MiB/s and CPU seconds
//! per GiB of input for each.
//!
//! logs-bench [--lines N]      (build with --release; logship-test is taken from the same folder)

use std::io::{BufWriter, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut lines: u64 = 1_000_000;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--lines" => lines = args.next().unwrap_or_default().parse()?,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("postgresql.log");
    let bytes = write_input(&input, lines)?;
    println!("input: {lines} lines, {:.1} MiB ({} bytes/line)", bytes as f64 / MIB, bytes / lines);
    println!("| shipper | lines/s | MiB/s | CPU s per GiB | wall s | CPU s |");
    println!("|---|---|---|---|---|---|");
    let rsyslog = run("rsyslog 8.2302 imfile -> omfwd (octet-counted TCP)", lines, bytes, |port| {
        start_rsyslog(dir.path(), &input, port)
    })?;
    let ours = run("dbagent file -> disk buffer -> syslog TCP", lines, bytes, |port| {
        let exe = std::env::current_exe()?.with_file_name("logship-test");
        Ok(Command::new(exe)
            .args([
                "--state",
                &dir.path().join("ship-state").display().to_string(),
                "--glob",
                &input.display().to_string(),
            ])
            .args([
                "--address",
                &format!("127.0.0.1:{port}"),
                "--batch",
                &(4 * 1024 * 1024).to_string(),
                "--format",
                "postgresql",
            ])
            .stdout(Stdio::null())
            .spawn()?)
    })?;
    println!("\ndbagent / rsyslog: throughput x{:.2}, CPU per GiB x{:.2}", ours.0 / rsyslog.0, ours.1 / rsyslog.1);
    Ok(())
}

const MIB: f64 = 1024.0 * 1024.0;

fn write_input(path: &Path, lines: u64) -> std::io::Result<u64> {
    let mut w = BufWriter::new(std::fs::File::create(path)?);
    for i in 0..lines {
        writeln!(
            w,
            "2024-05-01 10:00:00.{:03} UTC [{}] LOG:  duration: 0.{:03} ms  statement: SELECT * FROM accounts WHERE id = {i}",
            i % 1000,
            1000 + i % 50,
            i % 997
        )?;
    }
    w.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

/// Runs one shipper against a fresh sink until it has delivered every line; returns (MiB/s, CPU s/GiB).
fn run(
    name: &str,
    lines: u64,
    bytes: u64,
    start: impl FnOnce(u16) -> anyhow::Result<Child>,
) -> anyhow::Result<(f64, f64)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let count = Arc::new(AtomicU64::new(0));
    let sink_count = count.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let c = sink_count.clone();
            std::thread::spawn(move || count_frames(conn, &c));
        }
    });
    let t0 = Instant::now();
    let mut child = start(port)?;
    let deadline = t0 + Duration::from_secs(300);
    while count.load(Ordering::Relaxed) < lines {
        if Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!("{name}: only {} of {lines} lines arrived in 300 s", count.load(Ordering::Relaxed));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(child.id())?;
    let _ = child.kill();
    let _ = child.wait();
    let mibs = bytes as f64 / MIB / wall;
    let per_gib = cpu / (bytes as f64 / (1024.0 * MIB));
    println!("| {name} | {:.0} | {mibs:.1} | {per_gib:.1} | {wall:.2} | {cpu:.2} |", lines as f64 / wall);
    Ok((mibs, per_gib))
}

/// Counts octet-counted syslog frames (`LEN SP MSG`).
fn count_frames(mut conn: std::net::TcpStream, count: &AtomicU64) {
    let mut buf = vec![0u8; 1 << 20];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        let mut at = 0;
        let mut frames = 0;
        while let Some(sp) = pending[at..].iter().position(|&b| b == b' ') {
            let Some(len) =
                std::str::from_utf8(&pending[at..at + sp]).ok().and_then(|s| s.trim().parse::<usize>().ok())
            else {
                return;
            };
            if pending.len() < at + sp + 1 + len {
                break;
            }
            at += sp + 1 + len;
            frames += 1;
        }
        pending.drain(..at);
        count.fetch_add(frames, Ordering::Relaxed);
    }
}

fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default().split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    Ok(ticks / 100.0)
}

fn start_rsyslog(dir: &Path, input: &Path, port: u16) -> anyhow::Result<Child> {
    let work: PathBuf = dir.join("rsyslog-bench");
    std::fs::create_dir_all(&work)?;
    let conf = work.join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{w}\")\n\
             module(load=\"imfile\" mode=\"inotify\")\n\
             input(type=\"imfile\" file=\"{input}\" tag=\"pg\" freshStartTail=\"off\" ruleset=\"ship\")\n\
             ruleset(name=\"ship\") {{ action(type=\"omfwd\" target=\"127.0.0.1\" port=\"{port}\" protocol=\"tcp\" TCP_Framing=\"octet-counted\" template=\"RSYSLOG_SyslogProtocol23Format\") }}\n",
            w = work.display(),
            input = input.display(),
        ),
    )?;
    Ok(Command::new("/usr/sbin/rsyslogd")
        .args(["-n", "-f", &conf.display().to_string(), "-i", &work.join("pid").display().to_string()])
        .stdout(Stdio::null())
        .spawn()?)
}
