//! The pure part of a major upgrade: which versions are accepted, which postgresql-common cluster an
//! instance is, where the new cluster's data goes and how pg_upgrade moves the data.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use super::UpgradeError;

/// The PostgreSQL majors this agent knows how to upgrade between (pg_upgrade reads 9.2 and later;
/// the platform never ran anything older than 13).
pub const KNOWN_MAJORS: &[u32] = &[13, 14, 15, 16, 17, 18];

/// The requested target: a known major, as a whole number ("17"; "17.2" is a minor and refused).
pub fn target_major(text: &str) -> Result<u32, UpgradeError> {
    let invalid = |message: String| UpgradeError::InvalidRequest { field: "target_version", message };
    if text.is_empty() {
        return Err(invalid("is required (a PostgreSQL major such as \"17\")".into()));
    }
    if text.contains('.') {
        return Err(invalid(format!(
            "{text:?} names a minor release; give the major only (\"{}\"): minor upgrades are not built yet (issue 14)",
            text.split('.').next().unwrap_or_default()
        )));
    }
    let major: u32 = text.parse().map_err(|_| invalid(format!("{text:?} is not a PostgreSQL major such as \"17\"")))?;
    if !KNOWN_MAJORS.contains(&major) {
        return Err(invalid(format!("PostgreSQL {major} is not a major this agent knows (known: {KNOWN_MAJORS:?})")));
    }
    Ok(major)
}

/// The major of the instance's recorded `engine_version` ("15", "15.8").
pub fn current_major(instance: &str, engine_version: &str) -> Result<u32, UpgradeError> {
    engine_version.split('.').next().and_then(|m| m.parse().ok()).ok_or_else(|| UpgradeError::Unsupported {
        instance: instance.to_owned(),
        message: format!("its engine_version {engine_version:?} does not start with a PostgreSQL major"),
    })
}

/// A postgresql-common cluster: `<major>/<name>`, run by the unit `postgresql@<major>-<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub major: u32,
    pub name: String,
}

impl Cluster {
    /// The cluster an instance's unit runs; only postgresql-common's template units are upgraded.
    pub fn from_unit(instance: &str, unit: &str) -> Result<Self, UpgradeError> {
        let unsupported = || UpgradeError::Unsupported {
            instance: instance.to_owned(),
            message: format!(
                "its unit {unit:?} is not a postgresql-common cluster unit (postgresql@<major>-<cluster>): major \
                 upgrades need one"
            ),
        };
        let rest = unit.strip_prefix("postgresql@").ok_or_else(unsupported)?;
        let rest = rest.strip_suffix(".service").unwrap_or(rest);
        let (major, name) = rest.split_once('-').ok_or_else(unsupported)?;
        let major = major.parse().map_err(|_| unsupported())?;
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
            && !name.starts_with('.');
        if !name_ok {
            return Err(unsupported());
        }
        Ok(Self { major, name: name.to_owned() })
    }

    pub fn with_major(&self, major: u32) -> Self {
        Self { major, name: self.name.clone() }
    }

    /// The unit's full name, as the instance record keeps it.
    pub fn unit(&self) -> String {
        format!("postgresql@{}-{}.service", self.major, self.name)
    }

    /// As postgresql-common's tools name it: "15/main".
    pub fn shown(&self) -> String {
        format!("{}/{}", self.major, self.name)
    }
}

/// The new cluster's data directory: the old one with its major component replaced
/// (`.../15/main` -> `.../17/main`), or, without one, a sibling named `<name>-<to>`.
pub fn new_data_dir(old: &Path, from: u32, to: u32) -> Option<PathBuf> {
    let from_s = OsString::from(from.to_string());
    let parts: Vec<Component<'_>> = old.components().collect();
    if let Some(i) = parts.iter().rposition(|c| matches!(c, Component::Normal(n) if *n == from_s.as_os_str())) {
        let mut out = PathBuf::new();
        for (j, c) in parts.iter().enumerate() {
            if j == i { out.push(to.to_string()) } else { out.push(c.as_os_str()) }
        }
        return Some(out);
    }
    let name = old.file_name()?.to_string_lossy().into_owned();
    Some(old.with_file_name(format!("{name}-{to}")))
}

/// How pg_upgrade moves the data. `--link` is never used: after the new cluster starts, the old one
/// cannot be started again (they share the files), and without a file system snapshot there would be
/// no way back; the old cluster must stay intact until the new one passed its health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMode {
    /// Every file copied: needs as much free space again as the old cluster.
    Copy,
    /// Reflinks (XFS with reflink, Btrfs): instant and shares blocks until either side writes.
    Clone,
}

impl CopyMode {
    pub fn flag(self) -> &'static str {
        match self {
            CopyMode::Copy => "--copy",
            CopyMode::Clone => "--clone",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CopyMode::Copy => "copy",
            CopyMode::Clone => "clone",
        }
    }

    /// Bytes the new cluster needs on its file system for an old cluster of `old_bytes`: a copy
    /// needs it all again plus a margin for WAL and catalogs; a clone only the new catalogs.
    pub fn space_needed(self, old_bytes: u64) -> u64 {
        const MARGIN: u64 = 256 << 20;
        match self {
            CopyMode::Copy => old_bytes + old_bytes / 10 + MARGIN,
            CopyMode::Clone => MARGIN,
        }
    }
}

/// Whether the file system type (statfs `f_type`) can share blocks between files: XFS and Btrfs
/// can (XFS only when made with reflink=1, which `pg_upgrade --check --clone` confirms).
pub fn mode_for_fs_type(f_type: i64) -> CopyMode {
    const XFS: i64 = 0x5846_5342;
    const BTRFS: i64 = 0x9123_683e;
    if f_type == XFS || f_type == BTRFS { CopyMode::Clone } else { CopyMode::Copy }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
