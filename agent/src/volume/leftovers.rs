//! What remains of an instance id on this host, for the registry ([`InstanceLeftovers`]): its
//! volume record (readable or quarantined), the key versions the key provider holds for it, and
//! its queued or running operations. Built from the pieces that hold that state (the volume store,
//! the key provider, the operations engine), none of which holds the registry.

use std::sync::Arc;

use super::key::KeyProvider;
use super::store::{VolumeState, VolumeStore};
use crate::instances::InstanceLeftovers;
use crate::ops::OperationEngine;

pub struct VolumeLeftovers {
    pub(super) store: VolumeStore,
    pub(super) keys: Arc<dyn KeyProvider>,
    pub(super) operations: OperationEngine,
}

#[tonic::async_trait]
impl InstanceLeftovers for VolumeLeftovers {
    async fn remains(&self, id: &str) -> Vec<String> {
        let mut remains = Vec::new();
        for op in self.operations.list(Some(id), true, 100) {
            remains.push(format!("operation {} ({}, {}): wait for it to finish", op.id, op.kind, op.state.as_str()));
        }
        if let Some(record) = self.store.get(id) {
            let state = match record.state {
                VolumeState::Ready => "ready",
                VolumeState::Creating => "an unfinished create",
            };
            remains
                .push(format!("its volume on {} ({state}): destroy it with DestroyVolume", record.backing.display()));
        }
        if let Some(c) = self.store.quarantined(id) {
            remains.push(format!("its unreadable volume record {}: repair or restore it", c.file.display()));
        }
        match self.keys.versions(id).await {
            Ok(v) if v.is_empty() => {}
            Ok(v) => {
                let shown: Vec<String> = v.iter().map(|n| format!("v{n}")).collect();
                remains.push(format!(
                    "its keys {} in the {} key provider: DestroyVolume forgets them",
                    shown.join(", "),
                    self.keys.name()
                ));
            }
            Err(e) => remains
                .push(format!("possibly keys in the {} key provider (listing them failed: {e})", self.keys.name())),
        }
        remains
    }
}

#[cfg(test)]
#[path = "leftovers_tests.rs"]
mod tests;
