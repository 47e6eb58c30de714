//! Where backups are stored: a local folder (`dir`) or an S3-compatible bucket (`s3`). Both offer
//! the same few calls; object keys are `<instance>/<backup>/data` and `<instance>/<backup>/manifest.json`.

pub mod dir;
pub mod s3;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use std::sync::Arc;

use super::BackupError;
use super::settings::DestinationConfig;

pub type ByteStream = BoxStream<'static, Result<Bytes, BackupError>>;

#[async_trait]
pub trait Destination: Send + Sync {
    fn name(&self) -> &str;
    /// Starts a streamed write of `key`; nothing is visible under `key` before `finish`.
    async fn create(&self, key: &str) -> Result<Box<dyn Upload>, BackupError>;
    /// Writes a small object in one request (the manifest).
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), BackupError>;
    /// Reads a small object whole; `None` if it does not exist. One larger than `max` bytes is
    /// refused without being read (stored objects are not trusted to be small).
    async fn get(&self, key: &str, max: u64) -> Result<Option<Bytes>, BackupError>;
    async fn stream(&self, key: &str) -> Result<ByteStream, BackupError>;
    /// Size of an object, `None` if missing.
    async fn size(&self, key: &str) -> Result<Option<u64>, BackupError>;
    /// Deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<(), BackupError>;
    /// The "folders" directly under `prefix` (no trailing slash).
    async fn list_children(&self, prefix: &str) -> Result<Vec<String>, BackupError>;
    /// Cancels an upload left behind by a crash (recorded by `Upload::handle`) and removes its leftovers.
    async fn abort_leftover(&self, key: &str, handle: &str) -> Result<(), BackupError>;
}

#[async_trait]
pub trait Upload: Send {
    /// What `Destination::abort_leftover` needs after a crash (S3 upload id, temporary file name).
    fn handle(&self) -> String;
    async fn write(&mut self, chunk: Bytes) -> Result<(), BackupError>;
    async fn finish(self: Box<Self>) -> Result<u64, BackupError>;
    async fn abort(self: Box<Self>) -> Result<(), BackupError>;
}

pub fn open(
    config: &DestinationConfig,
    part_size: usize,
    max_retries: usize,
) -> Result<Arc<dyn Destination>, BackupError> {
    Ok(match config {
        DestinationConfig::Dir { name, path } => Arc::new(dir::DirDestination::new(name, path)),
        DestinationConfig::S3 { .. } => Arc::new(s3::S3Destination::new(config, part_size, max_retries)?),
    })
}
