//! Authenticating manifests. Backup storage is not trusted: whoever can write to a bucket or a
//! `dir` destination can rewrite a manifest. So a manifest carries an HMAC-SHA256 over a canonical,
//! versioned encoding of every field that decides what the agent reads, allocates, restores or
//! deletes, under a key the storage never sees: derived (HKDF-SHA256, its own label) from the
//! backup's data key. Deriving from the unwrapped data key, not from whatever wraps it, lets any of
//! the backup's key wraps (host KEK, KeyService, recovery key) check it. The encoding covers the
//! whole list of wraps (format 3), so removing, adding or changing one is refused.
//!
//! [`authenticate`] is the one gate every operation on a stored backup passes: the manifest must
//! name the instance and backup asked for, have sane sizes (checked before any key work or
//! allocation), open its data key (bound to the same instance and backup) and carry a valid MAC.
//! `destinations` and `failed_destinations` are not covered: they record where the backup was
//! written, nothing reads them to decide anything, and repair rewrites them without re-signing.

use ring::{hkdf, hmac};
use zeroize::Zeroizing;

use super::BackupError;
use super::chunks::TAG_LEN;
use super::keys::{BackupKeys, MAX_KEY_WRAPS};
use super::manifest::{FORMAT_SINGLE_WRAP, FORMAT_VERSION, Manifest};

/// The largest chunk a manifest may declare: a reader holds about one chunk in memory, so this
/// bounds what a rewritten manifest can make it allocate. The config allows at most 16 MiB.
pub const MAX_CHUNK_SIZE: usize = 64 << 20;
/// The most chunks a manifest may declare (with [`MAX_CHUNK_SIZE`], far beyond any database).
pub const MAX_CHUNK_COUNT: u64 = 1 << 32;

const MAC_KEY_LABEL: &[u8] = b"dbagent-backup-manifest-mac-v2";
/// Format 2's label and encoding (one wrap as three fields) are kept so its manifests still verify.
const CANONICAL_LABEL_V2: &[u8] = b"dbagent-backup-manifest\0";
const CANONICAL_LABEL_V3: &[u8] = b"dbagent-backup-manifest-v3\0";
/// A wrapped key is at most a sealed age file of a few recipients (hex); larger is refused unread.
const MAX_WRAPPED_HEX: usize = 2 * crate::recovery_key::MAX_SEALED_BYTES;

/// A manifest that passed [`authenticate`], with the data key that opens its data. Object names
/// come from `instance_id` and `backup_id`, the ids that were asked for, never from manifest text.
pub struct AuthenticManifest {
    pub instance_id: String,
    pub backup_id: String,
    pub manifest: Manifest,
    pub key: Zeroizing<Vec<u8>>,
}

/// Never prints the key.
impl std::fmt::Debug for AuthenticManifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthenticManifest")
            .field("instance_id", &self.instance_id)
            .field("backup_id", &self.backup_id)
            .finish_non_exhaustive()
    }
}

impl AuthenticManifest {
    pub fn data_object(&self) -> String {
        super::manifest::data_key(&self.instance_id, &self.backup_id)
    }
}

fn mac_key(data_key: &[u8]) -> hmac::Key {
    // A fixed salt: the input is already a uniformly random key; HKDF only separates the uses.
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(data_key);
    let okm = prk.expand(&[MAC_KEY_LABEL], hmac::HMAC_SHA256).expect("32 bytes is a valid HKDF-SHA256 length");
    hmac::Key::from(okm)
}

/// The bytes the MAC covers: a label, then every covered field in a fixed order, each
/// length-prefixed so no two manifests encode alike. Times as stored (RFC 3339, milliseconds).
fn canonical(m: &Manifest) -> Vec<u8> {
    fn put(out: &mut Vec<u8>, field: &[u8]) {
        out.extend_from_slice(&(field.len() as u64).to_be_bytes());
        out.extend_from_slice(field);
    }
    let v3 = m.format != FORMAT_SINGLE_WRAP;
    let mut out = if v3 { CANONICAL_LABEL_V3 } else { CANONICAL_LABEL_V2 }.to_vec();
    put(&mut out, &m.format.to_be_bytes());
    for text in [&m.instance_id, &m.backup_id] {
        put(&mut out, text.as_bytes());
    }
    put(&mut out, m.engine.as_str().as_bytes());
    put(&mut out, m.method.as_str().as_bytes());
    put(&mut out, m.kind.as_str().as_bytes());
    for text in [&m.engine_version, &m.tool, &m.tool_version, &m.agent_version] {
        put(&mut out, text.as_bytes());
    }
    put(&mut out, crate::timefmt::format(m.started).as_bytes());
    put(&mut out, crate::timefmt::format(m.finished).as_bytes());
    put(&mut out, m.expires.map(crate::timefmt::format).unwrap_or_default().as_bytes());
    for n in [m.raw_bytes, m.stored_bytes, m.chunk_size as u64, m.chunk_count] {
        put(&mut out, &n.to_be_bytes());
    }
    put(&mut out, &m.zstd_level.to_be_bytes());
    if !v3 {
        for text in [&m.sha256, &m.compression, &m.cipher, &m.wrapped_key, &m.key_wrapper, &m.key_id] {
            put(&mut out, text.as_bytes());
        }
        return out;
    }
    for text in [&m.sha256, &m.compression, &m.cipher] {
        put(&mut out, text.as_bytes());
    }
    put(&mut out, &(m.key_wraps.len() as u64).to_be_bytes());
    for w in &m.key_wraps {
        for text in [&w.wrapper, &w.key_id, &w.wrapped] {
            put(&mut out, text.as_bytes());
        }
    }
    out
}

/// Sets `m.mac` under the MAC key derived from `data_key`; the last step before writing it.
pub fn sign(m: &mut Manifest, data_key: &[u8]) {
    let tag = hmac::sign(&mac_key(data_key), &canonical(m));
    m.mac = crate::hex::encode(tag.as_ref());
}

/// What can be checked without a key: the version, the ids, and sizes that fit together and
/// stay within bounds. Runs before any allocation sized by the manifest.
pub fn check_shape(m: &Manifest, instance_id: &str, backup_id: &str, destination: &str) -> Result<(), BackupError> {
    let refuse = |reason: String| BackupError::ManifestNotAuthenticated {
        backup: backup_id.to_owned(),
        destination: destination.to_owned(),
        reason,
    };
    if m.format != FORMAT_VERSION && m.format != FORMAT_SINGLE_WRAP {
        return Err(refuse(format!(
            "format {} (written before manifests were authenticated, or by another agent build); this agent reads formats {FORMAT_SINGLE_WRAP} and {FORMAT_VERSION}",
            m.format
        )));
    }
    if m.instance_id != instance_id || m.backup_id != backup_id {
        return Err(BackupError::ManifestForeign {
            backup: backup_id.to_owned(),
            instance: instance_id.to_owned(),
            destination: destination.to_owned(),
            names: format!(
                "instance {:?}, backup {:?}",
                crate::ids::truncate_for_message(&m.instance_id),
                crate::ids::truncate_for_message(&m.backup_id)
            ),
        });
    }
    if m.mac.is_empty() {
        return Err(refuse("it carries no MAC".into()));
    }
    let legacy_wrap = !(m.wrapped_key.is_empty() && m.key_wrapper.is_empty() && m.key_id.is_empty());
    if m.format == FORMAT_SINGLE_WRAP && !m.key_wraps.is_empty() {
        return Err(refuse(format!("format {FORMAT_SINGLE_WRAP} holds one wrapped key, not a list of key_wraps")));
    }
    if m.format == FORMAT_VERSION && (legacy_wrap || m.key_wraps.is_empty() || m.key_wraps.len() > MAX_KEY_WRAPS) {
        return Err(refuse(format!(
            "format {FORMAT_VERSION} needs 1..={MAX_KEY_WRAPS} key_wraps and no single wrapped_key, found {} wraps",
            m.key_wraps.len()
        )));
    }
    if m.wraps().iter().any(|w| w.wrapped.len() > MAX_WRAPPED_HEX || w.key_id.len() > 4096) {
        return Err(refuse("a key wrap is larger than any wrapped key".into()));
    }
    if m.chunk_size == 0 || m.chunk_size > MAX_CHUNK_SIZE {
        return Err(refuse(format!("chunk_size {} is outside 1..={MAX_CHUNK_SIZE}", m.chunk_size)));
    }
    if m.chunk_count == 0 || m.chunk_count > MAX_CHUNK_COUNT {
        return Err(refuse(format!("chunk_count {} is outside 1..={MAX_CHUNK_COUNT}", m.chunk_count)));
    }
    // Every chunk but the last is full; the last holds at least its tag.
    let frame = (m.chunk_size + TAG_LEN) as u64;
    let full = (m.chunk_count - 1).checked_mul(frame);
    let fits = full.is_some_and(|f| m.stored_bytes >= f + TAG_LEN as u64 && m.stored_bytes <= f + frame);
    if !fits {
        return Err(refuse(format!(
            "{} stored bytes cannot be {} chunks of {} bytes",
            m.stored_bytes, m.chunk_count, m.chunk_size
        )));
    }
    Ok(())
}

/// The gate before restore, verify, repair and retention act on a stored backup: `m`, read from
/// `destination` for `instance_id`/`backup_id`, must pass [`check_shape`], open its data key and
/// carry a valid MAC. Returns the manifest with its data key.
pub async fn authenticate(
    keys: &BackupKeys,
    m: Manifest,
    instance_id: &str,
    backup_id: &str,
    destination: &str,
) -> Result<AuthenticManifest, BackupError> {
    check_shape(&m, instance_id, backup_id, destination)?;
    let key = keys.unwrap(&m).await?;
    let refuse = |reason: &str| BackupError::ManifestNotAuthenticated {
        backup: backup_id.to_owned(),
        destination: destination.to_owned(),
        reason: reason.to_owned(),
    };
    let tag = crate::hex::decode(&m.mac).ok_or_else(|| refuse("its MAC is not hex"))?;
    hmac::verify(&mac_key(&key), &canonical(&m), &tag).map_err(|_| refuse("its MAC does not match its content"))?;
    Ok(AuthenticManifest { instance_id: instance_id.to_owned(), backup_id: backup_id.to_owned(), manifest: m, key })
}

#[cfg(test)]
#[path = "manifest_mac_tests.rs"]
mod tests;
