use dbagent_proto::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response};

use super::error::ApiResult;
use crate::ids::{self, InvalidField};
use crate::instances::registry::Registry;
use crate::ops::OperationEngine;
use crate::recovery_key::RecoveryIdentity;
use crate::volume::Volumes;
use crate::volume::jobs::{self, VolumeAction};

/// An age identity file is one secret line and a few comments.
const MAX_RECOVERY_KEY_BYTES: usize = 64 * 1024;

/// The Volumes service: changes run as operations; reads go to the volumes directly.
pub struct VolumesApi {
    pub volumes: Volumes,
    /// Checks that an instance exists before its volume is touched.
    pub registry: Arc<Registry>,
    pub operations: OperationEngine,
}

impl VolumesApi {
    /// Checks the ids and that the instance exists, then starts the operation (or returns the one
    /// this request_id started before).
    async fn submit(&self, request_id: String, instance_id: String, action: VolumeAction) -> ApiResult<pb::Operation> {
        ids::request_id(&request_id)?;
        ids::instance_id("instance_id", &instance_id)?;
        if !matches!(action, VolumeAction::Destroy) {
            self.registry.get(&instance_id)?;
        }
        let new = jobs::new_operation(request_id, &instance_id, &action);
        let job = jobs::job(self.volumes.clone(), instance_id, action);
        let (record, _) = self.operations.submit(new, job).await?;
        Ok(Response::new((&record).into()))
    }
}

#[tonic::async_trait]
impl pb::volumes_server::Volumes for VolumesApi {
    async fn create_volume(&self, req: Request<pb::CreateVolumeRequest>) -> ApiResult<pb::Operation> {
        let r = req.into_inner();
        self.submit(r.request_id, r.instance_id, VolumeAction::Create { force: r.force }).await
    }

    async fn open_volume(&self, req: Request<pb::OpenVolumeRequest>) -> ApiResult<pb::Operation> {
        let r = req.into_inner();
        let action = if r.recovery_key.is_empty() {
            VolumeAction::Open
        } else if r.recovery_key.len() > MAX_RECOVERY_KEY_BYTES {
            return Err(InvalidField::new(
                "recovery_key",
                format!("{} bytes; an age identity file is far smaller", r.recovery_key.len()),
            )
            .into());
        } else {
            // The request's bytes are dropped with it; the parsed identity lives in the job only.
            let identity = RecoveryIdentity::parse(&r.recovery_key)
                .map_err(|e| InvalidField::new("recovery_key", e.to_string()))?;
            VolumeAction::OpenWithRecoveryKey(identity)
        };
        self.submit(r.request_id, r.instance_id, action).await
    }

    async fn close_volume(&self, req: Request<pb::CloseVolumeRequest>) -> ApiResult<pb::Operation> {
        let r = req.into_inner();
        self.submit(r.request_id, r.instance_id, VolumeAction::Close).await
    }

    async fn grow_volume(&self, req: Request<pb::GrowVolumeRequest>) -> ApiResult<pb::Operation> {
        let r = req.into_inner();
        if r.new_size_bytes == 0 {
            return Err(InvalidField::new("new_size_bytes", "is required: the new size in bytes").into());
        }
        self.submit(r.request_id, r.instance_id, VolumeAction::Grow { new_size_bytes: r.new_size_bytes }).await
    }

    async fn rotate_volume_key(&self, req: Request<pb::RotateVolumeKeyRequest>) -> ApiResult<pb::Operation> {
        let r = req.into_inner();
        self.submit(r.request_id, r.instance_id, VolumeAction::RotateKey).await
    }

    async fn backup_volume_header(&self, req: Request<pb::BackupVolumeHeaderRequest>) -> ApiResult<pb::Operation> {
        let r = req.into_inner();
        self.submit(r.request_id, r.instance_id, VolumeAction::BackupHeader).await
    }

    async fn get_volume(&self, req: Request<pb::GetVolumeRequest>) -> ApiResult<pb::Volume> {
        let status = self.volumes.get(&req.into_inner().instance_id).await?;
        Ok(Response::new((&status).into()))
    }

    async fn list_volumes(&self, _req: Request<pb::ListVolumesRequest>) -> ApiResult<pb::ListVolumesResponse> {
        let volumes = self.volumes.list().await?.iter().map(Into::into).collect();
        Ok(Response::new(pb::ListVolumesResponse { volumes }))
    }

    async fn destroy_volume(&self, req: Request<pb::DestroyVolumeRequest>) -> ApiResult<pb::Operation> {
        let r = req.into_inner();
        if r.confirm_instance_id != r.instance_id {
            return Err(InvalidField::new(
                "confirm_instance_id",
                "must equal instance_id: destroying erases the keyslots and the data is gone for good",
            )
            .into());
        }
        self.submit(r.request_id, r.instance_id, VolumeAction::Destroy).await
    }
}
