//! The `local` key provider: one file per instance key version under `<state_dir>/keystore`, each
//! the key sealed with AES-256-GCM under the host key-encryption key (KEK). The additional data binds
//! an entry to its instance and version, so an entry copied under another name does not open.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zeroize::Zeroizing;

use super::key::{KeyError, KeyProvider, VolumeKey};
use crate::fsutil;

const MAGIC: &[u8] = b"DBAGENTK1";
/// The systemd credential name (LoadCredential=dbagent-kek:...).
pub const KEK_CREDENTIAL: &str = "dbagent-kek";

/// Where the KEK comes from, in order: a systemd credential, then `file`.
pub struct KekSource {
    pub credentials_dir: Option<PathBuf>,
    pub file: PathBuf,
    /// Development mode: make a KEK in `file` when there is none.
    pub generate: bool,
}

impl KekSource {
    pub fn from_env(file: PathBuf, generate: bool) -> Self {
        Self { credentials_dir: std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from), file, generate }
    }

    /// Reads (or in development makes) the KEK. A KEK file readable by group or others is refused:
    /// anyone who can read it can unwrap every volume key of this host.
    pub fn load(&self) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        if let Some(dir) = &self.credentials_dir {
            let path = dir.join(KEK_CREDENTIAL);
            if path.exists() {
                return read_kek(&path);
            }
        }
        match std::fs::metadata(&self.file) {
            Ok(meta) => {
                let mode = meta.permissions().mode();
                if mode & 0o077 != 0 {
                    return Err(KeyError::KekExposed { path: self.file.clone(), mode: mode & 0o777 });
                }
                read_kek(&self.file)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.generate => {
                let mut kek = Zeroizing::new(vec![0u8; 32]);
                getrandom::fill(&mut kek).map_err(KeyError::Random)?;
                fsutil::atomic_write(&self.file, &kek).map_err(|source| KeyError::Io {
                    context: format!("write development KEK {}", self.file.display()),
                    source,
                })?;
                tracing::info!("generated a development key-encryption key in {}", self.file.display());
                Ok(kek)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(KeyError::KekMissing { path: self.file.clone(), credential: KEK_CREDENTIAL })
            }
            Err(source) => Err(KeyError::Io { context: format!("read KEK {}", self.file.display()), source }),
        }
    }
}

/// 32 raw bytes, or 64 hex digits (surrounding whitespace ignored).
fn read_kek(path: &Path) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let raw = Zeroizing::new(
        std::fs::read(path)
            .map_err(|source| KeyError::Io { context: format!("read KEK {}", path.display()), source })?,
    );
    if raw.len() == 32 {
        return Ok(raw);
    }
    let text = String::from_utf8_lossy(&raw);
    let hex = text.trim();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut out = Zeroizing::new(vec![0u8; 32]);
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0);
        }
        return Ok(out);
    }
    Err(KeyError::KekMalformed { path: path.to_path_buf() })
}

pub struct LocalKeystore {
    dir: PathBuf,
    kek: Arc<LessSafeKey>,
}

impl LocalKeystore {
    pub fn open(dir: PathBuf, kek: &[u8]) -> Result<Self, KeyError> {
        fsutil::ensure_private_dir(&dir)
            .map_err(|source| KeyError::Io { context: format!("create keystore {}", dir.display()), source })?;
        let key = UnboundKey::new(&AES_256_GCM, kek).map_err(|_| KeyError::KekLength(kek.len()))?;
        Ok(Self { dir, kek: Arc::new(LessSafeKey::new(key)) })
    }

    fn entry(&self, instance: &str, version: u32) -> PathBuf {
        self.dir.join(format!("{instance}.v{version}.key"))
    }

    fn aad(instance: &str, version: u32) -> String {
        format!("dbagent-volume-key:{instance}:v{version}")
    }

    fn unwrap_entry(&self, path: &Path, instance: &str, version: u32) -> Result<VolumeKey, KeyError> {
        let bytes = std::fs::read(path)
            .map_err(|source| KeyError::Io { context: format!("read {}", path.display()), source })?;
        let corrupt = || KeyError::Corrupt(path.to_path_buf());
        let rest = bytes.strip_prefix(MAGIC).ok_or_else(corrupt)?;
        if rest.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(corrupt());
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| corrupt())?;
        let mut buf = Zeroizing::new(sealed.to_vec());
        let aad = Self::aad(instance, version);
        let plain = self.kek.open_in_place(nonce, Aad::from(aad.as_bytes()), &mut buf).map_err(|_| corrupt())?;
        Ok(VolumeKey::new(Zeroizing::new(plain.to_vec())))
    }

    fn wrap_entry(&self, path: &Path, instance: &str, version: u32, key: &VolumeKey) -> Result<(), KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(KeyError::Random)?;
        let mut buf = Zeroizing::new(key.as_bytes().to_vec());
        let aad = Self::aad(instance, version);
        self.kek
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad.as_bytes()), &mut *buf)
            .map_err(|_| KeyError::Seal)?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + buf.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        fsutil::atomic_write(path, &out)
            .map_err(|source| KeyError::Io { context: format!("write {}", path.display()), source })
    }

    fn key_blocking(&self, instance: &str, version: u32, create: bool, bits: u32) -> Result<VolumeKey, KeyError> {
        let path = self.entry(instance, version);
        if path.exists() {
            return self.unwrap_entry(&path, instance, version);
        }
        if !create {
            return Err(KeyError::Missing { provider: "local", instance: instance.to_owned(), version });
        }
        let key = VolumeKey::random(bits)?;
        self.wrap_entry(&path, instance, version, &key)?;
        Ok(key)
    }

    fn versions_blocking(&self, instance: &str) -> Result<Vec<u32>, KeyError> {
        stored_versions(&self.dir, instance)
    }

    fn forget_blocking(&self, instance: &str, keep: Option<u32>) -> Result<(), KeyError> {
        let list = std::fs::read_dir(&self.dir)
            .map_err(|source| KeyError::Io { context: format!("list keystore {}", self.dir.display()), source })?;
        for entry in list.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((id, version)) = name.strip_suffix(".key").and_then(|n| n.rsplit_once(".v")) else { continue };
            if id == instance && version.parse::<u32>().ok() != keep {
                fsutil::remove_durable(&entry.path())
                    .map_err(|source| KeyError::Io { context: format!("remove {}", entry.path().display()), source })?;
            }
        }
        Ok(())
    }
}

/// The key versions stored for `instance` in the keystore folder `dir`, sorted. Only the file names
/// are read, so this needs no KEK: a host whose KEK is missing can still tell whether an instance
/// has keys. A missing folder holds none.
pub fn stored_versions(dir: &Path, instance: &str) -> Result<Vec<u32>, KeyError> {
    let list = match std::fs::read_dir(dir) {
        Ok(list) => list,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(KeyError::Io { context: format!("list keystore {}", dir.display()), source }),
    };
    let mut versions: Vec<u32> = list
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let (id, version) = name.strip_suffix(".key")?.rsplit_once(".v")?;
            (id == instance).then(|| version.parse().ok()).flatten()
        })
        .collect();
    versions.sort_unstable();
    Ok(versions)
}

#[tonic::async_trait]
impl KeyProvider for Arc<LocalKeystore> {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn key(&self, instance: &str, version: u32, create: bool, bits: u32) -> Result<VolumeKey, KeyError> {
        let (me, instance) = (self.clone(), instance.to_owned());
        tokio::task::spawn_blocking(move || me.key_blocking(&instance, version, create, bits)).await?
    }

    async fn forget(&self, instance: &str, keep: Option<u32>) -> Result<(), KeyError> {
        let (me, instance) = (self.clone(), instance.to_owned());
        tokio::task::spawn_blocking(move || me.forget_blocking(&instance, keep)).await?
    }

    async fn versions(&self, instance: &str) -> Result<Vec<u32>, KeyError> {
        let (me, instance) = (self.clone(), instance.to_owned());
        tokio::task::spawn_blocking(move || me.versions_blocking(&instance)).await?
    }

    async fn store(&self, instance: &str, version: u32, key: &VolumeKey) -> Result<(), KeyError> {
        let (me, instance, key) = (self.clone(), instance.to_owned(), key.clone());
        tokio::task::spawn_blocking(move || me.wrap_entry(&me.entry(&instance, version), &instance, version, &key))
            .await?
    }
}

#[cfg(test)]
#[path = "keystore_tests.rs"]
mod tests;
