//! Database TLS against real engines (issue 15): InstallCertificate makes PostgreSQL and MariaDB
//! serve a new certificate without a restart, read back by `openssl s_client` (an independent TLS
//! client) and with the server's PID unchanged; a bad chain and a mismatched key are refused with a
//! clear error while the old certificate keeps being served; a certificate the engine cannot serve
//! is taken back and the old one served again; the key is never in the operation's record.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::Arc;

use dbagent::backup::BackupConfig;
use dbagent::backup::settings::EngineConnection;
use dbagent::dbtls::validate::CertificateInput;
use dbagent::dbtls::{DbTlsConfig, DbTlsError, DbTlsService};
use dbagent::error::{ErrorCode, HasErrorCode};
use dbagent::instances::registry::Registry;
use dbagent::instances::{Engine, ValidationRules};
use dbagent::ops::OpState;
use dbagent_integration::agent::{AgentBuilder, LaunchContext};
use dbagent_integration::backup_harness::{Harness, instance};
use dbagent_integration::config::{custom_config, toml_path};
use dbagent_integration::ops::instance_spec;
use dbagent_integration::pki::{CertAuthority, IssuedCert, PkiFiles, ServerPki};
use dbagent_integration::servers::{MariaServer, OwnedDir, PG_BIN, PgServer, RedisServer, ReservedPort};
use dbagent_integration::{ClientIdentity, Validity};
use tonic::Code;

const DATA_ROOT: &str = "/tmp";

struct Tls {
    h: Harness,
    svc: DbTlsService,
}

async fn service(id: &str, engine: Engine, os_user: &str, data: &Path, conn: BackupConfig, timeout: u64) -> Tls {
    let h = Harness::new();
    let rules = ValidationRules {
        data_roots: vec![DATA_ROOT.into()],
        device_prefixes: vec!["/dev/vd".into()],
        log_roots: vec![],
    };
    let registry = Arc::new(Registry::open(h.state.join("instances"), rules, Default::default()).expect("registry"));
    let mut spec = instance(id, engine, os_user, data).spec;
    spec.engine_version = "1".into();
    registry.register(id, spec).await.expect("register the instance");
    let config = DbTlsConfig {
        names: vec!["{instance}.db.test".into(), "{host}".into()],
        served_timeout_secs: timeout,
        ..DbTlsConfig::default()
    };
    let svc =
        DbTlsService::new(registry, h.engine.clone(), config, conn, vec![PathBuf::from(DATA_ROOT)], "dbhost-1".into());
    Tls { h, svc }
}

fn input(cert: &IssuedCert, key: &IssuedCert, ca: &CertAuthority) -> CertificateInput {
    CertificateInput {
        cert_pem: cert.cert_pem.clone(),
        key_pem: key.key_pem.clone().into(),
        ca_pem: ca.cert_pem().into(),
    }
}

fn der(pem: &str) -> Vec<u8> {
    let mut reader = pem.as_bytes();
    rustls_pemfile::certs(&mut reader).next().expect("a certificate").expect("PEM").as_ref().to_vec()
}

/// The certificate the server at 127.0.0.1:`port` serves, as `openssl s_client` reads it
/// (`starttls` empty: TLS from the first byte, as Redis's tls-port).
fn served(starttls: &str, port: u16) -> Option<Vec<u8>> {
    let mut args = vec!["s_client".to_owned(), "-connect".to_owned(), format!("127.0.0.1:{port}")];
    if !starttls.is_empty() {
        args.extend(["-starttls".to_owned(), starttls.to_owned()]);
    }
    let out = Command::new("openssl")
        .args(&args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout);
    let start = text.find("-----BEGIN CERTIFICATE-----")?;
    let end = text.find("-----END CERTIFICATE-----")? + "-----END CERTIFICATE-----".len();
    Some(der(&text[start..end]))
}

fn pid(file: &Path) -> String {
    std::fs::read_to_string(file).expect("read the pid file").lines().next().unwrap_or_default().trim().to_owned()
}

impl Tls {
    async fn install(
        &self,
        request_id: &str,
        id: &str,
        input: CertificateInput,
        force: bool,
    ) -> dbagent::ops::OperationRecord {
        let op = self.svc.submit_install(request_id.into(), id, input, force).await.expect("submit the install");
        self.h.wait(&op).await
    }

    async fn refused(&self, request_id: &str, id: &str, input: CertificateInput) -> DbTlsError {
        self.svc.submit_install(request_id.into(), id, input, false).await.expect_err("the bundle must be refused")
    }

    /// No key text anywhere in the operations journal.
    fn journal_has_no_key(&self) {
        for entry in std::fs::read_dir(self.h.state.join("operations")).expect("journal") {
            let path = entry.expect("entry").path();
            if path.is_file() {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                assert!(!text.contains("PRIVATE KEY"), "{} holds a key", path.display());
            }
        }
    }
}

fn outcome(op: &dbagent::ops::OperationRecord) -> String {
    assert_eq!(op.state, OpState::Succeeded, "{:?}", op.error);
    op.result.as_ref().and_then(|r| r["outcome"].as_str()).unwrap_or_default().to_owned()
}

#[tokio::test]
async fn postgresql_serves_a_new_certificate_without_a_restart_and_keeps_it_when_a_bad_one_is_refused() {
    let pg = PgServer::init();
    let pid_file = pg.data.join("postmaster.pid");
    let before = pid(&pid_file);
    let conn = BackupConfig { postgresql: pg.connection("postgres"), ..BackupConfig::default() };
    let tls = service("pg1", Engine::Postgresql, "postgres", &pg.data, conn, 15).await;
    let ca = CertAuthority::new("database CA");
    let names = ["pg1.db.test", "dbhost-1"];
    assert_eq!(served("postgres", pg.port), None, "no TLS before the first install");

    let first = ca.server_for(&names);
    let op = tls.install("c-1", "pg1", input(&first, &first, &ca), false).await;
    assert_eq!(outcome(&op), "installed");
    assert_eq!(served("postgres", pg.port), Some(der(&first.cert_pem)), "ssl turned on and served");
    assert_eq!(op.params["key_pem"], dbagent::ops::IN_MEMORY_ONLY, "the record says a key was given, not which");
    assert!(!serde_json::to_string(&op).unwrap_or_default().contains("PRIVATE KEY"));

    let second = ca.server_for(&names);
    let op = tls.install("c-2", "pg1", input(&second, &second, &ca), false).await;
    assert_eq!(outcome(&op), "installed");
    assert_eq!(served("postgres", pg.port), Some(der(&second.cert_pem)), "the rotated certificate is served");
    assert_eq!(pid(&pid_file), before, "served without a restart");
    assert!(!pg.data.join("dbagent-tls.key.old").exists(), "the previous files go once the new ones are served");
    let key = std::fs::metadata(pg.data.join("dbagent-tls.key")).expect("key file");
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777, 0o600);

    // A chain to another CA, a key of another certificate, a name the instance is not reached by.
    let stranger = CertAuthority::new("someone else's CA");
    let foreign = stranger.server_for(&names);
    let e = tls.refused("c-3", "pg1", input(&foreign, &foreign, &ca)).await;
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
    assert!(e.to_string().contains("does not verify to ca_pem"), "{e}");
    let e = tls.refused("c-4", "pg1", input(&first, &second, &ca)).await;
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
    assert!(e.to_string().contains("key_pem does not match the certificate"), "{e}");
    let other = ca.server_for(&["pg2.db.test", "dbhost-1"]);
    let e = tls.refused("c-5", "pg1", input(&other, &other, &ca)).await;
    assert!(e.to_string().contains("\"pg1.db.test\""), "{e}");
    assert_eq!(served("postgres", pg.port), Some(der(&second.cert_pem)), "the old certificate keeps being served");
    assert!(tls.h.engine.by_request("c-3").is_none(), "a refused bundle starts no operation");

    let again = tls.install("c-6", "pg1", input(&second, &second, &ca), false).await;
    assert_eq!(outcome(&again), "already_served");
    let installed = tls.svc.installed("pg1").expect("read").expect("installed");
    assert_eq!(installed.summary.fingerprint, again.params["fingerprint_sha256"].as_str().unwrap_or_default());
    assert!(installed.seconds_left > 365 * 86_400 && !installed.warn, "{installed:?}");
    assert!(tls.svc.metrics_text().contains("dbagent_instance_tls_cert_expiry_seconds{instance=\"pg1\"} "));
    assert_eq!(pid(&pid_file), before);
    tls.journal_has_no_key();
}

/// An RSA key (openssl), so the certificate can be served under RSA-only TLS 1.2 ciphers.
fn rsa_key() -> rcgen::KeyPair {
    let out = Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
        .output()
        .expect("openssl genpkey");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    rcgen::KeyPair::from_pem_and_sign_algo(&String::from_utf8_lossy(&out.stdout), &rcgen::PKCS_RSA_SHA256)
        .expect("RSA key")
}

#[tokio::test]
async fn postgresql_gets_the_old_certificate_back_when_it_cannot_serve_the_new_one() {
    let pg = PgServer::init();
    // Only RSA ciphers on TLS 1.2: a valid ECDSA certificate loads, but no handshake can use it.
    pg.psql("postgres", "ALTER SYSTEM SET ssl_max_protocol_version = 'TLSv1.2'");
    pg.psql("postgres", "ALTER SYSTEM SET ssl_ciphers = 'ECDHE-RSA-AES128-GCM-SHA256'");
    pg.psql("postgres", "SELECT pg_reload_conf()");
    let pid_file = pg.data.join("postmaster.pid");
    let before = pid(&pid_file);
    let conn = BackupConfig { postgresql: pg.connection("postgres"), ..BackupConfig::default() };
    let tls = service("pg1", Engine::Postgresql, "postgres", &pg.data, conn, 3).await;
    let ca = CertAuthority::new("database CA");
    let names = ["pg1.db.test", "dbhost-1"];
    let rsa = ca.server_for_key(&names, rsa_key());
    assert_eq!(outcome(&tls.install("c-1", "pg1", input(&rsa, &rsa, &ca), false).await), "installed");
    assert_eq!(served("postgres", pg.port), Some(der(&rsa.cert_pem)));

    let ecdsa = ca.server_for(&names);
    let op = tls.install("c-2", "pg1", input(&ecdsa, &ecdsa, &ca), false).await;
    assert_eq!(op.state, OpState::Failed);
    let error = op.error.expect("an error");
    assert_eq!(error.code, ErrorCode::FailedPrecondition);
    assert!(error.message.contains("did not serve the new certificate"), "{}", error.message);
    assert!(error.message.contains("put back"), "{}", error.message);
    assert_eq!(served("postgres", pg.port), Some(der(&rsa.cert_pem)), "the old certificate is served again");
    assert_eq!(std::fs::read_to_string(pg.data.join("dbagent-tls.crt")).unwrap_or_default(), rsa.cert_pem);
    assert_eq!(pid(&pid_file), before);
}

#[tokio::test]
async fn mariadb_serves_a_new_certificate_after_flush_ssl() {
    let ca = CertAuthority::new("database CA");
    let names = ["maria1.db.test", "dbhost-1"];
    // MariaDB reads its certificate paths at start only and aborts when the files are missing: the
    // host is provisioned with a first certificate there, which the agent then rotates.
    let bootstrap = ca.server_for(&names);
    let maria = MariaServer::start_debian_auth_with(|data| {
        provision(data, "mysql", &bootstrap, &ca);
        vec![
            format!("--ssl-cert={}", data.join("dbagent-tls.crt").display()),
            format!("--ssl-key={}", data.join("dbagent-tls.key").display()),
            format!("--ssl-ca={}", data.join("dbagent-tls-ca.crt").display()),
        ]
    });
    let pid_file = maria.root.path().join("mysqld.pid");
    let before = pid(&pid_file);
    let conn =
        EngineConnection { host: maria.socket.display().to_string(), port: maria.port, ..EngineConnection::default() };
    let conn = BackupConfig { mariadb: conn, ..BackupConfig::default() };
    let tls = service("maria1", Engine::Mariadb, "mysql", &maria.data, conn, 15).await;
    assert_eq!(served("mysql", maria.port), Some(der(&bootstrap.cert_pem)), "the provisioned certificate");

    let first = ca.server_for(&names);
    assert_eq!(outcome(&tls.install("m-1", "maria1", input(&first, &first, &ca), false).await), "installed");
    assert_eq!(served("mysql", maria.port), Some(der(&first.cert_pem)));
    let second = ca.server_for(&names);
    assert_eq!(outcome(&tls.install("m-2", "maria1", input(&second, &second, &ca), false).await), "installed");
    assert_eq!(served("mysql", maria.port), Some(der(&second.cert_pem)), "the rotated certificate is served");
    assert_eq!(pid(&pid_file), before, "served without a restart");

    let stranger = CertAuthority::new("someone else's CA");
    let foreign = stranger.server_for(&names);
    let e = tls.refused("m-3", "maria1", input(&foreign, &foreign, &ca)).await;
    assert!(e.to_string().contains("does not verify to ca_pem"), "{e}");
    let e = tls.refused("m-4", "maria1", input(&second, &first, &ca)).await;
    assert!(e.to_string().contains("key_pem does not match the certificate"), "{e}");
    assert_eq!(served("mysql", maria.port), Some(der(&second.cert_pem)), "the old certificate keeps being served");
    tls.journal_has_no_key();
}

#[tokio::test]
async fn mariadb_started_without_the_agents_paths_is_refused_before_anything_is_written() {
    let maria = MariaServer::start_debian_auth();
    let conn =
        EngineConnection { host: maria.socket.display().to_string(), port: maria.port, ..EngineConnection::default() };
    let conn = BackupConfig { mariadb: conn, ..BackupConfig::default() };
    let tls = service("maria1", Engine::Mariadb, "mysql", &maria.data, conn, 15).await;
    let ca = CertAuthority::new("database CA");
    let cert = ca.server_for(&["maria1.db.test", "dbhost-1"]);
    let op = tls.install("m-1", "maria1", input(&cert, &cert, &ca), false).await;
    assert_eq!(op.state, OpState::Failed);
    let error = op.error.expect("an error");
    assert_eq!(error.code, ErrorCode::FailedPrecondition);
    assert!(error.message.contains("start mariadbd with ssl_cert="), "{}", error.message);
    assert!(!maria.data.join("dbagent-tls.key").exists(), "nothing written");
    assert!(!maria.data.join("dbagent-tls.key.new").exists(), "nothing written");
}

/// Writes the three files as `owner`'s, where a provisioned host has them before the first start.
fn provision(dir: &Path, owner: &str, cert: &IssuedCert, ca: &CertAuthority) {
    for (name, text) in [
        ("dbagent-tls.crt", cert.cert_pem.as_str()),
        ("dbagent-tls.key", cert.key_pem.as_str()),
        ("dbagent-tls-ca.crt", ca.cert_pem()),
    ] {
        std::fs::write(dir.join(name), text).expect("write a provisioned file");
        let status = Command::new("chown").arg(format!("{owner}:")).arg(dir.join(name)).status().expect("chown");
        assert!(status.success());
    }
}

#[tokio::test]
async fn redis_serves_a_new_certificate_after_config_set() {
    let ca = CertAuthority::new("database CA");
    let names = ["redis1.db.test", "dbhost-1"];
    let bootstrap = ca.server_for(&names);
    let root = OwnedDir::new("redis");
    let dir = root.path().to_path_buf();
    provision(&dir, "redis", &bootstrap, &ca);
    let tls_port = ReservedPort::new();
    let (port, d) = (tls_port.port(), dir.display());
    let conf = format!(
        "tls-port {port}\ntls-cert-file {d}/dbagent-tls.crt\ntls-key-file {d}/dbagent-tls.key\n\
         tls-ca-cert-file {d}/dbagent-tls-ca.crt\ntls-auth-clients no\n"
    );
    let redis = RedisServer::start_at_with(root, &dir, &conf);
    let pid = redis
        .cli(&["INFO", "server"])
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .unwrap_or_default()
        .trim()
        .to_owned();
    let conn = EngineConnection { host: "127.0.0.1".into(), port: redis.port, ..EngineConnection::default() };
    let tls =
        service("redis1", Engine::Redis, "redis", &dir, BackupConfig { redis: conn, ..BackupConfig::default() }, 15)
            .await;
    assert_eq!(served("", tls_port.port()), Some(der(&bootstrap.cert_pem)), "the provisioned certificate");

    let next = ca.server_for(&names);
    assert_eq!(outcome(&tls.install("r-1", "redis1", input(&next, &next, &ca), false).await), "installed");
    assert_eq!(served("", tls_port.port()), Some(der(&next.cert_pem)), "the new certificate is served");
    let e = tls.refused("r-2", "redis1", input(&bootstrap, &next, &ca)).await;
    assert!(e.to_string().contains("key_pem does not match the certificate"), "{e}");
    assert_eq!(served("", tls_port.port()), Some(der(&next.cert_pem)));
    let now = redis
        .cli(&["INFO", "server"])
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .unwrap_or_default()
        .trim()
        .to_owned();
    assert_eq!(now, pid, "served without a restart");
    tls.journal_has_no_key();
}

/// The suite's agent config with the cluster's folder as data root, its connection, and the names.
fn agent_config(ctx: &LaunchContext, pki: &PkiFiles, pg: (&Path, u16)) -> String {
    format!(
        "{base}\n[instances]\ndata_roots = [{root}]\n\n[backup.postgresql]\nhost = \"127.0.0.1\"\nport = {port}\n\
         user = \"postgres\"\ndatabase = \"postgres\"\nbin_dir = {bin}\n\n[database_tls]\n\
         names = [\"{{instance}}.db.test\"]\n",
        base = custom_config(ctx, pki, &[], &["orchestrator"], &["monitor"]),
        root = toml_path(pg.0),
        port = pg.1,
        bin = toml_path(Path::new(PG_BIN)),
    )
}

#[tokio::test]
async fn install_certificate_through_the_agent_is_served_shown_and_watched_for_expiry() {
    use dbagent_proto::v1 as pb;
    let pg = PgServer::init();
    let pki = Rc::new(ServerPki::new());
    let for_config = pki.clone();
    let (root, port) = (pg.root.path().to_path_buf(), pg.port);
    let agent = AgentBuilder::config(move |ctx: &LaunchContext| {
        agent_config(ctx, &for_config.write(&ctx.work_dir.join("pki")), (&root, port))
    })
    .start();
    let orchestrator = ClientIdentity::issued(pki.ca.cert_pem(), &pki.ca.client("orchestrator", Validity::Current));
    let monitor = ClientIdentity::issued(pki.ca.cert_pem(), &pki.ca.client("monitor", Validity::Current));
    let channel = agent.channel(&orchestrator).await;
    let mut spec = instance_spec("pg-1", pg.root.path());
    spec.data_dir = pg.data.to_string_lossy().into_owned();
    let req = pb::RegisterInstanceRequest { request_id: "reg".into(), id: "pg-1".into(), spec: Some(spec) };
    pb::instances_client::InstancesClient::new(channel.clone())
        .register_instance(req)
        .await
        .unwrap_or_else(|s| panic!("RegisterInstance: {s:?}\n{}", agent.log()));

    let ca = CertAuthority::new("database CA");
    let cert = ca.server_for(&["pg-1.db.test"]);
    let request = |id: &str, cert: &IssuedCert, key: &IssuedCert| pb::InstallCertificateRequest {
        request_id: id.into(),
        instance_id: "pg-1".into(),
        cert_pem: cert.cert_pem.clone(),
        key_pem: key.key_pem.clone(),
        ca_pem: ca.cert_pem().into(),
        force: false,
    };
    let mut upgrades = pb::upgrades_client::UpgradesClient::new(channel.clone());
    let mut monitor_upgrades = pb::upgrades_client::UpgradesClient::new(agent.channel(&monitor).await);
    let denied = monitor_upgrades.install_certificate(request("c-0", &cert, &cert)).await.expect_err("monitor");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let other = ca.server_for(&["pg-1.db.test"]);
    let refused = upgrades.install_certificate(request("c-1", &cert, &other)).await.expect_err("mismatched key");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("key_pem does not match the certificate"), "{refused:?}");

    let op = upgrades
        .install_certificate(request("c-2", &cert, &cert))
        .await
        .unwrap_or_else(|s| panic!("InstallCertificate: {s:?}\n{}", agent.log()))
        .into_inner();
    assert_eq!(op.kind, "dbtls.install");
    let mut ops = pb::operations_client::OperationsClient::new(channel.clone());
    let done = loop {
        let now = ops.get_operation(pb::GetOperationRequest { id: op.id.clone() }).await.expect("GetOperation");
        let now = now.into_inner();
        if now.finished.is_some() {
            break now;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(done.state, pb::OperationState::Succeeded as i32, "{done:?}\n{}", agent.log());
    assert_eq!(served("postgres", pg.port), Some(der(&cert.cert_pem)));

    let shown = monitor_upgrades
        .get_certificate(pb::GetCertificateRequest { instance_id: "pg-1".into() })
        .await
        .expect("GetCertificate")
        .into_inner();
    assert!(shown.installed && shown.names == ["pg-1.db.test"] && !shown.expires_soon, "{shown:?}");
    let metrics = dbagent_integration::prometheus::scrape(&dbagent_integration::prometheus::address(&agent));
    let left =
        dbagent_integration::prometheus::value(&metrics, "dbagent_instance_tls_cert_expiry_seconds{instance=\"pg-1\"}");
    assert!(left.is_some_and(|s| (s - shown.seconds_left as f64).abs() < 120.0), "{left:?} vs {shown:?}");
    let status = pb::agent_client::AgentClient::new(channel.clone())
        .get_status(pb::GetStatusRequest {})
        .await
        .expect("GetStatus")
        .into_inner();
    assert!(status.expiring_certificates.is_empty(), "valid to 2099: {status:?}");
    assert!(!agent.log().contains("PRIVATE KEY"), "the key never reaches the agent's log");
}
