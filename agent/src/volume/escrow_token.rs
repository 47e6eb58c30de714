//! Volume-key escrow: the key that opens a volume's keyslot, sealed to the operator's recovery
//! recipients (`keys.recovery_recipients`, see `recovery_key.rs`) and kept in the volume's own LUKS2
//! header as a token of type [`TOKEN_TYPE`].
//!
//! The header is the one place that travels with the disk and with every header backup, and that
//! a lost keystore or KEK does not take with it. The host can write the token (sealing needs only
//! the public recipients) but never open it: only the operator's identity, given for one
//! OpenVolume, does. Only the `local` key provider escrows; with the remote provider the
//! orchestrator holds the keys already.
//!
//! The token is read from a disk the agent does not trust: its size is bounded before it is
//! parsed, and the sealed key binds its instance and key version (the age payload's context), so a
//! token copied from another volume, or one whose plain fields were edited, is refused.

use serde::{Deserialize, Serialize};

use super::key::VolumeKey;
use crate::error::{ErrorCode, HasErrorCode};
use crate::hex;
use crate::recovery_key::{
    self, MAX_RECIPIENTS, MAX_SEALED_BYTES, RecoveryIdentity, RecoveryKeyError, RecoveryRecipients,
};

/// The LUKS2 token type (`cryptsetup luksDump` shows it).
pub const TOKEN_TYPE: &str = "dbagent-escrow";
/// The version of the token's own layout.
const FORMAT: u32 = 1;
/// A token's JSON text is refused beyond this before it is parsed: the hex of the largest sealed
/// key plus [`MAX_RECIPIENTS`] public keys and the fixed fields.
const MAX_TOKEN_JSON: usize = 2 * MAX_SEALED_BYTES + 4096;

/// The sealed key's context: which volume key it is. Bound inside the sealed payload.
pub fn context(instance: &str, key_version: u32) -> String {
    format!("volume-key/v1/{instance}/{key_version}")
}

#[derive(Debug, thiserror::Error)]
pub enum EscrowError {
    #[error(
        "the LUKS2 header of instance {instance}'s volume holds no escrowed key: it was made or last opened without keys.recovery_recipients, so no recovery key can open it"
    )]
    Missing { instance: String },
    #[error("the escrow token in the LUKS2 header of instance {instance}'s volume is malformed: {reason}")]
    Malformed { instance: String, reason: String },
    #[error(
        "the escrow token in the LUKS2 header of instance {instance}'s volume names instance {named:?}: refused (the header or the token was copied from another volume)"
    )]
    OtherInstance { instance: String, named: String },
    #[error(
        "the escrow token in the LUKS2 header of instance {instance}'s volume holds key version {token}, but the volume's record says version {record}: refused"
    )]
    OtherVersion { instance: String, token: u32, record: u32 },
    #[error(transparent)]
    Recovery(#[from] RecoveryKeyError),
    #[error(
        "the key escrowed for instance {instance} opens with the recovery key but no keyslot of its volume accepts it; nothing was changed"
    )]
    KeyRefusedByHeader { instance: String },
}

impl HasErrorCode for EscrowError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Recovery(e) => e.code(),
            Self::Missing { .. }
            | Self::Malformed { .. }
            | Self::OtherInstance { .. }
            | Self::OtherVersion { .. }
            | Self::KeyRefusedByHeader { .. } => ErrorCode::FailedPrecondition,
        }
    }
}

/// The token as stored in the header. `type` and `keyslots` are what LUKS2 requires of every
/// token; the escrow is assigned to no keyslot, so libcryptsetup never tries to use it itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EscrowToken {
    #[serde(rename = "type")]
    token_type: String,
    keyslots: Vec<String>,
    format: u32,
    pub instance_id: String,
    pub key_version: u32,
    /// The recipients the key is sealed to (public keys).
    pub recipients: Vec<String>,
    /// The age file, hex.
    sealed: String,
}

impl EscrowToken {
    /// Seals `key` (the passphrase of the keyslot of `key_version`) to `recipients`.
    pub fn seal(
        recipients: &RecoveryRecipients,
        instance: &str,
        key_version: u32,
        key: &VolumeKey,
    ) -> Result<Self, EscrowError> {
        let sealed = recipients.seal(&context(instance, key_version), key.as_bytes())?;
        Ok(Self {
            token_type: TOKEN_TYPE.to_owned(),
            keyslots: Vec::new(),
            format: FORMAT,
            instance_id: instance.to_owned(),
            key_version,
            recipients: recipients.ids(),
            sealed: hex::encode(&sealed),
        })
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses the token read from `instance`'s header, bounded and checked for shape. Whether it
    /// belongs to this volume is decided by [`EscrowToken::open`].
    pub fn parse(instance: &str, json: &str) -> Result<Self, EscrowError> {
        let malformed = |reason: String| EscrowError::Malformed { instance: instance.to_owned(), reason };
        if json.len() > MAX_TOKEN_JSON {
            return Err(malformed(format!("{} bytes, more than {MAX_TOKEN_JSON}", json.len())));
        }
        let token: Self = serde_json::from_str(json).map_err(|e| malformed(e.to_string()))?;
        if token.token_type != TOKEN_TYPE || token.format != FORMAT {
            return Err(malformed(format!("type {:?} format {}", token.token_type, token.format)));
        }
        if token.recipients.len() > MAX_RECIPIENTS {
            return Err(malformed(format!("{} recipients, more than {MAX_RECIPIENTS}", token.recipients.len())));
        }
        if token.sealed.len() > 2 * MAX_SEALED_BYTES {
            return Err(malformed(format!("a sealed key of {} hex digits", token.sealed.len())));
        }
        Ok(token)
    }

    /// True when this token escrows `key_version` of `instance` to exactly `recipients`: nothing
    /// to write. Only the plain fields are compared; the host cannot open the sealed key.
    pub fn is_current(&self, instance: &str, key_version: u32, recipients: &RecoveryRecipients) -> bool {
        let mut mine = self.recipients.clone();
        let mut wanted = recipients.ids();
        mine.sort();
        wanted.sort();
        self.instance_id == instance && self.key_version == key_version && mine == wanted
    }

    /// Opens the escrowed key of `instance` at `key_version` (the volume record's, never the
    /// token's word) with the operator's identity.
    pub fn open(
        &self,
        identity: &RecoveryIdentity,
        instance: &str,
        key_version: u32,
    ) -> Result<VolumeKey, EscrowError> {
        if self.instance_id != instance {
            return Err(EscrowError::OtherInstance { instance: instance.to_owned(), named: self.instance_id.clone() });
        }
        if self.key_version != key_version {
            return Err(EscrowError::OtherVersion {
                instance: instance.to_owned(),
                token: self.key_version,
                record: key_version,
            });
        }
        let sealed = hex::decode(&self.sealed).ok_or_else(|| EscrowError::Malformed {
            instance: instance.to_owned(),
            reason: "the sealed key is not hex".into(),
        })?;
        let what = format!("volume key version {key_version} of instance {instance}");
        let key = recovery_key::open(identity, &context(instance, key_version), &what, &sealed)?;
        Ok(VolumeKey::new(key))
    }
}

#[cfg(test)]
#[path = "escrow_token_tests.rs"]
mod tests;
