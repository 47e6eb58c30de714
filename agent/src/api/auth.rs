//! Authorization in one place: every RPC path, the access it needs, and whether the agent serves
//! it. A tower layer checks each request against this table before any handler runs.
//!
//! The access of dbagent's own RPCs is not written here: it is declared in the proto
//! (`option (dbagent.v1.access)`) and read from the table the proto crate generates from it.

use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use tonic::body::Body;
use tower::{Layer, Service};

pub use dbagent_proto::access::Access;
use dbagent_proto::access::METHOD_ACCESS;

use super::call_guard_body::GuardedBody;
use crate::ops::Submitter;
use crate::tls::peer::{PeerInfo, Role};

/// Whether the agent answers an RPC it knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    Served,
    /// Declared in the proto, not built yet: answered UNIMPLEMENTED naming the capability and the
    /// issue that builds it.
    Later {
        capability: &'static str,
        issue: u32,
    },
    /// A service the agent calls and the orchestrator serves: answered UNIMPLEMENTED.
    ByOrchestrator,
}

/// One RPC path, the access it needs, and whether it is served.
#[derive(Debug, Clone, Copy)]
pub struct AccessRule {
    pub path: &'static str,
    pub access: Access,
    pub serving: Serving,
}

impl AccessRule {
    /// The package-qualified service of the path: `dbagent.v1.Volumes` for
    /// `/dbagent.v1.Volumes/CreateVolume`.
    pub fn service(&self) -> &'static str {
        let path = self.path.strip_prefix('/').unwrap_or(self.path);
        path.split_once('/').map_or(path, |(service, _)| service)
    }

    pub fn is_served(&self) -> bool {
        self.serving == Serving::Served
    }
}

/// gRPC's standard services the agent serves beside its own. They are not in our proto; each only
/// reports, so each is read.
const STANDARD_READS: &[&str] = &[
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    // Beside v1 because many clients (Python's grpcio-reflection, older grpcurl) speak only v1alpha.
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// RPCs of the proto this build does not implement yet, with the capability each belongs to and
/// the issue that builds it.
const NOT_BUILT_YET: &[(&str, &str, u32)] = &[];

/// Served RPCs of a service that is only partly built, with the capability each gives: the
/// service's name would advertise what is not built yet (Upgrades serves windows, not upgrades).
pub const OWN_CAPABILITY: &[(&str, &str)] = &[
    ("/dbagent.v1.Upgrades/SetMaintenanceWindow", "maintenance windows"),
    ("/dbagent.v1.Upgrades/GetAvailability", "availability"),
    ("/dbagent.v1.Upgrades/InstallCertificate", "database TLS certificates"),
    ("/dbagent.v1.Upgrades/GetCertificate", "database TLS certificates"),
    ("/dbagent.v1.Upgrades/StartUpgrade", "engine upgrades"),
    ("/dbagent.v1.Upgrades/ChangePlan", "plan changes"),
];

/// Services of the proto that the agent calls and never serves.
const SERVED_BY_ORCHESTRATOR: &[&str] = &["dbagent.v1.KeyService"];

/// Every RPC the agent knows: the standard ones, then every RPC of the proto with its declared
/// access. A path missing here is refused, so a new RPC cannot slip in unguarded. The served
/// services, the capabilities GetInfo advertises and what reflection lists are all read from it.
pub static RULES: LazyLock<Vec<AccessRule>> = LazyLock::new(|| {
    let standard =
        STANDARD_READS.iter().map(|&path| AccessRule { path, access: Access::Read, serving: Serving::Served });
    let ours = METHOD_ACCESS.iter().map(|row| AccessRule {
        path: row.path,
        access: row.access,
        serving: serving(row.path, row.service()),
    });
    standard.chain(ours).collect()
});

fn serving(path: &str, service: &str) -> Serving {
    if SERVED_BY_ORCHESTRATOR.contains(&service) {
        return Serving::ByOrchestrator;
    }
    match NOT_BUILT_YET.iter().find(|(pending, _, _)| *pending == path) {
        Some(&(_, capability, issue)) => Serving::Later { capability, issue },
        None => Serving::Served,
    }
}

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

/// The authenticated caller, put into request extensions for handlers that report it and for the
/// audit trail (operation records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The certificate name that gave the role.
    pub identity: String,
    /// The certificate's subject distinguished name.
    pub subject: String,
    pub role: Role,
}

/// Decides one request. `Err` is the answer to send instead of calling the handler.
pub fn authorize(path: &str, peer: Option<&PeerInfo>) -> Result<Caller, tonic::Status> {
    let Some(peer) = peer else {
        return Err(tonic::Status::unauthenticated("no verified client certificate on this connection"));
    };
    let role = match &peer.role {
        Ok(role) => *role,
        Err(why) => {
            return Err(tonic::Status::permission_denied(format!("client certificate {:?} {why}", peer.identity)));
        }
    };
    let Some(rule) = RULES.iter().find(|rule| rule.path == path) else {
        return Err(tonic::Status::unimplemented(format!("{path} is not an RPC of this agent")));
    };
    // Anything but a declared read needs the orchestrator: the check fails closed.
    if rule.access != Access::Read && role != Role::Orchestrator {
        return Err(tonic::Status::permission_denied(format!(
            "{path} needs write access, which only the orchestrator has; identity {:?} has the read-only {} role",
            peer.identity,
            role.as_str()
        )));
    }
    match rule.serving {
        Serving::Served => {}
        Serving::Later { capability, issue } => {
            return Err(tonic::Status::unimplemented(format!(
                "the {capability} capability is not implemented in dbagent {} yet (issue {issue} builds it)",
                env!("CARGO_PKG_VERSION")
            )));
        }
        Serving::ByOrchestrator => {
            return Err(tonic::Status::unimplemented(format!(
                "{} is served by the orchestrator, not by the agent",
                rule.service()
            )));
        }
    }
    Ok(Caller { identity: peer.identity.clone(), subject: peer.subject.clone(), role })
}

fn rule_access(path: &str) -> Option<Access> {
    RULES.iter().find(|rule| rule.path == path).map(|rule| rule.access)
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
        // Counted open until its response body ends, for `api.idle_timeout_secs`.
        let call = req.extensions().get::<PeerInfo>().map(|peer| peer.activity.begin());
        let answer = match authorize(req.uri().path(), req.extensions().get::<PeerInfo>()) {
            Ok(caller) => {
                // The audit trail of who changed what: every call that may change something is
                // logged with its caller before it runs.
                if rule_access(req.uri().path()) != Some(Access::Read) {
                    let remote = req.extensions().get::<PeerInfo>().and_then(|p| p.remote);
                    tracing::info!(
                        path = req.uri().path(),
                        remote = ?remote,
                        identity = %caller.identity,
                        subject = %caller.subject,
                        role = caller.role.as_str(),
                        "mutating call"
                    );
                }
                let submitter = Submitter {
                    identity: caller.identity.clone(),
                    subject: caller.subject.clone(),
                    role: caller.role.as_str().to_owned(),
                };
                req.extensions_mut().insert(caller);
                // The clone is the ready one's sibling: take the ready service, leave the clone.
                let clone = self.inner.clone();
                let mut ready = std::mem::replace(&mut self.inner, clone);
                Box::pin(submitter.scope(async move { ready.call(req).await })) as Self::Future
            }
            Err(status) => {
                tracing::info!(path = req.uri().path(), "refused: {}", status.message());
                Box::pin(async move { Ok(status.into_http()) })
            }
        };
        match call {
            Some(call) => Box::pin(async move {
                let response = answer.await?;
                Ok(response.map(|body| GuardedBody::wrap(body, call)))
            }),
            None => answer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::peer::NoRole;
    use prost::Message;
    use std::sync::Arc;

    fn peer(role: Option<Role>) -> PeerInfo {
        PeerInfo {
            remote: None,
            identity: "x".into(),
            subject: "CN=x".into(),
            role: role.ok_or(NoRole::Unmapped),
            activity: Arc::default(),
        }
    }

    /// Every RPC of every service in our proto and in the standard services has exactly one rule,
    /// and ours carry the access the proto declares.
    #[test]
    fn every_rpc_has_one_rule_with_its_declared_access() {
        let mut count = 0;
        for set in [
            dbagent_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ] {
            for file in &prost_types::FileDescriptorSet::decode(set).unwrap().file {
                for service in &file.service {
                    for method in &service.method {
                        let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                        let rules: Vec<_> = RULES.iter().filter(|rule| rule.path == path).collect();
                        assert_eq!(rules.len(), 1, "{path}");
                        if let Some(declared) = dbagent_proto::access::method_access(&path) {
                            assert_eq!(rules[0].access, declared, "{path}");
                        }
                        count += 1;
                    }
                }
            }
        }
        assert_eq!(count, RULES.len(), "rules for RPCs that do not exist");
    }

    /// A misspelt path in the lists written here would silently leave an RPC served.
    #[test]
    fn every_path_written_here_is_an_rpc_of_the_proto() {
        for (path, _, _) in NOT_BUILT_YET {
            assert!(dbagent_proto::access::method_access(path).is_some(), "{path}");
        }
        for service in SERVED_BY_ORCHESTRATOR {
            assert!(METHOD_ACCESS.iter().any(|row| row.service() == *service), "{service}");
        }
    }

    #[test]
    fn monitor_is_denied_exactly_the_declared_writes() {
        let mon = peer(Some(Role::Monitor));
        for row in METHOD_ACCESS {
            let denied = authorize(row.path, Some(&mon)).is_err_and(|e| e.code() == tonic::Code::PermissionDenied);
            assert_eq!(denied, row.access == Access::Write, "{}", row.path);
        }
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
        assert!(
            authorize("/dbagent.v1.Upgrades/GetAvailability", Some(&mon)).is_ok(),
            "availability is served, read-only"
        );
        assert!(authorize("/dbagent.v1.Upgrades/StartUpgrade", Some(&orch)).is_ok(), "upgrades are served");
        assert!(authorize("/dbagent.v1.Upgrades/ChangePlan", Some(&orch)).is_ok(), "plan changes are served");
        let e = authorize("/dbagent.v1.Upgrades/ChangePlan", Some(&mon)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "a plan change is a write");
        assert!(authorize("/dbagent.v1.Upgrades/InstallCertificate", Some(&orch)).is_ok(), "certificates are served");
        let e = authorize("/dbagent.v1.Upgrades/InstallCertificate", Some(&mon)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "installing a certificate is a write");
        assert!(authorize("/dbagent.v1.Upgrades/GetCertificate", Some(&mon)).is_ok(), "reading it is not");
        let e = authorize("/dbagent.v1.Upgrades/StartUpgrade", Some(&mon)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "an upgrade is a write");
        assert!(authorize("/dbagent.v1.Volumes/ListVolumes", Some(&mon)).is_ok());
        let e = authorize("/dbagent.v1.Volumes/CreateVolume", Some(&mon)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        let e = authorize("/x.Y/Z", Some(&orch)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented);
        let e = authorize("/x.Y/Z", Some(&mon)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented, "an unknown path reaches no handler");
        let e = authorize("/dbagent.v1.KeyService/WrapKey", Some(&orch)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented);
        assert!(e.message().contains("orchestrator"), "{e:?}");
    }

    #[test]
    fn a_certificate_of_two_roles_is_denied_and_told_why() {
        let both = PeerInfo {
            role: Err(NoRole::Ambiguous { orchestrator: "orch".into(), monitor: "mon".into() }),
            ..peer(None)
        };
        for path in ["/dbagent.v1.Agent/GetStatus", "/dbagent.v1.Instances/RegisterInstance"] {
            let e = authorize(path, Some(&both)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::PermissionDenied, "{path}");
            assert!(e.message().contains("two roles"), "{e:?}");
        }
        let caller = authorize("/dbagent.v1.Instances/RegisterInstance", Some(&peer(Some(Role::Orchestrator))));
        assert_eq!(caller.unwrap().subject, "CN=x", "the caller carries the subject for the audit trail");
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
        assert!(served.contains(&"dbagent.v1.Upgrades"), "SetMaintenanceWindow is served: {served:?}");
        assert!(!served.contains(&"dbagent.v1.KeyService"), "the agent calls KeyService, it does not serve it");
        let mut unique = served.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), served.len(), "each service once: {served:?}");
    }
}
