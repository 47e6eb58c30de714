//! Host plumbing under a volume, behind a trait: backing files and loop devices, filesystems,
//! mounts, ownership. Real: [`SystemHost`]; in memory: [`SimHost`]. Calls block: callers run them in
//! `spawn_blocking`.

use std::path::{Path, PathBuf};

use crate::command::CommandError;
use crate::instances::Filesystem;

mod block_device;
mod mount_point;
mod sim;
mod system;

pub use sim::SimHost;
pub use system::SystemHost;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    /// losetup, mkfs or a filesystem grower failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// blkid could not tell whether the device carries a signature (exit 2, "nothing found", is an
    /// answer and not this error).
    #[error(
        "probe {} for filesystem and partition signatures: {source}; if the device holds nothing to keep, create with force=true",
        device.display()
    )]
    SignatureProbe {
        device: PathBuf,
        #[source]
        source: CommandError,
    },
    #[error("OS user {0:?} does not exist on this host; create it before the volume")]
    NoUser(String),
    /// os_user names root or a system account on this host (it may have been created after the
    /// instance was registered): the volume's root is not handed to it.
    #[error("refusing to give the volume to {user:?}: {reason}")]
    RefusedOwner { user: String, reason: String },
    /// The mount point cannot be reached safely: a link or a non-folder on the way, a way out of
    /// its data root, or something else mounted there already. Nothing was mounted or changed.
    #[error("refusing to mount on {}: {reason}; nothing was mounted", dir.display())]
    UnsafeMountPoint { dir: PathBuf, reason: String },
}

impl crate::error::HasErrorCode for HostError {
    fn code(&self) -> crate::error::ErrorCode {
        use crate::error::ErrorCode as C;
        match self {
            HostError::NoUser(_) | HostError::RefusedOwner { .. } | HostError::UnsafeMountPoint { .. } => {
                C::FailedPrecondition
            }
            HostError::Io { .. } | HostError::Command(_) | HostError::SignatureProbe { .. } => C::Internal,
        }
    }
}

impl HostError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        HostError::Io { context: context.into(), source }
    }
}

/// Where a volume is mounted: `dir`, strictly below the data root `root`. The root is the agent's
/// configuration; everything beneath it may belong to an engine's user, who can swap names for
/// links at any moment, so the real host works beneath the root through directory handles.
#[derive(Debug, Clone, Copy)]
pub struct MountPoint<'a> {
    pub root: &'a Path,
    pub dir: &'a Path,
}

/// Something that already uses a block device: formatting it would destroy what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceUser {
    /// A partition the kernel knows (`/sys/class/block/<disk>/<partition>`).
    Partition(String),
    /// A partition table the kernel has not read (found by blkid: "gpt", "dos", ...).
    PartitionTable(String),
    /// A holder (`/sys/class/block/<disk>/holders/`): device-mapper (LVM, dm-crypt), md RAID, ...
    Holder { kernel: String, dm_name: Option<String> },
    /// The device or one of its partitions is mounted here.
    MountedAt(PathBuf),
}

impl std::fmt::Display for DeviceUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceUser::Partition(p) => write!(f, "partition {p}"),
            DeviceUser::PartitionTable(t) => write!(f, "a {t} partition table"),
            DeviceUser::Holder { kernel, dm_name: Some(name) } => write!(f, "held by device-mapper {name} ({kernel})"),
            DeviceUser::Holder { kernel, dm_name: None } => write!(f, "held by {kernel}"),
            DeviceUser::MountedAt(p) => write!(f, "mounted at {}", p.display()),
        }
    }
}

/// Filesystem usage of a mounted volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FsUsage {
    pub size_bytes: u64,
    pub used_bytes: u64,
}

pub trait HostOps: Send + Sync + 'static {
    /// Creates a sparse file of `size` bytes; an existing file is truncated to `size` only if larger
    /// is asked (files never shrink here).
    fn ensure_sparse_file(&self, path: &Path, size: u64) -> Result<(), HostError>;
    fn remove_file(&self, path: &Path) -> Result<(), HostError>;
    /// The loop device backed by `file`, attached now if it was not.
    fn attach_loop(&self, file: &Path) -> Result<PathBuf, HostError>;
    fn find_loop(&self, file: &Path) -> Result<Option<PathBuf>, HostError>;
    fn detach_loop(&self, device: &Path) -> Result<(), HostError>;
    /// Makes the loop device see its file's new size.
    fn refresh_loop(&self, device: &Path) -> Result<(), HostError>;
    fn device_size(&self, device: &Path) -> Result<u64, HostError>;
    /// What uses the block device `device` now: partitions or a partition table, holders, mounts
    /// (of it or its partitions). Empty for an unused disk, and for a path that is not a block device.
    fn device_users(&self, device: &Path) -> Result<Vec<DeviceUser>, HostError>;
    /// A filesystem or other signature found on `device` ("ext4", "xfs", "crypto_LUKS", ...).
    fn signature(&self, device: &Path) -> Result<Option<String>, HostError>;
    fn mkfs(&self, device: &Path, fs: Filesystem, label: &str) -> Result<(), HostError>;
    /// Grows the mounted filesystem to its device.
    fn grow_fs(&self, device: &Path, mountpoint: &Path, fs: Filesystem) -> Result<(), HostError>;
    /// Mounts `device` (nosuid, nodev) on `at.dir`, making missing folders beneath `at.root`; with
    /// `owner`, the mounted root is given to that user, mode 0700. Refuses a link or a non-folder on
    /// the way and a folder that is already a mount point ([`HostError::UnsafeMountPoint`]).
    fn mount(&self, device: &Path, at: MountPoint<'_>, fs: Filesystem, owner: Option<&str>) -> Result<(), HostError>;
    /// Unmounts `device` from `at.dir`; `Ok(false)` when it is not mounted exactly there.
    fn unmount(&self, device: &Path, at: MountPoint<'_>) -> Result<bool, HostError>;
    /// The device mounted at `target`, if any.
    fn mounted_device(&self, target: &Path) -> Result<Option<PathBuf>, HostError>;
    fn fs_usage(&self, mountpoint: &Path) -> Result<FsUsage, HostError>;
}
