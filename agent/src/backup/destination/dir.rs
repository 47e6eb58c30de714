//! A destination in a local (or mounted) folder. Streams go to a dot-file that is renamed into
//! place after fsync, so a crash never leaves a complete-looking object.
//!
//! The folder is backup storage, and backup storage is not trusted: whoever can write to it could
//! plant a symbolic link at `<instance>`, `<instance>/<backup>` or an object's name and aim the
//! agent's writes and deletes elsewhere on the host. So everything goes through directory handles
//! (`crate::beneath`): the root is opened without following links, each object's folder is
//! resolved beneath it without following any, and files are created, renamed and removed by name
//! in the folder held open. A link is refused, or removed as the link it is, never followed.

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

use super::{ByteStream, Destination, Upload};
use crate::backup::BackupError;
use crate::beneath::{BeneathError, DirHandle};

pub struct DirDestination {
    name: String,
    root: PathBuf,
}

/// `<instance>/<backup>/<object>` split into the folder beneath the root and the object's name.
fn split(key: &str) -> (&Path, &OsStr) {
    let path = Path::new(key);
    (path.parent().unwrap_or(Path::new("")), path.file_name().unwrap_or_default())
}

fn temp_name(name: &OsStr) -> OsString {
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(".partial");
    tmp
}

impl DirDestination {
    pub fn new(name: &str, root: &Path) -> Self {
        Self { name: name.to_owned(), root: root.to_path_buf() }
    }

    fn err(&self, e: impl std::fmt::Display) -> BackupError {
        BackupError::dest(&self.name, e)
    }

    /// Runs `work` off the async workers with this destination's root open (created first if
    /// `create`); `None` when the root does not exist and `create` is false.
    async fn with_root<T: Send + 'static>(
        &self,
        create: bool,
        work: impl FnOnce(DirHandle) -> Result<T, BeneathError> + Send + 'static,
    ) -> Result<Option<T>, BackupError> {
        let root = self.root.clone();
        let done = tokio::task::spawn_blocking(move || {
            if create {
                // The root's path comes from the agent's own config.
                std::fs::create_dir_all(&root).map_err(|source| BeneathError::Io {
                    op: "create",
                    path: root.clone(),
                    source,
                })?;
            }
            match DirHandle::open_root(&root) {
                Ok(handle) => work(handle).map(Some),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(|e| self.err(format!("join a blocking task: {e}")))?;
        done.map_err(|e| self.err(e))
    }
}

/// `Ok(None)` for "not found", so a missing object or folder reads as absent.
fn absent_ok<T>(r: Result<T, BeneathError>) -> Result<Option<T>, BeneathError> {
    match r {
        Ok(x) => Ok(Some(x)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes the backup's folder `<parent>` once it is empty; not empty (or gone) is fine.
fn remove_if_empty(root: &DirHandle, parent: &Path) {
    if let (Some(instance), Some(backup)) = (parent.parent(), parent.file_name())
        && let Ok(dir) = root.open_dir(instance)
    {
        let _ = dir.remove_dir(backup);
    }
}

#[async_trait]
impl Destination for DirDestination {
    fn name(&self) -> &str {
        &self.name
    }

    async fn create(&self, key: &str) -> Result<Box<dyn Upload>, BackupError> {
        let (parent, name) = split(key);
        let (parent, name) = (parent.to_owned(), name.to_owned());
        let tmp = temp_name(&name);
        let tmp_for_work = tmp.clone();
        let opened = self
            .with_root(true, move |root| {
                let (dir, _) = root.open_or_create_dir(&parent, 0o700)?;
                // A leftover (or planted) temporary name is removed, never opened.
                dir.remove_file(&tmp_for_work)?;
                let file = dir.create_file(&tmp_for_work, 0o600)?;
                Ok((root, parent, dir, file))
            })
            .await?;
        let (root, parent, dir, file) =
            opened.ok_or_else(|| self.err("the destination folder could not be created"))?;
        let tmp_path = dir.path().join(&tmp);
        Ok(Box::new(DirUpload {
            name: self.name.clone(),
            file: tokio::io::BufWriter::with_capacity(256 << 10, tokio::fs::File::from_std(file)),
            root: Arc::new(root),
            parent,
            dir: Arc::new(dir),
            tmp,
            tmp_path,
            target: name,
            written: 0,
        }))
    }

    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), BackupError> {
        let mut up = self.create(key).await?;
        up.write(bytes).await?;
        up.finish().await.map(|_| ())
    }

    async fn get(&self, key: &str, max: u64) -> Result<Option<Bytes>, BackupError> {
        let key_owned = key.to_owned();
        let read = self
            .with_root(false, move |root| {
                let Some(file) = absent_ok(root.open_regular_file(Path::new(&key_owned)))? else { return Ok(None) };
                // Read at most one byte past the limit, whatever the size said a moment ago.
                let mut bytes = Vec::new();
                file.take(max + 1).read_to_end(&mut bytes).map_err(|source| BeneathError::Io {
                    op: "read",
                    path: root.path().join(&key_owned),
                    source,
                })?;
                Ok(Some(bytes))
            })
            .await?
            .flatten();
        match read {
            Some(bytes) if bytes.len() as u64 > max => {
                Err(self.err(format!("{key} is more than the {max} bytes allowed")))
            }
            other => Ok(other.map(Bytes::from)),
        }
    }

    async fn stream(&self, key: &str) -> Result<ByteStream, BackupError> {
        let key_owned = key.to_owned();
        let file = self.with_root(false, move |root| root.open_regular_file(Path::new(&key_owned))).await?;
        let file = file.ok_or_else(|| self.err(format!("open {key}: the destination folder does not exist")))?;
        let name = self.name.clone();
        let s = tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(file), 256 << 10)
            .map(move |r| r.map_err(|e| BackupError::dest(&name, format!("read: {e}"))));
        Ok(s.boxed())
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, BackupError> {
        let key_owned = key.to_owned();
        let size = self
            .with_root(false, move |root| {
                let Some(file) = absent_ok(root.open_regular_file(Path::new(&key_owned)))? else { return Ok(None) };
                let meta = file.metadata().map_err(|source| BeneathError::Io {
                    op: "stat",
                    path: root.path().join(&key_owned),
                    source,
                })?;
                Ok(Some(meta.len()))
            })
            .await?;
        Ok(size.flatten())
    }

    async fn delete(&self, key: &str) -> Result<(), BackupError> {
        let (parent, name) = split(key);
        let (parent, name) = (parent.to_owned(), name.to_owned());
        self.with_root(false, move |root| {
            let Some(dir) = absent_ok(root.open_dir(&parent))? else { return Ok(()) };
            dir.remove_file(&name)?;
            let _ = dir.sync();
            drop(dir);
            remove_if_empty(&root, &parent);
            Ok(())
        })
        .await?;
        Ok(())
    }

    async fn list_children(&self, prefix: &str) -> Result<Vec<String>, BackupError> {
        // The empty prefix is the root itself (the instance folders).
        let prefix = PathBuf::from(if prefix.is_empty() { "." } else { prefix });
        let found = self
            .with_root(false, move |root| {
                let Some(dir) = absent_ok(root.open_dir(&prefix))? else { return Ok(Vec::new()) };
                let mut out = Vec::new();
                for name in dir.entries()? {
                    // Only real folders: a link or a file is not a backup.
                    if dir.open_dir(Path::new(&name)).is_ok() {
                        out.push(name.to_string_lossy().into_owned());
                    }
                }
                out.sort();
                Ok(out)
            })
            .await?;
        Ok(found.unwrap_or_default())
    }

    async fn abort_leftover(&self, key: &str, _handle: &str) -> Result<(), BackupError> {
        let (parent, name) = split(key);
        let (parent, tmp) = (parent.to_owned(), temp_name(name));
        self.with_root(false, move |root| {
            let Some(dir) = absent_ok(root.open_dir(&parent))? else { return Ok(()) };
            dir.remove_file(&tmp)?;
            drop(dir);
            remove_if_empty(&root, &parent);
            Ok(())
        })
        .await?;
        Ok(())
    }
}

struct DirUpload {
    name: String,
    file: tokio::io::BufWriter<tokio::fs::File>,
    /// The destination's root and the backup's folder beneath it, for removing that folder on abort.
    root: Arc<DirHandle>,
    parent: PathBuf,
    /// The backup's folder, held open: the rename and the removal act in it, wherever its name points now.
    dir: Arc<DirHandle>,
    tmp: OsString,
    /// For messages and the in-flight record.
    tmp_path: PathBuf,
    target: OsString,
    written: u64,
}

impl DirUpload {
    fn err(&self, what: &str, e: impl std::fmt::Display) -> BackupError {
        BackupError::dest(&self.name, format!("{what} {}: {e}", self.tmp_path.display()))
    }

    async fn in_dir(
        &self,
        work: impl FnOnce(&DirHandle) -> Result<(), BeneathError> + Send + 'static,
    ) -> Result<(), BackupError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || work(&dir))
            .await
            .map_err(|e| self.err("join a blocking task for", e))?
            .map_err(|e| BackupError::dest(&self.name, e))
    }
}

#[async_trait]
impl Upload for DirUpload {
    fn handle(&self) -> String {
        self.tmp_path.display().to_string()
    }

    async fn write(&mut self, chunk: Bytes) -> Result<(), BackupError> {
        self.file.write_all(&chunk).await.map_err(|e| self.err("write", e))?;
        self.written += chunk.len() as u64;
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<u64, BackupError> {
        self.file.flush().await.map_err(|e| self.err("flush", e))?;
        self.file.get_ref().sync_all().await.map_err(|e| self.err("fsync", e))?;
        let (tmp, target) = (self.tmp.clone(), self.target.clone());
        // Replaces whatever is at the target's name (a planted link as the link, never followed).
        self.in_dir(move |dir| {
            dir.rename_over(&tmp, dir, &target)?;
            dir.sync()
        })
        .await?;
        Ok(self.written)
    }

    /// Removes the temporary file, and the backup's folder if that leaves it empty (an aborted
    /// backup leaves nothing, not even an empty folder).
    async fn abort(self: Box<Self>) -> Result<(), BackupError> {
        let (tmp, root, parent) = (self.tmp.clone(), self.root.clone(), self.parent.clone());
        self.in_dir(move |dir| {
            dir.remove_file(&tmp)?;
            remove_if_empty(&root, &parent);
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const KEY: &str = "i1/b0000000000000000000a/data";
    const MANIFEST: &str = "i1/b0000000000000000000a/manifest.json";

    /// A destination in `<tmp>/dest` and a folder `<tmp>/outside` holding a sentinel `data` and
    /// `manifest.json`, which nothing the destination does may change.
    fn setup() -> (tempfile::TempDir, DirDestination, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        for name in ["data", "manifest.json"] {
            std::fs::write(outside.join(name), b"sentinel").unwrap();
        }
        let dest = DirDestination::new("az1", &tmp.path().join("dest"));
        (tmp, dest, outside)
    }

    fn assert_outside_intact(outside: &Path) {
        let mut names: Vec<_> = std::fs::read_dir(outside).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["data", "manifest.json"], "nothing was added outside");
        for name in ["data", "manifest.json"] {
            assert_eq!(std::fs::read(outside.join(name)).unwrap(), b"sentinel", "{name} outside is unchanged");
        }
    }

    #[tokio::test]
    async fn a_backup_folder_planted_as_a_link_is_neither_written_read_listed_nor_deleted_through() {
        let (tmp, dest, outside) = setup();
        // The allowed path first: written, read, listed, deleted.
        dest.put(MANIFEST, Bytes::from_static(b"{}")).await.unwrap();
        assert_eq!(dest.get(MANIFEST, 100).await.unwrap().unwrap(), Bytes::from_static(b"{}"));
        assert_eq!(dest.list_children("i1").await.unwrap(), ["b0000000000000000000a"]);
        dest.delete(MANIFEST).await.unwrap();
        assert!(!tmp.path().join("dest/i1/b0000000000000000000a").exists(), "the emptied folder goes too");

        symlink(&outside, tmp.path().join("dest/i1/b0000000000000000000a")).unwrap();
        assert!(dest.create(KEY).await.is_err(), "a write through the link is refused");
        assert!(dest.put(MANIFEST, Bytes::from_static(b"{}")).await.is_err());
        assert!(dest.get(MANIFEST, 100).await.is_err(), "a read through the link is refused");
        assert!(dest.stream(KEY).await.is_err());
        assert!(dest.list_children("i1").await.unwrap().is_empty(), "a link is not a backup");
        let _ = dest.delete(KEY).await;
        let _ = dest.delete(MANIFEST).await;
        let _ = dest.abort_leftover(KEY, "").await;
        assert_outside_intact(&outside);
    }

    #[tokio::test]
    async fn an_object_planted_as_a_link_is_replaced_or_removed_as_the_link() {
        let (tmp, dest, outside) = setup();
        let folder = tmp.path().join("dest/i1/b0000000000000000000a");
        std::fs::create_dir_all(&folder).unwrap();
        symlink(outside.join("data"), folder.join("data")).unwrap();
        symlink(outside.join("manifest.json"), folder.join(".manifest.json.partial")).unwrap();
        assert!(dest.get(KEY, 100).await.is_err(), "not read through the link");
        // Writing the manifest removes the planted temporary link; finishing the data replaces
        // the link at its name: the files behind both are untouched.
        dest.put(MANIFEST, Bytes::from_static(b"{}")).await.unwrap();
        let mut up = dest.create(KEY).await.unwrap();
        up.write(Bytes::from_static(b"stored")).await.unwrap();
        up.finish().await.unwrap();
        assert_eq!(std::fs::read(folder.join("data")).unwrap(), b"stored");
        assert!(!std::fs::symlink_metadata(folder.join("data")).unwrap().is_symlink());
        assert_outside_intact(&outside);
        // A link at the name again: delete removes the link, not the file behind it.
        std::fs::remove_file(folder.join("data")).unwrap();
        symlink(outside.join("data"), folder.join("data")).unwrap();
        dest.delete(KEY).await.unwrap();
        assert!(std::fs::symlink_metadata(folder.join("data")).is_err());
        assert_outside_intact(&outside);
    }

    #[tokio::test]
    async fn a_destination_root_reached_through_a_link_is_refused() {
        let (tmp, _, outside) = setup();
        symlink(&outside, tmp.path().join("linked")).unwrap();
        let linked = DirDestination::new("az1", &tmp.path().join("linked"));
        assert!(linked.put(MANIFEST, Bytes::from_static(b"{}")).await.is_err());
        assert!(linked.delete("data").await.is_err(), "nothing deleted through the linked root");
        assert_outside_intact(&outside);
        // The folder itself, named without the link, is usable.
        let direct = DirDestination::new("az1", &tmp.path().join("direct"));
        direct.put(MANIFEST, Bytes::from_static(b"{}")).await.unwrap();
        assert!(direct.get(MANIFEST, 100).await.unwrap().is_some());
    }
}
