//! The dbagent gRPC API, package `dbagent.v1`, generated from `proto/dbagent/v1/*.proto`.
//!
//! Domain code never imports these types: the agent converts at the API edge.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("dbagent.v1");
}

/// Encoded `FileDescriptorSet` of the whole API, for gRPC reflection. It keeps the
/// `(dbagent.v1.access)` method options.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/dbagent_descriptor.bin"));

pub mod access;
