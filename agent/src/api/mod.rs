//! The gRPC API: one file per service, handlers of a few lines over the domain library.
//! Authorization happens before any handler, in `auth`.

pub mod agent;
pub mod auth;
pub mod backups;
pub mod convert;
pub mod error;
pub mod instances;
pub mod logs;
pub mod metrics;
pub mod operations;
pub mod volumes;

use dbagent_proto::v1 as pb;
use std::sync::Arc;
use std::time::SystemTime;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

use crate::backup::BackupService;
use crate::instances::registry::Registry;
use crate::metrics::MetricsHub;
use crate::ops::OperationEngine;
use crate::tls::listener::TlsConn;

/// What the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    pub registry: Arc<Registry>,
    pub engine: OperationEngine,
    pub backups: Arc<BackupService>,
    pub started: SystemTime,
    pub hostname: String,
    pub config_digest: String,
    pub dev_mode: bool,
    pub test_kinds: bool,
    pub shutdown: CancellationToken,
    pub volumes: crate::volume::Volumes,
    pub metrics: Arc<MetricsHub>,
    pub logs: crate::logs::LogManager,
    /// Replays the mutating calls that return a plain resource, by request_id.
    pub requests: crate::requests::RequestLedger,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("serve the API: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves every service on `incoming` until `shutdown`, then lets in-flight RPCs finish.
pub async fn serve(
    state: ApiState,
    incoming: ReceiverStream<Result<TlsConn, std::io::Error>>,
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
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(dbagent_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .layer(auth::AuthLayer)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(pb::agent_server::AgentServer::new(agent::AgentApi(state.clone())))
        .add_service(pb::instances_server::InstancesServer::new(instances::InstancesApi(state.clone())))
        .add_service(pb::volumes_server::VolumesServer::new(volumes::VolumesApi(state.clone())))
        .add_service(pb::metrics_server::MetricsServer::new(metrics::MetricsApi(state.clone())))
        .add_service(pb::logs_server::LogsServer::new(logs::LogsApi(state.clone())))
        .add_service(pb::backups_server::BackupsServer::new(backups::BackupsApi(state.clone())))
        .add_service(pb::operations_server::OperationsServer::new(operations::OperationsApi(state)))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await?;
    Ok(())
}
