//! Builds the volume manager from the configuration: the crypt and host backends (the system's, or
//! the in-memory ones of `dbagent --dev --sim`), and the configured key provider.

use std::path::Path;
use std::sync::Arc;

use super::crypt::CryptBackend;
use super::crypt::{LibCryptsetup, SimCrypt};
use super::host::{HostError, HostOps};
use super::host::{SimHost, SystemHost};
use super::keystore::{KekSource, LocalKeystore};
use super::remote::RemoteKeys;
use super::{KeyProvider, VolumeError, VolumeSettings, Volumes};
use crate::config::{Config, KeyProviderKind};
use crate::fsutil;
use crate::instances::Registry;

/// What the volumes run on. Only the command line (`--dev --sim`) chooses `Simulated`; no
/// configuration key can.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeBackend {
    /// libcryptsetup and the host: loop devices, dm-crypt, mkfs, mount. Needs root.
    System,
    /// In memory: every volume call works without root or device-mapper, and nothing is encrypted
    /// or written to a device. Volume records and keys are still kept under the state folder.
    Simulated,
}

/// `dev`: a missing local KEK is generated under the state folder instead of refusing to start.
pub fn from_config(
    config: &Config,
    dev: bool,
    backend: VolumeBackend,
    registry: Arc<Registry>,
) -> Result<Volumes, VolumeError> {
    claim_state_folder(&config.state_dir, backend)?;
    let (crypt, host): (Arc<dyn CryptBackend>, Arc<dyn HostOps>) = match backend {
        VolumeBackend::System => (Arc::new(LibCryptsetup), Arc::new(SystemHost)),
        VolumeBackend::Simulated => {
            tracing::warn!(
                "volumes are SIMULATED (--sim): they live in this process's memory, nothing is encrypted, \
                 no device is touched, and they are gone when the agent stops"
            );
            let host = Arc::new(SimHost::default());
            (Arc::new(SimCrypt::on(host.clone())), host)
        }
    };
    Volumes::new(
        &config.state_dir,
        VolumeSettings::from_config(config),
        crypt,
        host,
        key_provider(config, dev)?,
        registry,
    )
}

fn key_provider(config: &Config, dev: bool) -> Result<Arc<dyn KeyProvider>, VolumeError> {
    Ok(match config.keys.provider {
        KeyProviderKind::Local => match KekSource::from_env(config.keys.kek_file.clone(), dev).load() {
            Ok(kek) => Arc::new(Arc::new(LocalKeystore::open(config.state_dir.join("keystore"), &kek)?)),
            // Without its KEK the agent still serves everything else (status, metrics, logs, the
            // orchestrator's view of the problem); volume calls answer FAILED_PRECONDITION.
            Err(e) => {
                tracing::error!("{e}; volumes cannot be created or opened until it is provided");
                Arc::new(NoKek { reason: e.to_string(), keystore: config.state_dir.join("keystore") })
            }
        },
        KeyProviderKind::Remote => {
            Arc::new(RemoteKeys::connect(&config.keys.remote, crate::keyservice_client::host_name())?)
        }
    })
}

/// Marks a state folder whose volume records are simulated. The records and the keystore outlive
/// the process; the simulated volumes do not.
const SIMULATED_MARKER: &str = "volumes.simulated";

/// Keeps simulated and real volume records apart. A simulated DestroyVolume forgets the instance's
/// keys in the keystore, which would lose a real volume's data; a real agent would take simulated
/// records for volumes it cannot find. So a state folder with volume records serves one kind only.
fn claim_state_folder(state_dir: &Path, backend: VolumeBackend) -> Result<(), VolumeError> {
    let marker = state_dir.join(SIMULATED_MARKER);
    let records_dir = state_dir.join("volumes");
    let has_records = match fsutil::json_files(&records_dir) {
        Ok(files) => !files.is_empty(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(HostError::io(format!("list {}", records_dir.display()), e).into()),
    };
    let simulated_before = marker.exists();
    match backend {
        VolumeBackend::Simulated if has_records && !simulated_before => {
            Err(VolumeError::StateFolderKind { records_dir, simulated_records: false, marker })
        }
        VolumeBackend::Simulated => write_marker(&marker),
        VolumeBackend::System if has_records && simulated_before => {
            Err(VolumeError::StateFolderKind { records_dir, simulated_records: true, marker })
        }
        VolumeBackend::System if simulated_before => {
            fsutil::remove_durable(&marker).map_err(|e| HostError::io(format!("remove {}", marker.display()), e))?;
            Ok(())
        }
        VolumeBackend::System => Ok(()),
    }
}

fn write_marker(marker: &Path) -> Result<(), VolumeError> {
    let text = "The volume records in volumes/ were written by `dbagent --dev --sim`: they describe \
                simulated volumes, which live in memory only.\n";
    fsutil::atomic_write(marker, text.as_bytes())
        .map_err(|e| HostError::io(format!("write {}", marker.display()), e).into())
}

/// The local provider when the host KEK could not be loaded: every key request fails with the reason.
struct NoKek {
    reason: String,
    keystore: std::path::PathBuf,
}

#[tonic::async_trait]
impl KeyProvider for NoKek {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn key(&self, _: &str, _: u32, _: bool, _: u32) -> Result<super::key::VolumeKey, super::key::KeyError> {
        Err(super::key::KeyError::Kek(self.reason.clone()))
    }

    async fn forget(&self, _: &str, _: Option<u32>) -> Result<(), super::key::KeyError> {
        Err(super::key::KeyError::Kek(self.reason.clone()))
    }

    async fn store(&self, _: &str, _: u32, _: &super::key::VolumeKey) -> Result<(), super::key::KeyError> {
        Err(super::key::KeyError::Kek(self.reason.clone()))
    }

    /// The keystore's file names need no KEK: without it, RemoveInstance and a re-registration still
    /// see exactly which keys an instance has (and refuse while there are any), and an instance
    /// with none is registered or removed as usual.
    async fn versions(&self, instance: &str) -> Result<Vec<u32>, super::key::KeyError> {
        let (dir, instance) = (self.keystore.clone(), instance.to_owned());
        tokio::task::spawn_blocking(move || super::keystore::stored_versions(&dir, &instance)).await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without its KEK the host still sees which keys each instance has: an instance with keys is
    /// kept from being removed or registered again, one without is not held up by the missing KEK.
    #[tokio::test]
    async fn without_the_kek_key_versions_are_read_from_the_keystore_names() {
        let dir = tempfile::tempdir().unwrap();
        let keystore = dir.path().join("keystore");
        let no_kek = NoKek { reason: "kek missing".into(), keystore: keystore.clone() };
        assert_eq!(no_kek.versions("pg1").await.unwrap(), Vec::<u32>::new(), "no keystore folder: no keys");
        std::fs::create_dir(&keystore).unwrap();
        for name in ["pg1.v1.key", "pg1.v3.key", "pg10.v2.key", "notes.txt"] {
            std::fs::write(keystore.join(name), b"sealed").unwrap();
        }
        assert_eq!(no_kek.versions("pg1").await.unwrap(), vec![1, 3]);
        assert_eq!(no_kek.versions("pg10").await.unwrap(), vec![2]);
        assert_eq!(no_kek.versions("pg2").await.unwrap(), Vec::<u32>::new());
        let e = no_kek.key("pg1", 1, false, 256).await.unwrap_err();
        assert!(e.to_string().contains("kek missing"), "{e}");
    }

    fn add_record(state_dir: &Path, id: &str) {
        let dir = state_dir.join("volumes");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{id}.json")), "{}").unwrap();
    }

    #[test]
    fn simulation_refuses_a_folder_with_real_volume_records() {
        let dir = tempfile::tempdir().unwrap();
        claim_state_folder(dir.path(), VolumeBackend::System).unwrap();
        add_record(dir.path(), "pg-1");
        let e = claim_state_folder(dir.path(), VolumeBackend::Simulated).unwrap_err();
        assert!(e.to_string().contains("real volumes"), "{e}");
        assert!(!dir.path().join(SIMULATED_MARKER).exists(), "a refused start must not mark the folder");
        // The real agent still starts on it.
        claim_state_folder(dir.path(), VolumeBackend::System).unwrap();
    }

    #[test]
    fn real_volumes_refuse_a_folder_with_simulated_records() {
        let dir = tempfile::tempdir().unwrap();
        claim_state_folder(dir.path(), VolumeBackend::Simulated).unwrap();
        add_record(dir.path(), "pg-1");
        let e = claim_state_folder(dir.path(), VolumeBackend::System).unwrap_err();
        assert!(e.to_string().contains("simulated volumes"), "{e}");
        // The simulation still starts on it.
        claim_state_folder(dir.path(), VolumeBackend::Simulated).unwrap();
    }

    #[test]
    fn a_simulation_without_records_leaves_the_folder_to_either_kind() {
        let dir = tempfile::tempdir().unwrap();
        claim_state_folder(dir.path(), VolumeBackend::Simulated).unwrap();
        assert!(dir.path().join(SIMULATED_MARKER).exists());
        claim_state_folder(dir.path(), VolumeBackend::System).unwrap();
        assert!(!dir.path().join(SIMULATED_MARKER).exists(), "the real agent takes the folder over");
        add_record(dir.path(), "pg-1");
        assert!(claim_state_folder(dir.path(), VolumeBackend::Simulated).is_err());
    }
}
