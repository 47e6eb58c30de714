//! Load bench of the agent's API over mTLS, against a dev-mode agent on 127.0.0.1.
//!
//! Phase 1: C concurrent GetStatus loops spread over N connections for D seconds: requests/s and
//! latency percentiles. Phase 2: K TLS connections opened at once, each doing one GetStatus and
//! holding on until all K are open, then a second GetStatus on each: errors and time to establish.
//!
//! With `--peer-etcd`, phase 1 runs twice more with the standard `grpc.health.v1.Health/Check`:
//! against the agent, and against etcd (Debian's etcd-server, Go gRPC) serving the agent's own dev
//! certificate with client-certificate auth, so both peers answer the same call from the same
//! client over the same mTLS in the same run.
//!
//! Usage: loadbench [--streams C] [--connections N] [--seconds D] [--hold K] [--client-threads T] [--peer-etcd]
//! Defaults: 64 streams over 8 connections for 10 s, 1000 held connections, 2 client threads. Set
//! DBAGENT_BIN to a release build for meaningful figures. The client shares the machine with the
//! agent, so its threads compete with the agent's: `--client-threads 1` shows how much.

use anyhow::{Context, bail};
use dbagent_integration::{Agent, ClientIdentity, connect};
use dbagent_proto::v1::GetStatusRequest;
use dbagent_proto::v1::agent_client::AgentClient;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Barrier;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Bounds phase 2 so a wedged agent cannot hang the bench.
const HOLD_PHASE_TIMEOUT: Duration = Duration::from_secs(120);

struct Args {
    streams: usize,
    connections: usize,
    seconds: u64,
    hold: usize,
    client_threads: usize,
    peer_etcd: bool,
}

/// What each stream calls in a loop.
#[derive(Clone, Copy)]
enum Call {
    Status,
    Health,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args { streams: 64, connections: 8, seconds: 10, hold: 1000, client_threads: 2, peer_etcd: false };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--peer-etcd" {
            args.peer_etcd = true;
            continue;
        }
        let mut value = || -> anyhow::Result<u64> {
            let v = it.next().with_context(|| format!("{flag} needs a value"))?;
            v.parse().with_context(|| format!("{flag} {v:?} is not a number"))
        };
        match flag.as_str() {
            "--streams" => args.streams = usize::try_from(value()?)?,
            "--connections" => args.connections = usize::try_from(value()?)?,
            "--seconds" => args.seconds = value()?.min(600),
            "--hold" => args.hold = usize::try_from(value()?)?,
            "--client-threads" => args.client_threads = usize::try_from(value()?)?.clamp(1, 64),
            other => bail!(
                "unknown argument {other:?}; usage: loadbench [--streams C] [--connections N] [--seconds D] [--hold K] [--client-threads T] [--peer-etcd]"
            ),
        }
    }
    if args.streams == 0 || args.connections == 0 || args.seconds == 0 {
        bail!("--streams, --connections and --seconds must be at least 1");
    }
    Ok(args)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads)
        .enable_all()
        .build()
        .context("client runtime")?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    println!("client: {} runtime threads", args.client_threads);
    let agent = Agent::start_dev();
    println!("agent: {} (pid {})", dbagent_integration::agent::agent_binary().display(), agent.pid().unwrap_or(0));
    let identity = agent.dev_identity("orchestrator");

    throughput("dbagent GetStatus", agent.addr(), &identity, &args, Call::Status).await?;
    if args.peer_etcd {
        throughput("dbagent Health/Check", agent.addr(), &identity, &args, Call::Health).await?;
        let etcd = Etcd::start(agent.state_dir())?;
        throughput("etcd Health/Check", etcd.addr, &identity, &args, Call::Health).await?;
    }
    if args.hold > 0 {
        hold_many(&agent, &identity, args.hold).await?;
    }
    Ok(())
}

async fn throughput(
    label: &str,
    addr: SocketAddr,
    identity: &ClientIdentity,
    args: &Args,
    call: Call,
) -> anyhow::Result<()> {
    let mut channels = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        channels.push(connect(addr, identity).await.with_context(|| format!("connect to {addr} for {label}"))?);
    }
    let duration = Duration::from_secs(args.seconds);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(args.streams);
    for i in 0..args.streams {
        let channel = channels[i % channels.len()].clone();
        let (mut agent_client, mut health) = (AgentClient::new(channel.clone()), HealthClient::new(channel));
        tasks.push(tokio::spawn(async move {
            let mut latencies_us: Vec<u32> = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let ok = match call {
                    Call::Status => agent_client.get_status(GetStatusRequest {}).await.is_ok(),
                    Call::Health => health.check(HealthCheckRequest { service: String::new() }).await.is_ok(),
                };
                match ok {
                    true => latencies_us.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX)),
                    false => errors += 1,
                }
            }
            (latencies_us, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (lat, err) = task.await.context("join a phase 1 task")?;
        all.extend(lat);
        errors += err;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        // Nearest-rank percentile; the float-to-index cast is the intent here.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        let idx = ((p / 100.0) * all.len() as f64).ceil() as usize;
        f64::from(all[idx.clamp(1, all.len()) - 1]) / 1000.0
    };
    #[allow(clippy::cast_precision_loss)]
    let rate = all.len() as f64 / elapsed;
    println!("phase 1: {label}, {} streams over {} connections, {:.1} s", args.streams, args.connections, elapsed);
    println!("  requests   {}", all.len());
    println!("  errors     {errors}");
    println!("  rate       {rate:.0} req/s");
    println!("  latency ms p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}", pct(50.0), pct(90.0), pct(99.0), pct(100.0));
    Ok(())
}

async fn hold_many(agent: &Agent, identity: &ClientIdentity, count: usize) -> anyhow::Result<()> {
    let barrier = Arc::new(Barrier::new(count + 1));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count {
        let (barrier, identity, addr) = (barrier.clone(), identity.clone(), agent.addr());
        tasks.push(tokio::spawn(async move {
            let first: Result<Channel, String> = async {
                let channel = connect(addr, &identity).await.map_err(|e| format!("connect: {e:?}"))?;
                AgentClient::new(channel.clone())
                    .get_status(GetStatusRequest {})
                    .await
                    .map_err(|s| format!("first call: {s}"))?;
                Ok(channel)
            }
            .await;
            // Every task arrives, failed or not, so the barrier always opens.
            barrier.wait().await;
            let channel = first?;
            AgentClient::new(channel.clone())
                .get_status(GetStatusRequest {})
                .await
                .map_err(|s| format!("second call: {s}"))?;
            Ok::<Channel, String>(channel)
        }));
    }
    let all_open = tokio::time::timeout(HOLD_PHASE_TIMEOUT, barrier.wait()).await;
    let establish = started.elapsed();
    if all_open.is_err() {
        bail!("phase 2: not all {count} connections finished their first call within {HOLD_PHASE_TIMEOUT:?}");
    }
    let mut errors = Vec::new();
    let mut held = Vec::with_capacity(count);
    for task in tasks {
        match tokio::time::timeout(HOLD_PHASE_TIMEOUT, task).await {
            Ok(Ok(Ok(channel))) => held.push(channel),
            Ok(Ok(Err(e))) => errors.push(e),
            Ok(Err(e)) => errors.push(format!("task: {e}")),
            Err(_) => errors.push("second call timed out".to_owned()),
        }
    }
    let total = started.elapsed();
    println!("phase 2: {count} concurrent TLS connections, one GetStatus each, held, then a second");
    println!("  all open after  {:.3} s", establish.as_secs_f64());
    println!("  all done after  {:.3} s", total.as_secs_f64());
    println!("  errors          {}", errors.len());
    for e in errors.iter().take(5) {
        println!("    {e}");
    }
    drop(held);
    if !errors.is_empty() {
        bail!("phase 2 had {} errors", errors.len());
    }
    Ok(())
}

/// A single-member etcd on 127.0.0.1 that serves the agent's dev server certificate and requires
/// client certificates from the dev CA; killed on drop.
struct Etcd {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Etcd {
    fn start(agent_state: &Path) -> anyhow::Result<Self> {
        let tls = agent_state.join("tls");
        let dir = tempfile::tempdir().context("etcd data folder")?;
        let (client, peer) = (dbagent_integration::servers::free_port(), dbagent_integration::servers::free_port());
        let file = |name: &str| tls.join(name).to_string_lossy().into_owned();
        let child = Command::new("etcd")
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &format!("https://127.0.0.1:{client}")])
            .args(["--advertise-client-urls", &format!("https://127.0.0.1:{client}")])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-cluster", &format!("bench=http://127.0.0.1:{peer}")])
            .args(["--cert-file", &file("server.crt"), "--key-file", &file("server.key")])
            .args(["--client-cert-auth", "--trusted-ca-file", &file("ca.crt")])
            .args(["--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("etcd.log"))?)
            .spawn()
            .context("start etcd (apt-get install etcd-server)")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], client));
        let etcd = Self { child, addr, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                bail!("etcd did not listen on {addr} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        println!(
            "peer: {} (pid {})",
            String::from_utf8_lossy(&Command::new("etcd").arg("--version").output()?.stdout)
                .lines()
                .next()
                .unwrap_or("etcd"),
            etcd.child.id()
        );
        Ok(etcd)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
