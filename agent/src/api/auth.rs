//! Authorization in one place: every RPC path, the access it needs, and whether its capability is
//! built yet. A tower layer checks each request against this table before any handler runs.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::body::Body;
use tower::{Layer, Service};

use crate::tls::peer::{PeerInfo, Role};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Status, lists, metrics, logs: orchestrator and monitor.
    Read,
    /// Anything that changes the host: orchestrator only.
    Write,
}

/// One RPC path, the access it needs, and whether it is served.
#[derive(Debug, Clone, Copy)]
pub struct AccessRule {
    pub path: &'static str,
    pub access: Access,
    /// `None`: served. `Some(capability)`: answered UNIMPLEMENTED naming the capability.
    pub pending: Option<&'static str>,
}

impl AccessRule {
    /// The package-qualified service of the path: `dbagent.v1.Volumes` for
    /// `/dbagent.v1.Volumes/CreateVolume`.
    pub fn service(&self) -> &'static str {
        let path = self.path.strip_prefix('/').unwrap_or(self.path);
        path.split_once('/').map_or(path, |(service, _)| service)
    }

    pub fn is_served(&self) -> bool {
        self.pending.is_none()
    }
}

const fn r(path: &'static str) -> AccessRule {
    AccessRule { path, access: Access::Read, pending: None }
}
const fn w(path: &'static str) -> AccessRule {
    AccessRule { path, access: Access::Write, pending: None }
}
const fn later(rule: AccessRule, capability: &'static str) -> AccessRule {
    AccessRule { pending: Some(capability), ..rule }
}

/// Every RPC the agent answers. A path missing here is refused, so a new RPC cannot slip in
/// unguarded. The served services, the capabilities GetInfo advertises and what reflection lists are
/// all read from this table.
pub const RULES: &[AccessRule] = &[
    r("/grpc.health.v1.Health/Check"),
    r("/grpc.health.v1.Health/Watch"),
    r("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
    // Beside v1 because many clients (Python's grpcio-reflection, older grpcurl) speak only v1alpha.
    r("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
    r("/dbagent.v1.Agent/GetInfo"),
    r("/dbagent.v1.Agent/GetStatus"),
    w("/dbagent.v1.Instances/RegisterInstance"),
    w("/dbagent.v1.Instances/UpdateInstance"),
    w("/dbagent.v1.Instances/RemoveInstance"),
    r("/dbagent.v1.Instances/GetInstance"),
    r("/dbagent.v1.Instances/ListInstances"),
    r("/dbagent.v1.Operations/GetOperation"),
    r("/dbagent.v1.Operations/ListOperations"),
    r("/dbagent.v1.Operations/WatchOperation"),
    w("/dbagent.v1.Operations/CancelOperation"),
    w("/dbagent.v1.Operations/StartSleep"),
    w("/dbagent.v1.Volumes/CreateVolume"),
    w("/dbagent.v1.Volumes/OpenVolume"),
    w("/dbagent.v1.Volumes/CloseVolume"),
    w("/dbagent.v1.Volumes/GrowVolume"),
    w("/dbagent.v1.Volumes/RotateVolumeKey"),
    w("/dbagent.v1.Volumes/BackupVolumeHeader"),
    r("/dbagent.v1.Volumes/GetVolume"),
    r("/dbagent.v1.Volumes/ListVolumes"),
    w("/dbagent.v1.Volumes/DestroyVolume"),
    r("/dbagent.v1.Metrics/GetNodeMetrics"),
    r("/dbagent.v1.Metrics/GetInstanceMetrics"),
    r("/dbagent.v1.Metrics/StreamMetrics"),
    r("/dbagent.v1.Logs/TailLogs"),
    r("/dbagent.v1.Logs/ListDrains"),
    w("/dbagent.v1.Logs/SetDrains"),
    r("/dbagent.v1.Logs/GetDrainStatus"),
    w("/dbagent.v1.Backups/StartBackup"),
    r("/dbagent.v1.Backups/ListBackups"),
    r("/dbagent.v1.Backups/GetBackup"),
    w("/dbagent.v1.Backups/DeleteBackup"),
    w("/dbagent.v1.Backups/VerifyBackup"),
    w("/dbagent.v1.Backups/RestoreBackup"),
    w("/dbagent.v1.Backups/RepairBackup"),
    w("/dbagent.v1.Backups/SetBackupPolicy"),
    later(w("/dbagent.v1.Upgrades/StartUpgrade"), "upgrades"),
    later(w("/dbagent.v1.Upgrades/ChangePlan"), "plan changes"),
    later(w("/dbagent.v1.Upgrades/SetMaintenanceWindow"), "maintenance windows"),
    later(r("/dbagent.v1.Upgrades/GetAvailability"), "availability"),
    later(w("/dbagent.v1.Upgrades/InstallCertificate"), "database TLS certificates"),
];

/// The services with at least one served RPC, package-qualified, each once, in table order.
pub fn served_services() -> Vec<&'static str> {
    let mut services: Vec<&'static str> = Vec::new();
    for rule in RULES.iter().filter(|rule| rule.is_served()) {
        if !services.contains(&rule.service()) {
            services.push(rule.service());
        }
    }
    services
}

/// The authenticated caller, put into request extensions for handlers that report it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub identity: String,
    pub role: Role,
}

/// Decides one request. `Err` is the answer to send instead of calling the handler.
pub fn authorize(path: &str, peer: Option<&PeerInfo>) -> Result<Caller, tonic::Status> {
    let Some(peer) = peer else {
        return Err(tonic::Status::unauthenticated("no verified client certificate on this connection"));
    };
    let Some(role) = peer.role else {
        return Err(tonic::Status::permission_denied(format!(
            "client certificate {:?} is not mapped to a role; add it to auth.orchestrators or auth.monitors in the agent config",
            peer.identity
        )));
    };
    let Some(rule) = RULES.iter().find(|rule| rule.path == path) else {
        if path.starts_with("/dbagent.v1.KeyService/") {
            return Err(tonic::Status::unimplemented("KeyService is served by the orchestrator, not by the agent"));
        }
        return Err(tonic::Status::unimplemented(format!("{path} is not an RPC of this agent")));
    };
    if rule.access == Access::Write && role != Role::Orchestrator {
        return Err(tonic::Status::permission_denied(format!(
            "{path} changes the host; identity {:?} has the read-only {} role",
            peer.identity,
            role.as_str()
        )));
    }
    if let Some(capability) = rule.pending {
        return Err(tonic::Status::unimplemented(format!(
            "the {capability} capability is not implemented in dbagent {} yet",
            env!("CARGO_PKG_VERSION")
        )));
    }
    Ok(Caller { identity: peer.identity.clone(), role })
}

#[derive(Debug, Clone, Default)]
pub struct AuthLayer;

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService { inner }
    }
}

#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for AuthService<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match authorize(req.uri().path(), req.extensions().get::<PeerInfo>()) {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                // The clone is the ready one's sibling: take the ready service, leave the clone.
                let clone = self.inner.clone();
                let mut ready = std::mem::replace(&mut self.inner, clone);
                Box::pin(async move { ready.call(req).await })
            }
            Err(status) => {
                tracing::info!(path = req.uri().path(), "refused: {}", status.message());
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn peer(role: Option<Role>) -> PeerInfo {
        PeerInfo { remote: None, identity: "x".into(), role }
    }

    /// Every RPC of every dbagent.v1 service the agent serves has exactly one rule.
    #[test]
    fn every_rpc_has_a_rule() {
        let fds = prost_types::FileDescriptorSet::decode(dbagent_proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut count = 0;
        for file in &fds.file {
            for service in &file.service {
                let name = service.name();
                if name == "KeyService" {
                    continue;
                }
                for method in &service.method {
                    let path = format!("/dbagent.v1.{name}/{}", method.name());
                    assert_eq!(RULES.iter().filter(|rule| rule.path == path).count(), 1, "{path}");
                    count += 1;
                }
            }
        }
        let standard = [
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        for set in standard {
            for file in &prost_types::FileDescriptorSet::decode(set).unwrap().file {
                for service in &file.service {
                    for method in &service.method {
                        let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                        assert_eq!(RULES.iter().filter(|rule| rule.path == path).count(), 1, "{path}");
                        count += 1;
                    }
                }
            }
        }
        assert_eq!(count, RULES.len(), "rules for RPCs that do not exist");
    }

    #[test]
    fn roles() {
        let orch = peer(Some(Role::Orchestrator));
        let mon = peer(Some(Role::Monitor));
        assert!(authorize("/dbagent.v1.Instances/RegisterInstance", Some(&orch)).is_ok());
        let e = authorize("/dbagent.v1.Instances/RegisterInstance", Some(&mon)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(authorize("/dbagent.v1.Instances/ListInstances", Some(&mon)).is_ok());
        let e = authorize("/dbagent.v1.Agent/GetStatus", Some(&peer(None))).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        let e = authorize("/dbagent.v1.Agent/GetStatus", None).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let e = authorize("/dbagent.v1.Upgrades/GetAvailability", Some(&mon)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented);
        assert!(e.message().contains("availability"));
        let e = authorize("/dbagent.v1.Upgrades/StartUpgrade", Some(&mon)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "authorization comes before UNIMPLEMENTED");
        assert!(authorize("/dbagent.v1.Volumes/ListVolumes", Some(&mon)).is_ok());
        let e = authorize("/dbagent.v1.Volumes/CreateVolume", Some(&mon)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        let e = authorize("/x.Y/Z", Some(&orch)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented);
    }

    const REFLECTION_V1: &str = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
    const REFLECTION_V1ALPHA: &str = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";

    #[test]
    fn both_reflection_versions_are_open_to_both_roles() {
        for role in [Role::Orchestrator, Role::Monitor] {
            for path in [REFLECTION_V1, REFLECTION_V1ALPHA] {
                let caller = authorize(path, Some(&peer(Some(role))));
                assert!(caller.is_ok(), "{path} for {role:?}: {caller:?}");
            }
        }
        let e = authorize(REFLECTION_V1ALPHA, Some(&peer(None))).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "a certificate without a role still gets nothing");
    }

    #[test]
    fn served_services_leave_out_unbuilt_and_client_only_services() {
        let served = served_services();
        for service in [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "dbagent.v1.Agent",
            "dbagent.v1.Volumes",
            "dbagent.v1.Backups",
        ] {
            assert!(served.contains(&service), "{service} is served: {served:?}");
        }
        assert!(!served.contains(&"dbagent.v1.Upgrades"), "no Upgrades RPC is built yet");
        assert!(!served.contains(&"dbagent.v1.KeyService"), "the agent calls KeyService, it does not serve it");
        let mut unique = served.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), served.len(), "each service once: {served:?}");
    }
}
