//! Process lifecycle: graceful SIGTERM, systemd readiness, certificate reload on SIGHUP.

use dbagent_integration::agent::{AgentBuilder, LaunchContext};
use dbagent_integration::config::custom_config;
use dbagent_integration::ops::{sleep_request, state_of, wait_for_state};
use dbagent_integration::pki::ServerPki;
use dbagent_integration::{Agent, CertAuthority, ClientIdentity, Validity, first_get_status};
use dbagent_proto::v1::operations_client::OperationsClient;
use dbagent_proto::v1::{GetOperationRequest, OperationState};
use std::os::unix::net::UnixDatagram;
use std::rc::Rc;
use std::time::{Duration, Instant};

#[tokio::test]
async fn sigterm_exits_zero_and_running_operation_comes_back_interrupted() {
    let mut agent = Agent::start_dev();
    let mut ops = OperationsClient::new(agent.orchestrator().await);
    let op = ops
        .start_sleep(sleep_request("term-1", "pg-1", Duration::from_secs(60)))
        .await
        .expect("StartSleep")
        .into_inner();
    wait_for_state(&mut ops, &op.id, Duration::from_secs(10), |s| s == OperationState::Running).await;

    let started = Instant::now();
    let status = agent.sigterm(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "SIGTERM must end in a clean exit: {status}\n{}", agent.log());
    eprintln!("SIGTERM to exit: {:?}", started.elapsed());

    agent.restart();
    let mut ops = OperationsClient::new(agent.orchestrator().await);
    let after = ops.get_operation(GetOperationRequest { id: op.id.clone() }).await.expect("GetOperation").into_inner();
    assert_eq!(state_of(&after), OperationState::Interrupted, "{after:?}");
}

#[tokio::test]
async fn ready_is_notified_only_once_serving() {
    let sock_dir = tempfile::tempdir().expect("temp dir for the notify socket");
    let sock_path = sock_dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind the notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200))).expect("set a read timeout");

    let agent = AgentBuilder::dev().env("NOTIFY_SOCKET", &sock_path).no_wait().start();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = vec![0u8; 4096];
    let mut received = Vec::new();
    loop {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let ready = msg.lines().any(|l| l == "READY=1");
                received.push(msg);
                if ready {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("read the notify socket: {e}"),
        }
        assert!(Instant::now() < deadline, "no READY=1 within 30 s; got {received:?}\n{}", agent.log());
    }
    // No waiting, no retry: READY=1 promises that the API already serves.
    let status = first_get_status(agent.addr(), &agent.dev_identity("orchestrator")).await;
    assert!(status.is_ok(), "GetStatus right after READY=1 failed: {status:?}\n{}", agent.log());
}

#[tokio::test]
async fn sighup_reloads_the_server_certificate() {
    let pki = Rc::new(ServerPki::new());
    let for_config = pki.clone();
    let mut agent = AgentBuilder::config(move |ctx: &LaunchContext| {
        let files = for_config.write(&ctx.work_dir.join("pki"));
        custom_config(ctx, &files, &[], &["orchestrator"], &["monitor"])
    })
    .start();
    let pid = agent.pid().expect("the agent runs");
    let client = pki.ca.client("orchestrator", Validity::Current);
    let trusts_old = ClientIdentity::issued(pki.ca.cert_pem(), &client);
    // The new server certificate comes from another CA, so which one a connection sees is unambiguous.
    let new_ca = CertAuthority::new("dbagent test CA, second generation");
    let trusts_new = ClientIdentity::issued(new_ca.cert_pem(), &client);

    assert!(first_get_status(agent.addr(), &trusts_old).await.is_ok(), "before: {}", agent.log());
    assert!(first_get_status(agent.addr(), &trusts_new).await.is_err(), "the new CA cannot be trusted yet");

    new_ca.server().write(&agent.work_dir().join("pki"), "server");
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while first_get_status(agent.addr(), &trusts_new).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "new connections still see the old certificate 10 s after SIGHUP\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(first_get_status(agent.addr(), &trusts_old).await.is_err(), "the old certificate is still served");

    // SIGHUP must not stop the agent: the process it was sent to is still running (not reaped,
    // not replaced) and still answers.
    assert_eq!(agent.try_wait(), None, "the agent exited after SIGHUP\n{}", agent.log());
    assert_eq!(agent.pid(), Some(pid), "the agent after SIGHUP is another process");
    match first_get_status(agent.addr(), &trusts_new).await {
        Ok(status) => assert_eq!(status.state, "serving", "{status:?}"),
        Err(e) => panic!("the agent does not answer after SIGHUP: {e:?}\n{}", agent.log()),
    }
}
