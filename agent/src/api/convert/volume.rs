use dbagent_proto::v1 as pb;

use crate::instances::Filesystem;
use crate::volume::VolumeStatus;

impl From<&VolumeStatus> for pb::Volume {
    fn from(v: &VolumeStatus) -> Self {
        pb::Volume {
            instance_id: v.instance_id.clone(),
            backing: v.backing.display().to_string(),
            mapper_path: v.mapper_path.display().to_string(),
            active: v.active,
            mounted: v.mounted,
            cipher: v.cipher.clone(),
            key_bits: v.key_bits,
            sector_size: v.sector_size,
            size_bytes: v.size_bytes,
            fs_size_bytes: v.fs.map(|f| f.size_bytes).unwrap_or(0),
            fs_used_bytes: v.fs.map(|f| f.used_bytes).unwrap_or(0),
            filesystem: match v.filesystem {
                Filesystem::Ext4 => "ext4",
                Filesystem::Xfs => "xfs",
            }
            .into(),
            flags: v.flags.clone(),
            key_version: v.key_version,
            last_error: v.last_error.clone().unwrap_or_default(),
            escrow_key_version: v.escrow.as_ref().map_or(0, |e| e.key_version),
            escrow_recipients: v.escrow.as_ref().map(|e| e.recipients.clone()).unwrap_or_default(),
        }
    }
}
