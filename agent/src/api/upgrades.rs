//! The Upgrades service: SetMaintenanceWindow, GetAvailability, StartUpgrade (PostgreSQL major
//! upgrades and minor upgrades, `crate::upgrade`), ChangePlan (`crate::plan`) and the database certificates
//! (InstallCertificate, GetCertificate, `crate::dbtls`). Each handler checks and converts, the domain
//! modules do the work.

use dbagent_proto::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

use super::convert::availability::availability_to_proto;
use super::convert::certificate::{certificate_info, certificate_input};
use super::convert::instance::{maintenance_window_from_proto, maintenance_window_to_proto, plan_from_proto};
use super::error::ApiResult;
use crate::availability::{Ledger, Month, figures, month::picture};
use crate::dbtls::DbTlsService;
use crate::ids::InvalidField;
use crate::instances::registry::Registry;
use crate::requests::RequestLedger;
use crate::upgrade::UpgradeService;
use crate::upgrade::service::UpgradeRequest;

pub struct UpgradesApi {
    pub registry: Arc<Registry>,
    pub requests: RequestLedger,
    pub availability: Ledger,
    pub database_tls: DbTlsService,
    /// The last health probe of each instance: `last_probe` and `healthy`.
    pub health: crate::health::HealthBoard,
    pub upgrades: Arc<UpgradeService>,
    pub plans: crate::plan::PlanChanges,
}

/// The picture's resolution: one character per 6 hours, 112 to 124 characters a month.
const PICTURE_SLOT_SECS: u64 = 6 * 3600;

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

    async fn start_upgrade(&self, req: Request<pb::StartUpgradeRequest>) -> ApiResult<pb::Operation> {
        let req = req.into_inner();
        let request = UpgradeRequest {
            request_id: req.request_id,
            instance_id: req.instance_id,
            target_version: req.target_version,
            force: req.force,
            package_repository: req.package_repository,
            packages: req.packages,
        };
        let record = self.upgrades.start(request).await?;
        Ok(Response::new((&record).into()))
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
        let probe = self.health.get(&req.instance_id);
        Ok(Response::new(availability_to_proto(&req.instance_id, &f, picture, probe.as_ref())))
    }

    async fn install_certificate(&self, req: Request<pb::InstallCertificateRequest>) -> ApiResult<pb::Operation> {
        let req = req.into_inner();
        let (request_id, instance_id, force) = (req.request_id.clone(), req.instance_id.clone(), req.force);
        let record = self.database_tls.submit_install(request_id, &instance_id, certificate_input(req), force).await?;
        Ok(Response::new((&record).into()))
    }

    async fn get_certificate(&self, req: Request<pb::GetCertificateRequest>) -> ApiResult<pb::CertificateInfo> {
        let instance_id = req.into_inner().instance_id;
        let tls = self.database_tls.clone();
        let id = instance_id.clone();
        let installed = tokio::task::spawn_blocking(move || tls.installed(&id))
            .await
            .map_err(|e| Status::internal(format!("read the certificate: {e}")))??;
        Ok(Response::new(certificate_info(&instance_id, installed.as_ref())))
    }
}
