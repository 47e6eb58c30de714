//! `cargo bench -p dbagent --bench metrics`: one collection of node + 50 instance cgroups (a fixture
//! tree), one collection of the node alone and the parsing of the captured /proc files (what the
//! /proc parsers cost), the Prometheus rendering of the first, and, in the same run, the CPU time one
//! scrape costs a dev-mode dbagent versus Debian's prometheus-node-exporter on this host, plus the
//! idle agent's RSS. The figures go to docs/benchmarks.md ("Metrics").

#![allow(clippy::unwrap_used)]

use dbagent::metrics::collect::{Collector, CollectorPaths, InstanceTarget};
use dbagent::metrics::{MetricsHub, Owner, proc_files, prometheus};
use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const INSTANCES: usize = 50;

/// Kills the child on drop, so a panicking bench leaves no process behind.
struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// utime + stime of a process, in seconds (USER_HZ = 100).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // fields 14 and 15 of stat, counted from the state field (3) here
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_ascii_whitespace().nth(1).unwrap().parse().unwrap()
}

fn scrape(addr: SocketAddr) -> usize {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut body = Vec::new();
    s.read_to_end(&mut body).unwrap();
    body.len()
}

/// CPU seconds the process `pid` spends per scrape, over `n` scrapes.
fn cpu_per_scrape(pid: u32, addr: SocketAddr, n: usize) -> (f64, usize) {
    let size = scrape(addr);
    let before = cpu_seconds(pid);
    for _ in 0..n {
        scrape(addr);
    }
    ((cpu_seconds(pid) - before) / n as f64, size)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/metrics/fixtures/cgroup/system.slice");
    let unit = fixtures.join("system-postgresql.slice/postgresql@15-main.service");
    let targets: Vec<InstanceTarget> = (0..INSTANCES)
        .map(|i| {
            let name = format!("db-{i}.service");
            copy_dir(&unit, &tmp.path().join("cgroup/system.slice").join(&name));
            InstanceTarget { id: format!("db-{i}"), systemd_unit: name, data_dir: "/".into() }
        })
        .collect();
    let paths = CollectorPaths { cgroup_root: tmp.path().join("cgroup"), ..CollectorPaths::default() };
    let mut collector = Collector::new(paths);

    let mut times = Vec::new();
    let mut round = collector.collect(&targets);
    for _ in 0..30 {
        let t = Instant::now();
        round = collector.collect(&targets);
        times.push(t.elapsed());
    }
    let collect = median(times);
    let series = round.node.values.len() + round.instances.iter().map(|(_, r)| r.values.len()).sum::<usize>();

    // The node alone: the /proc files (and a statvfs per filesystem) without the 50 cgroups.
    let mut times = Vec::new();
    let mut node_series = 0;
    for _ in 0..200 {
        let t = Instant::now();
        node_series = collector.collect(&[]).node.values.len();
        times.push(t.elapsed());
    }
    let node = median(times);

    // Parsing alone, on the captured files already in memory: no reads, no statvfs.
    let proc = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/metrics/fixtures/proc");
    let file = |name: &str| std::fs::read_to_string(proc.join(name)).unwrap();
    let (stat, loadavg, meminfo) = (file("stat"), file("loadavg"), file("meminfo"));
    let (diskstats, mountinfo) = (file("diskstats"), file("mountinfo"));
    let pressure = [file("pressure/cpu"), file("pressure/io"), file("pressure/memory")];
    let mut times = Vec::new();
    for _ in 0..1000 {
        let t = Instant::now();
        black_box(proc_files::parse_stat(black_box(&stat)));
        black_box(proc_files::parse_loadavg(black_box(&loadavg)));
        black_box(proc_files::parse_meminfo(black_box(&meminfo)));
        black_box(proc_files::parse_diskstats(black_box(&diskstats)));
        black_box(proc_files::parse_mountinfo(black_box(&mountinfo)));
        for p in &pressure {
            black_box(proc_files::parse_pressure(black_box(p)));
        }
        times.push(t.elapsed());
    }
    let parse = median(times);

    let hub = MetricsHub::new(Duration::from_secs(10), Duration::from_secs(3600));
    let now = SystemTime::now();
    hub.history.push(Owner::Node, now, round.node);
    for (id, r) in round.instances {
        hub.history.push(Owner::Instance(id), now, r);
    }
    let latest = hub.history.latest_all();
    let mut times = Vec::new();
    let mut text = String::new();
    for _ in 0..200 {
        let t = Instant::now();
        text = prometheus::render(&latest);
        times.push(t.elapsed());
    }
    let render = median(times);

    // A dev-mode agent (no instances) against node_exporter: node figures only on both sides.
    let state = tmp.path().join("agent");
    let api = free_port();
    let mut agent = Guard(
        Command::new(env!("CARGO_BIN_EXE_dbagent"))
            .args(["--dev", "--state-dir", state.to_str().unwrap(), "--listen", &format!("127.0.0.1:{api}")])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let agent_pid = agent.0.id();
    let mut lines = BufReader::new(agent.0.stderr.take().unwrap()).lines();
    let ours: SocketAddr = loop {
        let line = lines.next().expect("the agent exited before announcing its Prometheus endpoint").unwrap();
        if let Some(rest) = line.split("Prometheus metrics at http://").nth(1) {
            break rest.trim_end_matches("/metrics").trim().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {}); // keep draining stderr
    std::thread::sleep(Duration::from_secs(3));
    let idle_rss = rss_kib(agent_pid);
    let (ours_cpu, ours_size) = cpu_per_scrape(agent_pid, ours, 2000);
    let rss_after = rss_kib(agent_pid);

    let ne_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let ne = Command::new("prometheus-node-exporter")
        .arg(format!("--web.listen-address={ne_addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start prometheus-node-exporter (apt-get install prometheus-node-exporter): {e}"));
    let ne = Guard(ne);
    wait_for(ne_addr);
    let (ne_cpu, ne_size) = cpu_per_scrape(ne.0.id(), ne_addr, 100);

    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_owned();
    println!(
        "machine: {cpu_model}, {} CPUs, kernel {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim()
    );
    println!("| measurement | result |");
    println!("|---|---|");
    println!(
        "| one collection, node + {INSTANCES} instance cgroups ({series} series) | {:.2} ms (median of 30) |",
        collect.as_secs_f64() * 1e3
    );
    println!(
        "| Prometheus rendering of that ({} bytes) | {:.3} ms (median of 200) |",
        text.len(),
        render.as_secs_f64() * 1e3
    );
    println!(
        "| one collection, node only ({node_series} series) | {:.3} ms (median of 200) |",
        node.as_secs_f64() * 1e3
    );
    println!(
        "| parsing the captured /proc files (stat, loadavg, meminfo, diskstats, mountinfo, 3 pressure) | {:.1} µs (median of 1000) |",
        parse.as_secs_f64() * 1e6
    );
    println!("| CPU per scrape, dbagent (node only, {ours_size} bytes) | {:.3} ms (2000 scrapes) |", ours_cpu * 1e3);
    println!(
        "| CPU per scrape, prometheus-node-exporter 1.5 ({ne_size} bytes) | {:.3} ms (100 scrapes) |",
        ne_cpu * 1e3
    );
    println!("| node_exporter / dbagent CPU per scrape | {:.0}x |", ne_cpu / ours_cpu.max(1e-9));
    println!(
        "| idle dev-mode agent RSS | {:.1} MiB ({:.1} MiB after the scrapes) |",
        idle_rss as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
}
