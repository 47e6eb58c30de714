//! A destination in a local (or mounted) folder. Streams go to a dot-file that is renamed into
//! place after fsync, so a crash never leaves a complete-looking object.

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ByteStream, Destination, Upload};
use crate::backup::BackupError;

pub struct DirDestination {
    name: String,
    root: PathBuf,
}

impl DirDestination {
    pub fn new(name: &str, root: &Path) -> Self {
        Self { name: name.to_owned(), root: root.to_path_buf() }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn temp_path(&self, key: &str) -> PathBuf {
        let p = self.path(key);
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        p.with_file_name(format!(".{name}.partial"))
    }

    fn err(&self, what: String, e: std::io::Error) -> BackupError {
        BackupError::dest(&self.name, format!("{what}: {e}"))
    }
}

async fn sync_dir(dir: &Path) -> std::io::Result<()> {
    tokio::fs::File::open(dir).await?.sync_all().await
}

#[async_trait]
impl Destination for DirDestination {
    fn name(&self) -> &str {
        &self.name
    }

    async fn create(&self, key: &str) -> Result<Box<dyn Upload>, BackupError> {
        let tmp = self.temp_path(key);
        if let Some(dir) = tmp.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(|e| self.err(format!("create {}", dir.display()), e))?;
        }
        let file = tokio::fs::File::create(&tmp).await.map_err(|e| self.err(format!("create {}", tmp.display()), e))?;
        Ok(Box::new(DirUpload {
            name: self.name.clone(),
            file: tokio::io::BufWriter::with_capacity(256 << 10, file),
            tmp,
            target: self.path(key),
            written: 0,
        }))
    }

    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), BackupError> {
        let mut up = self.create(key).await?;
        up.write(bytes).await?;
        up.finish().await.map(|_| ())
    }

    async fn get(&self, key: &str, max: u64) -> Result<Option<Bytes>, BackupError> {
        let file = match tokio::fs::File::open(self.path(key)).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.err(format!("read {key}"), e)),
        };
        // Read at most one byte past the limit, whatever the size said a moment ago.
        let mut bytes = Vec::new();
        file.take(max + 1).read_to_end(&mut bytes).await.map_err(|e| self.err(format!("read {key}"), e))?;
        if bytes.len() as u64 > max {
            return Err(BackupError::dest(&self.name, format!("{key} is more than the {max} bytes allowed")));
        }
        Ok(Some(bytes.into()))
    }

    async fn stream(&self, key: &str) -> Result<ByteStream, BackupError> {
        let file = tokio::fs::File::open(self.path(key)).await.map_err(|e| self.err(format!("open {key}"), e))?;
        let name = self.name.clone();
        let s = tokio_util::io::ReaderStream::with_capacity(file, 256 << 10)
            .map(move |r| r.map_err(|e| BackupError::dest(&name, format!("read: {e}"))));
        Ok(s.boxed())
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, BackupError> {
        match tokio::fs::metadata(self.path(key)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(format!("stat {key}"), e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), BackupError> {
        let path = self.path(key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.err(format!("delete {key}"), e)),
        }
        if let Some(dir) = path.parent() {
            let _ = sync_dir(dir).await;
            // The backup's folder goes once it is empty; not empty is fine.
            let _ = tokio::fs::remove_dir(dir).await;
        }
        Ok(())
    }

    async fn list_children(&self, prefix: &str) -> Result<Vec<String>, BackupError> {
        let dir = self.path(prefix);
        let mut rd = match tokio::fs::read_dir(&dir).await {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.err(format!("list {}", dir.display()), e)),
        };
        let mut out = Vec::new();
        while let Some(entry) = rd.next_entry().await.map_err(|e| self.err(format!("list {}", dir.display()), e))? {
            if entry.file_type().await.map(|t| t.is_dir()).unwrap_or(false) {
                out.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        out.sort();
        Ok(out)
    }

    async fn abort_leftover(&self, key: &str, _handle: &str) -> Result<(), BackupError> {
        let tmp = self.temp_path(key);
        remove_temp(&tmp).await.map_err(|e| self.err(format!("delete {}", tmp.display()), e))
    }
}

struct DirUpload {
    name: String,
    file: tokio::io::BufWriter<tokio::fs::File>,
    tmp: PathBuf,
    target: PathBuf,
    written: u64,
}

impl DirUpload {
    fn err(&self, what: &str, e: std::io::Error) -> BackupError {
        BackupError::dest(&self.name, format!("{what} {}: {e}", self.tmp.display()))
    }
}

#[async_trait]
impl Upload for DirUpload {
    fn handle(&self) -> String {
        self.tmp.display().to_string()
    }

    async fn write(&mut self, chunk: Bytes) -> Result<(), BackupError> {
        self.file.write_all(&chunk).await.map_err(|e| self.err("write", e))?;
        self.written += chunk.len() as u64;
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<u64, BackupError> {
        self.file.flush().await.map_err(|e| self.err("flush", e))?;
        self.file.get_ref().sync_all().await.map_err(|e| self.err("fsync", e))?;
        tokio::fs::rename(&self.tmp, &self.target).await.map_err(|e| self.err("rename", e))?;
        if let Some(dir) = self.target.parent() {
            sync_dir(dir).await.map_err(|e| self.err("fsync folder of", e))?;
        }
        Ok(self.written)
    }

    async fn abort(self: Box<Self>) -> Result<(), BackupError> {
        drop(self.file);
        remove_temp(&self.tmp)
            .await
            .map_err(|e| BackupError::dest(&self.name, format!("delete {}: {e}", self.tmp.display())))
    }
}

/// Removes an unfinished upload's temporary file, and the backup's folder if that leaves it empty
/// (an aborted backup leaves nothing, not even an empty folder).
async fn remove_temp(tmp: &Path) -> std::io::Result<()> {
    match tokio::fs::remove_file(tmp).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = tmp.parent() {
        let _ = tokio::fs::remove_dir(dir).await;
    }
    Ok(())
}
