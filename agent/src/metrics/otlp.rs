//! OTLP/gRPC push of the latest snapshots, when `metrics.otlp_endpoint` is set.
//!
//! The agent already holds its samples, so it sends them as an `ExportMetricsServiceRequest` built
//! from opentelemetry-proto's types with our own tonic client, instead of running the OpenTelemetry
//! SDK's instruments and periodic reader beside the sampler: no second collection path, no SDK
//! runtime, and the same tonic/prost as the API (`cargo tree -d` shows no second copy).

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Metric as OtlpMetric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric,
    number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::model::{Kind, Metric, Owner, Snapshot};
use super::prometheus::family_name;
use super::{MetricsError, MetricsHub};

#[derive(Debug, Clone)]
pub struct OtlpSettings {
    /// `http://host:4317` or `https://host:4317`.
    pub endpoint: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// CA bundle for an https endpoint.
    pub ca: Option<PathBuf>,
    pub hostname: String,
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

fn nanos(t: SystemTime) -> u64 {
    u64::try_from(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos()).unwrap_or(u64::MAX)
}

/// One OTLP metric per family; data points carry the instance id and the series labels as
/// attributes. Counters become cumulative monotonic sums starting at `start`.
pub fn build_request(snapshots: &[Arc<Snapshot>], hostname: &str, start: SystemTime) -> ExportMetricsServiceRequest {
    let mut families: BTreeMap<(bool, Metric), Vec<NumberDataPoint>> = BTreeMap::new();
    for s in snapshots {
        let instance = match &s.owner {
            Owner::Node => None,
            Owner::Instance(id) => Some(id.as_str()),
        };
        for p in &s.points {
            let attributes = instance
                .map(|id| kv("instance", id))
                .into_iter()
                .chain(p.key.labels.iter().map(|(k, v)| kv(k, v)))
                .collect();
            families.entry((instance.is_some(), p.key.metric)).or_default().push(NumberDataPoint {
                attributes,
                start_time_unix_nano: nanos(start),
                time_unix_nano: nanos(s.time),
                value: Some(number_data_point::Value::AsDouble(p.value())),
                ..Default::default()
            });
        }
    }
    let metrics = families
        .into_iter()
        .map(|((is_instance, metric), data_points)| {
            let info = metric.info();
            let owner = if is_instance { Owner::Instance(String::new()) } else { Owner::Node };
            let full = family_name(&owner, metric);
            let data = match info.kind {
                Kind::Counter => metric::Data::Sum(Sum {
                    data_points,
                    aggregation_temporality: AggregationTemporality::Cumulative.into(),
                    is_monotonic: true,
                }),
                Kind::Gauge => metric::Data::Gauge(Gauge { data_points }),
            };
            OtlpMetric {
                // OTLP-to-Prometheus converters add `_total` to monotonic sums themselves.
                name: full.strip_suffix("_total").unwrap_or(&full).to_owned(),
                description: info.help.into(),
                unit: info.unit.into(),
                data: Some(data),
                ..Default::default()
            }
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "dbagent"), kv("host.name", hostname)],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "dbagent".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// A lazily connecting client: an unreachable collector at start-up is retried at every push.
pub fn client(settings: &OtlpSettings) -> Result<MetricsServiceClient<Channel>, MetricsError> {
    let invalid = |message: String| MetricsError::OtlpEndpoint { endpoint: settings.endpoint.clone(), message };
    let mut endpoint = Endpoint::from_shared(settings.endpoint.clone())
        .map_err(|e| invalid(e.to_string()))?
        .connect_timeout(settings.timeout)
        .timeout(settings.timeout);
    if settings.endpoint.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if let Some(path) = &settings.ca {
            let pem = std::fs::read(path).map_err(|source| MetricsError::OtlpCa { path: path.clone(), source })?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| invalid(e.to_string()))?;
    }
    Ok(MetricsServiceClient::new(endpoint.connect_lazy()))
}

/// Pushes the latest snapshots every `settings.interval` until `shutdown`. Failures are logged (once
/// per change of outcome, not every interval) and retried at the next push.
pub async fn run(hub: Arc<MetricsHub>, settings: OtlpSettings, shutdown: CancellationToken) {
    let mut client = match client(&settings) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("OTLP export disabled: {e}");
            return;
        }
    };
    let start = SystemTime::now();
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let latest = hub.history.latest_all();
        if latest.is_empty() {
            continue;
        }
        let request = build_request(&latest, &settings.hostname, start);
        let result = tokio::select! {
            () = shutdown.cancelled() => return,
            r = client.export(request) => r,
        };
        match result {
            Ok(_) if failing => {
                tracing::info!(endpoint = %settings.endpoint, "OTLP export works again");
                failing = false;
            }
            Ok(_) => {}
            Err(e) if !failing => {
                tracing::warn!(endpoint = %settings.endpoint, "OTLP export failed, retrying every {:?}: {e}", settings.interval);
                failing = true;
            }
            Err(_) => {}
        }
    }
}
