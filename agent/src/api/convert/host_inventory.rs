use dbagent_proto::v1 as pb;

use crate::host_inventory::HostInventory;

impl From<&HostInventory> for pb::HostInventory {
    fn from(h: &HostInventory) -> Self {
        pb::HostInventory {
            os_name: h.os_name.clone(),
            os_version: h.os_version.clone(),
            kernel_version: h.kernel_version.clone(),
            cpu_model: h.cpu_model.clone(),
            cpu_count: h.cpu_count,
            memory_bytes: h.memory_bytes,
        }
    }
}
