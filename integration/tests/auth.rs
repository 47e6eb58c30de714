//! Who may call what: mTLS identities, roles, refused certificates, unimplemented services, health.

use dbagent_integration::agent::{AgentBuilder, LaunchContext};
use dbagent_integration::config::custom_config;
use dbagent_integration::ops::{instance_spec, sleep_request};
use dbagent_integration::pki::ServerPki;
use dbagent_integration::{Agent, CallFailure, CertAuthority, ClientIdentity, IssuedCert, Validity, first_get_status};
use dbagent_proto::access::{Access, METHOD_ACCESS};
use dbagent_proto::v1::agent_client::AgentClient;
use dbagent_proto::v1::instances_client::InstancesClient;
use dbagent_proto::v1::operations_client::OperationsClient;
use dbagent_proto::v1::*;
use rustls::AlertDescription;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

fn ok<T>(what: &str, r: Result<tonic::Response<T>, tonic::Status>) -> T {
    match r {
        Ok(resp) => resp.into_inner(),
        Err(s) => panic!("{what} failed: {:?}: {}", s.code(), s.message()),
    }
}

#[tokio::test]
async fn orchestrator_can_read_and_mutate() {
    let agent = Agent::start_dev();
    let channel = agent.orchestrator().await;
    let status = ok("GetStatus", AgentClient::new(channel.clone()).get_status(GetStatusRequest {}).await);
    assert_eq!(status.state, "serving");
    let info = ok("GetInfo", AgentClient::new(channel.clone()).get_info(GetInfoRequest {}).await);
    assert_eq!(info.caller_identity, "orchestrator");
    assert!(info.dev_mode);

    let req = RegisterInstanceRequest {
        request_id: "reg-1".into(),
        id: "pg-1".into(),
        spec: Some(instance_spec("pg-1", &agent.dev_data_root())),
    };
    let inst = ok("RegisterInstance", InstancesClient::new(channel.clone()).register_instance(req).await);
    assert_eq!(inst.id, "pg-1");

    let op = ok(
        "StartSleep",
        OperationsClient::new(channel).start_sleep(sleep_request("sleep-1", "pg-1", Duration::from_millis(10))).await,
    );
    assert!(!op.id.is_empty());
    assert_eq!(op.kind, "sleep");
}

/// Calls `path` with an empty request and returns how the agent answered. The call is made as
/// server streaming whatever the RPC is (the wire is the same; it just does not insist on one
/// answer), and returns once the response headers arrive: the permission layer refuses there, with
/// a trailers-only answer, before any handler runs.
async fn call_with_empty_request(channel: Channel, path: &'static str) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(format!("the channel is not ready: {e}")))?;
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    grpc.server_streaming(tonic::Request::new(()), PathAndQuery::from_static(path), codec).await.map(drop)
}

/// True when the call never got an answer from the agent: the connection died, nothing refused it.
fn is_transport_failure(status: &tonic::Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled)
}

/// Every RPC the proto declares, as the monitor and as the orchestrator: the monitor is denied
/// exactly the RPCs declared ACCESS_WRITE (a mutation declared read by mistake is caught by the
/// proto crate's naming test), and the orchestrator is denied none of them.
#[tokio::test]
async fn monitor_is_denied_every_declared_write_and_nothing_else() {
    let agent = Agent::start_dev();
    // Something to look at and to try to cancel, made by the orchestrator.
    let orch = agent.orchestrator().await;
    let op = ok(
        "StartSleep",
        OperationsClient::new(orch.clone())
            .start_sleep(sleep_request("seen-by-monitor", "pg-1", Duration::from_secs(60)))
            .await,
    );
    let monitor = agent.monitor().await;
    let listed = ok(
        "ListOperations",
        OperationsClient::new(monitor.clone()).list_operations(ListOperationsRequest::default()).await,
    );
    assert!(listed.operations.iter().any(|o| o.id == op.id), "the monitor sees the orchestrator's operation");
    // A request the handler accepts, so the write below is refused for who calls, not for what.
    let refused = OperationsClient::new(monitor.clone())
        .cancel_operation(CancelOperationRequest { id: op.id.clone() })
        .await
        .expect_err("the monitor cancelled an operation");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    let writes = METHOD_ACCESS.iter().filter(|row| row.access == Access::Write).count();
    assert!(writes >= 20, "only {writes} RPCs are declared ACCESS_WRITE");
    let mut wrong = Vec::new();
    for row in METHOD_ACCESS {
        let answer = call_with_empty_request(monitor.clone(), row.path).await;
        match (row.access, answer) {
            (Access::Write, Err(s))
                if s.code() == Code::PermissionDenied && s.message().contains("read-only monitor role") => {}
            (Access::Write, other) => wrong.push(format!("{} (write) as monitor: {other:?}", row.path)),
            (_, Err(s)) if s.code() == Code::PermissionDenied || is_transport_failure(&s) => {
                wrong.push(format!("{} (read) as monitor: {s:?}", row.path));
            }
            (_, _) => {}
        }
    }
    // Nothing the monitor tried may have happened.
    let instances =
        ok("ListInstances", InstancesClient::new(orch.clone()).list_instances(ListInstancesRequest {}).await);
    assert!(instances.instances.is_empty(), "the monitor registered an instance: {instances:?}");
    let seen =
        ok("GetOperation", OperationsClient::new(orch.clone()).get_operation(GetOperationRequest { id: op.id }).await);
    assert!(!seen.cancel_requested, "the monitor's cancel took effect: {seen:?}");

    // The allowed path: the orchestrator gets past the permission layer on every write (the empty
    // requests are then refused by the handlers, or the RPC is not built yet).
    for row in METHOD_ACCESS.iter().filter(|row| row.access == Access::Write) {
        if let Err(s) = call_with_empty_request(orch.clone(), row.path).await
            && (s.code() == Code::PermissionDenied || is_transport_failure(&s))
        {
            wrong.push(format!("{} (write) as orchestrator: {s:?}", row.path));
        }
    }
    assert!(wrong.is_empty(), "answers that contradict the declared access:\n{}\n{}", wrong.join("\n"), agent.log());
}

#[tokio::test]
async fn client_cert_from_another_ca_is_refused() {
    let agent = Agent::start_dev();
    let foreign = CertAuthority::new("not the agent's CA");
    let cert = foreign.client("orchestrator", Validity::Current);
    let identity = ClientIdentity { ca_pem: agent.dev_ca_pem(), cert: Some((cert.cert_pem, cert.key_pem)) };
    assert_handshake_refused(&agent, &identity, AlertDescription::UnknownCA, &agent.dev_identity("orchestrator")).await;
}

#[tokio::test]
async fn client_without_cert_is_refused() {
    let agent = Agent::start_dev();
    let anonymous = ClientIdentity::anonymous(&agent.dev_ca_pem());
    assert_handshake_refused(
        &agent,
        &anonymous,
        AlertDescription::CertificateRequired,
        &agent.dev_identity("orchestrator"),
    )
    .await;
}

/// An agent with a PKI the test controls: orchestrator CN "orchestrator", monitor CN "monitor",
/// and a CRL (possibly empty) listing revoked client serials.
struct CustomAgent {
    agent: Agent,
    pki: Rc<ServerPki>,
}

impl CustomAgent {
    /// A fresh, valid orchestrator certificate of the agent's CA.
    fn orchestrator(&self) -> ClientIdentity {
        ClientIdentity::issued(self.pki.ca.cert_pem(), &self.pki.ca.client("orchestrator", Validity::Current))
    }
}

fn start_custom(revoke: impl Fn(&CertAuthority) -> Vec<IssuedCert>) -> (CustomAgent, Vec<IssuedCert>) {
    let pki = Rc::new(ServerPki::new());
    let revoked = revoke(&pki.ca);
    let crl_revoked = revoked.clone();
    let for_config = pki.clone();
    // The files go into the agent's own work dir, so they vanish with the fixture.
    let agent = AgentBuilder::config(move |ctx: &LaunchContext| {
        let files = for_config.write(&ctx.work_dir.join("pki"));
        let crl = ctx.work_dir.join("pki").join("revoked.crl.pem");
        for_config.write_crl(&crl, &crl_revoked.iter().collect::<Vec<_>>());
        custom_config(ctx, &files, &[crl.as_path()], &["orchestrator"], &["monitor"])
    })
    .start();
    (CustomAgent { agent, pki }, revoked)
}

#[tokio::test]
async fn custom_pki_orchestrator_is_accepted() {
    let (custom, _) = start_custom(|_| vec![]);
    let cert = custom.pki.ca.client("orchestrator", Validity::Current);
    let status = first_get_status(custom.agent.addr(), &ClientIdentity::issued(custom.pki.ca.cert_pem(), &cert)).await;
    assert!(status.is_ok(), "a valid orchestrator cert was refused: {status:?}\n{}", custom.agent.log());
}

#[tokio::test]
async fn expired_client_cert_is_refused() {
    let (custom, _) = start_custom(|_| vec![]);
    let cert = custom.pki.ca.client("orchestrator", Validity::Expired);
    let expired = ClientIdentity::issued(custom.pki.ca.cert_pem(), &cert);
    assert_handshake_refused(&custom.agent, &expired, AlertDescription::CertificateExpired, &custom.orchestrator())
        .await;
}

#[tokio::test]
async fn revoked_client_cert_is_refused() {
    let (custom, revoked) = start_custom(|ca| vec![ca.client("orchestrator", Validity::Current)]);
    let revoked = ClientIdentity::issued(custom.pki.ca.cert_pem(), &revoked[0]);
    // The allowed client is a sibling certificate with the same CN but another serial: the CRL is
    // by serial.
    assert_handshake_refused(&custom.agent, &revoked, AlertDescription::CertificateRevoked, &custom.orchestrator())
        .await;
}

#[tokio::test]
async fn known_ca_unknown_cn_is_permission_denied() {
    let (custom, _) = start_custom(|_| vec![]);
    let cert = custom.pki.ca.client("intruder", Validity::Current);
    let result = first_get_status(custom.agent.addr(), &ClientIdentity::issued(custom.pki.ca.cert_pem(), &cert)).await;
    match result {
        Err(CallFailure::Status(s))
            if s.code() == Code::PermissionDenied && s.message().contains("not mapped to a role") => {}
        other => {
            panic!("an unknown CN must get PERMISSION_DENIED for having no role, got {other:?}\n{}", custom.agent.log())
        }
    }
    assert_serves(&custom.agent, &custom.orchestrator()).await;
}

#[tokio::test]
async fn grpc_health_check_serves() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let agent = Agent::start_dev();
    for channel in [agent.orchestrator().await, agent.monitor().await] {
        let resp = HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await;
        let resp = ok("Health.Check", resp);
        assert_eq!(resp.status, ServingStatus::Serving as i32, "{resp:?}");
    }
}

/// How the agent ends a handshake with `identity`, seen on the wire: `Some(error)` when the session
/// failed (the agent's alert is `rustls::Error::AlertReceived`), `None` once the agent sends
/// application data (HTTP/2 settings), which it does only to a client it accepted. tonic is not
/// used here: with TLS 1.3 the client finishes its side of the handshake before the server judges
/// its certificate, and tonic then often reports only "connection closed", hiding the alert.
fn handshake_outcome(addr: std::net::SocketAddr, identity: &ClientIdentity) -> Option<rustls::Error> {
    dbagent_integration::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut identity.ca_pem.as_bytes()) {
        roots.add(cert.expect("parse the CA certificate")).expect("trust the CA certificate");
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match &identity.cert {
        Some((cert, key)) => {
            let chain = rustls_pemfile::certs(&mut cert.as_bytes()).collect::<Result<Vec<_>, _>>().expect("parse cert");
            let key = rustls_pemfile::private_key(&mut key.as_bytes()).expect("parse key").expect("a private key");
            builder.with_client_auth_cert(chain, key).expect("client certificate and key")
        }
        None => builder.with_no_client_auth(),
    };
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("a TLS client");
    let mut tcp = std::net::TcpStream::connect(addr).expect("connect to the agent");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).expect("set a read timeout");
    loop {
        while conn.wants_write() {
            conn.write_tls(&mut tcp).expect("send to the agent");
        }
        let read = conn.read_tls(&mut tcp).expect("the agent neither accepted nor refused within 10 s");
        assert!(read > 0, "the agent closed the connection without an alert");
        match conn.process_new_packets() {
            Err(error) => return Some(error),
            Ok(io) if io.plaintext_bytes_to_read() > 0 => return None,
            Ok(_) => {}
        }
    }
}

/// `refused` fails in the TLS handshake with `alert`, and right after, on the same agent, `allowed`
/// is served: the refusal is the agent judging the certificate, not an agent that is gone.
async fn assert_handshake_refused(
    agent: &Agent,
    refused: &ClientIdentity,
    alert: AlertDescription,
    allowed: &ClientIdentity,
) {
    let outcome = handshake_outcome(agent.addr(), refused);
    assert_eq!(
        outcome,
        Some(rustls::Error::AlertReceived(alert)),
        "expected the agent to end the handshake with {alert:?}\n{}",
        agent.log()
    );
    assert_eq!(handshake_outcome(agent.addr(), allowed), None, "the allowed client's handshake\n{}", agent.log());
    assert_serves(agent, allowed).await;
}

async fn assert_serves(agent: &Agent, allowed: &ClientIdentity) {
    match first_get_status(agent.addr(), allowed).await {
        Ok(status) => assert_eq!(status.state, "serving", "{status:?}"),
        Err(failure) => panic!("the allowed client was refused too: {failure:?}\n{}", agent.log()),
    }
}
