use dbagent_proto::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

use super::convert::instance::spec_from_proto;
use super::error::ApiResult;
use crate::instances::registry::Registry;
use crate::requests::RequestLedger;

/// The Instances service: the registry, with the mutating calls replayed by request_id.
pub struct InstancesApi {
    pub registry: Arc<Registry>,
    pub requests: RequestLedger,
}

#[tonic::async_trait]
impl pb::instances_server::Instances for InstancesApi {
    async fn register_instance(&self, req: Request<pb::RegisterInstanceRequest>) -> ApiResult<pb::Instance> {
        let req = req.into_inner();
        let instance = self.requests.once("RegisterInstance", &req.request_id, &req, || async {
            let (instance, _) = self.registry.register(&req.id, spec_from_proto(req.spec.clone())?).await?;
            Ok::<_, Status>((&instance).into())
        });
        Ok(Response::new(instance.await?))
    }

    async fn update_instance(&self, req: Request<pb::UpdateInstanceRequest>) -> ApiResult<pb::Instance> {
        let req = req.into_inner();
        let expected = (req.expected_generation != 0).then_some(req.expected_generation);
        let instance = self.requests.once("UpdateInstance", &req.request_id, &req, || async {
            let instance = self.registry.update(&req.id, spec_from_proto(req.spec.clone())?, expected).await?;
            Ok::<_, Status>((&instance).into())
        });
        Ok(Response::new(instance.await?))
    }

    async fn remove_instance(&self, req: Request<pb::RemoveInstanceRequest>) -> ApiResult<pb::Instance> {
        let req = req.into_inner();
        let instance = self.requests.once("RemoveInstance", &req.request_id, &req, || async {
            Ok::<_, Status>((&self.registry.remove(&req.id).await?).into())
        });
        Ok(Response::new(instance.await?))
    }

    async fn get_instance(&self, req: Request<pb::GetInstanceRequest>) -> ApiResult<pb::Instance> {
        let instance = self.registry.get(&req.into_inner().id)?;
        Ok(Response::new((&instance).into()))
    }

    async fn list_instances(&self, _req: Request<pb::ListInstancesRequest>) -> ApiResult<pb::ListInstancesResponse> {
        let instances = self.registry.list().iter().map(Into::into).collect();
        Ok(Response::new(pb::ListInstancesResponse { instances }))
    }
}
