//! The Upgrades service. SetMaintenanceWindow, GetAvailability and ChangePlan are served; upgrades
//! and certificates answer UNIMPLEMENTED from the permission layer (`auth::NOT_BUILT_YET`) before
//! any handler runs, so the methods for them here are never reached.

use dbagent_proto::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

use super::convert::availability::availability_to_proto;
use super::convert::instance::{maintenance_window_from_proto, maintenance_window_to_proto, plan_from_proto};
use super::error::ApiResult;
use crate::availability::{Ledger, Month, figures, month::picture};
use crate::ids::InvalidField;
use crate::instances::registry::Registry;
use crate::requests::RequestLedger;

pub struct UpgradesApi {
    pub registry: Arc<Registry>,
    pub requests: RequestLedger,
    pub availability: Ledger,
    pub plans: crate::plan::PlanChanges,
}

/// The picture's resolution: one character per 6 hours, 112 to 124 characters a month.
const PICTURE_SLOT_SECS: u64 = 6 * 3600;

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

    async fn change_plan(&self, req: Request<pb::ChangePlanRequest>) -> ApiResult<pb::Operation> {
        let req = req.into_inner();
        let plan = plan_from_proto("plan", req.plan)?;
        let (record, _) = self.plans.change(&req.request_id, &req.instance_id, plan, req.force).await?;
        Ok(Response::new((&record).into()))
    }

    async fn get_availability(&self, req: Request<pb::GetAvailabilityRequest>) -> ApiResult<pb::Availability> {
        let req = req.into_inner();
        crate::ids::instance_id("instance_id", &req.instance_id)?;
        let now = self.availability.now();
        let month = match req.month.as_str() {
            "" => Month::containing(now),
            text => Month::parse(text).map_err(|e| InvalidField::new("month", e.to_string()))?,
        };
        let instance = self.registry.get(&req.instance_id)?;
        let intervals = self.availability.intervals(&req.instance_id);
        let f = figures(month, instance.spec.plan.name, &intervals, now);
        let picture = picture(month, &intervals, now, PICTURE_SLOT_SECS);
        Ok(Response::new(availability_to_proto(&req.instance_id, &f, picture)))
    }

    async fn install_certificate(&self, _req: Request<pb::InstallCertificateRequest>) -> ApiResult<pb::Operation> {
        Err(Status::unimplemented("database TLS certificates are not built yet (issue 15)"))
    }
}
