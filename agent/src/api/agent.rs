use dbagent_proto::v1 as pb;
use std::sync::Arc;
use std::time::SystemTime;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response};

use super::auth::{self, Caller};
use super::convert::{duration, timestamp};
use super::error::ApiResult;
use crate::backup::BackupService;
use crate::dbtls::DbTlsService;
use crate::host_inventory::HostInventory;
use crate::instances::registry::Registry;
use crate::json_store::CorruptRecord;
use crate::ops::OperationEngine;
use crate::volume::Volumes;

/// The Agent service: who the agent is, what it offers, how it is doing.
pub struct AgentApi {
    pub started: SystemTime,
    pub hostname: String,
    pub config_digest: String,
    pub dev_mode: bool,
    /// Volumes run on in-memory backends (`dbagent --dev --sim`); GetStatus warns about it.
    pub volumes_simulated: bool,
    pub host: HostInventory,
    /// Read for the instance count and the quarantined instance records only.
    pub registry: Arc<Registry>,
    /// Read for the quarantined volume records only.
    pub volumes: Volumes,
    /// Read for the count of open operations only.
    pub operations: OperationEngine,
    /// Cancelled: GetStatus reports "draining".
    pub shutdown: CancellationToken,
    /// Read for each instance's backup redundancy (what the scheduler last found; never lists).
    pub backups: Option<Arc<BackupService>>,
    /// Read for the installed database certificates close to expiry.
    pub database_tls: Option<DbTlsService>,
}

/// Capabilities that are no RPC: the agent serves mutual TLS only.
const TRANSPORT_CAPABILITIES: &[&str] = &["mtls"];

/// What this build implements; the orchestrator reads it to know what it may call. Derived from the
/// permission table, so a capability is advertised exactly when an RPC of it is served.
fn capabilities() -> Vec<String> {
    let mut capabilities: Vec<String> = TRANSPORT_CAPABILITIES.iter().map(|c| (*c).to_owned()).collect();
    for rule in auth::RULES.iter().filter(|rule| rule.is_served()) {
        let capability = rule_capability(rule);
        if !capabilities.contains(&capability) {
            capabilities.push(capability);
        }
    }
    capabilities
}

/// A served RPC's capability: its own (`auth::OWN_CAPABILITY`), else its service's.
fn rule_capability(rule: &auth::AccessRule) -> String {
    match auth::OWN_CAPABILITY.iter().find(|(path, _)| *path == rule.path) {
        Some((_, capability)) => (*capability).to_owned(),
        None => service_capability(rule.service()),
    }
}

/// A served service's capability: dbagent's own services by their name in lower case
/// (`dbagent.v1.Volumes` is "volumes"), gRPC's standard ones by their package
/// (`grpc.health.v1.Health` is "health", both reflection versions are "reflection").
fn service_capability(service: &str) -> String {
    match service.strip_prefix("grpc.") {
        Some(standard) => standard.split('.').next().unwrap_or(standard).to_owned(),
        None => service.rsplit('.').next().unwrap_or(service).to_ascii_lowercase(),
    }
}

#[tonic::async_trait]
impl pb::agent_server::Agent for AgentApi {
    async fn get_info(&self, req: Request<pb::GetInfoRequest>) -> ApiResult<pb::AgentInfo> {
        let caller = req.extensions().get::<Caller>().cloned();
        Ok(Response::new(pb::AgentInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            hostname: self.hostname.clone(),
            capabilities: capabilities(),
            config_digest: self.config_digest.clone(),
            dev_mode: self.dev_mode,
            caller_identity: caller.as_ref().map(|c| c.identity.clone()).unwrap_or_default(),
            caller_role: caller.map(|c| c.role.as_str().into()).unwrap_or_default(),
            host: Some((&self.host).into()),
        }))
    }

    async fn get_status(&self, _req: Request<pb::GetStatusRequest>) -> ApiResult<pb::AgentStatus> {
        Ok(Response::new(pb::AgentStatus {
            started: Some(timestamp(self.started)),
            uptime: Some(duration(self.started.elapsed().unwrap_or_default())),
            instance_count: u32::try_from(self.registry.count()).unwrap_or(u32::MAX),
            open_operations: u32::try_from(self.operations.open_count()).unwrap_or(u32::MAX),
            state: if self.shutdown.is_cancelled() { "draining" } else { "serving" }.into(),
            volumes_simulated: self.volumes_simulated,
            quarantined: quarantined("instance", self.registry.quarantined())
                .chain(quarantined("volume", self.volumes.quarantined()))
                .collect(),
            backup_redundancy: self.backup_redundancy().await,
            expiring_certificates: self.expiring_certificates().await,
        }))
    }
}

impl AgentApi {
    /// Installed database certificates within `database_tls.warn_days` of expiry, or past it.
    async fn expiring_certificates(&self) -> Vec<pb::CertificateExpiry> {
        let Some(tls) = self.database_tls.clone() else { return Vec::new() };
        // Reads each instance's certificate file.
        let all = tokio::task::spawn_blocking(move || tls.all_installed()).await.unwrap_or_default();
        all.into_iter()
            .filter(|i| i.warn)
            .map(|i| pb::CertificateExpiry {
                message: crate::dbtls::service::expiry_message(&i),
                not_after: Some(timestamp(crate::dbtls::service::unix_time(i.summary.not_after))),
                instance_id: i.instance_id,
                seconds_left: i.seconds_left,
            })
            .collect()
    }

    /// Per registered instance: destinations off the host (from the config, a statfs each) and the
    /// copies of its newest backup the scheduler last found.
    async fn backup_redundancy(&self) -> Vec<pb::BackupRedundancy> {
        let Some(backups) = &self.backups else { return Vec::new() };
        let placements = backups.placements().await;
        let off_host = |name: &str| placements.iter().any(|p| p.name == name && p.off_host);
        let health = backups.health();
        self.registry
            .list()
            .into_iter()
            .map(|i| {
                let h = health.instance(&i.id);
                let copies = h.as_ref().map(|h| h.newest_copies.clone()).unwrap_or_default();
                pb::BackupRedundancy {
                    instance_id: i.id,
                    destinations: count(placements.len()),
                    off_host_destinations: count(placements.iter().filter(|p| p.off_host).count()),
                    on_host_accepted: backups.accepts_on_host_destinations(),
                    newest_backup_id: h.as_ref().and_then(|h| h.newest_id.clone()).unwrap_or_default(),
                    newest_backup_copies: count(copies.len()),
                    newest_backup_off_host_copies: count(copies.iter().filter(|c| off_host(c)).count()),
                    last_good_backup: h.as_ref().and_then(|h| h.last_good).map(timestamp),
                    degraded_backups: h.as_ref().map_or(0, |h| u32::try_from(h.degraded).unwrap_or(u32::MAX)),
                    checked: h.map(|h| timestamp(h.checked)),
                }
            })
            .collect()
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn quarantined(record: &'static str, records: Vec<CorruptRecord>) -> impl Iterator<Item = pb::QuarantinedRecord> {
    records.into_iter().map(move |c| pb::QuarantinedRecord {
        instance_id: c.key(),
        record: record.into(),
        file: c.file.display().to_string(),
        reason: c.reason,
    })
}

#[cfg(test)]
#[path = "agent_tests.rs"]
mod tests;
