//! Bad input is refused early and named: config files at start, ids and request ids over the API.

use dbagent_integration::Agent;
use dbagent_integration::agent::{Finished, run_to_exit};
use dbagent_integration::config::toml_path;
use dbagent_integration::ops::{instance_spec, sleep_request};
use dbagent_integration::pki::ServerPki;
use dbagent_proto::v1::backups_client::BackupsClient;
use dbagent_proto::v1::instances_client::InstancesClient;
use dbagent_proto::v1::operations_client::OperationsClient;
use dbagent_proto::v1::{GetInstanceRequest, ListInstancesRequest, RegisterInstanceRequest, RestoreBackupRequest};
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;
use tonic::Code;

/// A bad config must stop the agent at once, not after it tried to serve.
const CONFIG_EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the agent on a config whose TLS files exist; `body` is the TOML after `state_dir`.
fn run_config(dir: &Path, body: impl Fn(&str) -> String) -> Finished {
    let files = ServerPki::new().write(&dir.join("pki"));
    let tls = format!(
        "[tls]\ncert = {}\nkey = {}\nclient_ca = {}\n",
        toml_path(&files.cert),
        toml_path(&files.key),
        toml_path(&files.ca)
    );
    let text = format!("state_dir = {}\n{}", toml_path(&dir.join("state")), body(&tls));
    let config = dir.join("agent.toml");
    std::fs::write(&config, text).expect("write the config");
    run_to_exit(&[OsString::from("--config"), config.into()], CONFIG_EXIT_TIMEOUT)
}

fn assert_refused_naming(run: &Finished, needle: &str) {
    let status = run.status.unwrap_or_else(|| panic!("the agent did not exit within {CONFIG_EXIT_TIMEOUT:?}: {run:?}"));
    assert!(!status.success(), "a bad config was accepted: {run:?}");
    assert!(run.stderr.contains(needle), "stderr should name {needle:?}: {:?}", run.stderr);
}

#[test]
fn unknown_config_key_is_refused_with_exit_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = run_config(dir.path(), |tls| format!("{tls}\n[api]\nlisten = \"127.0.0.1:1\"\nmax_conections = 10\n"));
    assert_refused_naming(&run, "max_conections");
    assert_eq!(run.status.and_then(|s| s.code()), Some(2), "{run:?}");
}

#[test]
fn unknown_section_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = run_config(dir.path(), |tls| format!("{tls}\n[volumez]\nenabled = true\n"));
    assert_refused_naming(&run, "volumez");
}

#[test]
fn bad_listen_value_names_listen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = run_config(dir.path(), |tls| format!("{tls}\n[api]\nlisten = \"nope\"\n"));
    assert_refused_naming(&run, "listen");
}

#[test]
fn missing_cert_file_names_the_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("pki").join("does-not-exist.crt");
    let run = run_config(dir.path(), |tls| {
        let cert_line = tls.lines().find(|l| l.starts_with("cert = ")).expect("a cert line").to_owned();
        tls.replace(&cert_line, &format!("cert = {}", toml_path(&missing)))
    });
    assert_refused_naming(&run, &missing.to_string_lossy());
}

/// True when `message` names `field` as a whole word ("invalid" does not name "id").
fn names_field(message: &str, field: &str) -> bool {
    message
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .any(|w| w == field || w.ends_with(&format!(".{field}")))
}

#[tokio::test]
async fn malformed_instance_ids_are_invalid_argument() {
    let agent = Agent::start_dev();
    let mut instances = InstancesClient::new(agent.orchestrator().await);
    let too_long = "a".repeat(64);
    for (n, bad) in ["", "UPPER", "-x", "a_b", too_long.as_str(), "../etc"].into_iter().enumerate() {
        let req = RegisterInstanceRequest {
            request_id: format!("bad-id-{n}"),
            id: bad.to_owned(),
            spec: Some(instance_spec("pg-1", &agent.dev_data_root())),
        };
        let err = instances.register_instance(req).await.expect_err("a malformed id must be refused");
        assert_eq!(err.code(), Code::InvalidArgument, "RegisterInstance id {bad:?}: {err:?}");
        assert!(
            names_field(err.message(), "id"),
            "RegisterInstance id {bad:?}: the message should name `id`: {:?}",
            err.message()
        );

        let err = instances
            .get_instance(GetInstanceRequest { id: bad.to_owned() })
            .await
            .expect_err("GetInstance with a bad id");
        assert_eq!(err.code(), Code::InvalidArgument, "GetInstance id {bad:?}: {err:?}");
        assert!(names_field(err.message(), "id"), "GetInstance id {bad:?}: {:?}", err.message());
    }
    let mut ops = OperationsClient::new(agent.orchestrator().await);
    let err =
        ops.start_sleep(sleep_request("bad-target", "../etc", Duration::from_secs(1))).await.expect_err("bad target");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(names_field(err.message(), "target"), "{:?}", err.message());
    let listed = instances.list_instances(ListInstancesRequest {}).await.expect("ListInstances").into_inner();
    assert!(listed.instances.is_empty(), "a refused instance was stored: {listed:?}");
}

#[tokio::test]
async fn bad_request_ids_are_invalid_argument() {
    let agent = Agent::start_dev();
    let mut instances = InstancesClient::new(agent.orchestrator().await);
    let mut ops = OperationsClient::new(agent.orchestrator().await);
    for bad in [String::new(), "r".repeat(129)] {
        let req = RegisterInstanceRequest {
            request_id: bad.clone(),
            id: "pg-1".into(),
            spec: Some(instance_spec("pg-1", &agent.dev_data_root())),
        };
        let err = instances.register_instance(req).await.expect_err("a bad request_id must be refused");
        assert_eq!(err.code(), Code::InvalidArgument, "RegisterInstance request_id of {} chars: {err:?}", bad.len());
        assert!(names_field(err.message(), "request_id"), "{:?}", err.message());

        let err =
            ops.start_sleep(sleep_request(&bad, "pg-1", Duration::from_secs(1))).await.expect_err("bad request_id");
        assert_eq!(err.code(), Code::InvalidArgument, "StartSleep request_id of {} chars: {err:?}", bad.len());
        assert!(names_field(err.message(), "request_id"), "{:?}", err.message());
    }
    // 128 characters is the limit, not past it.
    let ok = ops.start_sleep(sleep_request(&"r".repeat(128), "pg-1", Duration::from_millis(10))).await;
    assert!(ok.is_ok(), "a request_id of 128 characters must be accepted: {ok:?}");
}

#[tokio::test]
async fn registered_instance_reads_back_unchanged() {
    let agent = Agent::start_dev();
    let mut instances = InstancesClient::new(agent.orchestrator().await);
    let spec = instance_spec("pg-42", &agent.dev_data_root());
    let req = RegisterInstanceRequest { request_id: "reg-42".into(), id: "pg-42".into(), spec: Some(spec.clone()) };
    let created = instances.register_instance(req).await.expect("RegisterInstance").into_inner();
    assert_eq!(created.spec.as_ref(), Some(&spec));

    let got =
        instances.get_instance(GetInstanceRequest { id: "pg-42".into() }).await.expect("GetInstance").into_inner();
    assert_eq!(got.id, "pg-42");
    assert_eq!(got.spec, Some(spec), "the stored spec differs from the registered one");
    assert_eq!(got.generation, created.generation);
    assert!(got.created.is_some());

    let err = instances.get_instance(GetInstanceRequest { id: "pg-43".into() }).await.expect_err("an unknown instance");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
}

/// The agent writes a physical restore as root: the folder must stay in the data roots and out of
/// other instances, and it is checked before the backup is even looked up.
#[tokio::test]
async fn restore_targets_outside_the_data_roots_are_refused() {
    let agent = Agent::start_dev();
    let root = agent.dev_data_root();
    let mut instances = InstancesClient::new(agent.orchestrator().await);
    for id in ["pg-1", "pg-2"] {
        let req = RegisterInstanceRequest {
            request_id: format!("reg-{id}"),
            id: id.into(),
            spec: Some(instance_spec(id, &root)),
        };
        instances.register_instance(req).await.expect("RegisterInstance");
    }
    let pg2_dir = instance_spec("pg-2", &root).data_dir;
    let mut backups = BackupsClient::new(agent.orchestrator().await);
    let restore = |n: usize, target: &str| RestoreBackupRequest {
        request_id: format!("restore-{n}"),
        instance_id: "pg-1".into(),
        backup_id: "b0123456789abcdef0123".into(),
        target_data_dir: target.to_owned(),
        ..Default::default()
    };
    let escape = format!("{}/../../../etc/cron.d", root.display());
    for (n, (bad, code)) in [
        ("/etc/cron.d/dbagent", Code::InvalidArgument),
        ("relative/data", Code::InvalidArgument),
        (escape.as_str(), Code::InvalidArgument),
        (pg2_dir.as_str(), Code::FailedPrecondition),
    ]
    .into_iter()
    .enumerate()
    {
        let err = backups.restore_backup(restore(n, bad)).await.expect_err("a restore target outside the data roots");
        assert_eq!(err.code(), code, "target_data_dir {bad:?}: {err:?}");
        assert!(err.message().contains("target_data_dir"), "target_data_dir {bad:?}: {:?}", err.message());
        assert!(!Path::new(bad).exists() || bad == pg2_dir, "{bad} was created");
    }
    // A fresh folder in the data roots passes the check; then the unknown backup is what is refused.
    let fresh = format!("{}/pg-1-restored", root.display());
    let err = backups.restore_backup(restore(9, &fresh)).await.expect_err("unknown backup");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(!Path::new(&fresh).exists(), "nothing is created for a refused restore");
}

/// A log glob outside the log and data roots would let the agent ship any host file (the KEK,
/// /etc/shadow) to a drain: refused at registration, naming the field.
#[tokio::test]
async fn log_globs_outside_the_roots_are_invalid_argument() {
    use dbagent_proto::v1::LogSource;
    use dbagent_proto::v1::log_source::Source;
    let agent = Agent::start_dev();
    let mut instances = InstancesClient::new(agent.orchestrator().await);
    let inside = format!("{}/pg-1/log/*.log", agent.dev_data_root().display());
    for (n, glob) in ["/etc/dbagent/kek", "/etc/*", "/var/log/*/postgresql.log"].into_iter().enumerate() {
        let mut spec = instance_spec("pg-1", &agent.dev_data_root());
        spec.log_sources = vec![
            LogSource { source: Some(Source::FileGlob(inside.clone())) },
            LogSource { source: Some(Source::FileGlob(glob.into())) },
        ];
        let req = RegisterInstanceRequest { request_id: format!("glob-{n}"), id: "pg-1".into(), spec: Some(spec) };
        let err = instances.register_instance(req).await.expect_err("a glob outside the roots");
        assert_eq!(err.code(), Code::InvalidArgument, "{glob}: {err:?}");
        assert!(err.message().contains("log_sources[1].file_glob"), "{glob}: {:?}", err.message());
    }
    let mut spec = instance_spec("pg-1", &agent.dev_data_root());
    spec.log_sources = vec![LogSource { source: Some(Source::FileGlob(inside)) }];
    let req = RegisterInstanceRequest { request_id: "glob-ok".into(), id: "pg-1".into(), spec: Some(spec) };
    instances.register_instance(req).await.expect("a glob below the data root is accepted");
}
