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
        KeyProviderKind::Local => {
            let kek = KekSource::from_env(config.keys.kek_file.clone(), dev).load()?;
            Arc::new(Arc::new(LocalKeystore::open(config.state_dir.join("keystore"), &kek)?))
        }
        KeyProviderKind::Remote => {
            let host = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
            Arc::new(RemoteKeys::connect(&config.keys.remote, host)?)
        }
    };
    Volumes::new(
        &config.state_dir,
        VolumeSettings::from_config(config),
        Arc::new(super::libcrypt::LibCrypt),
        Arc::new(super::system_host::SystemHost),
        keys,
        registry,
    )
}
