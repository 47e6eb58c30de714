//! The Prometheus endpoint (checked by Debian's promtool) and the OTLP push (received by a real
//! OTLP gRPC receiver in this test), on data collected from this machine's /proc and the cgroup
//! fixture tree.

#![allow(clippy::unwrap_used)]

use dbagent::metrics::collect::{Collector, CollectorPaths, InstanceTarget};
use dbagent::metrics::{MetricsHub, Owner, http, otlp};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/metrics/fixtures")
}

/// A hub holding one real node sample and two instances from the fixture tree.
fn filled_hub() -> Arc<MetricsHub> {
    let paths = CollectorPaths { cgroup_root: fixtures().join("cgroup"), ..CollectorPaths::default() };
    let targets = [
        InstanceTarget { id: "pg-1".into(), systemd_unit: "postgresql@15-main.service".into(), data_dir: "/".into() },
        InstanceTarget {
            id: "redis \"quoted\"\\1".into(),
            systemd_unit: "redis-server.service".into(),
            data_dir: "/tmp".into(),
        },
    ];
    let mut c = Collector::new(paths);
    let _ = c.collect(&targets);
    std::thread::sleep(Duration::from_millis(200));
    let round = c.collect(&targets);
    let hub = MetricsHub::new(Duration::from_secs(10), Duration::from_secs(3600));
    let now = SystemTime::now();
    hub.history.push(Owner::Node, now, round.node);
    for (id, r) in round.instances {
        hub.history.push(Owner::Instance(id), now, r);
    }
    hub
}

async fn http_get(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

fn promtool_check(text: &str) -> (bool, String) {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!(
            "promtool is required for this test and could not be started ({e}); install Debian's prometheus package: apt-get install prometheus"
        ),
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), report)
}

#[tokio::test]
async fn prometheus_endpoint_passes_promtool() {
    let hub = filled_hub();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn(http::serve(listener, hub, stop.clone()));

    let response = http_get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n").await;
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    assert!(head.contains(&format!("Content-Length: {}", body.len())), "{head}");
    for needle in [
        "# TYPE dbagent_node_cpu_seconds_total counter",
        "dbagent_node_cpu_seconds_total{mode=\"idle\"}",
        "dbagent_node_memory_total_bytes ",
        "dbagent_node_filesystem_size_bytes{mountpoint=\"/\"",
        "dbagent_instance_memory_bytes{instance=\"pg-1\"} 1207959552",
        "dbagent_instance_cpu_usage_seconds_total{instance=\"pg-1\"} 98.234511",
        "dbagent_instance_memory_bytes{instance=\"redis \\\"quoted\\\"\\\\1\"}",
    ] {
        assert!(body.contains(needle), "missing {needle:?} in:\n{body}");
    }
    let (ok, report) = promtool_check(body);
    assert!(ok, "promtool check metrics failed:\n{report}\n--- exposition ---\n{body}");

    let r = http_get(addr, "GET /other HTTP/1.1\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    let r = http_get(addr, "POST /metrics HTTP/1.1\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 405"), "{r}");
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    let r = http_get(addr, &huge).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), server).await.unwrap().unwrap();
}

/// The promtool check must be able to fail: a broken exposition is refused.
#[test]
fn promtool_refuses_a_broken_exposition() {
    let (ok, _) = promtool_check("# TYPE x counter\nx{a=\"1\" 1\n");
    assert!(!ok);
}

#[derive(Default, Clone)]
struct Receiver(Arc<Mutex<Vec<ExportMetricsServiceRequest>>>);

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tokio::test]
async fn otlp_push_is_received_and_decoded() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MetricsServiceServer::new(receiver.clone()))
            .serve_with_incoming(incoming),
    );

    let hub = filled_hub();
    let stop = CancellationToken::new();
    let settings = otlp::OtlpSettings {
        endpoint: format!("http://{addr}"),
        interval: Duration::from_millis(200),
        timeout: Duration::from_secs(5),
        ca: None,
        hostname: "test-host".into(),
    };
    let pusher = tokio::spawn(otlp::run(hub, settings, stop.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while receiver.0.lock().unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no OTLP export received within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    pusher.await.unwrap();
    server.abort();

    let request = receiver.0.lock().unwrap()[0].clone();
    let rm = &request.resource_metrics[0];
    let attrs = &rm.resource.as_ref().unwrap().attributes;
    assert!(attrs.iter().any(|kv| kv.key == "service.name"));
    let metrics = &rm.scope_metrics[0].metrics;
    let find = |name: &str| metrics.iter().find(|m| m.name == name).unwrap_or_else(|| panic!("no {name}"));

    let total = find("dbagent_node_memory_total_bytes");
    assert_eq!(total.unit, "By");
    let Some(metric::Data::Gauge(g)) = &total.data else { panic!("memory total is a gauge") };
    let Some(number_data_point::Value::AsDouble(v)) = g.data_points[0].value else { panic!("a double") };
    assert!(v > 64.0 * 1024.0 * 1024.0 && v < 64.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0, "implausible RAM size {v}");

    let cpu = find("dbagent_instance_cpu_usage_seconds");
    let Some(metric::Data::Sum(sum)) = &cpu.data else { panic!("cpu usage is a sum") };
    assert!(sum.is_monotonic);
    let p = &sum.data_points[0];
    assert!(p.attributes.iter().any(|kv| kv.key == "instance"));
    assert_eq!(p.value, Some(number_data_point::Value::AsDouble(98.234_511)));
}
