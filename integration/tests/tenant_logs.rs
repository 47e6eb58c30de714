//! Log following attacked as a tenant would: the database's OS user owns the log folder and, while
//! the root agent follows a matched `*.log` (a TailLogs stream and a syslog drain to a private
//! rsyslogd), exchanges that file with a link to a root-only file outside the roots in a tight loop,
//! plants a link as the logrotate copy of a truncated log, a FIFO and a terabyte sparse file as
//! `*.log`. The sentinel's content must never reach TailLogs or the drain, the lines the database
//! writes meanwhile must, and the API must keep answering.

use dbagent_integration::Agent;
use dbagent_integration::ops::instance_spec;
use dbagent_integration::rsyslog::Rsyslog;
use dbagent_integration::tenant::{
    Exchange, Sentinels, TenantUser, open_way_to, plant_fifo, plant_huge_file, plant_link,
};
use dbagent_proto::v1::instances_client::InstancesClient;
use dbagent_proto::v1::log_source::Source;
use dbagent_proto::v1::logs_client::LogsClient;
use dbagent_proto::v1::{
    GetDrainStatusRequest, ListInstancesRequest, LogSource, RegisterInstanceRequest, SetDrainsRequest, TailLogsRequest,
};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The rsyslog fixture keeps messages of app-name `inst-1` only; the syslog APP-NAME is the instance id.
const INSTANCE: &str = "inst-1";

fn real_line(i: usize) -> String {
    format!("2024-05-01 10:00:00.000 UTC [7] LOG:  real-line-{i:05}")
}

/// What the database does: write to the log file it holds open, whatever its name is now.
fn write_lines(file: &mut File, lines: std::ops::Range<usize>) {
    let text: String = lines.map(|i| format!("{}\n", real_line(i))).collect();
    file.write_all(text.as_bytes()).expect("write the real log");
}

fn has_all(messages: &[String], lines: std::ops::Range<usize>) -> bool {
    lines.map(real_line).all(|l| messages.iter().any(|m| m.contains(&l)))
}

/// Every call of the API answers within a few seconds while the attack runs.
async fn api_answers(agent: &Agent) {
    let mut instances = InstancesClient::new(agent.monitor().await);
    let listed =
        tokio::time::timeout(Duration::from_secs(5), instances.list_instances(ListInstancesRequest::default()))
            .await
            .expect("ListInstances answers within 5 s during the attack")
            .expect("ListInstances");
    assert_eq!(listed.into_inner().instances.len(), 1);
    let mut logs = LogsClient::new(agent.monitor().await);
    let status = GetDrainStatusRequest { instance_id: INSTANCE.into(), drain: "rsyslog".into() };
    tokio::time::timeout(Duration::from_secs(5), logs.get_drain_status(status))
        .await
        .expect("GetDrainStatus answers within 5 s during the attack")
        .expect("GetDrainStatus");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_swapping_links_fifos_and_holes_into_its_log_folder_never_ships_the_sentinel() {
    let user = TenantUser::get();
    let sentinels = Sentinels::new();
    let rsyslog_dir = tempfile::tempdir().expect("rsyslog folder");
    let rsyslog = Rsyslog::start(rsyslog_dir.path(), None);
    let agent = Agent::start_dev();

    // The log folder belongs to the tenant, below the dev data root.
    let folder = agent.dev_data_root().join("pglogs");
    std::fs::create_dir_all(&folder).expect("create the log folder");
    let log = folder.join("postgresql-main.log");
    let mut writer = OpenOptions::new().create(true).append(true).open(&log).expect("create the log");
    write_lines(&mut writer, 0..10);
    user.own(&folder);
    open_way_to(&folder);

    let mut spec = instance_spec(INSTANCE, &agent.dev_data_root());
    spec.log_sources =
        vec![LogSource { source: Some(Source::FileGlob(folder.join("postgresql-*.log").display().to_string())) }];
    let register = RegisterInstanceRequest { request_id: "reg-1".into(), id: INSTANCE.into(), spec: Some(spec) };
    InstancesClient::new(agent.orchestrator().await)
        .register_instance(register)
        .await
        .unwrap_or_else(|e| panic!("RegisterInstance: {e:?}\n{}", agent.log()));
    let mut logs = LogsClient::new(agent.orchestrator().await);
    let drain = rsyslog.plain_drain();
    logs.set_drains(SetDrainsRequest {
        request_id: "drains-1".into(),
        instance_id: INSTANCE.into(),
        drains: vec![drain],
    })
    .await
    .unwrap_or_else(|e| panic!("SetDrains: {e:?}\n{}", agent.log()));

    // Everything TailLogs streams, collected while the attack runs.
    let follow =
        TailLogsRequest { instance_id: INSTANCE.into(), last_lines: 1000, since: None, follow: true, min_severity: 0 };
    let mut stream = logs.tail_logs(follow).await.expect("TailLogs follow").into_inner();
    let tailed = Arc::new(Mutex::new(Vec::<String>::new()));
    let collector = {
        let tailed = tailed.clone();
        tokio::spawn(async move {
            while let Ok(Some(r)) = stream.message().await {
                tailed.lock().unwrap().push(r.message);
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !has_all(&rsyslog.received(), 0..10) {
        assert!(Instant::now() < deadline, "the first lines never reached the drain\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Planted beside the real log, matched by the glob: a link out, a FIFO, a terabyte of holes.
    plant_link(&user, &sentinels.file, &folder.join("postgresql-planted.log"));
    plant_fifo(&user, &folder.join("postgresql-fifo.log"));
    plant_huge_file(&user, &folder.join("postgresql-huge.log"), 1 << 40);
    // The real log and a link to the sentinel swap names in a tight loop, as the tenant.
    let swap = folder.join("postgresql-swap.log");
    plant_link(&user, &sentinels.file, &swap);
    let attack = Exchange::start(&user, &log, &swap);
    for round in 0..20 {
        write_lines(&mut writer, 10 + round * 10..20 + round * 10);
        api_answers(&agent).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let exchanges = attack.stop();
    assert!(exchanges > 100, "the attack ran: {exchanges} exchanges");

    // copytruncate with a link planted as the copy: a root-only file outside the roots holding the
    // bytes read so far (so it would pass the copy check) and then the sentinel's lines.
    let real_path = if std::fs::symlink_metadata(&log).expect("stat").is_file() { log.clone() } else { swap.clone() };
    let crafted_dir = tempfile::tempdir().expect("crafted copy folder");
    let crafted = crafted_dir.path().join("copy");
    let mut bytes = std::fs::read(&real_path).expect("read the real log");
    bytes.extend_from_slice(&std::fs::read(&sentinels.file).expect("read the sentinel"));
    std::fs::write(&crafted, bytes).expect("write the crafted copy");
    std::fs::set_permissions(&crafted, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    plant_link(&user, &crafted, &folder.join("postgresql-main.log.1"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    writer.set_len(0).expect("truncate the real log");
    write_lines(&mut writer, 500..520);

    // Allowed path: every real line reaches both TailLogs and the drain.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (drained, streamed) = (rsyslog.received(), tailed.lock().unwrap().clone());
        if has_all(&drained, 0..210)
            && has_all(&drained, 500..520)
            && has_all(&streamed, 10..210)
            && has_all(&streamed, 500..520)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "real lines missing after 60 s: drain has {}, TailLogs has {}\n{}",
            drained.len(),
            streamed.len(),
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    api_answers(&agent).await;
    // Give a late leak time to arrive before looking for it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let drained = rsyslog.received().join("\n");
    let streamed = tailed.lock().unwrap().join("\n");
    sentinels.assert_not_in("the syslog drain", &drained);
    sentinels.assert_not_in("TailLogs", &streamed);
    assert!(!drained.contains('\0') && !streamed.contains('\0'), "NUL bytes from the sparse file were shipped");
    let status = logs
        .get_drain_status(GetDrainStatusRequest { instance_id: INSTANCE.into(), drain: "rsyslog".into() })
        .await
        .expect("GetDrainStatus")
        .into_inner();
    // At least the planted link, the FIFO and the link in the exchange were refused and counted.
    assert!(status.refused_files >= 3, "refusals are counted in the drain's status: {status:?}");
    let log_text = agent.log();
    assert!(log_text.contains("log file not read"), "the refusals are reported in the agent's log:\n{log_text}");
    sentinels.assert_untouched();
    collector.abort();
    drop(crafted_dir);
}
