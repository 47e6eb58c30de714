//! Opening and closing a volume: activate `/dev/mapper/dbagent-<id>` with the instance's key and
//! mount it at the data_dir; unmount, deactivate and detach. At start-up every volume is opened
//! before the agent reports READY, and a rotation that stopped halfway is finished here.

use std::path::{Path, PathBuf};

use super::crypt::CryptError;
use super::host::MountPoint;
use super::key::KeyError;
use super::service::{VolumeOutcome, Volumes, VolumesInner, mapper_path};
use super::store::{VolumeRecord, VolumeState};
use super::{VolumeError, mapper_name};
use crate::instances::{Filesystem, Instance};

impl Volumes {
    /// Activates `/dev/mapper/dbagent-<id>` and mounts it. Idempotent. A failure is kept for
    /// GetVolume's `last_error`.
    pub async fn open(&self, id: &str) -> Result<VolumeOutcome, VolumeError> {
        let result = self.activate_and_mount(id).await;
        self.set_last_error(id, result.as_ref().err().map(ToString::to_string));
        if result.is_ok() {
            self.keep_escrow_current(id).await;
        }
        result
    }

    async fn activate_and_mount(&self, id: &str) -> Result<VolumeOutcome, VolumeError> {
        let instance = self.instance(id)?;
        let record = self.record(id)?;
        let name = mapper_name(id);
        let n = name.clone();
        let active = self.blocking(move |inner| Ok(inner.crypt.active(&n)?.is_some())).await?;
        if !active {
            let r = record.clone();
            let device = self.blocking(move |inner| inner.device(&r)).await?;
            let key = self.key(id, record.key_version, false, record.key_bits).await?;
            let (d, n) = (device.clone(), name.clone());
            match self
                .blocking(move |inner| Ok(inner.crypt.activate(&d, &n, key.as_bytes(), inner.settings.flags)?))
                .await
            {
                Ok(()) => {}
                Err(VolumeError::Crypt(CryptError::WrongKey(_))) => {
                    self.open_with_next_key(id, &record, &device).await?;
                }
                Err(e) => return Err(e),
            }
        }
        let i = instance.clone();
        let fs = record.filesystem;
        // Opening does not chown: the owner of the volume's root was set when it was created.
        let mounted_now = self.blocking(move |inner| inner.mount(&i, fs, None)).await?;
        Ok(if active && !mounted_now { VolumeOutcome::AlreadyOpen } else { VolumeOutcome::Opened })
    }

    /// A rotation that stopped between the header change and its record update leaves the volume
    /// under the next key version: finish the rotation's bookkeeping.
    async fn open_with_next_key(&self, id: &str, record: &VolumeRecord, device: &Path) -> Result<(), VolumeError> {
        let wrong = || VolumeError::WrongKey { provider: self.inner.keys.name(), instance: id.to_owned() };
        let next = match self.key(id, record.key_version + 1, false, record.key_bits).await {
            Ok(k) => k,
            Err(VolumeError::Key(KeyError::Missing { .. })) => return Err(wrong()),
            Err(e) => return Err(e),
        };
        let (d, n) = (device.to_path_buf(), mapper_name(id));
        match self.blocking(move |inner| Ok(inner.crypt.activate(&d, &n, next.as_bytes(), inner.settings.flags)?)).await
        {
            Ok(()) => {}
            Err(VolumeError::Crypt(CryptError::WrongKey(_))) => return Err(wrong()),
            Err(e) => return Err(e),
        }
        tracing::warn!(
            instance = id,
            "volume opened with key version {}: completing an interrupted rotation",
            record.key_version + 1
        );
        self.put_record(VolumeRecord { key_version: record.key_version + 1, ..record.clone() }).await?;
        self.inner.keys.forget(id, Some(record.key_version + 1)).await?;
        Ok(())
    }

    /// Unmounts, deactivates and (for a managed file) detaches the loop device. Idempotent.
    pub async fn close(&self, id: &str) -> Result<VolumeOutcome, VolumeError> {
        let record = self.record(id)?;
        let did = self.blocking(move |inner| inner.teardown(&record)).await?;
        self.set_last_error(id, None);
        Ok(if did { VolumeOutcome::Closed } else { VolumeOutcome::AlreadyClosed })
    }

    /// At start-up, before READY: opens the volume of every registered instance that has one, each
    /// under its instance's lock (the API already serves, so an operation on the same instance
    /// waits for it, and it for the operation). A failure is logged and reported by GetVolume; a
    /// quarantined record (the volume's or the instance's) is logged and counted. Neither stops
    /// the other volumes or the agent.
    ///
    /// Up to [`STARTUP_PARALLEL_OPENS`] volumes are opened at once: opening one is mostly waiting
    /// (the kernel setting up dm-crypt, udev, the file system's mount), so one after the other a
    /// host with 50 volumes reached READY tens of seconds after one with none.
    pub async fn open_all(&self) -> StartupOpen {
        use futures::StreamExt;
        let mut report = StartupOpen::default();
        let due: Vec<String> = self
            .inner
            .store
            .list()
            .into_iter()
            .filter(|r| r.state == VolumeState::Ready && self.inner.registry.get(&r.instance_id).is_ok())
            .map(|r| r.instance_id)
            .collect();
        let mut results = futures::stream::iter(due)
            .map(|id| async move {
                let _lock = self.inner.registry.locks().lock(&id).await;
                let result = self.open(&id).await;
                (id, result)
            })
            .buffer_unordered(STARTUP_PARALLEL_OPENS);
        while let Some((id, result)) = results.next().await {
            match result {
                Ok(_) => report.opened += 1,
                Err(e) => {
                    report.failed += 1;
                    tracing::error!(instance = %id, "open volume at start-up: {e:#}");
                }
            }
        }
        // Volumes not opened for a quarantined record: the volume's own, or its instance's.
        let mut quarantined: Vec<String> = self.quarantined().iter().map(|c| c.key()).collect();
        let has_volume = |id: &String| self.inner.store.get(id).is_some();
        quarantined.extend(self.inner.registry.quarantined().iter().map(|c| c.key()).filter(has_volume));
        quarantined.sort();
        quarantined.dedup();
        for id in &quarantined {
            tracing::error!(instance = %id, "volume not opened at start-up: the instance is quarantined (unreadable record)");
        }
        report.quarantined = quarantined.len();
        report
    }
}

/// Volumes opened at once at start-up. Bounded so that a host with hundreds of volumes does not
/// start hundreds of blocking threads and mounts at once.
pub const STARTUP_PARALLEL_OPENS: usize = 8;

/// What the start-up pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartupOpen {
    pub opened: usize,
    pub failed: usize,
    /// Volumes not opened because their volume record or their instance's record is unreadable.
    pub quarantined: usize,
}

impl VolumesInner {
    /// Mounts the mapper device at data_dir unless it is mounted there, giving the mounted root to
    /// `owner` if one is named. Returns true if it mounted now.
    pub(super) fn mount(&self, instance: &Instance, fs: Filesystem, owner: Option<&str>) -> Result<bool, VolumeError> {
        let mapper = mapper_path(&instance.id);
        let dir = &instance.spec.data_dir;
        match self.host.mounted_device(dir)? {
            Some(dev) if dev == mapper => return Ok(false),
            Some(other) => return Err(VolumeError::DataDirOccupied { data_dir: dir.clone(), mounted: other }),
            None => {}
        }
        // A clear error for a link planted before the open; the host's handle walk is what holds
        // against one planted during it.
        self.registry.check_no_escape("data_dir", dir).map_err(VolumeError::UnsafeDataDir)?;
        let root = self.data_root(dir)?;
        self.host.mount(&mapper, MountPoint { root: &root, dir }, fs, owner)?;
        Ok(true)
    }

    /// The data root the instance's data_dir lies below (the innermost, if roots nest).
    fn data_root(&self, dir: &Path) -> Result<PathBuf, VolumeError> {
        self.registry.data_root_of(dir).ok_or_else(|| VolumeError::DataDirOutsideRoots {
            data_dir: dir.to_path_buf(),
            data_roots: self.registry.data_roots().to_vec(),
        })
    }

    /// Unmount, deactivate, detach: whatever of it is in place. Returns true if anything was.
    pub(super) fn teardown(&self, record: &VolumeRecord) -> Result<bool, VolumeError> {
        let id = &record.instance_id;
        let mapper = mapper_path(id);
        let mut did = false;
        if let Ok(instance) = self.registry.get(id)
            && self.host.mounted_device(&instance.spec.data_dir)?.as_deref() == Some(mapper.as_path())
        {
            let dir = &instance.spec.data_dir;
            let root = self.data_root(dir)?;
            did |= self.host.unmount(&mapper, MountPoint { root: &root, dir })?;
        }
        if self.crypt.active(&mapper_name(id))?.is_some() {
            self.crypt.deactivate(&mapper_name(id))?;
            did = true;
        }
        if record.managed_file
            && let Some(dev) = self.host.find_loop(&record.backing)?
        {
            self.host.detach_loop(&dev)?;
            did = true;
        }
        Ok(did)
    }
}

#[cfg(test)]
#[path = "unlocking_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "startup_tests.rs"]
mod startup_tests;
