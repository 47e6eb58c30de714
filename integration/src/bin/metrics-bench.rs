//! The whole cost of metrics, side by side: CPU seconds per minute of each process (utime + stime
//! from /proc/PID/stat) while one scraper fetches each endpoint every 10 s, for
//! - Debian's prometheus-node-exporter with `--collector.disable-defaults` and only the collectors
//!   that match what dbagent reports of the node,
//! - `dbagent --dev` (the binary in DBAGENT_BIN, shipped defaults) with no instances,
//! - `dbagent --dev --sim` with 50 registered instances, each with a sim volume and a real cgroup v2
//!   folder holding a sleeping process, so the collector reads real cgroup files every round.
//!
//! The three run at the same time for the whole duration (each is nearly idle, so they hardly
//! disturb each other); CPU is read at the end of every window and reported per minute as median
//! and spread over the windows. Prints a Markdown section (`## Metrics`) on stdout, progress on
//! stderr. Needs root (cgroup folders, a private mount namespace for the 50-instance agent).
//!
//! Usage: metrics-bench [--windows N (5)] [--window-secs S (60)] [--instances K (50)]

use anyhow::{Context, bail};
use dbagent_integration::bench_stats;
use dbagent_integration::{ClientIdentity, connect};
use dbagent_proto::v1::instances_client::InstancesClient;
use dbagent_proto::v1::operations_client::OperationsClient;
use dbagent_proto::v1::volumes_client::VolumesClient;
use dbagent_proto::v1::{CreateVolumeRequest, OperationState, RegisterInstanceRequest};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The scrape interval of every endpoint, and dbagent's default collection interval.
const SCRAPE_INTERVAL: Duration = Duration::from_secs(10);
/// Start-up (and the 50 registrations) settle before the first window.
const WARM_UP: Duration = Duration::from_secs(15);
/// node_exporter's collectors that match dbagent's node series (docs/metrics.md): CPU times, load,
/// memory, filesystems, disks, pressure.
const NODE_EXPORTER_COLLECTORS: &[&str] = &["cpu", "loadavg", "meminfo", "filesystem", "diskstats", "pressure"];

struct Args {
    windows: usize,
    window: Duration,
    instances: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args { windows: 5, window: Duration::from_secs(60), instances: 50 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v: u64 = it
            .next()
            .with_context(|| format!("{flag} needs a value"))?
            .parse()
            .with_context(|| format!("{flag} needs a number"))?;
        match flag.as_str() {
            "--windows" => args.windows = usize::try_from(v)?,
            "--window-secs" => args.window = Duration::from_secs(v),
            "--instances" => args.instances = usize::try_from(v)?,
            other => bail!(
                "unknown argument {other:?}; usage: metrics-bench [--windows N] [--window-secs S] [--instances K]"
            ),
        }
    }
    if args.windows == 0 || args.window < SCRAPE_INTERVAL {
        bail!("--windows must be at least 1 and --window-secs at least {}", SCRAPE_INTERVAL.as_secs());
    }
    Ok(args)
}

/// A process under measurement: its pid, its endpoint, the latest scrape's size and series count.
struct Side {
    name: String,
    child: Child,
    /// The process's own cgroup v2 folder: its cpu.stat counts every thread in microseconds.
    cgroup: PathBuf,
    endpoint: SocketAddr,
    /// Holds the endpoint's port for the process's life (it binds over the reservation).
    _port: dbagent_integration::servers::ReservedPort,
    bytes: usize,
    series: usize,
    scrapes: usize,
    cpu_per_min: Vec<f64>,
}

impl Drop for Side {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    dbagent_integration::install_crypto_provider();
    let scratch = tempfile::Builder::new().prefix("metrics-bench-").tempdir()?;
    let load_before = bench_stats::load_average();
    let cgroups = InstanceCgroups::create(args.instances)?;

    let ne = start_node_exporter(&cgroups)?;
    let empty = start_agent(&scratch.path().join("empty"), None, &cgroups)?;
    let full = start_agent(&scratch.path().join("full"), Some(&cgroups.instances), &cgroups)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(register_instances(&full.1, args.instances))?;
    let mut sides = vec![ne, empty.0, full.0];
    sides[1].name = "dbagent, no instances".into();
    sides[2].name = format!("dbagent, {} instances", args.instances);

    eprintln!(
        "metrics-bench: warming up {} s, then {} windows of {} s",
        WARM_UP.as_secs(),
        args.windows,
        args.window.as_secs()
    );
    let started = Instant::now();
    let mut next_scrape = started;
    let mut next_window = started + WARM_UP;
    let mut cpu_at: Vec<Option<f64>> = vec![None; sides.len()];
    let mut windows_done = 0;
    while windows_done < args.windows {
        let now = Instant::now();
        if now >= next_scrape {
            for side in &mut sides {
                let body = scrape(side.endpoint).with_context(|| format!("scrape {}", side.name))?;
                side.bytes = body.len();
                side.series = body.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).count();
                side.scrapes += 1;
            }
            next_scrape += SCRAPE_INTERVAL;
        }
        if now >= next_window {
            let minutes = args.window.as_secs_f64() / 60.0;
            for (side, at) in sides.iter_mut().zip(cpu_at.iter_mut()) {
                let cpu = cgroup_cpu_seconds(&side.cgroup).with_context(|| format!("CPU of {}", side.name))?;
                if let Some(prev) = *at {
                    side.cpu_per_min.push((cpu - prev) / minutes);
                }
                *at = Some(cpu);
            }
            if cpu_at.iter().all(Option::is_some) && sides[0].cpu_per_min.len() > windows_done {
                windows_done += 1;
                eprintln!(
                    "metrics-bench: window {windows_done}/{}: {}",
                    args.windows,
                    sides
                        .iter()
                        .map(|s| format!("{} {:.3} s/min", s.name, s.cpu_per_min.last().unwrap_or(&0.0)))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            next_window += args.window;
        }
        let wake = next_scrape.min(next_window);
        std::thread::sleep(wake.saturating_duration_since(Instant::now()));
    }
    let rss: Vec<f64> =
        sides.iter().map(|s| bench_stats::status_mib(s.child.id(), "VmRSS").unwrap_or(f64::NAN)).collect();
    let load_after = bench_stats::load_average();
    print_section(&args, &sides, &rss, &cgroups, &load_before, &load_after);
    drop(sides);
    Ok(())
}

fn print_section(args: &Args, sides: &[Side], rss: &[f64], cgroups: &InstanceCgroups, before: &str, after: &str) {
    let version = Command::new("prometheus-node-exporter")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr))
        .unwrap_or_default();
    let version = version.split_whitespace().nth(2).unwrap_or("?").to_owned();
    println!("## Metrics\n");
    println!(
        "`target/release/metrics-bench` (integration/src/bin/metrics-bench.rs): the three processes below run at the \
         same time; one scraper fetches each endpoint every {} s (plain HTTP, no compression). CPU = user + system \
         time of each process, from `usage_usec` in the cpu.stat of a cgroup v2 folder of its own (every thread, \
         exited ones included, in microseconds: /proc/PID/stat counts 10 ms ticks, too coarse for processes this \
         idle), read at the end of each window of {} s after {} s of warm-up, given per minute as the \
         median [min-max] of {} windows ({} scrapes of each endpoint in all). Load average before: {before}; after: \
         {after}.\n",
        SCRAPE_INTERVAL.as_secs(),
        args.window.as_secs(),
        WARM_UP.as_secs(),
        args.windows,
        sides.first().map_or(0, |s| s.scrapes)
    );
    println!(
        "| process | CPU s per minute, median [min-max] | series per scrape | bytes per scrape | RSS at the end |"
    );
    println!("|---|---|---|---|---|");
    for (side, rss) in sides.iter().zip(rss) {
        println!(
            "| {} | {} | {} | {} | {rss:.1} MiB |",
            side.name,
            bench_stats::show(&side.cpu_per_min, 4),
            side.series,
            side.bytes
        );
        match side.name.as_str() {
            n if n.starts_with("node_exporter") => println!(
                "| | *prometheus-node-exporter {version} (Debian), `--collector.disable-defaults` + {}; it collects \
                 on every scrape. Its output also carries go_*, process_* and promhttp_* series of its own.* | | | |",
                NODE_EXPORTER_COLLECTORS.join(", ")
            ),
            "dbagent, no instances" => println!(
                "| | *`dbagent --dev`, release build, shipped defaults: collects every 10 s whether scraped or not, \
                 keeps a 24 h history, serves the API too (idle here).* | | | |"
            ),
            _ => println!("| | *{}* | | | |", cgroups.caveat),
        }
    }
    let ratio = |i: usize| bench_stats::median(&sides[0].cpu_per_min) / bench_stats::median(&sides[i].cpu_per_min);
    println!();
    println!(
        "node_exporter / dbagent CPU per minute (medians): **x{:.1}** against the agent with no instances (node \
         series on both sides; goal: at least 5x), x{:.1} against the agent with {} instances (which also collects \
         every instance's cgroup, filesystem and volume).\n",
        ratio(1),
        ratio(2),
        args.instances
    );
    println!(
        "Series that differ: node_exporter reports CPU time per CPU and mode (dbagent: all CPUs together, plus a \
         utilization and a CPU count), every /proc/meminfo field (dbagent: total, available, free, cached, buffers, \
         swap total and free), more per-disk figures (dbagent: reads, writes, bytes, time and in-flight), filesystem \
         inodes and read-only flags (dbagent: size, available, used), pressure as totals only (dbagent: the \
         10/60/300 s averages and the total), and its own Go runtime and process series. The series counts above are \
         what each output really held.\n"
    );
}

/// A GET /metrics over plain HTTP/1.1, the body as text.
fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("answer: {}", head.lines().next().unwrap_or(""));
    }
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Ok(dechunk(body));
    }
    Ok(body.to_owned())
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// How to reach a dev agent's API, and where it lets instance data live.
struct Api {
    listen: SocketAddr,
    identity: ClientIdentity,
    data_root: PathBuf,
}

fn wait_listening(addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    if !dbagent_integration::servers::listening_within(addr, Duration::from_secs(30)) {
        bail!("{what} did not listen on {addr} within 30 s");
    }
    Ok(())
}

fn start_node_exporter(cgroups: &InstanceCgroups) -> anyhow::Result<Side> {
    let port = dbagent_integration::servers::ReservedPort::new();
    let addr: SocketAddr = ([127, 0, 0, 1], port.port()).into();
    let mut cmd = Command::new("prometheus-node-exporter");
    cmd.arg(format!("--web.listen-address={addr}")).arg("--collector.disable-defaults");
    for c in NODE_EXPORTER_COLLECTORS {
        cmd.arg(format!("--collector.{c}"));
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start prometheus-node-exporter (apt-get install prometheus-node-exporter)")?;
    let cgroup = cgroups.measure("node-exporter", child.id())?;
    let side = Side {
        name: "node_exporter".into(),
        child,
        cgroup,
        endpoint: addr,
        _port: port,
        bytes: 0,
        series: 0,
        scrapes: 0,
        cpu_per_min: Vec::new(),
    };
    wait_listening(addr, "node_exporter")?;
    Ok(side)
}

/// `dbagent --dev` with its state in `dir`; with `cgroup_root`, in a private mount namespace where
/// that folder is /sys/fs/cgroup (the cgroup v2 view the collector reads).
fn start_agent(dir: &Path, cgroup_root: Option<&Path>, cgroups: &InstanceCgroups) -> anyhow::Result<(Side, Api)> {
    std::fs::create_dir_all(dir)?;
    let bin = dbagent_integration::agent::agent_binary();
    let port = dbagent_integration::servers::ReservedPort::new();
    let listen: SocketAddr = ([127, 0, 0, 1], port.port()).into();
    let state = dir.join("state");
    let mut cmd = match cgroup_root {
        None => Command::new(&bin),
        Some(root) => {
            let mut c = Command::new("unshare");
            c.args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg("mount --bind \"$1\" /sys/fs/cgroup && shift && exec \"$@\"")
                .arg("sh")
                .arg(root)
                .arg(&bin);
            c
        }
    };
    cmd.args(["--dev", "--state-dir"]).arg(&state).args(["--listen", &listen.to_string()]);
    if cgroup_root.is_some() {
        cmd.arg("--sim");
    }
    let stderr_path = dir.join("agent.stderr.log");
    let mut child = cmd
        .env_remove("NOTIFY_SOCKET")
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let cgroup = cgroups.measure(if cgroup_root.is_some() { "dbagent-full" } else { "dbagent-empty" }, child.id())?;
    let stderr = child.stderr.take().context("agent stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let mut log = std::fs::File::create(&stderr_path)?;
    let endpoint: SocketAddr = loop {
        let Some(line) = lines.next() else {
            let _ = child.kill();
            bail!("the agent exited before announcing its Prometheus endpoint; see {}", stderr_path.display());
        };
        let line = line?;
        writeln!(log, "{line}")?;
        if let Some(rest) = line.split("Prometheus metrics at http://").nth(1) {
            break rest.split("/metrics").next().unwrap_or("").trim().parse()?;
        }
    };
    // Keep draining stderr so the agent never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = writeln!(log, "{line}");
        }
    });
    let tls = state.join("tls");
    let identity =
        ClientIdentity::from_files(&tls.join("ca.crt"), &tls.join("orchestrator.crt"), &tls.join("orchestrator.key"))?;
    let side = Side {
        name: "dbagent".into(),
        child,
        cgroup,
        endpoint,
        _port: port,
        bytes: 0,
        series: 0,
        scrapes: 0,
        cpu_per_min: Vec::new(),
    };
    wait_listening(listen, "dbagent's API")?;
    Ok((side, Api { listen, identity, data_root: state.join("data") }))
}

fn unit(i: usize) -> String {
    format!("postgresql@15-b{i:02}.service")
}

fn instance_id(i: usize) -> String {
    format!("bench-{i:02}")
}

/// Registers the instances (their units are those of [`InstanceCgroups`]) and creates a sim volume
/// for each, waiting until every creation succeeded; makes each data folder exist so the collector's
/// statvfs finds it.
async fn register_instances(api: &Api, count: usize) -> anyhow::Result<()> {
    let channel = connect(api.listen, &api.identity).await?;
    let (mut instances, mut volumes, mut ops) =
        (InstancesClient::new(channel.clone()), VolumesClient::new(channel.clone()), OperationsClient::new(channel));
    for i in 0..count {
        let id = instance_id(i);
        let mut spec = dbagent_integration::ops::instance_spec(&id, &api.data_root);
        spec.systemd_unit = unit(i);
        // No scheduled backups: these instances have no database, and a backup attempt (psql,
        // pg_basebackup) would be measured as if it were the cost of metrics.
        spec.backup_policy = None;
        std::fs::create_dir_all(&spec.data_dir)?;
        let req = RegisterInstanceRequest { request_id: format!("reg-{id}"), id: id.clone(), spec: Some(spec) };
        instances.register_instance(req).await.with_context(|| format!("RegisterInstance {id}"))?;
        let op = volumes
            .create_volume(CreateVolumeRequest {
                request_id: format!("vol-{id}"),
                instance_id: id.clone(),
                force: false,
            })
            .await
            .with_context(|| format!("CreateVolume {id}"))?
            .into_inner();
        let done = dbagent_integration::ops::wait_for_state(&mut ops, &op.id, Duration::from_secs(60), |s| {
            !matches!(s, OperationState::Queued | OperationState::Running)
        })
        .await;
        if dbagent_integration::ops::state_of(&done) != OperationState::Succeeded {
            bail!("CreateVolume {id} did not succeed: {done:?}");
        }
    }
    eprintln!("metrics-bench: {count} instances registered, sim volumes created");
    Ok(())
}

/// The bench's cgroup v2 folders under `<v2 mount>/dbagent-bench-PID`: one per instance unit
/// (`instances/system.slice/<unit>`, each holding a `sleep` process; `instances` is what the
/// 50-instance agent sees as /sys/fs/cgroup), and one per measured process (`measure/<name>`).
/// Removed on drop (sleepers killed first; the measured processes must be gone by then).
struct InstanceCgroups {
    root: PathBuf,
    instances: PathBuf,
    sleepers: Vec<Child>,
    caveat: String,
}

impl InstanceCgroups {
    fn create(count: usize) -> anyhow::Result<Self> {
        let v2 = cgroup2_mount()?;
        let root = v2.join(format!("dbagent-bench-{}", std::process::id()));
        let instances = root.join("instances");
        let system = instances.join("system.slice");
        std::fs::create_dir_all(&system).with_context(|| format!("create {} (needs root)", system.display()))?;
        std::fs::create_dir(root.join("measure"))?;
        let mut me = Self { root, instances, sleepers: Vec::new(), caveat: String::new() };
        for i in 0..count {
            let dir = system.join(unit(i));
            std::fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
            let child = Command::new("sleep").arg("infinity").spawn().context("start sleep")?;
            std::fs::write(dir.join("cgroup.procs"), child.id().to_string())
                .with_context(|| format!("move a sleep into {}", dir.display()))?;
            me.sleepers.push(child);
        }
        let first = system.join(unit(0));
        let system_shown = system.display().to_string();
        let files: Vec<&str> = [
            "cpu.stat",
            "memory.current",
            "memory.peak",
            "memory.max",
            "memory.stat",
            "memory.events",
            "io.stat",
            "cpu.pressure",
            "io.pressure",
            "memory.pressure",
        ]
        .into_iter()
        .filter(|f| first.join(f).exists())
        .collect();
        let hybrid = v2 != Path::new("/sys/fs/cgroup");
        me.caveat = format!(
            "`dbagent --dev --sim`, release build, shipped defaults; {count} instances registered through the API, \
             each with a sim volume (no device-mapper, so no per-volume disk series) and a data folder (statvfs). \
             Each instance's unit is a real cgroup v2 folder made by the bench under {system_shown} (the agent sees \
             it as /sys/fs/cgroup/system.slice in a private mount namespace), holding one sleeping process; not \
             systemd units{}. Cgroup \
             files present per instance, read every round: {}{}.",
            if hybrid { " (this host is cgroup v1+v2 hybrid without systemd as PID 1)" } else { "" },
            files.join(", "),
            if files.contains(&"memory.current") {
                String::new()
            } else {
                "; memory.* and io.stat are absent (no memory or io controller on this v2 hierarchy), so each \
                 round reads fewer files than on a pure cgroup v2 host"
                    .to_owned()
            }
        );
        Ok(me)
    }
}

impl InstanceCgroups {
    /// A cgroup folder of its own for process `pid` (moved there with all its threads).
    fn measure(&self, name: &str, pid: u32) -> anyhow::Result<PathBuf> {
        let dir = self.root.join("measure").join(name);
        std::fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("move {name} (pid {pid}) into {}", dir.display()))?;
        Ok(dir)
    }
}

impl Drop for InstanceCgroups {
    fn drop(&mut self) {
        for c in &mut self.sleepers {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Children first: a cgroup folder can only be removed once it has no children.
        for parent in [self.instances.join("system.slice"), self.root.join("measure")] {
            if let Ok(entries) = std::fs::read_dir(&parent) {
                for e in entries.flatten() {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
            let _ = std::fs::remove_dir(&parent);
        }
        let _ = std::fs::remove_dir(&self.instances);
        let _ = std::fs::remove_dir(&self.root);
    }
}

/// `usage_usec` of a cgroup's cpu.stat, in seconds.
fn cgroup_cpu_seconds(dir: &Path) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(dir.join("cpu.stat"))?;
    let usec: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no usage_usec in {}/cpu.stat", dir.display()))?;
    Ok(usec / 1e6)
}

/// Where the cgroup v2 hierarchy is mounted: /sys/fs/cgroup on a pure v2 host, /sys/fs/cgroup/unified
/// on a hybrid one.
fn cgroup2_mount() -> anyhow::Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .context("no cgroup2 mount in /proc/self/mounts")
}
