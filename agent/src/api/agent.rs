use dbagent_proto::v1 as pb;
use tonic::{Request, Response};

use super::ApiState;
use super::auth::Caller;
use super::convert::{duration, timestamp};
use super::error::ApiResult;

pub struct AgentApi(pub ApiState);

/// What this build implements; the orchestrator reads it to know what it may call.
const CAPABILITIES: &[&str] =
    &["instances", "operations", "mtls", "health", "reflection", "volumes", "metrics", "logs", "backups"];

#[tonic::async_trait]
impl pb::agent_server::Agent for AgentApi {
    async fn get_info(&self, req: Request<pb::GetInfoRequest>) -> ApiResult<pb::AgentInfo> {
        let caller = req.extensions().get::<Caller>().cloned();
        let s = &self.0;
        Ok(Response::new(pb::AgentInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            hostname: s.hostname.clone(),
            capabilities: CAPABILITIES.iter().map(|c| (*c).into()).collect(),
            config_digest: s.config_digest.clone(),
            dev_mode: s.dev_mode,
            caller_identity: caller.as_ref().map(|c| c.identity.clone()).unwrap_or_default(),
            caller_role: caller.map(|c| c.role.as_str().into()).unwrap_or_default(),
        }))
    }

    async fn get_status(&self, _req: Request<pb::GetStatusRequest>) -> ApiResult<pb::AgentStatus> {
        let s = &self.0;
        Ok(Response::new(pb::AgentStatus {
            started: Some(timestamp(s.started)),
            uptime: Some(duration(s.started.elapsed().unwrap_or_default())),
            instance_count: u32::try_from(s.registry.count()).unwrap_or(u32::MAX),
            open_operations: u32::try_from(s.engine.open_count()).unwrap_or(u32::MAX),
            state: if s.shutdown.is_cancelled() { "draining" } else { "serving" }.into(),
        }))
    }
}
