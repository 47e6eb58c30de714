//! Builds the real volume manager from the configuration: libcryptsetup, the host, and the
//! configured key provider.

use std::sync::Arc;

use super::keystore::{KekSource, LocalKeystore};
use super::remote::RemoteKeys;
use super::{KeyProvider, VolumeError, VolumeSettings, Volumes};
use crate::config::{Config, KeyProviderKind};
use crate::instances::Registry;

/// `dev`: a missing local KEK is generated under the state folder instead of refusing to start.
pub fn from_config(config: &Config, dev: bool, registry: Arc<Registry>) -> Result<Volumes, VolumeError> {
    let keys: Arc<dyn KeyProvider> = match config.keys.provider {
        KeyProviderKind::Local => match KekSource::from_env(config.keys.kek_file.clone(), dev).load() {
            Ok(kek) => Arc::new(Arc::new(LocalKeystore::open(config.state_dir.join("keystore"), &kek)?)),
            // Without its KEK the agent still serves everything else (status, metrics, logs, the
            // orchestrator's view of the problem); volume calls answer FAILED_PRECONDITION.
            Err(e) => {
                tracing::error!("{e}; volumes cannot be created or opened until it is provided");
                Arc::new(NoKek(e.to_string()))
            }
        },
        KeyProviderKind::Remote => {
            let host = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
            Arc::new(RemoteKeys::connect(&config.keys.remote, host)?)
        }
    };
    Volumes::new(
        &config.state_dir,
        VolumeSettings::from_config(config),
        Arc::new(super::crypt::LibCryptsetup),
        Arc::new(super::host::SystemHost),
        keys,
        registry,
    )
}

/// The local provider when the host KEK could not be loaded: every key request fails with the reason.
struct NoKek(String);

#[tonic::async_trait]
impl KeyProvider for NoKek {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn key(&self, _: &str, _: u32, _: bool, _: u32) -> Result<super::key::VolumeKey, super::key::KeyError> {
        Err(super::key::KeyError::Kek(self.0.clone()))
    }

    async fn forget(&self, _: &str, _: Option<u32>) -> Result<(), super::key::KeyError> {
        Err(super::key::KeyError::Kek(self.0.clone()))
    }
}
