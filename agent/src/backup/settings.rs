//! The `[backup]` config section. Every key has a default; `docs/backups.md` documents them.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::instances::{Engine, Instance};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupConfig {
    /// zstd level, 1..=19. Level 1 keeps up with a fast disk on two cores.
    pub zstd_level: i32,
    /// zstd worker threads; 0 compresses on the pipeline's own thread.
    pub zstd_workers: u32,
    /// Plaintext bytes per encrypted chunk (64 KiB .. 16 MiB).
    pub chunk_size: usize,
    /// S3 multipart part size (5 MiB .. 64 MiB).
    pub part_size: usize,
    /// Stored bytes per second sent to each destination; 0 = unlimited.
    pub rate_limit_bytes_per_sec: u64,
    /// Attempts per S3 request before a destination is declared failed.
    pub max_retries: usize,
    /// How often the scheduler looks for due backups and expired ones.
    pub scheduler_interval_secs: u64,
    /// Scheduled backups and drills do not start while the instance's maintenance window is open
    /// (the window is for the orchestrator's disruptive work); one due then starts after it.
    pub avoid_maintenance_windows: bool,
    /// Destinations, written at once; names are the availability zones. Empty: three `dir`
    /// destinations under `<state_dir>/backups/{az1,az2,az3}`.
    pub destinations: Vec<DestinationConfig>,
    /// Take backups although fewer than two destinations are off this host's disks (`zones.rs`):
    /// backups die with this host. Off by default; the `--dev` defaults set it.
    pub accept_on_host_destinations: bool,
    /// How the dump tools reach each engine. Config-free conventions by default: the Debian
    /// sockets and ports; tests point these at their own servers.
    pub postgresql: EngineConnection,
    pub mariadb: EngineConnection,
    pub redis: EngineConnection,
    /// Production agents refuse backups whose data key only this host's KEK wraps (they die with
    /// the host) unless this is true; configure keys.recovery_recipients or the remote KeyService
    /// instead. `--dev` never asks.
    pub allow_host_only_keys: bool,
    /// Days between scheduled restore drills of an instance (0..=365); 0 = no scheduled drills
    /// (DrillBackup still runs one on demand).
    pub drill_interval_days: u32,
    /// Test-only: seconds between scheduled drills, overriding `drill_interval_days` when not 0,
    /// so a test sees a scheduled drill without waiting days. Not for production use.
    pub drill_interval_secs_for_tests: u64,
    /// Where drills make their scratch folders (absolute; root's, mode 0711). Not under
    /// `state_dir`, which is private (0700): the engine's user must pass through it.
    pub drill_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum DestinationConfig {
    Dir {
        name: String,
        path: PathBuf,
    },
    S3 {
        name: String,
        bucket: String,
        /// e.g. "http://127.0.0.1:3900"; empty for AWS.
        #[serde(default)]
        endpoint: String,
        #[serde(default = "default_region")]
        region: String,
        access_key_id: String,
        secret_access_key: String,
        /// Key prefix inside the bucket.
        #[serde(default)]
        prefix: String,
        /// Plain HTTP; only for loopback test endpoints.
        #[serde(default)]
        allow_http: bool,
    },
}

fn default_region() -> String {
    "us-east-1".into()
}

impl DestinationConfig {
    pub fn name(&self) -> &str {
        match self {
            DestinationConfig::Dir { name, .. } | DestinationConfig::S3 { name, .. } => name,
        }
    }
}

/// `host` starting with '/' is a socket (folder for PostgreSQL, file for MariaDB).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConnection {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// PostgreSQL: the database pg_dump dumps. MariaDB: empty = --all-databases.
    pub database: String,
    /// Folder of the engine's client tools; empty = PATH.
    pub bin_dir: PathBuf,
}

impl Default for EngineConnection {
    fn default() -> Self {
        Self { host: String::new(), port: 0, user: String::new(), database: String::new(), bin_dir: PathBuf::new() }
    }
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            zstd_level: 1,
            zstd_workers: 2,
            chunk_size: super::chunks::DEFAULT_CHUNK_SIZE,
            part_size: 8 << 20,
            rate_limit_bytes_per_sec: 0,
            max_retries: 3,
            scheduler_interval_secs: 60,
            avoid_maintenance_windows: true,
            destinations: Vec::new(),
            accept_on_host_destinations: false,
            postgresql: EngineConnection {
                host: "/var/run/postgresql".into(),
                port: 5432,
                user: "postgres".into(),
                database: "postgres".into(),
                bin_dir: PathBuf::new(),
            },
            // No user: the client logs in as the OS user the dump runs as (the instance's, e.g.
            // mysql), which Debian's MariaDB admits through unix_socket as mysql@localhost. An
            // explicit "root" is refused there unless the dump itself runs as OS root.
            mariadb: EngineConnection {
                host: "/run/mysqld/mysqld.sock".into(),
                port: 3306,
                ..EngineConnection::default()
            },
            redis: EngineConnection { host: "127.0.0.1".into(), port: 6379, ..EngineConnection::default() },
            // No: a backup must survive the loss of its host (keys.recovery_recipients or the KeyService).
            allow_host_only_keys: false,
            drill_interval_days: 7,
            drill_interval_secs_for_tests: 0,
            drill_dir: PathBuf::from("/var/lib/dbagent-drills"),
        }
    }
}

impl BackupConfig {
    /// Destinations with the defaults filled in.
    pub fn effective_destinations(&self, state_dir: &Path) -> Vec<DestinationConfig> {
        if !self.destinations.is_empty() {
            return self.destinations.clone();
        }
        ["az1", "az2", "az3"]
            .into_iter()
            .map(|az| DestinationConfig::Dir { name: az.into(), path: state_dir.join("backups").join(az) })
            .collect()
    }

    /// How long after an instance's last drill the scheduler starts the next; `None` = never.
    pub fn drill_interval(&self) -> Option<std::time::Duration> {
        match (self.drill_interval_secs_for_tests, self.drill_interval_days) {
            (0, 0) => None,
            (0, days) => Some(std::time::Duration::from_secs(u64::from(days) * 86_400)),
            (secs, _) => Some(std::time::Duration::from_secs(secs)),
        }
    }

    /// The `[backup.<engine>]` connection.
    pub fn connection(&self, engine: Engine) -> &EngineConnection {
        match engine {
            Engine::Postgresql => &self.postgresql,
            Engine::Mariadb => &self.mariadb,
            Engine::Redis => &self.redis,
        }
    }

    /// The connection a backup of `instance` dumps from: its engine's `[backup.<engine>]`
    /// settings, and for PostgreSQL the port of the cluster running on the instance's data
    /// directory (`postmaster.pid`, read beneath the data root in `data_roots` that holds it), so
    /// that several clusters on one host each dump their own.
    pub async fn connection_for(&self, instance: &Instance, data_roots: &[PathBuf]) -> EngineConnection {
        let mut conn = self.connection(instance.spec.engine).clone();
        if instance.spec.engine == Engine::Postgresql {
            // pg_dump and pg_restore of the instance's own major, as the restore drill uses: through
            // PATH, postgresql-common's wrapper picks the newest major installed, whose archives an
            // older pg_restore cannot read (a host in the middle of a major upgrade has two).
            if conn.bin_dir.as_os_str().is_empty()
                && let Some(dir) = postgresql_bin_dir(&instance.spec.engine_version)
                && tokio::fs::metadata(&dir).await.is_ok_and(|m| m.is_dir())
            {
                conn.bin_dir = dir;
            }
            let (roots, data_dir) = (data_roots.to_vec(), instance.spec.data_dir.clone());
            // The file is the tenant's to replace: even read safely it is file I/O, off the async workers.
            if let Ok(Some(port)) = tokio::task::spawn_blocking(move || postmaster_port(&roots, &data_dir)).await {
                conn.port = port;
            }
        }
        conn
    }

    /// `Err((key, message))` for the first invalid value.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(1..=19).contains(&self.zstd_level) {
            return Err(("backup.zstd_level", "must be between 1 and 19".into()));
        }
        if self.zstd_workers > 64 {
            return Err(("backup.zstd_workers", "must be at most 64".into()));
        }
        if !((64 << 10)..=(16 << 20)).contains(&self.chunk_size) {
            return Err(("backup.chunk_size", "must be between 65536 and 16777216 bytes".into()));
        }
        if !((5 << 20)..=(64 << 20)).contains(&self.part_size) {
            return Err(("backup.part_size", "must be between 5 MiB and 64 MiB (S3 parts are at least 5 MiB)".into()));
        }
        if !(1..=20).contains(&self.max_retries) {
            return Err(("backup.max_retries", "must be between 1 and 20".into()));
        }
        if !(1..=3600).contains(&self.scheduler_interval_secs) {
            return Err(("backup.scheduler_interval_secs", "must be between 1 and 3600".into()));
        }
        if self.drill_interval_days > 365 {
            return Err(("backup.drill_interval_days", "must be between 0 (off) and 365".into()));
        }
        if !self.drill_dir.is_absolute() || self.drill_dir.components().any(|c| c == std::path::Component::ParentDir) {
            return Err(("backup.drill_dir", format!("{:?} must be an absolute path without '..'", self.drill_dir)));
        }
        let mut names = std::collections::HashSet::new();
        for d in &self.destinations {
            let name = d.name();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(("backup.destinations", format!("name {name:?} must be letters, digits, '-' or '_'")));
            }
            if !names.insert(name.to_owned()) {
                return Err(("backup.destinations", format!("name {name:?} is used twice")));
            }
            match d {
                DestinationConfig::Dir { path, .. } if !path.is_absolute() => {
                    return Err(("backup.destinations", format!("{name}: path {path:?} must be absolute")));
                }
                DestinationConfig::S3 { bucket, .. } if bucket.is_empty() => {
                    return Err(("backup.destinations", format!("{name}: bucket is required")));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The most of `postmaster.pid` read: the real file is a few short lines.
const POSTMASTER_PID_MAX_BYTES: u64 = 4096;

/// The port line (the fourth) of a running PostgreSQL's `postmaster.pid`. Blocking.
fn postmaster_port(data_roots: &[PathBuf], data_dir: &Path) -> Option<u16> {
    read_postmaster_pid(data_roots, data_dir)?.lines().nth(3)?.trim().parse().ok()
}

/// The first few KiB of `postmaster.pid` in `data_dir`, if it is a regular file there; `None` also
/// when `data_dir` lies below none of `data_roots`. Blocking: call it from `spawn_blocking`.
///
/// The file lies in the data directory, which the database's OS user owns: a tenant who runs code
/// as that user can put a link (to `/dev/zero`, to a root-only file), a FIFO or a huge file in its
/// place, or swap a folder on the way for a link. So the data directory is opened beneath its data
/// root without following any link, and the file beneath it without following a link and without
/// blocking on a FIFO, read only if it is a regular file, and at most a few KiB of it.
pub fn read_postmaster_pid(data_roots: &[PathBuf], data_dir: &Path) -> Option<String> {
    use std::io::Read;
    let (root, rel) = crate::beneath::split_below(data_roots, data_dir)?;
    let dir = crate::beneath::DirHandle::open_root(root).ok()?.open_dir(rel).ok()?;
    let file = dir.open_regular_file(Path::new("postmaster.pid")).ok()?;
    let mut bytes = Vec::new();
    file.take(POSTMASTER_PID_MAX_BYTES).read_to_end(&mut bytes).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Debian's folder of PostgreSQL `version`'s programs: `/usr/lib/postgresql/<major>/bin`. `None`
/// if the version names no major.
pub fn postgresql_bin_dir(version: &str) -> Option<PathBuf> {
    let major: String = version.trim().chars().take_while(char::is_ascii_digit).collect();
    (!major.is_empty()).then(|| PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a host with two majors (during an upgrade) PATH's pg_dump is the newest one's, whose
    /// archive the instance's own pg_restore cannot read: the instance's major is used.
    #[tokio::test]
    async fn a_postgresql_instance_gets_the_client_tools_of_its_own_major() {
        let installed = Path::new("/usr/lib/postgresql/15/bin");
        assert!(installed.is_dir(), "{} is missing: apt install postgresql-15", installed.display());
        let mut pg = super::super::test_fixture::postgres_instance();
        pg.spec.engine_version = "15".into();
        let config = BackupConfig::default();
        assert_eq!(config.connection_for(&pg, &[]).await.bin_dir, installed);
        // A major that is not installed keeps PATH, and a configured folder is kept as it is.
        pg.spec.engine_version = "99".into();
        assert_eq!(config.connection_for(&pg, &[]).await.bin_dir, Path::new(""));
        let mut set = BackupConfig::default();
        set.postgresql.bin_dir = "/opt/pg/bin".into();
        pg.spec.engine_version = "15".into();
        assert_eq!(set.connection_for(&pg, &[]).await.bin_dir, Path::new("/opt/pg/bin"));
        // Other engines keep PATH.
        let redis = super::super::test_fixture::instance(crate::instances::PlanName::Starter);
        assert_eq!(config.connection_for(&redis, &[]).await.bin_dir, Path::new(""));
    }

    #[test]
    fn postmaster_port_reads_only_a_small_regular_file_never_through_a_link_or_a_fifo() {
        let root = tempfile::tempdir().unwrap();
        let roots = [root.path().to_path_buf()];
        let data = root.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let pid = data.join("postmaster.pid");
        // The allowed path: the real file's fourth line.
        std::fs::write(&pid, "4242\n/var/lib/postgresql/15/main\n1764590000\n5433\n/run/postgresql\n").unwrap();
        assert_eq!(postmaster_port(&roots, &data), Some(5433));
        // Outside the data roots nothing is read.
        assert_eq!(postmaster_port(&[data.join("elsewhere")], &data), None);
        // A link to a file the agent can read as root (its content would parse as a port) is not followed.
        let outside = tempfile::tempdir().unwrap();
        let sentinel = outside.path().join("sentinel");
        std::fs::write(&sentinel, "1\n2\n3\n6543\n").unwrap();
        std::fs::remove_file(&pid).unwrap();
        std::os::unix::fs::symlink(&sentinel, &pid).unwrap();
        assert_eq!(postmaster_port(&roots, &data), None);
        // Nor a folder on the way swapped for a link to a folder holding such a file.
        std::fs::write(outside.path().join("postmaster.pid"), "1\n2\n3\n6543\n").unwrap();
        let swapped = root.path().join("swapped");
        std::os::unix::fs::symlink(outside.path(), &swapped).unwrap();
        assert_eq!(postmaster_port(&roots, &swapped), None);
        // Nor a link to an endless device.
        std::fs::remove_file(&pid).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &pid).unwrap();
        assert_eq!(postmaster_port(&roots, &data), None);
        // A FIFO with no writer: refused at once instead of blocking the caller.
        std::fs::remove_file(&pid).unwrap();
        assert!(std::process::Command::new("mkfifo").arg(&pid).status().unwrap().success(), "mkfifo");
        let started = std::time::Instant::now();
        assert_eq!(postmaster_port(&roots, &data), None);
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "a FIFO blocked the read");
        // A huge regular file: only the first few KiB are read, so the port line beyond them is not seen.
        std::fs::remove_file(&pid).unwrap();
        let mut big = "x".repeat(usize::try_from(POSTMASTER_PID_MAX_BYTES).unwrap());
        big.push_str("\n2\n3\n5433\n");
        std::fs::write(&pid, big).unwrap();
        assert_eq!(postmaster_port(&roots, &data), None);
    }

    #[test]
    fn parses_destinations() {
        let c: BackupConfig = toml::from_str(
            r#"
            zstd_level = 3
            [[destinations]]
            kind = "s3"
            name = "eu-1a"
            bucket = "b"
            endpoint = "http://127.0.0.1:3900"
            access_key_id = "k"
            secret_access_key = "s"
            allow_http = true
            [[destinations]]
            kind = "dir"
            name = "eu-1b"
            path = "/mnt/backup"
            [postgresql]
            host = "127.0.0.1"
            port = 5433
            "#,
        )
        .unwrap();
        assert_eq!(c.destinations.len(), 2);
        assert_eq!(c.destinations[0].name(), "eu-1a");
        assert_eq!(c.postgresql.port, 5433);
        assert!(c.validate().is_ok());
        let names: Vec<_> = BackupConfig::default()
            .effective_destinations(Path::new("/s"))
            .iter()
            .map(|d| d.name().to_owned())
            .collect();
        assert_eq!(names, ["az1", "az2", "az3"]);
        assert!(toml::from_str::<BackupConfig>("[[destinations]]\nkind = \"ftp\"\nname = \"x\"").is_err());
        let bad = BackupConfig { chunk_size: 1, ..BackupConfig::default() };
        assert_eq!(bad.validate().unwrap_err().0, "backup.chunk_size");
    }

    #[test]
    fn drill_settings_default_to_weekly_and_are_validated() {
        let c = BackupConfig::default();
        assert_eq!(c.drill_interval(), Some(std::time::Duration::from_secs(7 * 86_400)));
        let off: BackupConfig = toml::from_str("drill_interval_days = 0").unwrap();
        assert_eq!(off.drill_interval(), None);
        assert!(off.validate().is_ok());
        let fast: BackupConfig = toml::from_str("drill_interval_secs_for_tests = 5").unwrap();
        assert_eq!(fast.drill_interval(), Some(std::time::Duration::from_secs(5)));
        let e = toml::from_str::<BackupConfig>("drill_interval_days = 366").unwrap().validate().unwrap_err();
        assert_eq!(e.0, "backup.drill_interval_days");
        assert!(toml::from_str::<BackupConfig>("drill_interval_days = -1").is_err());
        let e = toml::from_str::<BackupConfig>("drill_dir = \"drills\"").unwrap().validate().unwrap_err();
        assert_eq!(e.0, "backup.drill_dir");
        let e = toml::from_str::<BackupConfig>("drill_dir = \"/var/../tmp\"").unwrap().validate().unwrap_err();
        assert_eq!(e.0, "backup.drill_dir");
    }
}
