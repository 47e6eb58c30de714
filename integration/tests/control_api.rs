//! Defences of the control API against a client that lost its right to call or that tries to
//! exhaust the agent: revocation of open sessions on SIGHUP, PEM and DER CRLs, stale CRLs, roles
//! bound to names and CAs, handshake and stream limits, and the audit trail of operations.

use dbagent_integration::agent::{AgentBuilder, LaunchContext};
use dbagent_integration::client::endpoint;
use dbagent_integration::config::{custom_config, toml_path, with_lines};
use dbagent_integration::ops::{instance_spec, sleep_request};
use dbagent_integration::pki::{PkiFiles, ServerPki};
use dbagent_integration::{Agent, CallFailure, CertAuthority, ClientIdentity, IssuedCert, Validity, first_get_status};
use dbagent_proto::v1::agent_client::AgentClient;
use dbagent_proto::v1::instances_client::InstancesClient;
use dbagent_proto::v1::log_source::Source;
use dbagent_proto::v1::logs_client::LogsClient;
use dbagent_proto::v1::metrics_client::MetricsClient;
use dbagent_proto::v1::operations_client::OperationsClient;
use dbagent_proto::v1::*;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tonic::Code;
use tonic::transport::Channel;

const INSTANCE: &str = "pg-audit";

type WriteCrl = Box<dyn Fn(&Path)>;

/// An agent on a PKI the test controls, with roles "orchestrator" and "monitor", and `extra`
/// applied to its config text. With `crl`, its one CRL file is `<work>/pki/client.crl`, which
/// `crl` writes before the start.
fn start_agent(
    pki: &Rc<ServerPki>,
    crl: Option<WriteCrl>,
    extra: impl Fn(&LaunchContext, String) -> String + 'static,
) -> Agent {
    let pki = pki.clone();
    AgentBuilder::config(move |ctx: &LaunchContext| {
        let files = pki.write(&ctx.work_dir.join("pki"));
        let crl_path = crl_path(&ctx.work_dir);
        let crls: Vec<&Path> = match &crl {
            Some(write) => {
                write(&crl_path);
                vec![crl_path.as_path()]
            }
            None => Vec::new(),
        };
        extra(ctx, custom_config(ctx, &files, &crls, &["orchestrator"], &["monitor"]))
    })
    .start()
}

fn current(ca: &CertAuthority, name: &str) -> IssuedCert {
    ca.client(name, Validity::Current)
}

fn crl_path(work_dir: &Path) -> PathBuf {
    work_dir.join("pki").join("client.crl")
}

fn identity(pki: &ServerPki, cert: &IssuedCert) -> ClientIdentity {
    ClientIdentity::issued(pki.ca.cert_pem(), cert)
}

fn append(path: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("open the log file");
    writeln!(f, "{line}").expect("append to the log file");
}

const STILL_OPEN: &str = "no such record and no end";

/// Waits for a record of a follow stream whose message contains `text`, skipping others; `Err`
/// says how the stream ended instead, or [`STILL_OPEN`].
async fn record_with(
    stream: &mut tonic::Streaming<LogRecord>,
    text: &str,
    within: Duration,
) -> Result<LogRecord, String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => return Err(STILL_OPEN.into()),
            Ok(Ok(Some(record))) if record.message.contains(text) => return Ok(record),
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => return Err("the stream ended".into()),
            Ok(Err(status)) => return Err(format!("the stream failed: {status:?}")),
        }
    }
}

async fn follow(channel: Channel) -> tonic::Streaming<LogRecord> {
    let req =
        TailLogsRequest { instance_id: INSTANCE.into(), last_lines: 0, since: None, follow: true, min_severity: 0 };
    LogsClient::new(channel).tail_logs(req).await.expect("TailLogs follow").into_inner()
}

/// The attack: a monitor whose certificate the operator revokes keeps its open TailLogs stream,
/// since certificates are checked only at the handshake. The defence: SIGHUP re-checks every open
/// connection against the new CRL and closes the revoked ones, streams included. The new CRL is
/// DER, so this also proves DER CRLs load.
#[tokio::test]
async fn a_revoked_certificate_loses_its_open_tail_logs_stream_on_sighup_while_another_keeps_streaming() {
    let pki = Rc::new(ServerPki::new());
    let for_crl = pki.clone();
    let agent = start_agent(&pki, Some(Box::new(move |path| for_crl.write_crl(path, &[]))), |ctx, config| {
        with_lines(&config, "instances", &format!("data_roots = [{}]", toml_path(&ctx.work_dir.join("data"))))
    });
    let data_root = agent.work_dir().join("data");
    let logs = data_root.join("pglogs");
    std::fs::create_dir_all(&logs).expect("create the log folder");
    let log = logs.join("postgresql-1.log");
    append(&log, "2024-05-01 10:00:00.000 UTC [1] LOG:  started");
    let orchestrator = agent.channel(&identity(&pki, &current(&pki.ca, "orchestrator"))).await;
    let mut spec = instance_spec(INSTANCE, &data_root);
    spec.log_sources = vec![LogSource {
        source: Some(Source::FileGlob(logs.join("postgresql-*.log").to_string_lossy().into_owned())),
    }];
    InstancesClient::new(orchestrator)
        .register_instance(RegisterInstanceRequest {
            request_id: "reg-1".into(),
            id: INSTANCE.into(),
            spec: Some(spec),
        })
        .await
        .unwrap_or_else(|e| panic!("RegisterInstance: {e:?}\n{}", agent.log()));

    // Two monitors, same name, different serials: the CRL tells them apart.
    let revoked = current(&pki.ca, "monitor");
    let kept = current(&pki.ca, "monitor");
    let mut revoked_stream = follow(agent.channel(&identity(&pki, &revoked)).await).await;
    let mut kept_stream = follow(agent.channel(&identity(&pki, &kept)).await).await;
    let first = "2024-05-01 10:00:01.000 UTC [1] LOG:  before the revocation";
    append(&log, first);
    for stream in [&mut revoked_stream, &mut kept_stream] {
        let record = record_with(stream, "before the revocation", Duration::from_secs(20)).await;
        record.unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    }

    std::fs::write(crl_path(agent.work_dir()), pki.ca.crl_der(&[&revoked], 2099)).expect("write the DER CRL");
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    let ended = record_with(&mut revoked_stream, "\u{0}never", Duration::from_secs(10)).await;
    assert!(
        ended.as_ref().is_err_and(|e| e != STILL_OPEN),
        "the revoked monitor's stream must end after SIGHUP, got {ended:?}\n{}",
        agent.log()
    );

    // Beside it, the other monitor's stream goes on: a line appended now still arrives.
    append(&log, "2024-05-01 10:00:02.000 UTC [1] LOG:  after the revocation");
    let record = record_with(&mut kept_stream, "after the revocation", Duration::from_secs(20)).await;
    record.unwrap_or_else(|e| panic!("the other monitor's stream: {e}\n{}", agent.log()));
    // And the revoked certificate cannot come back on a new connection.
    let again = first_get_status(agent.addr(), &identity(&pki, &revoked)).await;
    assert!(again.as_ref().is_err_and(CallFailure::is_transport_refusal), "{again:?}");
    assert!(agent.log().contains("closing connection after the TLS reload"), "{}", agent.log());
}

async fn stale_crl_metric(agent: &Agent, channel: Channel) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut client = MetricsClient::new(channel);
    loop {
        let series = client.get_node_metrics(GetNodeMetricsRequest { range: None }).await.expect("GetNodeMetrics");
        let value = series
            .into_inner()
            .snapshots
            .iter()
            .flat_map(|s| &s.samples)
            .find(|s| s.name == "tls_stale_crls")
            .map(|s| s.value);
        if let Some(value) = value {
            return value;
        }
        assert!(Instant::now() < deadline, "no tls_stale_crls sample within 30 s\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The default for a CRL past its nextUpdate: said loudly (an error in the log, the metric) while
/// the agent keeps serving, so an expired CRL distribution does not lock the orchestrator out.
#[tokio::test]
async fn a_stale_crl_is_reported_in_the_log_and_the_metric_and_clients_are_still_served() {
    let pki = Rc::new(ServerPki::new());
    let for_crl = pki.clone();
    let agent = start_agent(
        &pki,
        Some(Box::new(move |path| std::fs::write(path, for_crl.ca.crl_der(&[], 2021)).expect("write the stale CRL"))),
        |_, config| config,
    );
    let monitor = identity(&pki, &current(&pki.ca, "monitor"));
    let status = first_get_status(agent.addr(), &monitor).await;
    assert!(status.is_ok(), "the default policy keeps serving: {status:?}\n{}", agent.log());
    assert!(agent.log().contains("past its nextUpdate"), "the stale CRL must be logged\n{}", agent.log());
    assert_eq!(stale_crl_metric(&agent, agent.channel(&monitor).await).await, 1.0);
}

/// `tls.stale_crl = "refuse"`: while the CRL is stale, certificates it covers are refused; a
/// fresh CRL and SIGHUP let them in again.
#[tokio::test]
async fn with_stale_crl_refuse_a_stale_crl_refuses_clients_until_a_fresh_one_is_loaded() {
    let pki = Rc::new(ServerPki::new());
    let for_crl = pki.clone();
    let agent = start_agent(
        &pki,
        Some(Box::new(move |path| std::fs::write(path, for_crl.ca.crl_der(&[], 2021)).expect("write the stale CRL"))),
        |_, config| with_lines(&config, "tls", "stale_crl = \"refuse\""),
    );
    let orchestrator = identity(&pki, &current(&pki.ca, "orchestrator"));
    let refused = first_get_status(agent.addr(), &orchestrator).await;
    assert!(refused.as_ref().is_err_and(CallFailure::is_transport_refusal), "{refused:?}\n{}", agent.log());

    pki.write_crl(&crl_path(agent.work_dir()), &[]);
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = first_get_status(agent.addr(), &orchestrator).await {
        assert!(Instant::now() < deadline, "still refused 10 s after a fresh CRL: {e:?}\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The client CA bundle holds two CAs; `auth.orchestrator_ca` binds the orchestrator role to one.
/// The other CA (say, the one that issues dashboards' monitor certificates) mints a certificate
/// named "orchestrator": it gets no role. The orchestrator CA's certificate keeps it.
#[tokio::test]
async fn an_orchestrator_name_from_a_ca_other_than_auth_orchestrator_ca_gets_no_role() {
    let pki = Rc::new(ServerPki::new());
    let monitor_ca = Rc::new(CertAuthority::new("monitor CA"));
    let for_config = (pki.clone(), monitor_ca.clone());
    let agent = AgentBuilder::config(move |ctx: &LaunchContext| {
        let (pki, monitor_ca) = &for_config;
        let dir = ctx.work_dir.join("pki");
        let files = pki.write(&dir);
        let bundle = dir.join("client-cas.crt");
        std::fs::write(&bundle, format!("{}{}", pki.ca.cert_pem(), monitor_ca.cert_pem())).expect("write the bundle");
        let files = PkiFiles { ca: bundle, ..files.clone() };
        let config = custom_config(ctx, &files, &[], &["orchestrator"], &["monitor"]);
        with_lines(&config, "auth", &format!("orchestrator_ca = {}", toml_path(&dir.join("ca.crt"))))
    })
    .start();
    // The client trusts the server's CA; its certificate comes from the monitor CA.
    let forged = ClientIdentity::issued(pki.ca.cert_pem(), &current(&monitor_ca, "orchestrator"));
    match first_get_status(agent.addr(), &forged).await {
        Err(CallFailure::Status(s))
            if s.code() == Code::PermissionDenied && s.message().contains("auth.orchestrator_ca") => {}
        other => panic!("a monitor-CA certificate named orchestrator must get no role, got {other:?}\n{}", agent.log()),
    }
    // Allowed: the orchestrator CA's orchestrator, and the monitor CA's monitor (no CA is bound to
    // the monitor role).
    let genuine = identity(&pki, &current(&pki.ca, "orchestrator"));
    let info = AgentClient::new(agent.channel(&genuine).await).get_info(GetInfoRequest {}).await.expect("GetInfo");
    assert_eq!(info.into_inner().caller_role, "orchestrator");
    let dashboard = ClientIdentity::issued(pki.ca.cert_pem(), &current(&monitor_ca, "monitor"));
    let info = AgentClient::new(agent.channel(&dashboard).await).get_info(GetInfoRequest {}).await.expect("GetInfo");
    assert_eq!(info.into_inner().caller_role, "monitor");
}

/// A certificate whose names match both roles is refused every call, reads included, rather than
/// given the stronger role.
#[tokio::test]
async fn a_certificate_named_for_both_roles_gets_neither() {
    let pki = Rc::new(ServerPki::new());
    let agent = start_agent(&pki, None, |_, config| config);
    let both = identity(&pki, &pki.ca.client_with_names("monitor", &["orchestrator"]));
    match first_get_status(agent.addr(), &both).await {
        Err(CallFailure::Status(s)) if s.code() == Code::PermissionDenied && s.message().contains("two roles") => {}
        other => panic!("a certificate of two roles must get no role, got {other:?}\n{}", agent.log()),
    }
    let orchestrator = identity(&pki, &pki.ca.client_with_names("orchestrator", &["orchestrator.example"]));
    let status = first_get_status(agent.addr(), &orchestrator).await;
    assert!(status.is_ok(), "a certificate of one role is served: {status:?}\n{}", agent.log());
}

/// True when the agent closes `tcp` (EOF or reset) within `within`; false when it stays open.
fn closed_by_agent(tcp: &mut TcpStream, within: Duration) -> bool {
    tcp.set_read_timeout(Some(within)).expect("set a read timeout");
    let mut byte = [0u8; 1];
    match tcp.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted),
    }
}

/// A TCP connection to `to` from the local address `from` (any 127.0.0.0/8 address is this host).
fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    socket.bind(&SocketAddr::new(from, 0).into()).unwrap_or_else(|e| panic!("bind {from}: {e}"));
    socket.connect(&to.into()).unwrap_or_else(|e| panic!("connect from {from} to {to}: {e}"));
    socket.into()
}

/// The attack: one host opens TCP connections and never starts the TLS handshake, to fill the
/// agent's handshake slots so the orchestrator cannot get in. The defence: a cap per source
/// address (here 2) apart from the total, so connections beyond it from that address are closed
/// at once while another address still completes its handshake. The idle connections come from
/// 127.0.0.3, so the fixture's own readiness probe (from 127.0.0.1) is not counted with them.
#[tokio::test]
async fn idle_handshakes_from_one_address_are_capped_and_do_not_keep_another_address_out() {
    let pki = Rc::new(ServerPki::new());
    let agent = start_agent(&pki, None, |_, config| {
        with_lines(
            &config,
            "api",
            "max_handshakes_per_address = 2\nmax_pending_handshakes = 8\nhandshake_timeout_secs = 60",
        )
    });
    let attacker = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
    let mut idle: Vec<TcpStream> = (0..2).map(|_| connect_from(attacker, agent.addr())).collect();
    // Let the agent accept them before the next one.
    std::thread::sleep(Duration::from_millis(300));
    let mut over = connect_from(attacker, agent.addr());
    assert!(
        closed_by_agent(&mut over, Duration::from_secs(5)),
        "the third idle connection from {attacker} must be closed\n{}",
        agent.log()
    );
    assert!(
        !closed_by_agent(&mut idle[0], Duration::from_millis(300)),
        "the first two wait for their handshake timeout"
    );

    // Another address is not kept out.
    let orchestrator = identity(&pki, &current(&pki.ca, "orchestrator"));
    let status = first_get_status(agent.addr(), &orchestrator).await;
    assert!(status.is_ok(), "a client from 127.0.0.1 was kept out: {status:?}\n{}", agent.log());

    // Once the idle ones go, the attacker's address gets in again.
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let channel =
            endpoint(agent.addr(), &orchestrator).expect("endpoint").local_address(Some(attacker)).connect().await;
        let answer = match channel {
            Ok(channel) => {
                AgentClient::new(channel).get_status(GetStatusRequest {}).await.map(drop).map_err(|e| format!("{e:?}"))
            }
            Err(e) => Err(format!("{e:?}")),
        };
        match answer {
            Ok(()) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "{attacker} still refused after its idle connections closed: {e}")
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `api.max_concurrent_streams` = 2, seen by a client: with two streams open on one connection, a
/// third call on it waits until one of them ends; another connection is not affected.
#[tokio::test]
async fn a_connection_holds_at_most_max_concurrent_streams_calls() {
    let pki = Rc::new(ServerPki::new());
    let agent = start_agent(&pki, None, |_, config| with_lines(&config, "api", "max_concurrent_streams = 2"));
    let monitor = identity(&pki, &current(&pki.ca, "monitor"));
    let channel = agent.channel(&monitor).await;
    let open = |channel: Channel| async move {
        MetricsClient::new(channel)
            .stream_metrics(StreamMetricsRequest { instance_id: String::new(), interval: None })
            .await
            .expect("StreamMetrics")
            .into_inner()
    };
    let first = open(channel.clone()).await;
    let _second = open(channel.clone()).await;
    let mut third = AgentClient::new(channel.clone());
    let waiting = tokio::time::timeout(Duration::from_secs(2), third.get_status(GetStatusRequest {})).await;
    assert!(waiting.is_err(), "a third call ran beside two open streams: {waiting:?}");
    // Another connection is served meanwhile.
    let other = AgentClient::new(agent.channel(&monitor).await).get_status(GetStatusRequest {}).await;
    assert!(other.is_ok(), "{other:?}");
    drop(first);
    let after = tokio::time::timeout(Duration::from_secs(10), third.get_status(GetStatusRequest {})).await;
    assert!(after.is_ok_and(|r| r.is_ok()), "the call must run once a stream ended\n{}", agent.log());
}

/// Audit trail: the orchestrator submits an operation; its record names the certificate's subject
/// and role, and the mutating call's log line does too.
#[tokio::test]
async fn an_operation_records_the_subject_and_role_of_its_submitter() {
    let agent = Agent::start_dev();
    let mut ops = OperationsClient::new(agent.orchestrator().await);
    let op = ops
        .start_sleep(sleep_request("audit-1", "pg-1", Duration::from_millis(10)))
        .await
        .expect("StartSleep")
        .into_inner();
    let seen = ops.get_operation(GetOperationRequest { id: op.id.clone() }).await.expect("GetOperation").into_inner();
    let by = seen.submitted_by.unwrap_or_else(|| panic!("no submitter recorded: {op:?}"));
    assert_eq!(
        (by.identity.as_str(), by.subject.as_str(), by.role.as_str()),
        ("orchestrator", "CN=orchestrator", "orchestrator")
    );
    let log = agent.log();
    assert!(
        log.lines().any(|l| l.contains("mutating call") && l.contains("StartSleep") && l.contains("CN=orchestrator")),
        "the call's log line must name its caller\n{log}"
    );
    // A read is not logged as a mutation.
    assert!(!log.lines().any(|l| l.contains("mutating call") && l.contains("GetOperation")), "{log}");
}

/// A TLS connection with `identity` that finishes its handshake and then says nothing.
async fn silent_tls_connection(
    addr: SocketAddr,
    identity: &ClientIdentity,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    dbagent_integration::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut identity.ca_pem.as_bytes()) {
        roots.add(cert.expect("parse the CA certificate")).expect("trust the CA certificate");
    }
    let (cert, key) = identity.cert.as_ref().expect("a client certificate");
    let chain = rustls_pemfile::certs(&mut cert.as_bytes()).collect::<Result<Vec<_>, _>>().expect("parse the cert");
    let key = rustls_pemfile::private_key(&mut key.as_bytes()).expect("parse the key").expect("a private key");
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client certificate and key");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await.expect("TLS handshake")
}

/// `api.idle_timeout_secs` = 10: a connection that makes no call is closed after about 10 s,
/// while a connection with a stream open as long keeps it.
#[tokio::test]
async fn a_connection_without_calls_is_closed_after_the_idle_timeout_but_an_open_stream_is_not() {
    use tokio::io::AsyncReadExt;
    let pki = Rc::new(ServerPki::new());
    let agent = start_agent(&pki, None, |_, config| {
        let config = with_lines(&config, "api", "idle_timeout_secs = 10");
        with_lines(&config, "metrics", "interval_secs = 2")
    });
    let monitor = identity(&pki, &current(&pki.ca, "monitor"));
    let mut stream = MetricsClient::new(agent.channel(&monitor).await)
        .stream_metrics(StreamMetricsRequest { instance_id: String::new(), interval: None })
        .await
        .expect("StreamMetrics")
        .into_inner();
    let mut silent = silent_tls_connection(agent.addr(), &monitor).await;
    let opened = Instant::now();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match silent.read(&mut buf).await {
                // The server's HTTP/2 settings; the close comes later.
                Ok(n) if n > 0 => {}
                _ => return opened.elapsed(),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("a connection without calls was still open after 30 s\n{}", agent.log()));
    assert!(closed >= Duration::from_secs(9), "closed after {closed:?}, before the idle timeout");
    // The stream's connection, open as long, still delivers.
    let snapshot = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
    assert!(
        matches!(snapshot, Ok(Ok(Some(_)))),
        "the open stream must go on past the idle timeout: {snapshot:?}\n{}",
        agent.log()
    );
}

/// The config digest the monitor reads in GetInfo.
async fn digest_seen_by(agent: &Agent, monitor: &ClientIdentity) -> String {
    let info = AgentClient::new(agent.channel(monitor).await).get_info(GetInfoRequest {}).await;
    let info = info.unwrap_or_else(|e| panic!("GetInfo as monitor: {e:?}\n{}", agent.log())).into_inner();
    assert_eq!(info.caller_role, "monitor");
    info.config_digest
}

/// Rewrites the agent's config file with `from` replaced by `to`, and restarts the agent on it.
fn restart_with(agent: &mut Agent, from: &str, to: &str) {
    let file = agent.work_dir().join("agent.toml");
    let text = std::fs::read_to_string(&file).expect("read the config");
    assert!(text.contains(from), "{from:?} is not in the config");
    std::fs::write(&file, text.replace(from, to)).expect("write the config");
    agent.restart();
}

/// The monitor may call GetInfo; the digest it reads is not computed over secrets: the same agent
/// restarted with only its S3 secret key changed reports the same digest, while another bucket
/// changes it.
#[tokio::test]
async fn the_config_digest_the_monitor_reads_does_not_depend_on_secrets() {
    let pki = Rc::new(ServerPki::new());
    let mut agent = start_agent(&pki, None, |_, config| {
        format!(
            "{config}\n[[backup.destinations]]\nkind = \"s3\"\nname = \"az1\"\nbucket = \"backups\"\n\
             endpoint = \"http://127.0.0.1:9\"\nallow_http = true\naccess_key_id = \"GK-test\"\n\
             secret_access_key = \"first-secret-key\"\n"
        )
    });
    let monitor = identity(&pki, &current(&pki.ca, "monitor"));
    let one = digest_seen_by(&agent, &monitor).await;
    assert_eq!(one.len(), 64, "{one}");
    restart_with(&mut agent, "first-secret-key", "second-secret-key");
    assert_eq!(digest_seen_by(&agent, &monitor).await, one, "the digest changed with the secret alone");
    restart_with(&mut agent, "bucket = \"backups\"", "bucket = \"other-backups\"");
    assert_ne!(digest_seen_by(&agent, &monitor).await, one, "the digest must still follow the rest of the config");
}
