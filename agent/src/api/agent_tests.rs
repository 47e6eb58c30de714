use super::*;
use crate::instances::fixtures;
use crate::locks::ResourceLocks;
use crate::ops::OpsSettings;
use dbagent_proto::v1::agent_server::Agent;
use std::time::Duration;

/// The Agent service alone: a registry with one instance, an empty operation engine.
async fn agent_api(dir: &std::path::Path, volumes_simulated: bool) -> AgentApi {
    let locks = ResourceLocks::default();
    let registry = Arc::new(Registry::open(dir.join("instances"), fixtures::rules(), locks.clone()).unwrap());
    registry.register("pg-1", fixtures::spec("pg-1")).await.unwrap();
    let settings = OpsSettings { max_concurrent: 1, retention: Duration::from_secs(60), max_finished: 10 };
    let shutdown = CancellationToken::new();
    let (operations, _) = OperationEngine::open(&dir.join("ops"), settings, locks, shutdown.clone()).unwrap();
    AgentApi {
        started: SystemTime::now(),
        hostname: "h".into(),
        config_digest: "digest".into(),
        dev_mode: true,
        volumes_simulated,
        host: HostInventory {
            os_name: "Debian GNU/Linux".into(),
            os_version: "12".into(),
            kernel_version: "6.1.0-18-amd64".into(),
            cpu_model: "Xeon".into(),
            cpu_count: 4,
            memory_bytes: 8 << 30,
        },
        volumes: sim_volumes(dir, registry.clone()),
        registry,
        operations,
        shutdown,
        backups: None,
        database_tls: None,
    }
}

fn sim_volumes(dir: &std::path::Path, registry: Arc<Registry>) -> crate::volume::Volumes {
    use crate::volume::{crypt::SimCrypt, host::SimHost, keystore::LocalKeystore};
    let host = Arc::new(SimHost::default());
    let keys = Arc::new(LocalKeystore::open(dir.join("keystore"), &[9u8; 32]).unwrap());
    let settings = crate::volume::test_fixture::settings(&[]);
    crate::volume::Volumes::new(dir, settings, Arc::new(SimCrypt::on(host.clone())), host, Arc::new(keys), registry)
        .unwrap()
}

#[test]
fn a_capability_is_advertised_iff_an_rpc_of_it_is_served() {
    let advertised = capabilities();
    let served =
        |capability: &str| auth::RULES.iter().any(|rule| rule.is_served() && rule_capability(rule) == capability);
    for rule in auth::RULES.iter() {
        let capability = match rule.serving {
            auth::Serving::Later { capability, .. } => capability.to_owned(),
            auth::Serving::Served | auth::Serving::ByOrchestrator => rule_capability(rule),
        };
        assert_eq!(advertised.contains(&capability), served(&capability), "{capability:?} of {}", rule.path);
    }
    for capability in &advertised {
        let transport = TRANSPORT_CAPABILITIES.contains(&capability.as_str());
        assert!(transport || served(capability), "{capability:?} is advertised but nothing of it is served");
    }
    for expected in [
        "mtls",
        "health",
        "reflection",
        "instances",
        "operations",
        "volumes",
        "metrics",
        "logs",
        "backups",
        "maintenance windows",
        "availability",
        "database TLS certificates",
        "engine upgrades",
        "plan changes",
    ] {
        assert!(advertised.contains(&expected.to_owned()), "{expected:?} missing from {advertised:?}");
    }
    for absent in ["upgrades", "keyservice"] {
        assert!(!advertised.contains(&absent.to_owned()), "{absent:?} is not served: {advertised:?}");
    }
    assert_eq!(advertised.iter().filter(|c| *c == "reflection").count(), 1, "v1 and v1alpha are one capability");
}

#[tokio::test]
async fn status_says_when_volumes_are_simulated() {
    for simulated in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let api = agent_api(dir.path(), simulated).await;
        let status = api.get_status(Request::new(pb::GetStatusRequest {})).await.unwrap().into_inner();
        assert_eq!(status.volumes_simulated, simulated);
        assert_eq!((status.state.as_str(), status.instance_count), ("serving", 1));
    }
}

#[tokio::test]
async fn status_reports_quarantined_instance_and_volume_records() {
    let dir = tempfile::tempdir().unwrap();
    let healthy = agent_api(dir.path(), false).await;
    let status = healthy.get_status(Request::new(pb::GetStatusRequest {})).await.unwrap().into_inner();
    assert!(status.quarantined.is_empty(), "{:?}", status.quarantined);
    drop(healthy);

    std::fs::write(dir.path().join("instances/pg-9.json"), "{ torn").unwrap();
    std::fs::write(dir.path().join("volumes/pg-8.json"), "{ torn").unwrap();
    let api = agent_api(dir.path(), false).await;
    let status = api.get_status(Request::new(pb::GetStatusRequest {})).await.unwrap().into_inner();
    let seen: Vec<(&str, &str)> =
        status.quarantined.iter().map(|q| (q.instance_id.as_str(), q.record.as_str())).collect();
    assert_eq!(seen, [("pg-9", "instance"), ("pg-8", "volume")]);
    assert!(status.quarantined.iter().all(|q| q.file.ends_with(".json") && q.reason.contains("not a valid")));
    assert_eq!(status.instance_count, 1, "the good instance is there");
}

#[tokio::test]
async fn info_reports_the_host_inventory() {
    let dir = tempfile::tempdir().unwrap();
    let api = agent_api(dir.path(), false).await;
    let info = api.get_info(Request::new(pb::GetInfoRequest {})).await.unwrap().into_inner();
    let host = info.host.unwrap();
    assert_eq!((host.os_name.as_str(), host.os_version.as_str()), ("Debian GNU/Linux", "12"));
    assert_eq!(host.kernel_version, "6.1.0-18-amd64");
    assert_eq!((host.cpu_model.as_str(), host.cpu_count, host.memory_bytes), ("Xeon", 4, 8 << 30));
    assert_eq!(info.capabilities, capabilities());
}

/// A self-signed certificate PEM valid until midnight UTC starting the day `days` from now.
fn cert_expiring_in(days: i64) -> String {
    let mut p = rcgen::CertificateParams::new(vec!["pg-1.db.example.com".to_owned()]).unwrap();
    let shift = Duration::from_secs(days.unsigned_abs() * 86_400);
    let at = if days >= 0 { SystemTime::now() + shift } else { SystemTime::now() - shift };
    let day = humantime::format_rfc3339(at).to_string();
    let (y, m, d) = (day[0..4].parse().unwrap(), day[5..7].parse().unwrap(), day[8..10].parse().unwrap());
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(y, m, d);
    p.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().pem()
}

#[tokio::test]
async fn status_warns_about_a_database_certificate_within_thirty_days_of_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let data_root = dir.path().join("data");
    std::fs::create_dir_all(data_root.join("pg-1")).unwrap();
    let rules = crate::instances::ValidationRules { data_roots: vec![data_root.clone()], ..fixtures::rules() };
    let registry = Arc::new(Registry::open(dir.path().join("tls-instances"), rules, ResourceLocks::default()).unwrap());
    let mut spec = fixtures::spec("pg-1");
    spec.data_dir = data_root.join("pg-1");
    registry.register("pg-1", spec).await.unwrap();
    let mut api = agent_api(dir.path(), false).await;
    api.database_tls = Some(DbTlsService::new(
        registry,
        api.operations.clone(),
        crate::dbtls::DbTlsConfig::default(),
        crate::backup::BackupConfig::default(),
        vec![data_root.clone()],
        "h".into(),
    ));
    let cert_file = data_root.join("pg-1").join(crate::dbtls::files::CERT);

    std::fs::write(&cert_file, cert_expiring_in(90)).unwrap();
    let status = api.get_status(Request::new(pb::GetStatusRequest {})).await.unwrap().into_inner();
    assert!(status.expiring_certificates.is_empty(), "90 days left: no warning {:?}", status.expiring_certificates);

    std::fs::write(&cert_file, cert_expiring_in(12)).unwrap();
    let status = api.get_status(Request::new(pb::GetStatusRequest {})).await.unwrap().into_inner();
    let [warning] = status.expiring_certificates.as_slice() else { panic!("{:?}", status.expiring_certificates) };
    assert_eq!(warning.instance_id, "pg-1");
    // Midnight of the day 12 days ahead: between 11 and 12 days left.
    assert!(warning.message.contains("expires in 11 days"), "{}", warning.message);
    assert!(warning.seconds_left > 11 * 86_400 && warning.seconds_left <= 12 * 86_400);

    std::fs::write(&cert_file, cert_expiring_in(-1)).unwrap();
    let status = api.get_status(Request::new(pb::GetStatusRequest {})).await.unwrap().into_inner();
    assert!(status.expiring_certificates[0].message.contains("expired"), "{:?}", status.expiring_certificates);
    assert!(status.expiring_certificates[0].seconds_left < 0);
}
