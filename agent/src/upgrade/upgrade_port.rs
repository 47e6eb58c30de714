//! The port pg_upgrade's own servers use. pg_upgrade starts the old and then the new server on a
//! socket only (`listen_addresses=''`), in the socket folder, named by the port: 50432 for every
//! upgrade unless told otherwise, so two instances upgrading at once on one host would meet there
//! (the second server refused, its upgrade rolled back). Each run reserves a port of its own: none
//! another upgrade of this agent holds, and none a running server's lock file names.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

/// pg_upgrade's default, where the search starts.
const FIRST: u16 = 50432;
/// How many ports are tried.
const TRIES: u16 = 1000;

static HELD: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A port held for one pg_upgrade run; free again when dropped.
#[derive(Debug)]
pub struct UpgradePort(u16);

impl UpgradePort {
    /// The first port from 50432 that no upgrade of this agent holds and whose socket lock file is
    /// not in `socket_dir`. The folder is the engine user's: a lock file planted there only moves
    /// the choice on (a name is looked at, nothing is opened).
    pub fn reserve(socket_dir: &Path) -> Result<Self, String> {
        let mut held = HELD.lock().unwrap_or_else(|p| p.into_inner());
        let held = held.get_or_insert_with(HashSet::new);
        let free = |port: u16| {
            !held.contains(&port)
                && std::fs::symlink_metadata(socket_dir.join(format!(".s.PGSQL.{port}.lock"))).is_err()
        };
        let port = (FIRST..FIRST + TRIES).find(|&p| free(p)).ok_or_else(|| {
            format!(
                "no free port for pg_upgrade's servers from {FIRST} to {} in {}",
                FIRST + TRIES - 1,
                socket_dir.display()
            )
        })?;
        held.insert(port);
        Ok(Self(port))
    }

    pub fn port(&self) -> u16 {
        self.0
    }
}

impl Drop for UpgradePort {
    fn drop(&mut self) {
        if let Some(held) = HELD.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            held.remove(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_upgrades_at_once_get_different_ports_and_a_running_servers_port_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let first = UpgradePort::reserve(dir.path()).unwrap();
        let second = UpgradePort::reserve(dir.path()).unwrap();
        assert_ne!(first.port(), second.port());
        // A server running on the next port (its lock file) is not met.
        let next = (FIRST..).find(|p| *p != first.port() && *p != second.port()).unwrap();
        std::fs::write(dir.path().join(format!(".s.PGSQL.{next}.lock")), "").unwrap();
        let third = UpgradePort::reserve(dir.path()).unwrap();
        assert!(![first.port(), second.port(), next].contains(&third.port()), "{third:?}");
        // Released when dropped: the port is there again for the next upgrade.
        let freed = first.port();
        drop(first);
        assert_eq!(UpgradePort::reserve(dir.path()).unwrap().port(), freed);
    }
}
