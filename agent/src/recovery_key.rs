//! The operator-held recovery key: keys the host must be able to seal but never open.
//!
//! A backup's data key wrapped only under the host KEK dies with the host. So the agent also seals
//! it (and each volume key) to the platform's recovery recipients: age X25519 public keys
//! (`age1...`) from the configuration. The private half (`AGE-SECRET-KEY-1...`) lives with the
//! operator, off every host, and is handed to the agent only for one restore or one volume open,
//! never stored. A host that is broken into can therefore read nothing sealed here, its own
//! instances' keys included, and cannot decrypt backups of instances it never held.
//!
//! The sealed form is a standard binary age file (age v1, X25519 recipients), so an operator can
//! also open one with the `age` tool. Its plaintext binds what the key belongs to:
//! `"dbagent-recovery-v1\0" || context || 0 || key`, where the context names the kind of key and
//! its owner (e.g. instance and backup id). age authenticates the whole payload, so a sealed key
//! copied into another backup's manifest or another volume's header is refused by [`open`].

use std::io::{Read, Write};
use std::str::FromStr;
use zeroize::Zeroizing;

use crate::error::{ErrorCode, HasErrorCode};

const MAGIC: &[u8] = b"dbagent-recovery-v1\0";
/// The largest sealed key accepted: a key is 32 or 64 bytes; the age header of a few recipients
/// stays far below this. A larger blob is refused before it is parsed.
pub const MAX_SEALED_BYTES: usize = 16 * 1024;
/// At most this many recipients: each adds a stanza to every sealed key.
pub const MAX_RECIPIENTS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum RecoveryKeyError {
    #[error("recovery recipient {index}: {reason} (expected an age X25519 public key, \"age1...\")")]
    BadRecipient { index: usize, reason: String },
    #[error("at most {MAX_RECIPIENTS} recovery recipients, got {0}")]
    TooManyRecipients(usize),
    #[error("the recovery recipient {0} is listed twice")]
    DuplicateRecipient(String),
    #[error("no recovery recipient is configured (keys.recovery_recipients)")]
    NoRecipients,
    /// Never carries any part of the key text.
    #[error("the recovery key is not an age X25519 identity (one line \"AGE-SECRET-KEY-1...\", '#' comments allowed)")]
    BadIdentity,
    #[error("sealed key of {0} bytes is larger than {MAX_SEALED_BYTES}")]
    TooLarge(usize),
    #[error("this recovery key does not open the sealed {what}: it was sealed to other recipients, or was altered")]
    WrongKey { what: String },
    #[error("the sealed key opens but belongs to another {what} (it was copied from elsewhere)")]
    WrongContext { what: String },
    #[error("sealing a key to the recovery recipients failed: {0}")]
    Seal(String),
}

impl HasErrorCode for RecoveryKeyError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::BadRecipient { .. }
            | Self::TooManyRecipients(_)
            | Self::DuplicateRecipient(_)
            | Self::BadIdentity => ErrorCode::InvalidArgument,
            Self::NoRecipients => ErrorCode::FailedPrecondition,
            Self::TooLarge(_) | Self::WrongKey { .. } | Self::WrongContext { .. } => ErrorCode::PermissionDenied,
            Self::Seal(_) => ErrorCode::Internal,
        }
    }
}

/// The configured recipients, parsed once.
#[derive(Clone, Default)]
pub struct RecoveryRecipients {
    recipients: Vec<age::x25519::Recipient>,
}

impl std::fmt::Debug for RecoveryRecipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.ids()).finish()
    }
}

impl RecoveryRecipients {
    /// Parses `age1...` public keys. An empty list is valid: nothing is sealed then.
    pub fn parse(texts: &[String]) -> Result<Self, RecoveryKeyError> {
        if texts.len() > MAX_RECIPIENTS {
            return Err(RecoveryKeyError::TooManyRecipients(texts.len()));
        }
        let mut recipients: Vec<age::x25519::Recipient> = Vec::with_capacity(texts.len());
        for (index, text) in texts.iter().enumerate() {
            let r = age::x25519::Recipient::from_str(text.trim())
                .map_err(|reason| RecoveryKeyError::BadRecipient { index, reason: reason.to_owned() })?;
            if recipients.iter().any(|seen| seen.to_string() == r.to_string()) {
                return Err(RecoveryKeyError::DuplicateRecipient(r.to_string()));
            }
            recipients.push(r);
        }
        Ok(Self { recipients })
    }

    pub fn is_empty(&self) -> bool {
        self.recipients.is_empty()
    }

    /// The recipients as text (public keys: safe to show and to store in a manifest).
    pub fn ids(&self) -> Vec<String> {
        self.recipients.iter().map(ToString::to_string).collect()
    }

    /// Seals `key` for `context` to every recipient. The result opens with any one recipient's
    /// identity through [`open`] with the same context.
    pub fn seal(&self, context: &str, key: &[u8]) -> Result<Vec<u8>, RecoveryKeyError> {
        if self.recipients.is_empty() {
            return Err(RecoveryKeyError::NoRecipients);
        }
        let encryptor = age::Encryptor::with_recipients(self.recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| RecoveryKeyError::Seal(e.to_string()))?;
        let mut out = Vec::with_capacity(256 + self.recipients.len() * 128);
        let mut writer = encryptor.wrap_output(&mut out).map_err(|e| RecoveryKeyError::Seal(e.to_string()))?;
        let plain = framed(context, key);
        writer.write_all(&plain).map_err(|e| RecoveryKeyError::Seal(e.to_string()))?;
        writer.finish().map_err(|e| RecoveryKeyError::Seal(e.to_string()))?;
        Ok(out)
    }
}

fn framed(context: &str, key: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut plain = Zeroizing::new(Vec::with_capacity(MAGIC.len() + context.len() + 1 + key.len()));
    plain.extend_from_slice(MAGIC);
    plain.extend_from_slice(context.as_bytes());
    plain.push(0);
    plain.extend_from_slice(key);
    plain
}

/// The private half, given for one restore or one open. Its Debug shows nothing of the key.
pub struct RecoveryIdentity {
    identity: age::x25519::Identity,
}

impl std::fmt::Debug for RecoveryIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecoveryIdentity(recipient {})", self.recipient())
    }
}

impl RecoveryIdentity {
    /// Parses the text of an identity file as `age-keygen` writes it: '#' comment lines, blank
    /// lines, and exactly one `AGE-SECRET-KEY-1...` line.
    pub fn parse(text: &[u8]) -> Result<Self, RecoveryKeyError> {
        let text = std::str::from_utf8(text).map_err(|_| RecoveryKeyError::BadIdentity)?;
        let mut keys = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
        let (Some(line), None) = (keys.next(), keys.next()) else {
            return Err(RecoveryKeyError::BadIdentity);
        };
        let identity = age::x25519::Identity::from_str(line).map_err(|_| RecoveryKeyError::BadIdentity)?;
        Ok(Self { identity })
    }

    /// A new random identity (`dbagentctl recovery-key generate`).
    pub fn generate() -> Self {
        Self { identity: age::x25519::Identity::generate() }
    }

    /// The identity file's text: a comment naming the public key, then the secret line. The
    /// caller writes it to a file only the operator can read.
    pub fn to_file_text(&self) -> Zeroizing<String> {
        use age::secrecy::ExposeSecret;
        Zeroizing::new(format!(
            "# dbagent recovery key: keep it off every host\n# public key: {}\n{}\n",
            self.recipient(),
            self.identity.to_string().expose_secret()
        ))
    }

    /// The public half, `age1...`.
    pub fn recipient(&self) -> String {
        self.identity.to_public().to_string()
    }
}

/// Opens a key sealed by [`RecoveryRecipients::seal`] for `context`. `what` names the thing in
/// errors ("backup b… of instance pg-1"). The sealed bytes come from untrusted storage: their size
/// is bounded before parsing, and a key sealed for another context is refused.
pub fn open(
    identity: &RecoveryIdentity,
    context: &str,
    what: &str,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, RecoveryKeyError> {
    if sealed.len() > MAX_SEALED_BYTES {
        return Err(RecoveryKeyError::TooLarge(sealed.len()));
    }
    let wrong_key = || RecoveryKeyError::WrongKey { what: what.to_owned() };
    let decryptor = age::Decryptor::new_buffered(sealed).map_err(|_| wrong_key())?;
    let mut reader =
        decryptor.decrypt(std::iter::once(&identity.identity as &dyn age::Identity)).map_err(|_| wrong_key())?;
    let mut plain = Zeroizing::new(Vec::new());
    // Bounded like the input: the payload of a sealed key is a few dozen bytes.
    (&mut reader).take(MAX_SEALED_BYTES as u64).read_to_end(&mut plain).map_err(|_| wrong_key())?;
    let prefix_len = MAGIC.len() + context.len() + 1;
    let expected = framed(context, &[]);
    if plain.len() <= prefix_len || plain[..prefix_len] != expected[..] {
        return Err(RecoveryKeyError::WrongContext { what: what.to_owned() });
    }
    Ok(Zeroizing::new(plain[prefix_len..].to_vec()))
}

#[cfg(test)]
#[path = "recovery_key_tests.rs"]
mod tests;
