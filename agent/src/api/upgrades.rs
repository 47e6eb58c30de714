//! The Upgrades service. SetMaintenanceWindow is served; upgrades, plan changes, availability and
//! certificates answer UNIMPLEMENTED from the permission layer (`auth::NOT_BUILT_YET`) before any
//! handler runs, so the methods for them here are never reached.

use dbagent_proto::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

use super::convert::instance::{maintenance_window_from_proto, maintenance_window_to_proto};
use super::error::ApiResult;
use crate::ids::InvalidField;
use crate::instances::registry::Registry;
use crate::requests::RequestLedger;

pub struct UpgradesApi {
    pub registry: Arc<Registry>,
    pub requests: RequestLedger,
}

/// The answer for the RPCs issue 14 has still to build, should one ever get past the permission layer.
fn not_built(capability: &str) -> Status {
    Status::unimplemented(format!("{capability} are not built yet (issue 14, \"Upgrades and plan changes\")"))
}

#[tonic::async_trait]
impl pb::upgrades_server::Upgrades for UpgradesApi {
    async fn set_maintenance_window(
        &self,
        req: Request<pb::SetMaintenanceWindowRequest>,
    ) -> ApiResult<pb::MaintenanceWindow> {
        let req = req.into_inner();
        let window = self.requests.once("SetMaintenanceWindow", &req.request_id, &req, || async {
            let window = req.window.ok_or_else(|| InvalidField::new("window", "is required"))?;
            let window = maintenance_window_from_proto("window", window)?;
            let instance = self.registry.set_maintenance_window(&req.instance_id, window).await?;
            let stored = instance.spec.maintenance_window.as_ref().map(maintenance_window_to_proto);
            Ok::<_, Status>(stored.unwrap_or_default())
        });
        Ok(Response::new(window.await?))
    }

    async fn start_upgrade(&self, _req: Request<pb::StartUpgradeRequest>) -> ApiResult<pb::Operation> {
        Err(not_built("upgrades"))
    }

    async fn change_plan(&self, _req: Request<pb::ChangePlanRequest>) -> ApiResult<pb::Operation> {
        Err(not_built("plan changes"))
    }

    async fn get_availability(&self, _req: Request<pb::GetAvailabilityRequest>) -> ApiResult<pb::Availability> {
        Err(not_built("availability reports"))
    }

    async fn install_certificate(&self, _req: Request<pb::InstallCertificateRequest>) -> ApiResult<pb::Operation> {
        Err(not_built("database TLS certificates"))
    }
}
