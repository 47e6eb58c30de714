use dbagent_proto::v1 as pb;
use tonic::{Request, Response};

use super::convert::instance::spec_from_proto;
use super::status::ApiResult;
use super::ApiState;
use crate::ids;

pub struct InstancesApi(pub ApiState);

#[tonic::async_trait]
impl pb::instances_server::Instances for InstancesApi {
    async fn register_instance(&self, req: Request<pb::RegisterInstanceRequest>) -> ApiResult<pb::Instance> {
        let req = req.into_inner();
        ids::request_id(&req.request_id)?;
        let (instance, _) = self.0.registry.register(&req.id, spec_from_proto(req.spec)?).await?;
        Ok(Response::new((&instance).into()))
    }

    async fn update_instance(&self, req: Request<pb::UpdateInstanceRequest>) -> ApiResult<pb::Instance> {
        let req = req.into_inner();
        ids::request_id(&req.request_id)?;
        let expected = (req.expected_generation != 0).then_some(req.expected_generation);
        let instance = self.0.registry.update(&req.id, spec_from_proto(req.spec)?, expected).await?;
        Ok(Response::new((&instance).into()))
    }

    async fn remove_instance(&self, req: Request<pb::RemoveInstanceRequest>) -> ApiResult<pb::Instance> {
        let req = req.into_inner();
        ids::request_id(&req.request_id)?;
        let instance = self.0.registry.remove(&req.id).await?;
        Ok(Response::new((&instance).into()))
    }

    async fn get_instance(&self, req: Request<pb::GetInstanceRequest>) -> ApiResult<pb::Instance> {
        let instance = self.0.registry.get(&req.into_inner().id)?;
        Ok(Response::new((&instance).into()))
    }

    async fn list_instances(&self, _req: Request<pb::ListInstancesRequest>) -> ApiResult<pb::ListInstancesResponse> {
        let instances = self.0.registry.list().iter().map(Into::into).collect();
        Ok(Response::new(pb::ListInstancesResponse { instances }))
    }
}
