use super::*;
use crate::instances::{Registry, fixtures};
use crate::locks::ResourceLocks;
use crate::metrics::MetricsHub;
use crate::metrics::model::{Metric, Reading};
use crate::ops::{OperationEngine, OpsSettings};
use dbagent_proto::v1::metrics_server::Metrics;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

async fn state(dir: &std::path::Path) -> ApiState {
    let locks = ResourceLocks::default();
    let registry = Arc::new(Registry::open(dir.join("instances"), fixtures::rules(), locks.clone()).unwrap());
    registry.register("pg-1", fixtures::spec("pg-1")).await.unwrap();
    let settings = OpsSettings { max_concurrent: 1, retention: Duration::from_secs(60), max_finished: 10 };
    let root = CancellationToken::new();
    let (engine, _) = OperationEngine::open(&dir.join("ops"), settings, locks, root.clone()).unwrap();
    let host = Arc::new(crate::volume::host::SimHost::default());
    let volumes = crate::volume::Volumes::new(
        dir,
        crate::volume::test_fixture::settings(&["/dev/vd"]),
        Arc::new(crate::volume::crypt::SimCrypt::on(host.clone())),
        host,
        Arc::new(Arc::new(crate::volume::keystore::LocalKeystore::open(dir.join("keystore"), &[9u8; 32]).unwrap())),
        registry.clone(),
    )
    .unwrap();
    let logs = crate::logs::LogManager::new(
        dir.join("logs"),
        crate::logs::LogsConfig::default(),
        "h".into(),
        registry.clone(),
        root.clone(),
    );
    let backup_config = crate::backup::BackupConfig::default();
    let wrapper = crate::backup::KekWrapper::from_kek(&[9u8; 32]).unwrap();
    let backups = crate::backup::BackupService::new(backup_config, dir, Arc::new(wrapper), engine.clone()).unwrap();
    let settings = crate::requests::LedgerSettings { retention: Duration::from_secs(60), max_entries: 10 };
    let requests = crate::requests::RequestLedger::open(dir.join("requests"), settings).unwrap();
    ApiState {
        backups,
        requests,
        volumes,
        logs,
        registry,
        engine,
        started: SystemTime::now(),
        hostname: "h".into(),
        config_digest: String::new(),
        dev_mode: true,
        test_kinds: false,
        shutdown: root,
        metrics: MetricsHub::new(Duration::from_millis(50), Duration::from_secs(3600)),
    }
}

fn reading(memory: u64) -> Reading {
    let mut r = Reading::default();
    r.plain(Metric::Memory, memory);
    r.plain(Metric::CpuUsage, 1_500_000);
    r
}

#[tokio::test]
async fn latest_range_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path()).await;
    let api = MetricsApi(s.clone());
    let e = api.get_node_metrics(Request::new(pb::GetNodeMetricsRequest { range: None })).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");

    let t0 = SystemTime::now() - Duration::from_secs(30);
    let pg = Owner::Instance("pg-1".into());
    for i in 0..3u64 {
        s.metrics.history.push(pg.clone(), t0 + Duration::from_secs(10 * i), reading(100 + i));
        s.metrics.history.push(Owner::Node, t0 + Duration::from_secs(10 * i), Reading::default());
    }
    let latest = api
        .get_instance_metrics(Request::new(pb::GetInstanceMetricsRequest { instance_id: "pg-1".into(), range: None }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(latest.snapshots.len(), 1);
    let snap = &latest.snapshots[0];
    assert_eq!(snap.instance_id, "pg-1");
    let mem = snap.samples.iter().find(|x| x.name == "memory_bytes").unwrap();
    assert_eq!((mem.value, mem.counter), (102.0, false));
    let cpu = snap.samples.iter().find(|x| x.name == "cpu_usage_seconds_total").unwrap();
    assert_eq!((cpu.value, cpu.counter), (1.5, true));

    let range = pb::TimeRange { start: Some((t0 + Duration::from_secs(5)).into()), end: None };
    let got = api
        .get_instance_metrics(Request::new(pb::GetInstanceMetricsRequest {
            instance_id: "pg-1".into(),
            range: Some(range),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.snapshots.len(), 2);

    let bad = pb::TimeRange { start: Some(SystemTime::now().into()), end: Some(t0.into()) };
    let e = api.get_node_metrics(Request::new(pb::GetNodeMetricsRequest { range: Some(bad) })).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = api
        .get_instance_metrics(Request::new(pb::GetInstanceMetricsRequest { instance_id: "nope".into(), range: None }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn stream_follows_rounds_and_ends_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path()).await;
    let api = MetricsApi(s.clone());
    let e = api
        .stream_metrics(Request::new(pb::StreamMetricsRequest {
            instance_id: String::new(),
            interval: Some(prost_types::Duration { seconds: 0, nanos: 1_000_000 }),
        }))
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "shorter than the sampling interval");

    let mut stream = api
        .stream_metrics(Request::new(pb::StreamMetricsRequest { instance_id: "pg-1".into(), interval: None }))
        .await
        .unwrap()
        .into_inner();
    let hub = s.metrics.clone();
    let pg = Owner::Instance("pg-1".into());
    for i in 0..3u64 {
        hub.history.push(pg.clone(), SystemTime::now(), reading(i));
        hub.round_done();
        let snap = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.unwrap().unwrap().unwrap();
        let mem = snap.samples.iter().find(|x| x.name == "memory_bytes").unwrap();
        assert_eq!(mem.value, i as f64);
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    s.shutdown.cancel();
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.unwrap();
    assert!(end.is_none(), "the stream ends on shutdown");
}
