//! The in-memory [`MinorHost`] for unit tests: installed versions in a map, an install that
//! moves the named packages to the repository's versions (or fails as told), a journal text, and
//! `mariadb-upgrade` counted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::host::{Installed, MinorHost};
use crate::instances::Instance;

#[derive(Default)]
pub struct MemoryMinorHost {
    pub installed: Mutex<BTreeMap<String, String>>,
    /// What the repository offers: package -> version.
    pub repository: Mutex<BTreeMap<String, String>>,
    /// The next install fails with this message.
    pub fail_install: Mutex<Option<String>>,
    /// Every install: the folder and the packages.
    pub installs: Mutex<Vec<(PathBuf, Vec<String>)>>,
    pub journal: Mutex<String>,
    pub mariadb_upgrades: Mutex<u32>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[async_trait::async_trait]
impl MinorHost for MemoryMinorHost {
    async fn installed_versions(&self, packages: &[String]) -> BTreeMap<String, Option<String>> {
        let installed = lock(&self.installed);
        packages.iter().map(|p| (p.clone(), installed.get(p).cloned())).collect()
    }

    async fn install(&self, repository: &Path, packages: &[String]) -> Result<Installed, String> {
        lock(&self.installs).push((repository.to_path_buf(), packages.to_vec()));
        if let Some(message) = lock(&self.fail_install).take() {
            return Err(message);
        }
        let offered = lock(&self.repository).clone();
        let mut installed = lock(&self.installed);
        for p in packages {
            let v = offered.get(p).ok_or_else(|| format!("E: Unable to locate package {p}"))?;
            installed.insert(p.clone(), v.clone());
        }
        Ok(Installed { output_tail: format!("{} upgraded", packages.len()), policy_rc_d: "agent" })
    }

    async fn journal_tail(&self, _unit: &str, _lines: usize) -> String {
        lock(&self.journal).clone()
    }

    async fn mariadb_upgrade(&self, _instance: &Instance) -> Result<String, String> {
        *lock(&self.mariadb_upgrades) += 1;
        Ok("Phase 7/7: Running 'FLUSH PRIVILEGES'".into())
    }
}

/// Minor upgrades on in-memory pieces (prober, systemd, host), for the tests of the services
/// that hold one; packages beneath `dir/packages`.
pub fn memory_minor_upgrades(
    registry: std::sync::Arc<crate::instances::Registry>,
    operations: crate::ops::OperationEngine,
    dir: &Path,
) -> super::MinorUpgrades {
    use std::time::Duration;
    super::MinorUpgrades {
        registry,
        operations,
        prober: std::sync::Arc::new(crate::health::memory::MemoryProber::default()),
        services: std::sync::Arc::new(crate::systemd::InMemoryServiceManager::new()),
        host: std::sync::Arc::new(MemoryMinorHost::default()),
        settings: super::service::MinorSettings {
            repository_root: dir.join("packages"),
            expected: Duration::from_secs(600),
            restart_timeout: Duration::from_secs(5),
            health_deadline: Duration::from_secs(5),
            probe_deadline: Duration::from_secs(1),
            owner: super::packages::Owner::agent(),
        },
        install_lock: std::sync::Arc::default(),
    }
}
