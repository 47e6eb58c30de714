//! Semantic validation of an [`InstanceSpec`]. The spec names paths, units and users that the agent
//! later hands to mount, systemd and chown as root, so every value is checked against a strict shape
//! here, once, before anything is stored. Each error names the field and says what is expected.

use crate::fsutil;
use crate::ids::{InvalidField, truncate_for_message};
use crate::instances::model::{BackupPolicy, Filesystem, InstanceSpec, LogSource, MaintenanceWindow, Plan, VolumeSpec};
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// PATH_MAX on Linux: longer paths cannot be opened in one call anyway.
pub const MAX_PATH_LEN: usize = 4096;
pub const MAX_LOG_SOURCES: usize = 32;
/// LUKS2's header takes the first 16 MiB of a volume; a volume must hold a file system besides it.
pub const LUKS2_HEADER_BYTES: u64 = 16 * MIB;
/// The smallest ext4 volume: the header and 16 MiB of file system.
pub const MIN_VOLUME_BYTES: u64 = LUKS2_HEADER_BYTES + 16 * MIB;
/// mkfs.xfs (xfsprogs 5.19 and later) refuses file systems under 300 MB.
pub const MIN_XFS_VOLUME_BYTES: u64 = LUKS2_HEADER_BYTES + 300 * MIB;
pub const MAX_VOLUME_BYTES: u64 = 64 * TIB;
pub const MIN_MEMORY_BYTES: u64 = 64 * MIB;
pub const MAX_MEMORY_BYTES: u64 = 4 * TIB;
const _: () = assert!(MAX_MEMORY_BYTES == 4096 * GIB);

/// Where instances may live on this host; comes from the agent's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationRules {
    /// `data_dir` must lie strictly below one of these (compared component by component).
    pub data_roots: Vec<PathBuf>,
    /// `volume.device` must start with one of these, compared as *strings* on the normalised path,
    /// so that `/dev/vd` admits `/dev/vda` and `/dev/disk/by-id/` admits every link in that folder.
    /// Normalisation (no `..`) happens first, so a string prefix cannot be escaped.
    pub device_prefixes: Vec<PathBuf>,
    /// A log file glob must lie strictly below one of these or below a data root: the agent reads
    /// the files as root and ships them off the host.
    pub log_roots: Vec<PathBuf>,
}

impl ValidationRules {
    /// Where log files may be read from: the log roots and the data roots.
    pub fn log_read_roots(&self) -> Vec<PathBuf> {
        self.log_roots.iter().chain(&self.data_roots).cloned().collect()
    }
}

/// Checks every field of `spec`; the first problem found is returned.
pub fn validate_spec(spec: &InstanceSpec, rules: &ValidationRules) -> Result<(), InvalidField> {
    engine_version("spec.engine_version", &spec.engine_version)?;
    unit_name("spec.systemd_unit", &spec.systemd_unit)?;
    data_dir("spec.data_dir", &spec.data_dir, &rules.data_roots)?;
    os_user("spec.os_user", &spec.os_user)?;
    volume(&spec.volume, &rules.device_prefixes)?;
    log_sources(&spec.log_sources, &rules.log_read_roots())?;
    plan(&spec.plan, spec.volume.size_bytes)?;
    if let Some(w) = &spec.maintenance_window {
        maintenance_window("spec.maintenance_window", w)?;
    }
    if let Some(b) = &spec.backup_policy {
        backup_policy(b)?;
    }
    Ok(())
}

/// Refuses NUL and control characters: they truncate C strings and forge lines in logs and unit files.
fn plain_text(field: &str, s: &str) -> Result<(), InvalidField> {
    if s.chars().any(char::is_control) {
        return Err(InvalidField::new(
            field,
            format!("{:?} contains NUL or control characters", truncate_for_message(s)),
        ));
    }
    Ok(())
}

fn engine_version(field: &str, v: &str) -> Result<(), InvalidField> {
    plain_text(field, v)?;
    let parts: Vec<&str> = v.split('.').collect();
    let ok = v.len() <= 16
        && parts.len() <= 3
        && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(InvalidField::new(
            field,
            format!(
                "{:?} must be a version like 15, 10.11 or 7.2.4 (1 to 3 dot-separated numbers, at most 16 characters)",
                truncate_for_message(v)
            ),
        ))
    }
}

/// systemd unit names: `[A-Za-z0-9:_.@-]+` ending in `.service`, at most 256 characters.
/// Only services are accepted (also for journald sources): a database runs as a service, and its
/// output is logged under that service, not under a socket or target.
fn unit_name(field: &str, unit: &str) -> Result<(), InvalidField> {
    plain_text(field, unit)?;
    let stem = unit.strip_suffix(".service").unwrap_or("");
    let ok = unit.len() <= 256
        && !stem.is_empty()
        && stem.bytes().all(|b| b.is_ascii_alphanumeric() || b":_.@-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(InvalidField::new(
            field,
            format!(
                "{:?} must be a systemd service name: letters, digits and : _ . @ - ending in .service, at most 256 characters",
                truncate_for_message(unit)
            ),
        ))
    }
}

/// An absolute path without `.`, `..`, empty components or a trailing slash, as UTF-8 text.
fn normalised_path<'a>(field: &str, path: &'a Path) -> Result<&'a str, InvalidField> {
    let Some(text) = path.to_str() else {
        return Err(InvalidField::new(
            field,
            format!("{:?} is not valid UTF-8", truncate_for_message(&path.to_string_lossy())),
        ));
    };
    plain_text(field, text)?;
    if text.len() > MAX_PATH_LEN {
        return Err(InvalidField::new(
            field,
            format!("is {} bytes long; at most {MAX_PATH_LEN} are allowed", text.len()),
        ));
    }
    let normalised =
        text.strip_prefix('/').is_some_and(|rest| rest.split('/').all(|c| !c.is_empty() && c != "." && c != ".."));
    if !normalised {
        return Err(InvalidField::new(
            field,
            format!(
                "{:?} must be an absolute, normalised path (starts with '/', no '.', '..' or empty components, no trailing '/')",
                truncate_for_message(text)
            ),
        ));
    }
    Ok(text)
}

pub(crate) fn data_dir(field: &str, dir: &Path, roots: &[PathBuf]) -> Result<(), InvalidField> {
    normalised_path(field, dir)?;
    if fsutil::strictly_below(dir, roots) {
        return Ok(());
    }
    Err(InvalidField::new(
        field,
        format!(
            "{:?} must lie strictly below one of the data roots {}",
            truncate_for_message(&dir.to_string_lossy()),
            list(roots)
        ),
    ))
}

/// Below this uid are the static system accounts (root, daemon, bin, sys, ...); the engines' users
/// are dynamic system accounts (100-999) or regular ones.
pub const MIN_OS_USER_UID: u32 = 100;
/// `nobody` / `nogroup`: shared by every service that wants no rights, so owning files as it would
/// hand them to all of them.
pub const NOBODY_ID: u32 = 65534;

/// The agent mounts the volume and chowns its root to `os_user`, and runs engine tools as that
/// user: root or a system account there would give the tenant's database that account's rights.
/// Refused by name when the account does not exist yet, by uid and gid when it does
/// ([`os_user_account`]).
const REFUSED_USER_NAMES: &[&str] = &["root", "nobody"];

/// Checks the account `name` resolves to on this host: not root (uid or gid 0), not a static system
/// account (uid below [`MIN_OS_USER_UID`]), not nobody ([`NOBODY_ID`]).
pub fn os_user_account(field: &str, name: &str, uid: u32, gid: u32) -> Result<(), InvalidField> {
    let why = if uid == 0 || gid == 0 {
        Some("is root (uid or gid 0)".to_owned())
    } else if uid == NOBODY_ID || gid == NOBODY_ID {
        Some("is nobody (65534)".to_owned())
    } else if uid < MIN_OS_USER_UID {
        Some(format!("is a static system account (uid {uid}, below {MIN_OS_USER_UID})"))
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(InvalidField::new(
            field,
            format!(
                "{:?} {why}; the database must run as its engine's own user (postgres, mysql, redis, ...)",
                truncate_for_message(name)
            ),
        )),
    }
}

fn os_user(field: &str, user: &str) -> Result<(), InvalidField> {
    plain_text(field, user)?;
    if REFUSED_USER_NAMES.contains(&user) {
        return Err(InvalidField::new(
            field,
            format!(
                "{user:?} is root or a system account; the database must run as its engine's own user (postgres, mysql, redis, ...)"
            ),
        ));
    }
    let mut bytes = user.bytes();
    let ok = user.len() <= 32
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(InvalidField::new(
            field,
            format!(
                "{:?} must be a user name matching ^[a-z_][a-z0-9_-]{{0,31}}$ (lower-case letters, digits, _ and -, at most 32 characters)",
                truncate_for_message(user)
            ),
        ))
    }
}

fn volume(volume: &VolumeSpec, prefixes: &[PathBuf]) -> Result<(), InvalidField> {
    if let Some(device) = &volume.device {
        let field = "spec.volume.device";
        let text = normalised_path(field, device)?;
        let allowed = prefixes.iter().any(|p| {
            let p = p.to_string_lossy();
            text.len() > p.len() && text.starts_with(p.as_ref())
        });
        if !allowed {
            return Err(InvalidField::new(
                field,
                format!(
                    "{:?} must start with one of the device prefixes {}, or be empty for an agent-managed file",
                    truncate_for_message(text),
                    list(prefixes)
                ),
            ));
        }
    }
    // Checked here rather than failing later in libcryptsetup or mkfs, part way through a create.
    let (min, shown) = match volume.filesystem {
        Filesystem::Ext4 => (MIN_VOLUME_BYTES, "32 MiB for ext4: the 16 MiB LUKS2 header and 16 MiB of file system"),
        Filesystem::Xfs => (MIN_XFS_VOLUME_BYTES, "316 MiB for xfs: the 16 MiB LUKS2 header and mkfs.xfs's 300 MiB"),
    };
    if !(min..=MAX_VOLUME_BYTES).contains(&volume.size_bytes) {
        return Err(InvalidField::new(
            "spec.volume.size_bytes",
            format!("is {}; it must be from {min} ({shown}) to {MAX_VOLUME_BYTES} (64 TiB)", volume.size_bytes),
        ));
    }
    Ok(())
}

fn log_sources(sources: &[LogSource], roots: &[PathBuf]) -> Result<(), InvalidField> {
    if sources.len() > MAX_LOG_SOURCES {
        return Err(InvalidField::new(
            "spec.log_sources",
            format!("has {} entries; at most {MAX_LOG_SOURCES} are allowed", sources.len()),
        ));
    }
    for (i, source) in sources.iter().enumerate() {
        match source {
            // Glob characters are fine inside components below the root; normalisation keeps the
            // glob from leaving its folder.
            LogSource::FileGlob(glob) => {
                let field = format!("spec.log_sources[{i}].file_glob");
                normalised_path(&field, Path::new(glob))?;
                if !fsutil::strictly_below(Path::new(glob), roots) {
                    return Err(InvalidField::new(
                        field,
                        format!(
                            "{:?} must lie below one of the log roots or data roots {}",
                            truncate_for_message(glob),
                            list(roots)
                        ),
                    ));
                }
            }
            LogSource::JournaldUnit(unit) => unit_name(&format!("spec.log_sources[{i}].journald_unit"), unit)?,
        }
    }
    Ok(())
}

/// `value` must lie in `range`; `expected` says so in words ("from 1 to 365", ...).
fn in_range<T: PartialOrd + std::fmt::Display>(
    field: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
    expected: &str,
) -> Result<(), InvalidField> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(InvalidField::new(field, format!("is {value}; it must be {expected}")))
    }
}

/// Minutes after 00:00 UTC, as daily schedules give them.
fn minute_of_day(field: &str, minute: u32) -> Result<(), InvalidField> {
    in_range(field, minute, 0..=1439, "minutes after 00:00 UTC, below 1440")
}

fn plan(plan: &Plan, volume_bytes: u64) -> Result<(), InvalidField> {
    plan_limits("spec.plan", plan)?;
    if plan.disk_bytes != 0 && plan.disk_bytes < volume_bytes {
        return Err(InvalidField::new(
            "spec.plan.disk_bytes",
            format!(
                "is {}; it must be 0 (no limit) or at least spec.volume.size_bytes ({volume_bytes})",
                plan.disk_bytes
            ),
        ));
    }
    Ok(())
}

/// The lowest I/O limits a plan may set (0 = no limit): below them a database cannot even start
/// in reasonable time, so a smaller number is taken for a unit mistake.
pub const MIN_IOPS: u32 = 10;
pub const MIN_BPS: u64 = 1 << 20;
/// The largest disk a plan may name: 1 PiB.
pub const MAX_DISK_BYTES: u64 = 1 << 50;

/// Every bound of a plan's numbers, the fields named under `prefix` (`spec.plan` in an instance
/// spec, `plan` in ChangePlan).
pub fn plan_limits(prefix: &str, plan: &Plan) -> Result<(), InvalidField> {
    in_range(&format!("{prefix}.cpu_millis"), plan.cpu_millis, 100..=256_000, "from 100 to 256000 (1000 = one CPU)")?;
    for (name, v) in [("io_read_iops", plan.io_read_iops), ("io_write_iops", plan.io_write_iops)] {
        if v != 0 {
            in_range(&format!("{prefix}.{name}"), v, MIN_IOPS..=10_000_000, "0 (no limit) or from 10 to 10000000")?;
        }
    }
    for (name, v) in [("io_read_bps", plan.io_read_bps), ("io_write_bps", plan.io_write_bps)] {
        if v != 0 {
            in_range(
                &format!("{prefix}.{name}"),
                v,
                MIN_BPS..=1 << 40,
                "0 (no limit) or from 1048576 (1 MiB/s) to 1099511627776 (1 TiB/s)",
            )?;
        }
    }
    in_range(&format!("{prefix}.disk_bytes"), plan.disk_bytes, 0..=MAX_DISK_BYTES, "at most 1125899906842624 (1 PiB)")?;
    in_range(
        &format!("{prefix}.memory_bytes"),
        plan.memory_bytes,
        MIN_MEMORY_BYTES..=MAX_MEMORY_BYTES,
        &format!("from {MIN_MEMORY_BYTES} (64 MiB) to {MAX_MEMORY_BYTES} (4 TiB)"),
    )
}

/// A weekly window's start and length; `field` names it in the request (`spec.maintenance_window`
/// in an instance spec, `window` in SetMaintenanceWindow).
pub fn maintenance_window(field: &str, w: &MaintenanceWindow) -> Result<(), InvalidField> {
    minute_of_day(&format!("{field}.start_minute_utc"), w.start_minute_utc)?;
    in_range(&format!("{field}.duration_minutes"), w.duration_minutes, 15..=1440, "from 15 minutes to 24 hours (1440)")
}

fn backup_policy(b: &BackupPolicy) -> Result<(), InvalidField> {
    minute_of_day("spec.backup_policy.daily_at_minute_utc", b.daily_at_minute_utc)?;
    in_range("spec.backup_policy.keep_daily", b.keep_daily, 1..=365, "from 1 to 365")?;
    if let Some(w) = b.keep_weekly {
        in_range("spec.backup_policy.keep_weekly", w, 0..=260, "from 0 to 260 (five years)")?;
    }
    if let Some(m) = b.keep_monthly {
        in_range("spec.backup_policy.keep_monthly", m, 0..=120, "from 0 to 120 (ten years)")?;
    }
    Ok(())
}

fn list(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "(none configured)".to_owned();
    }
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    format!("[{}]", names.join(", "))
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
