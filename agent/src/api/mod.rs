//! The gRPC API: one file per service, handlers of a few lines over the domain library.
//! Authorization happens before any handler, in `auth`.

pub mod agent;
pub mod auth;
pub mod backups;
mod call_guard_body;
pub mod convert;
pub mod error;
pub mod instances;
pub mod logs;
pub mod metrics;
pub mod operations;
pub mod upgrades;
pub mod volumes;

use dbagent_proto::v1 as pb;
use prost::Message;
use prost_types::FileDescriptorSet;
use std::time::Duration;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

use crate::config::ApiConfig;
use crate::tls::listener::TlsConn;

/// Every service the agent serves, each with exactly what it uses. The daemon builds them.
pub struct Services {
    pub agent: agent::AgentApi,
    pub instances: instances::InstancesApi,
    pub operations: operations::OperationsApi,
    pub volumes: volumes::VolumesApi,
    pub metrics: metrics::MetricsApi,
    pub logs: logs::LogsApi,
    pub backups: backups::BackupsApi,
    pub upgrades: upgrades::UpgradesApi,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("decode the API's file descriptors for reflection: {0}")]
    Descriptors(#[from] prost::DecodeError),
    #[error("build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("serve the API: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Per-connection limits of the HTTP/2 server (`[api]`).
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    pub max_concurrent_streams: u32,
    /// Applies to the handler's answer, so unary calls are bounded and a stream, once it answered
    /// with its headers, is not.
    pub unary_timeout: Duration,
}

impl ServeLimits {
    pub fn from_config(api: &ApiConfig) -> Self {
        Self {
            max_concurrent_streams: api.max_concurrent_streams,
            unary_timeout: Duration::from_secs(api.unary_timeout_secs),
        }
    }
}

/// Pings a connection that has been quiet this long; a peer that does not answer within
/// `KEEPALIVE_TIMEOUT` is gone (a dead host, a cut network) and its connection is closed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves every service on `incoming` until `shutdown`, then lets in-flight RPCs finish.
pub async fn serve(
    services: Services,
    incoming: ReceiverStream<Result<TlsConn, std::io::Error>>,
    limits: ServeLimits,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<pb::agent_server::AgentServer<agent::AgentApi>>().await;
    health.set_serving::<pb::instances_server::InstancesServer<instances::InstancesApi>>().await;
    health.set_serving::<pb::operations_server::OperationsServer<operations::OperationsApi>>().await;
    health.set_serving::<pb::volumes_server::VolumesServer<volumes::VolumesApi>>().await;
    health.set_serving::<pb::metrics_server::MetricsServer<metrics::MetricsApi>>().await;
    health.set_serving::<pb::logs_server::LogsServer<logs::LogsApi>>().await;
    health.set_serving::<pb::backups_server::BackupsServer<backups::BackupsApi>>().await;
    health.set_serving::<pb::upgrades_server::UpgradesServer<upgrades::UpgradesApi>>().await;
    let files = reflection_files()?;
    let reflection_v1 = reflection_builder(&files).build_v1()?;
    let reflection_v1alpha = reflection_builder(&files).build_v1alpha()?;
    Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(limits.max_concurrent_streams)
        .timeout(limits.unary_timeout)
        .layer(auth::AuthLayer)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(pb::agent_server::AgentServer::new(services.agent))
        .add_service(pb::instances_server::InstancesServer::new(services.instances))
        .add_service(pb::volumes_server::VolumesServer::new(services.volumes))
        .add_service(pb::metrics_server::MetricsServer::new(services.metrics))
        .add_service(pb::logs_server::LogsServer::new(services.logs))
        .add_service(pb::backups_server::BackupsServer::new(services.backups))
        .add_service(pb::upgrades_server::UpgradesServer::new(services.upgrades))
        .add_service(pb::operations_server::OperationsServer::new(services.operations))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await?;
    Ok(())
}

/// The files reflection describes: ours, health's and reflection's own (both versions, so each
/// reflection endpoint can describe the other), each keeping only the services the agent serves.
/// `keyservice.proto` thus keeps its messages but not `KeyService`, which the agent calls and never
/// serves; the services not built yet go the same way.
fn reflection_files() -> Result<FileDescriptorSet, prost::DecodeError> {
    let served = auth::served_services();
    let mut files = Vec::new();
    for encoded in [
        dbagent_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ] {
        for mut file in FileDescriptorSet::decode(encoded)?.file {
            let package = file.package().to_owned();
            file.service.retain(|service| served.contains(&format!("{package}.{}", service.name()).as_str()));
            files.push(file);
        }
    }
    Ok(FileDescriptorSet { file: files })
}

/// A reflection builder listing exactly the served services (without `with_service_name`, the
/// builder lists every service of every file it is given).
fn reflection_builder(files: &FileDescriptorSet) -> tonic_reflection::server::Builder<'static> {
    let builder = tonic_reflection::server::Builder::configure()
        .include_reflection_service(false)
        .register_file_descriptor_set(files.clone());
    auth::served_services().into_iter().fold(builder, |builder, service| builder.with_service_name(service))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reflection can describe each service it lists, and describes nothing the agent does not serve.
    #[test]
    fn reflection_describes_exactly_the_served_services() {
        let files = reflection_files().unwrap();
        let mut described: Vec<String> = files
            .file
            .iter()
            .flat_map(|f| f.service.iter().map(move |s| format!("{}.{}", f.package(), s.name())))
            .collect();
        described.sort();
        let mut served: Vec<String> = auth::served_services().into_iter().map(str::to_owned).collect();
        served.sort();
        assert_eq!(described, served);
        assert!(served.iter().any(|s| s == "dbagent.v1.Volumes"), "{served:?}");
        assert!(!described.iter().any(|s| s.ends_with(".KeyService")), "{described:?}");
        let keyservice = files.file.iter().find(|f| f.name().ends_with("keyservice.proto"));
        assert!(keyservice.is_some_and(|f| !f.message_type.is_empty()), "its messages stay resolvable");
    }
}
