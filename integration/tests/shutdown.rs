//! Shutdown against the real binary: `api.shutdown_grace_secs` is one deadline for everything that
//! drains (operations, in-flight RPCs, log shipping), and the systemd watchdog is petted through it.

use dbagent_integration::agent::{AgentBuilder, LaunchContext};
use dbagent_integration::config::toml_path;
use dbagent_integration::ops::{instance_spec, sleep_request, state_of, wait_for_state};
use dbagent_integration::pki::{PkiFiles, ServerPki};
use dbagent_integration::{ClientIdentity, Validity};
use dbagent_proto::v1::drain::Target;
use dbagent_proto::v1::instances_client::InstancesClient;
use dbagent_proto::v1::log_source::Source;
use dbagent_proto::v1::logs_client::LogsClient;
use dbagent_proto::v1::operations_client::OperationsClient;
use dbagent_proto::v1::{
    Drain, GetOperationRequest, LogSource, OperationState, RegisterInstanceRequest, SetDrainsRequest, SyslogDrain,
    TailLogsRequest,
};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const GRACE: Duration = Duration::from_secs(3);
const INSTANCE: &str = "shut-1";

/// A config-file agent: dev mode fixes the grace at 5 s and cannot turn on the test switch.
fn config(ctx: &LaunchContext, pki: &PkiFiles) -> String {
    format!(
        r#"state_dir = {state_dir}

[api]
listen = "{listen}"
shutdown_grace_secs = {grace}

[tls]
cert = {cert}
key = {key}
client_ca = {ca}

[auth]
orchestrators = ["orchestrator"]

[operations]
enable_test_kinds = true

[instances]
data_roots = [{data}]

[metrics]
prometheus_listen = "127.0.0.1:0"

[testing]
sleep_outlasts_shutdown = true

# The never-acknowledging receiver listens on 127.0.0.1 without TLS.
[logs.drain_policy]
allowed_cidrs = ["127.0.0.0/8"]
plaintext_syslog_cidrs = ["127.0.0.0/8"]
"#,
        state_dir = toml_path(&ctx.state_dir),
        listen = ctx.listen,
        grace = GRACE.as_secs(),
        cert = toml_path(&pki.cert),
        key = toml_path(&pki.key),
        ca = toml_path(&pki.ca),
        data = toml_path(&ctx.work_dir.join("data")),
    )
}

/// Every datagram the agent sends to NOTIFY_SOCKET, with when it arrived.
fn collect_notifications(sock: UnixDatagram) -> Arc<Mutex<Vec<(Instant, String)>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            out.lock().unwrap_or_else(|p| p.into_inner()).push((Instant::now(), msg));
        }
    });
    seen
}

/// A syslog receiver that reads every batch and never closes its side, so each batch stays
/// unacknowledged (agent/src/logs/drain/transport.rs: the receiver's EOF is the acknowledgement).
fn black_hole() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the syslog receiver");
    let address = listener.local_addr().expect("its address").to_string();
    let received = Arc::new(AtomicUsize::new(0));
    let count = received.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                count.fetch_add(n, Ordering::SeqCst);
            }
            held.push(stream);
        }
    });
    (address, received)
}

async fn wait_until(what: &str, timeout: Duration, log: impl Fn() -> String, done: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen within {timeout:?}\n{}", log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_grace_bounds_the_whole_drain_and_the_watchdog_is_petted_through_it() {
    let sock_dir = tempfile::tempdir().expect("temp dir for the notify socket");
    let sock_path = sock_dir.path().join("notify.sock");
    let notifications = collect_notifications(UnixDatagram::bind(&sock_path).expect("bind the notify socket"));
    let pki = Rc::new(ServerPki::new());
    let for_config = pki.clone();
    let mut agent = AgentBuilder::config(move |ctx: &LaunchContext| {
        std::fs::create_dir_all(ctx.work_dir.join("data/logs")).expect("create the data root");
        config(ctx, &for_config.write(&ctx.work_dir.join("pki")))
    })
    .env("NOTIFY_SOCKET", &sock_path)
    // A pet every 500 ms.
    .env("WATCHDOG_USEC", "1000000")
    .start();
    let identity = ClientIdentity::issued(pki.ca.cert_pem(), &pki.ca.client("orchestrator", Validity::Current));
    let channel = agent.channel(&identity).await;

    // Log shipping: a batch in flight to a receiver that never acknowledges it.
    let data_root = agent.work_dir().join("data");
    let log_file = data_root.join("logs/postgresql.log");
    let mut spec = instance_spec(INSTANCE, &data_root);
    spec.log_sources =
        vec![LogSource { source: Some(Source::FileGlob(data_root.join("logs/*.log").to_string_lossy().into())) }];
    let req = RegisterInstanceRequest { request_id: "reg".into(), id: INSTANCE.into(), spec: Some(spec) };
    InstancesClient::new(channel.clone()).register_instance(req).await.expect("RegisterInstance");
    let (address, received) = black_hole();
    let drain = Drain {
        name: "hole".into(),
        target: Some(Target::Syslog(SyslogDrain { address, tls: false, ca_pem: String::new() })),
    };
    let mut logs = LogsClient::new(channel.clone());
    let req = SetDrainsRequest { request_id: "drains".into(), instance_id: INSTANCE.into(), drains: vec![drain] };
    logs.set_drains(req).await.expect("SetDrains");
    let line = "2024-05-01 10:00:00.000 UTC [7] LOG:  checkpoint starting: time\n";
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_file)
        .and_then(|mut f| f.write_all(line.repeat(20).as_bytes()))
        .expect("write the instance's log");
    wait_until(
        "a batch reaching the syslog receiver",
        Duration::from_secs(30),
        || agent.log(),
        || received.load(Ordering::SeqCst) > 0,
    )
    .await;

    // Operations: a sleep that ignores cancellation.
    let mut ops = OperationsClient::new(channel.clone());
    let op = ops
        .start_sleep(sleep_request("stubborn", "sleeper", Duration::from_secs(120)))
        .await
        .expect("StartSleep")
        .into_inner();
    wait_for_state(&mut ops, &op.id, Duration::from_secs(10), |s| s == OperationState::Running).await;

    // In-flight RPCs: a TailLogs that follows; it has no end of its own, so shutdown must end it
    // (with UNAVAILABLE) rather than let it hold the server until the deadline.
    let follow = TailLogsRequest { follow: true, ..Default::default() };
    let mut tail = logs.tail_logs(follow).await.expect("TailLogs follow").into_inner();
    let tail_end = tokio::spawn(async move {
        loop {
            match tail.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return (Instant::now(), None),
                Err(status) => return (Instant::now(), Some(status)),
            }
        }
    });

    let signalled = Instant::now();
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    let status = agent.wait_exit(GRACE * 5).unwrap_or_else(|| panic!("no exit after SIGTERM\n{}", agent.log()));
    let took = signalled.elapsed();
    eprintln!("SIGTERM to exit with {GRACE:?} of grace: {took:?}");
    let log = agent.log();
    assert_eq!(status.code(), Some(0), "a drain cut off by the deadline is still a clean stop: {status}\n{log}");
    assert!(took >= GRACE - Duration::from_millis(300), "the drain did not wait for the work: {took:?}\n{log}");
    assert!(took < GRACE * 2, "the grace was applied more than once: {took:?}\n{log}");
    for cut_off in [
        "operations still running at the shutdown deadline",
        "the log shipping was still running at the shutdown deadline",
    ] {
        assert!(log.contains(cut_off), "both subsystems outlast the grace; missing {cut_off:?}\n{log}");
    }
    let (ended, status) = tail_end.await.expect("the TailLogs reader");
    let status = status.unwrap_or_else(|| panic!("the follow stream ended without saying why\n{log}"));
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("shutting down"), "{status:?}");
    assert!(ended - signalled < GRACE / 2, "the follow stream held on into the drain: {:?}", ended - signalled);
    assert!(
        !log.contains("the API server was still running at the shutdown deadline"),
        "no in-flight RPC should outlast the grace once follow streams end on shutdown\n{log}"
    );

    let notes = notifications.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let stopping = notes
        .iter()
        .find(|(_, m)| m.lines().any(|l| l == "STOPPING=1"))
        .map(|(t, _)| *t)
        .unwrap_or_else(|| panic!("no STOPPING=1 among {notes:?}"));
    let pets_while_draining =
        notes.iter().filter(|(t, m)| *t > stopping && m.lines().any(|l| l == "WATCHDOG=1")).count();
    assert!(
        pets_while_draining >= 3,
        "a 3 s drain at one pet per 500 ms must pet on, got {pets_while_draining}: {notes:?}"
    );

    agent.restart();
    let mut ops = OperationsClient::new(agent.channel(&identity).await);
    let after = ops.get_operation(GetOperationRequest { id: op.id.clone() }).await.expect("GetOperation").into_inner();
    assert_eq!(state_of(&after), OperationState::Interrupted, "{after:?}");
    let error = after.error.expect("an interrupted operation says why");
    assert!(error.message.contains("the agent stopped while this operation was running"), "{error:?}");
}
