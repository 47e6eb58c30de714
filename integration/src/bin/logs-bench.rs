//! Log shipping side by side: the same file of N PostgreSQL-style lines shipped to the same real
//! rsyslogd over TCP (octet-counted syslog; the receiver writes each message to a file) by
//! - the dbagent daemon itself (`dbagent --dev`, DBAGENT_BIN, default `[logs]` settings): an instance
//!   registered through the API with the file as its log source and a syslog drain (at-least-once:
//!   on-disk buffer, a batch counts only once the receiver has read it, committed positions),
//! - rsyslog imfile -> omfwd with a disk-assisted action queue as rsyslog's reliable-forwarding
//!   documentation configures it (LinkedList + queue.filename + saveOnShutdown, retry forever),
//! - rsyslog imfile -> omfwd without a queue (its default, direct action).
//!
//! Every run checks on the receiving side that the received file holds exactly the input's lines
//! (count and content, in order). Runs alternate the order of the shippers. Prints a Markdown
//! section (`## Log shipping`) on stdout, progress on stderr.
//!
//! Usage: logs-bench [--lines N (1000000)] [--runs R (5)]

use anyhow::{Context, bail};
use dbagent_integration::bench_stats;
use dbagent_integration::rsyslog::Rsyslog;
use dbagent_integration::{Agent, ops::instance_spec};
use dbagent_proto::v1::drain::Target;
use dbagent_proto::v1::instances_client::InstancesClient;
use dbagent_proto::v1::log_source::Source;
use dbagent_proto::v1::logs_client::LogsClient;
use dbagent_proto::v1::{Drain, LogSource, RegisterInstanceRequest, SetDrainsRequest, SyslogDrain};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MIB: f64 = 1024.0 * 1024.0;
/// The receiving rsyslog keeps the messages of this APP-NAME (dbagent sends the instance id).
const INSTANCE: &str = "inst-1";
/// A run that makes no progress for this long fails.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shipper {
    Dbagent,
    RsyslogQueue,
    RsyslogDirect,
}

impl Shipper {
    fn label(self) -> &'static str {
        match self {
            Self::Dbagent => "dbagent daemon: file -> on-disk buffer -> syslog TCP",
            Self::RsyslogQueue => "rsyslog imfile -> omfwd, disk-assisted queue",
            Self::RsyslogDirect => "rsyslog imfile -> omfwd, no queue",
        }
    }

    fn caveat(self) -> &'static str {
        match self {
            Self::Dbagent => {
                "At least once across crashes of the shipper (on-disk buffer, a batch counts once the receiver has \
                 read it, positions committed after). `dbagent --dev`, release build, default `[logs]` (2 MiB \
                 batches, one connection per batch); measured from RegisterInstance, so the daemon's own reading of \
                 the file for TailLogs is included; RSS is the whole daemon's."
            }
            Self::RsyslogQueue => {
                "At least once across restarts of the shipper: `queue.type=\"LinkedList\" queue.filename \
                 queue.maxDiskSpace=\"1g\" queue.saveOnShutdown=\"on\" action.resumeRetryCount=\"-1\"` (rsyslog's \
                 reliable forwarding); the queue spills to disk only when its memory part fills. A kill -9 loses what \
                 is in memory; TCP without RELP has no acknowledgement, so what the kernel had sent but the receiver \
                 had not read is lost."
            }
            Self::RsyslogDirect => {
                "No queue: the action's default direct mode; what is in flight when rsyslog stops or the receiver is \
                 away is lost (imfile's position is saved, so lines not yet read are not)."
            }
        }
    }
}

/// One run of one shipper.
struct RunFigures {
    in_order: bool,
    wall: f64,
    cpu: f64,
    peak_rss_mib: f64,
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut lines, mut runs): (u64, usize) = (1_000_000, 5);
    while let Some(a) = args.next() {
        let mut value = || -> anyhow::Result<u64> { Ok(args.next().context("a value")?.parse()?) };
        match a.as_str() {
            "--lines" => lines = value()?,
            "--runs" => runs = usize::try_from(value()?)?,
            other => bail!("unknown argument {other}; usage: logs-bench [--lines N] [--runs R]"),
        }
    }
    if lines == 0 || runs == 0 {
        bail!("--lines and --runs must be at least 1");
    }
    dbagent_integration::install_crypto_provider();
    let scratch = tempfile::Builder::new().prefix("logs-bench-").tempdir_in(scratch_parent())?;
    let input = scratch.path().join("postgresql.log");
    let bytes = write_input(&input, lines)?;
    let expected = std::fs::read(&input)?;
    eprintln!("logs-bench: input {lines} lines, {:.1} MiB, {} runs per shipper", bytes as f64 / MIB, runs);
    let load_before = bench_stats::load_average();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;

    let all = [Shipper::Dbagent, Shipper::RsyslogQueue, Shipper::RsyslogDirect];
    let mut results: Vec<(Shipper, RunFigures)> = Vec::new();
    for run in 0..runs {
        let mut order = all;
        if run % 2 == 1 {
            order.reverse();
        }
        for shipper in order {
            let dir = scratch.path().join(format!("run-{run}-{}", shipper as u8));
            std::fs::create_dir_all(&dir)?;
            let receiver = Rsyslog::start(&dir.join("receiver"), None);
            let figures = match shipper {
                Shipper::Dbagent => runtime.block_on(run_dbagent(&input, &receiver, &expected))?,
                _ => run_rsyslog(shipper, &dir, &input, &receiver, &expected)?,
            };
            eprintln!(
                "logs-bench: run {}/{runs} {}: wall {:.2} s, CPU {:.2} s, peak RSS {:.1} MiB, every line received{}",
                run + 1,
                shipper.label(),
                figures.wall,
                figures.cpu,
                figures.peak_rss_mib,
                if figures.in_order { " in order" } else { " (reordered)" }
            );
            results.push((shipper, figures));
            drop(receiver);
            std::fs::remove_dir_all(&dir)?;
        }
    }
    let load_after = bench_stats::load_average();
    print_section(lines, bytes, runs, &results, &load_before, &load_after);
    Ok(())
}

/// Big scratch data goes to /var/tmp (disk), not /tmp (may be memory).
fn scratch_parent() -> PathBuf {
    std::env::var_os("BENCH_SCRATCH").map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from)
}

fn print_section(lines: u64, bytes: u64, runs: usize, results: &[(Shipper, RunFigures)], before: &str, after: &str) {
    let rsyslog_version = Command::new("/usr/sbin/rsyslogd")
        .arg("-v")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).split_whitespace().nth(1).unwrap_or("?").trim_end_matches(',').to_owned()
        })
        .unwrap_or_else(|_| "?".into());
    let gib = bytes as f64 / (1024.0 * MIB);
    println!("## Log shipping\n");
    println!(
        "`target/release/logs-bench --lines {lines} --runs {runs}` (integration/src/bin/logs-bench.rs): the same input \
         file ({lines} PostgreSQL-style lines, {:.1} MiB, {} bytes/line) shipped to the same real rsyslogd {rsyslog_version} \
         on 127.0.0.1 over plain TCP (octet-counted RFC 5424; imtcp -> omfile writing each message as one line, a \
         fresh receiver per run). Every run of every row was checked on the receiving side: the received file holds \
         the input's lines, the same count and each line whole (compared as a multiset; the last column says whether they \
         also kept their order). Wall = from the shipper's start \
         (dbagent: RegisterInstance + SetDrains on a running daemon) until the receiver has written the last line; \
         CPU = the shipper's utime + stime from /proc; peak RSS = its VmHWM. {runs} runs per row, the order reversed \
         every other run; median [min-max]. Load average before: {before}; after: {after}.\n",
        bytes as f64 / MIB,
        bytes / lines
    );
    println!("| shipper | lines/s | MiB/s | CPU s per GiB | wall s | peak RSS MiB | received |");
    println!("|---|---|---|---|---|---|---|");
    for shipper in [Shipper::Dbagent, Shipper::RsyslogQueue, Shipper::RsyslogDirect] {
        let of = |f: fn(&RunFigures) -> f64| -> Vec<f64> {
            results.iter().filter(|(s, _)| *s == shipper).map(|(_, r)| f(r)).collect()
        };
        let wall = of(|r| r.wall);
        let rate: Vec<f64> = wall.iter().map(|w| lines as f64 / w).collect();
        let mibs: Vec<f64> = wall.iter().map(|w| bytes as f64 / MIB / w).collect();
        let per_gib: Vec<f64> = of(|r| r.cpu).iter().map(|c| c / gib).collect();
        let reordered = results.iter().filter(|(s, r)| *s == shipper && !r.in_order).count();
        let received = match reordered {
            0 => "every line, in order, every run".to_owned(),
            n => format!("every line, every run; reordered in {n} of {runs} runs"),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {received} |",
            shipper.label(),
            bench_stats::show(&rate, 0),
            bench_stats::show(&mibs, 1),
            bench_stats::show(&per_gib, 1),
            bench_stats::show(&wall, 2),
            bench_stats::show(&of(|r| r.peak_rss_mib), 1)
        );
        println!("| | *{}* | | | | | |", shipper.caveat());
    }
    println!();
}

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

/// Waits until the receiver's file is as long as the input (it stops growing for [`STALL_TIMEOUT`]:
/// failure), then checks that it holds the input's lines. Returns when the last byte arrived, and
/// whether the lines kept their order.
fn wait_complete(receiver: &Rsyslog, expected: &[u8], what: &str) -> anyhow::Result<(Instant, bool)> {
    let (mut last_len, mut last_change) = (0u64, Instant::now());
    let target = expected.len() as u64;
    loop {
        let len = std::fs::metadata(&receiver.output).map_or(0, |m| m.len());
        let now = Instant::now();
        if len >= target {
            return Ok((now, check_lines(&receiver.output, expected, what)?));
        }
        if len != last_len {
            (last_len, last_change) = (len, now);
        } else if now - last_change > STALL_TIMEOUT {
            check_lines(&receiver.output, expected, what)?;
            bail!("{what}: the receiver stopped at {len} of {target} bytes");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The received file must hold the input's lines: the same count, and the same lines (compared whole,
/// as a multiset). Returns whether they also arrived in the input's order.
fn check_lines(received: &Path, expected: &[u8], what: &str) -> anyhow::Result<bool> {
    let got = std::fs::read(received).with_context(|| format!("read {}", received.display()))?;
    if got == expected {
        return Ok(true);
    }
    let split = |b: &[u8]| -> Vec<Vec<u8>> { b.split(|&c| c == b'\n').map(<[u8]>::to_vec).collect() };
    let (mut g, mut e) = (split(&got), split(expected));
    let counts = (g.len() - 1, e.len() - 1);
    g.sort_unstable();
    e.sort_unstable();
    if g == e {
        return Ok(false);
    }
    let missing = e.iter().filter(|l| g.binary_search(l).is_err()).count();
    let foreign = g.iter().filter(|l| e.binary_search(l).is_err()).count();
    let example = g.iter().find(|l| e.binary_search(l).is_err()).map(|l| String::from_utf8_lossy(l).into_owned());
    bail!(
        "{what}: the receiver has {} lines, the input {}; {missing} sent lines missing, {foreign} received lines not \
         sent (e.g. {example:?})",
        counts.0,
        counts.1
    )
}

async fn run_dbagent(input: &Path, receiver: &Rsyslog, expected: &[u8]) -> anyhow::Result<RunFigures> {
    let agent = Agent::start_dev();
    let pid = agent.pid().context("agent pid")?;
    let folder = agent.dev_data_root().join(INSTANCE).join("logs");
    std::fs::create_dir_all(&folder)?;
    let file = folder.join("postgresql.log");
    // A hard link: the agent refuses files whose links lead out of its roots, and a copy would cost a
    // full write per run.
    if std::fs::hard_link(input, &file).is_err() {
        std::fs::copy(input, &file)?;
    }
    let channel = agent.orchestrator().await;
    let mut spec = instance_spec(INSTANCE, &agent.dev_data_root());
    spec.log_sources = vec![LogSource { source: Some(Source::FileGlob(file.to_string_lossy().into_owned())) }];
    let drain = Drain {
        name: "rsyslog".into(),
        target: Some(Target::Syslog(SyslogDrain {
            address: format!("127.0.0.1:{}", receiver.port),
            tls: false,
            ca_pem: String::new(),
        })),
    };
    let cpu0 = bench_stats::cpu_seconds(pid)?;
    let t0 = Instant::now();
    InstancesClient::new(channel.clone())
        .register_instance(RegisterInstanceRequest { request_id: "reg".into(), id: INSTANCE.into(), spec: Some(spec) })
        .await
        .with_context(|| format!("RegisterInstance\n{}", agent.log()))?;
    LogsClient::new(channel)
        .set_drains(SetDrainsRequest { request_id: "drains".into(), instance_id: INSTANCE.into(), drains: vec![drain] })
        .await
        .with_context(|| format!("SetDrains\n{}", agent.log()))?;
    let (done, in_order) =
        tokio::task::block_in_place(|| wait_complete(receiver, expected, "dbagent")).with_context(|| agent.log())?;
    let cpu = bench_stats::cpu_seconds(pid)? - cpu0;
    let peak_rss_mib = bench_stats::status_mib(pid, "VmHWM")?;
    Ok(RunFigures { in_order, wall: (done - t0).as_secs_f64(), cpu, peak_rss_mib })
}

fn run_rsyslog(
    shipper: Shipper,
    dir: &Path,
    input: &Path,
    receiver: &Rsyslog,
    expected: &[u8],
) -> anyhow::Result<RunFigures> {
    let work = dir.join("sender");
    std::fs::create_dir_all(&work)?;
    let queue = match shipper {
        Shipper::RsyslogQueue => {
            " queue.type=\"LinkedList\" queue.filename=\"fwd\" queue.maxDiskSpace=\"1g\" queue.saveOnShutdown=\"on\" action.resumeRetryCount=\"-1\""
        }
        _ => "",
    };
    let conf = work.join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{w}\")\n\
             module(load=\"imfile\")\n\
             input(type=\"imfile\" file=\"{input}\" tag=\"{INSTANCE}\" freshStartTail=\"off\" ruleset=\"ship\")\n\
             ruleset(name=\"ship\") {{ action(type=\"omfwd\" target=\"127.0.0.1\" port=\"{port}\" protocol=\"tcp\" \
             TCP_Framing=\"octet-counted\" template=\"RSYSLOG_SyslogProtocol23Format\"{queue}) }}\n",
            w = work.display(),
            input = input.display(),
            port = receiver.port,
        ),
    )?;
    let t0 = Instant::now();
    let mut child = Command::new("/usr/sbin/rsyslogd")
        .args(["-n", "-f"])
        .arg(&conf)
        .arg("-i")
        .arg(work.join("pid"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("start rsyslogd (apt-get install rsyslog)")?;
    let result = measure_child(&mut child, receiver, expected, shipper.label(), t0);
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn measure_child(
    child: &mut Child,
    receiver: &Rsyslog,
    expected: &[u8],
    what: &str,
    t0: Instant,
) -> anyhow::Result<RunFigures> {
    let (done, in_order) = wait_complete(receiver, expected, what)?;
    let pid = child.id();
    Ok(RunFigures {
        in_order,
        wall: (done - t0).as_secs_f64(),
        cpu: bench_stats::cpu_seconds(pid)?,
        peak_rss_mib: bench_stats::status_mib(pid, "VmHWM")?,
    })
}
