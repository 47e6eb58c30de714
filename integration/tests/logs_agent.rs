//! The Logs service through the real agent binary (dev mode, gRPC over mTLS): TailLogs from a
//! PostgreSQL-style log file, a syslog drain to a private rsyslogd across a SIGKILL of the agent, and
//! HTTPS drains against a real HTTPS server on 127.0.0.1 (one that answers 503 first).

use dbagent_integration::Agent;
use dbagent_integration::https_sink::HttpsSink;
use dbagent_integration::logship::{Deliveries, numbered_line};
use dbagent_integration::ops::instance_spec;
use dbagent_integration::pki::CertAuthority;
use dbagent_integration::rsyslog::Rsyslog;
use dbagent_proto::v1::drain::Target;
use dbagent_proto::v1::instances_client::InstancesClient;
use dbagent_proto::v1::log_source::Source;
use dbagent_proto::v1::logs_client::LogsClient;
use dbagent_proto::v1::{
    Drain, DrainStatus, GetDrainStatusRequest, HttpsDrain, ListDrainsRequest, LogRecord, LogSource,
    RegisterInstanceRequest, SetDrainsRequest, Severity, SyslogDrain, TailLogsRequest,
};
use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// The rsyslog fixture keeps messages of app-name `inst-1` only; the syslog APP-NAME is the instance id.
const INSTANCE: &str = "inst-1";

fn append(path: &Path, text: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.write_all(text.as_bytes()).unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
}

fn seq_line(i: usize) -> String {
    format!("{}\n", numbered_line(i))
}

/// Registers [`INSTANCE`] with one file glob source, `<dev data root>/pglogs/postgresql-*.log` (file
/// globs must lie below a log root or a data root); returns the folder.
async fn register_with_log_folder(agent: &Agent) -> PathBuf {
    let folder = agent.dev_data_root().join("pglogs");
    std::fs::create_dir_all(&folder).expect("create the log folder");
    let mut spec = instance_spec(INSTANCE, &agent.dev_data_root());
    let glob = folder.join("postgresql-*.log").to_string_lossy().into_owned();
    spec.log_sources = vec![LogSource { source: Some(Source::FileGlob(glob)) }];
    let req = RegisterInstanceRequest { request_id: "reg-logs-1".into(), id: INSTANCE.into(), spec: Some(spec) };
    InstancesClient::new(agent.orchestrator().await)
        .register_instance(req)
        .await
        .unwrap_or_else(|e| panic!("RegisterInstance: {e:?}\n{}", agent.log()));
    folder
}

async fn tail(client: &mut LogsClient<Channel>, last_lines: u32, min_severity: Severity) -> Vec<LogRecord> {
    let req = TailLogsRequest {
        instance_id: INSTANCE.into(),
        last_lines,
        since: None,
        follow: false,
        min_severity: min_severity as i32,
    };
    let mut stream = client.tail_logs(req).await.expect("TailLogs").into_inner();
    let mut records = Vec::new();
    while let Some(r) = stream.message().await.expect("read the TailLogs stream") {
        records.push(r);
    }
    records
}

/// Calls TailLogs until it returns at least `n` records or `timeout` passes.
async fn tail_until(
    client: &mut LogsClient<Channel>,
    n: usize,
    min_severity: Severity,
    timeout: Duration,
) -> Vec<LogRecord> {
    let deadline = Instant::now() + timeout;
    loop {
        let records = tail(client, 1000, min_severity).await;
        if records.len() >= n || Instant::now() > deadline {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn summary(records: &[LogRecord]) -> Vec<(Severity, String)> {
    records.iter().map(|r| (r.severity(), r.message.clone())).collect()
}

const PG_LINES: &str = "\
2024-05-01 10:00:00.000 UTC [7] LOG:  database system is ready to accept connections
2024-05-01 10:00:01.000 UTC [8] ERROR:  relation \"missing\" does not exist at character 15
2024-05-01 10:00:02.000 UTC [9] LOG:  duration: 1.042 ms  statement: SELECT a,
\t       b
\t  FROM t
2024-05-01 10:00:03.000 UTC [10] ERROR:  division by zero
2024-05-01 10:00:04.000 UTC [11] LOG:  checkpoint starting: time
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_logs_returns_joined_records_in_order_filters_by_severity_and_follows() {
    let agent = Agent::start_dev();
    let folder = register_with_log_folder(&agent).await;
    let log = folder.join("postgresql-15-main.log");
    append(&log, PG_LINES);

    let mut client = LogsClient::new(agent.orchestrator().await);
    // The last record is handed on after `flush_after_ms` of quiet; the instance's reader starts
    // within the manager's reconcile interval.
    let records = tail_until(&mut client, 5, Severity::Unspecified, Duration::from_secs(20)).await;
    let expected = vec![
        (
            Severity::Info,
            "2024-05-01 10:00:00.000 UTC [7] LOG:  database system is ready to accept connections".to_owned(),
        ),
        (
            Severity::Error,
            "2024-05-01 10:00:01.000 UTC [8] ERROR:  relation \"missing\" does not exist at character 15".to_owned(),
        ),
        (
            Severity::Info,
            "2024-05-01 10:00:02.000 UTC [9] LOG:  duration: 1.042 ms  statement: SELECT a,\n\t       b\n\t  FROM t"
                .to_owned(),
        ),
        (Severity::Error, "2024-05-01 10:00:03.000 UTC [10] ERROR:  division by zero".to_owned()),
        (Severity::Info, "2024-05-01 10:00:04.000 UTC [11] LOG:  checkpoint starting: time".to_owned()),
    ];
    assert_eq!(summary(&records), expected, "TailLogs backlog\n{}", agent.log());
    let source = log.to_string_lossy();
    for r in &records {
        assert_eq!(r.instance_id, INSTANCE);
        assert_eq!(r.source, source, "records name the file they came from");
        assert!(r.time.is_some(), "records carry a time");
        assert_eq!(r.missed_before, 0);
    }

    let last_two = tail(&mut client, 2, Severity::Unspecified).await;
    assert_eq!(summary(&last_two), expected[3..].to_vec(), "last_lines = 2 gives the newest two, oldest first");

    let errors = tail(&mut client, 1000, Severity::Error).await;
    let expected_errors: Vec<_> = expected.iter().filter(|(s, _)| *s == Severity::Error).cloned().collect();
    assert_eq!(summary(&errors), expected_errors, "min_severity = ERROR keeps ERROR and above only");

    let unknown = TailLogsRequest { instance_id: "no-such-instance".into(), ..Default::default() };
    let err = client.tail_logs(unknown).await.expect_err("TailLogs of an unknown instance");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let bad = Drain {
        name: "Bad Name".into(),
        target: Some(Target::Https(HttpsDrain { url: "http://127.0.0.1:1/".into(), ca_pem: String::new() })),
    };
    let err = client
        .set_drains(SetDrainsRequest {
            request_id: "bad-drains-1".into(),
            instance_id: INSTANCE.into(),
            drains: vec![bad],
        })
        .await
        .expect_err("SetDrains with an invalid drain");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // Follow: a line appended after the call arrives on the open stream.
    let req =
        TailLogsRequest { instance_id: INSTANCE.into(), last_lines: 1, since: None, follow: true, min_severity: 0 };
    let mut stream = client.tail_logs(req).await.expect("TailLogs follow").into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the backlog record arrives")
        .expect("read")
        .expect("one record");
    assert_eq!(first.message, expected[4].1);
    let appended = "2024-05-01 10:00:05.000 UTC [12] FATAL:  terminating connection due to administrator command";
    append(&log, &format!("{appended}\n"));
    let followed = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .unwrap_or_else(|_| panic!("the appended line did not arrive within 20 s\n{}", agent.log()))
        .expect("read the follow stream")
        .expect("the stream stays open");
    assert_eq!((followed.severity(), followed.message.as_str()), (Severity::Critical, appended));
    drop(stream);

    // A monitor may read logs but not change where they go.
    let mut monitor = LogsClient::new(agent.monitor().await);
    let seen_by_monitor = tail(&mut monitor, 1000, Severity::Error).await;
    assert_eq!(seen_by_monitor.len(), 3, "the monitor tails too: {:?}", summary(&seen_by_monitor));
    let denied = monitor
        .set_drains(SetDrainsRequest {
            request_id: "monitor-drains-1".into(),
            instance_id: INSTANCE.into(),
            drains: vec![],
        })
        .await
        .expect_err("a monitor must not set drains");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
}

/// Every Logs call answers by its instance id as the registry does: a malformed id is INVALID_ARGUMENT
/// (not INTERNAL), an unknown instance NOT_FOUND, and a registered instance goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_calls_answer_invalid_argument_for_a_bad_id_and_not_found_for_an_unknown_instance() {
    let agent = Agent::start_dev();
    register_with_log_folder(&agent).await;
    let mut client = LogsClient::new(agent.orchestrator().await);
    let unreachable = Drain {
        name: "d".into(),
        target: Some(Target::Syslog(SyslogDrain { address: "127.0.0.1:9".into(), tls: false, ca_pem: String::new() })),
    };
    let code = |r: Result<tonic::Code, tonic::Status>| r.unwrap_or_else(|e| e.code());
    for (n, (id, expected)) in
        [("", tonic::Code::InvalidArgument), ("no-such-instance", tonic::Code::NotFound), (INSTANCE, tonic::Code::Ok)]
            .into_iter()
            .enumerate()
    {
        let set = client
            .set_drains(SetDrainsRequest {
                request_id: format!("codes-{n}"),
                instance_id: id.into(),
                drains: vec![unreachable.clone()],
            })
            .await;
        assert_eq!(code(set.map(|_| tonic::Code::Ok)), expected, "SetDrains {id:?}\n{}", agent.log());
        let list = client.list_drains(ListDrainsRequest { instance_id: id.into() }).await;
        assert_eq!(code(list.map(|_| tonic::Code::Ok)), expected, "ListDrains {id:?}");
        let status = client.get_drain_status(GetDrainStatusRequest { instance_id: id.into(), drain: "d".into() }).await;
        assert_eq!(code(status.map(|_| tonic::Code::Ok)), expected, "GetDrainStatus {id:?}");
    }
    // TailLogs reads an empty instance_id as "every instance", so its malformed id is another one.
    for (id, expected) in [
        ("Not An Id", tonic::Code::InvalidArgument),
        ("no-such-instance", tonic::Code::NotFound),
        (INSTANCE, tonic::Code::Ok),
        ("", tonic::Code::Ok),
    ] {
        let tail = client.tail_logs(TailLogsRequest { instance_id: id.into(), ..Default::default() }).await;
        assert_eq!(code(tail.map(|_| tonic::Code::Ok)), expected, "TailLogs {id:?}");
    }
}

async fn drain_status(client: &mut LogsClient<Channel>, drain: &str) -> DrainStatus {
    client
        .get_drain_status(GetDrainStatusRequest { instance_id: INSTANCE.into(), drain: drain.into() })
        .await
        .expect("GetDrainStatus")
        .into_inner()
}

async fn set_drains(agent: &Agent, drains: Vec<Drain>) {
    let mut client = LogsClient::new(agent.orchestrator().await);
    let set = client
        .set_drains(SetDrainsRequest {
            request_id: "set-drains-1".into(),
            instance_id: INSTANCE.into(),
            drains: drains.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("SetDrains: {e:?}\n{}", agent.log()))
        .into_inner();
    assert_eq!(set.drains, drains);
    let listed =
        client.list_drains(ListDrainsRequest { instance_id: INSTANCE.into() }).await.expect("ListDrains").into_inner();
    assert_eq!(listed.drains, drains);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_drain_delivers_every_line_across_a_sigkill_of_the_agent() {
    let rsyslog_dir = tempfile::tempdir().expect("create the rsyslog folder");
    let rsyslog = Rsyslog::start(rsyslog_dir.path(), None);
    let mut agent = Agent::start_dev();
    let folder = register_with_log_folder(&agent).await;
    let log = folder.join("postgresql-15-main.log");
    const N: usize = 30_000;
    append(&log, &(0..1000).map(seq_line).collect::<String>());
    let drain = rsyslog.plain_drain();
    set_drains(&agent, vec![drain]).await;

    let writer_log = log.clone();
    let writer = std::thread::spawn(move || {
        for start in (1000..N).step_by(100) {
            append(&writer_log, &(start..start + 100).map(seq_line).collect::<String>());
            std::thread::sleep(Duration::from_millis(40));
        }
    });

    let mut client = LogsClient::new(agent.orchestrator().await);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let s = drain_status(&mut client, "rsyslog").await;
        if s.delivered_records >= 1000 && s.last_ack.is_some() {
            break s;
        }
        assert!(Instant::now() < deadline, "the drain delivered nothing within 30 s: {s:?}\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.drain, "rsyslog");
    assert!(status.last_error.is_empty(), "{status:?}");
    assert!(!rsyslog.received().is_empty(), "rsyslog got lines once the drain reported deliveries");

    agent.kill9();
    // Everything the killed agent sent is written before the restarted one sends: the arrivals from
    // here on are the restarted agent's.
    rsyslog.wait_connections_closed(Duration::from_secs(30));
    let at_kill = rsyslog.received().len();
    assert!(at_kill < N, "the kill happened mid-stream: {at_kill} of {N} received");
    agent.restart();
    writer.join().expect("the writer thread");

    let deadline = Instant::now() + Duration::from_secs(120);
    let got = loop {
        let got = Deliveries::check(&rsyslog.received(), N);
        if got.distinct() >= N || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(got.distinct(), N, "every written line arrived; first missing {:?}\n{}", got.missing(), agent.log());
    let (before, after) = (got.repeats_in(0, at_kill), got.repeats_in(at_kill, got.seqs().len()));
    assert_eq!(before, 0, "before the SIGKILL nothing arrived twice");
    // At most the batch in flight at the kill comes twice: `batch_max_bytes` (2 MiB) of wire data,
    // over 100 bytes per record here.
    assert!(after <= (2 << 20) / 100, "{after} lines arrived again after one SIGKILL");
    eprintln!("received {} lines, {N} distinct, {after} again after the SIGKILL at {at_kill}", got.seqs().len());

    let mut client = LogsClient::new(agent.orchestrator().await);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = drain_status(&mut client, "rsyslog").await;
        if s.buffered_records == 0 && s.delivered_records > 0 && s.last_ack.is_some() {
            assert!(s.last_error.is_empty(), "{s:?}");
            break;
        }
        assert!(Instant::now() < deadline, "after the restart the buffer did not empty: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Registers the instance, writes a PostgreSQL log with a multi-line record and `n` numbered lines,
/// sets an HTTPS drain to `sink`, and checks every record arrives with its content.
async fn https_drain_delivers(sink: &HttpsSink, ca_pem: &str, n: usize) -> Agent {
    let agent = Agent::start_dev();
    let folder = register_with_log_folder(&agent).await;
    let log = folder.join("postgresql-15-main.log");
    append(&log, "2024-05-01 10:00:00.000 UTC [9] ERROR:  syntax error at or near \"SELEC\"\n\tLINE 1: SELEC 1\n");
    append(&log, &(0..n).map(seq_line).collect::<String>());
    let drain = Drain {
        name: "https".into(),
        target: Some(Target::Https(HttpsDrain { url: sink.url("/ingest"), ca_pem: ca_pem.to_owned() })),
    };
    set_drains(&agent, vec![drain]).await;

    let lines = sink.wait_for(Duration::from_secs(60), |l| l.len() > n).await;
    assert_eq!(lines.len(), n + 1, "every record was accepted once; sink errors: {:?}\n{}", sink.errors(), agent.log());
    let first = &lines[0];
    assert_eq!(
        first["message"],
        "2024-05-01 10:00:00.000 UTC [9] ERROR:  syntax error at or near \"SELEC\"\n\tLINE 1: SELEC 1"
    );
    assert_eq!(first["severity"], "error");
    assert_eq!(first["instance"], INSTANCE);
    assert_eq!(first["source"], log.to_string_lossy().as_ref());
    assert!(first["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{first}");
    assert!(first["host"].as_str().is_some_and(|h| !h.is_empty()), "{first}");
    let numbered: Vec<&str> = lines[1..].iter().map(|l| l["message"].as_str().expect("a message")).collect();
    let first_bad = numbered.iter().enumerate().find(|(i, m)| **m != numbered_line(*i)).map(|(i, _)| i);
    assert_eq!(first_bad, None, "lines arrive whole, in order, each once: {:?}", first_bad.map(|i| numbered[i]));
    assert!(lines[1..].iter().all(|l| l["severity"] == "info"));
    for post in sink.posts() {
        assert_eq!(
            (post.path.as_str(), post.host, post.content_type.as_str()),
            ("/ingest", sink.authority(), "application/x-ndjson")
        );
    }

    let mut client = LogsClient::new(agent.orchestrator().await);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = drain_status(&mut client, "https").await;
        if s.delivered_records == u64::try_from(n + 1).expect("fits") && s.buffered_records == 0 {
            assert!(s.last_ack.is_some() && s.last_error.is_empty(), "{s:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the status does not show the deliveries: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    agent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_drain_posts_json_lines_to_a_real_https_server() {
    let ca = CertAuthority::new("logs https sink CA");
    let sink = HttpsSink::start(&ca.server(), 0).await;
    let _agent = https_drain_delivers(&sink, ca.cert_pem(), 2000).await;
    assert!(sink.posts().iter().all(|p| p.status == 200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_drain_retries_a_batch_answered_503_and_loses_nothing() {
    let ca = CertAuthority::new("logs https sink CA");
    let sink = HttpsSink::start(&ca.server(), 1).await;
    let agent = https_drain_delivers(&sink, ca.cert_pem(), 500).await;
    let posts = sink.posts();
    assert_eq!(posts[0].status, 503, "the first POST was refused");
    let refused: Vec<String> = posts[0].json_lines().iter().map(|l| l["message"].to_string()).collect();
    assert!(!refused.is_empty());
    let accepted: HashSet<String> = sink.accepted_lines().iter().map(|l| l["message"].to_string()).collect();
    assert!(refused.iter().all(|m| accepted.contains(m)), "the refused batch was delivered on retry");
    let mut client = LogsClient::new(agent.orchestrator().await);
    let status = drain_status(&mut client, "https").await;
    assert!(status.last_error.is_empty(), "the error clears after a delivery: {status:?}");
}

/// A drain URL may carry a token in its query: the orchestrator, which set it, reads it back whole;
/// the read-only monitor gets the URL with the query redacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_drains_shows_the_orchestrator_the_whole_url_and_the_monitor_no_token() {
    let agent = Agent::start_dev();
    register_with_log_folder(&agent).await;
    let url = "https://127.0.0.1:1/ingest?token=s3cret-token";
    let drain = Drain {
        name: "https".into(),
        target: Some(Target::Https(HttpsDrain { url: url.into(), ca_pem: String::new() })),
    };
    // Asserts that the orchestrator's ListDrains returns the drain as set.
    set_drains(&agent, vec![drain]).await;
    let mut monitor = LogsClient::new(agent.monitor().await);
    let listed = monitor
        .list_drains(ListDrainsRequest { instance_id: INSTANCE.into() })
        .await
        .expect("a monitor may list drains")
        .into_inner();
    let Some(Target::Https(seen)) = listed.drains.first().and_then(|d| d.target.clone()) else {
        panic!("the monitor sees the drain: {listed:?}")
    };
    assert_eq!(seen.url, "https://127.0.0.1:1/ingest?REDACTED");
    assert!(!format!("{listed:?}").contains("s3cret-token"), "the token reached the monitor");
}

/// The dev agent's drain policy allows loopback only: a private address, a link-local metadata URL
/// and a public plaintext syslog address are refused at SetDrains naming the field; loopback passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_drains_refuses_destinations_outside_the_drain_policy_naming_the_field() {
    let agent = Agent::start_dev();
    register_with_log_folder(&agent).await;
    let mut client = LogsClient::new(agent.orchestrator().await);
    let syslog =
        |address: &str, tls: bool| Target::Syslog(SyslogDrain { address: address.into(), tls, ca_pem: String::new() });
    let https = |url: &str| Target::Https(HttpsDrain { url: url.into(), ca_pem: String::new() });
    for (i, (target, field, why)) in [
        (syslog("10.0.0.5:6514", true), "drains[0].syslog.address", "private"),
        (https("https://169.254.169.254/latest/meta-data"), "drains[0].https.url", "link-local"),
        (syslog("192.0.2.10:514", false), "drains[0].syslog.address", "plaintext syslog"),
    ]
    .into_iter()
    .enumerate()
    {
        let drain = Drain { name: "d".into(), target: Some(target) };
        let req =
            SetDrainsRequest { request_id: format!("policy-{i}"), instance_id: INSTANCE.into(), drains: vec![drain] };
        let e = client.set_drains(req).await.expect_err("a refused destination");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(field) && e.message().contains(why), "{}", e.message());
    }
    let listed = client.list_drains(ListDrainsRequest { instance_id: INSTANCE.into() }).await.expect("ListDrains");
    assert!(listed.into_inner().drains.is_empty(), "nothing refused was stored");
    let allowed = Drain { name: "local".into(), target: Some(syslog("127.0.0.1:9", false)) };
    set_drains(&agent, vec![allowed]).await;
}
