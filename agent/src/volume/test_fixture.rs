//! A [`Volumes`] service on the in-memory backends (SimCrypt on SimHost, a local keystore in a
//! temporary folder), for the volume tests and for other modules' tests that need one.

use std::path::PathBuf;
use std::sync::Arc;

use super::crypt::{ActivationFlags, FormatParams, PbkdfParams, SimCrypt};
use super::host::SimHost;
use super::keystore::LocalKeystore;
use super::{VolumeError, VolumeSettings, Volumes};
use crate::config::PbkdfKind;
use crate::error::{ErrorCode, HasErrorCode};
use crate::instances::{Registry, fixtures};
use crate::locks::ResourceLocks;

pub(crate) struct Fixture {
    pub dir: tempfile::TempDir,
    pub registry: Arc<Registry>,
    pub crypt: Arc<SimCrypt>,
    pub host: Arc<SimHost>,
    pub keys: Arc<LocalKeystore>,
    pub volumes: Volumes,
}

pub(crate) fn settings(prefixes: &[&str]) -> VolumeSettings {
    VolumeSettings {
        format: FormatParams {
            key_bits: 256,
            sector_size: 0,
            pbkdf: PbkdfParams { kind: PbkdfKind::Pbkdf2, time_ms: 100, iterations: 1000, memory_kib: 32, parallel: 1 },
            label: String::new(),
        },
        flags: ActivationFlags { no_read_workqueue: true, no_write_workqueue: true },
        device_prefixes: prefixes.iter().map(PathBuf::from).collect(),
        recovery_recipients: Default::default(),
    }
}

pub(crate) fn fixture_with(prefixes: &[&str]) -> Fixture {
    fixture_from(settings(prefixes))
}

pub(crate) fn fixture_from(settings: VolumeSettings) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let registry =
        Arc::new(Registry::open(dir.path().join("instances"), fixtures::rules(), ResourceLocks::default()).unwrap());
    let host = Arc::new(SimHost::default());
    let crypt = Arc::new(SimCrypt::on(host.clone()));
    let keys = Arc::new(LocalKeystore::open(dir.path().join("keystore"), &[9u8; 32]).unwrap());
    let volumes =
        Volumes::new(dir.path(), settings, crypt.clone(), host.clone(), Arc::new(keys.clone()), registry.clone())
            .unwrap();
    Fixture { dir, registry, crypt, host, keys, volumes }
}

pub(crate) fn fixture() -> Fixture {
    fixture_with(&["/dev/disk/by-id/", "/dev/vd"])
}

impl Fixture {
    pub async fn register(&self, id: &str, device: Option<&str>) {
        let mut spec = fixtures::spec(id);
        spec.volume.device = device.map(PathBuf::from);
        self.registry.register(id, spec).await.unwrap();
    }
}

pub(crate) fn code(e: &VolumeError) -> ErrorCode {
    e.code()
}
