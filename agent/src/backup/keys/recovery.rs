//! The `age-x25519-v1` wrap: the data key sealed to the operator's recovery recipients
//! (`keys.recovery_recipients`, [`crate::recovery_key`]). The host can seal but never open it; the
//! private half comes with one restore or verify request. The age payload binds
//! `backup-data-key/v1/<instance>/<backup>`, so a wrap copied into another backup never opens.

use zeroize::Zeroizing;

use super::super::BackupError;
use super::super::manifest::KeyWrap;
use crate::recovery_key::{self, RecoveryIdentity, RecoveryRecipients};

pub const RECOVERY_WRAPPER: &str = "age-x25519-v1";

fn context(instance_id: &str, backup_id: &str) -> String {
    format!("backup-data-key/v1/{instance_id}/{backup_id}")
}

/// Seals `data_key` to every recipient; the key id lists them (public keys, comma-separated).
pub fn wrap(
    recipients: &RecoveryRecipients,
    instance_id: &str,
    backup_id: &str,
    data_key: &[u8],
) -> Result<KeyWrap, BackupError> {
    let sealed = recipients.seal(&context(instance_id, backup_id), data_key)?;
    Ok(KeyWrap {
        wrapper: RECOVERY_WRAPPER.into(),
        key_id: recipients.ids().join(","),
        wrapped: crate::hex::encode(&sealed),
    })
}

/// Opens the wrap with the identity the request carried. `wrap.key_id` comes from storage: it
/// only words the refusal, the age file decides.
pub fn unwrap(
    identity: Option<&RecoveryIdentity>,
    instance_id: &str,
    backup_id: &str,
    wrap: &KeyWrap,
) -> Result<Zeroizing<Vec<u8>>, BackupError> {
    let Some(identity) = identity else {
        return Err(BackupError::RecoveryKeyNeeded { recipients: wrap.key_id.clone() });
    };
    let sealed =
        crate::hex::decode(&wrap.wrapped).ok_or_else(|| BackupError::WrappedKeyInvalid { backup: backup_id.into() })?;
    let what = format!("data key of backup {backup_id} of instance {instance_id}");
    recovery_key::open(identity, &context(instance_id, backup_id), &what, &sealed).map_err(|source| {
        BackupError::RecoveryKey { given: identity.recipient(), recipients: wrap.key_id.clone(), source }
    })
}
