//! Agent configuration: TOML, every key optional with an explicit default, unknown keys refused.
//! `docs/configuration.md` documents every key; keep the two in step.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;

mod digest;
mod plans;
mod volumes;
pub use plans::PlansConfig;
pub use volumes::{KeyProviderKind, KeysConfig, MIN_PBKDF2_ITERATIONS, PbkdfKind, RemoteKeysConfig, VolumesConfig};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/dbagent/agent.toml";

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}: {key}: {message}")]
    Invalid { path: PathBuf, key: &'static str, message: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the agent keeps its journal, registry and keystore.
    pub state_dir: PathBuf,
    pub api: ApiConfig,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
    pub operations: OperationsConfig,
    pub instances: InstancesConfig,
    pub logging: LoggingConfig,
    pub volumes: VolumesConfig,
    pub keys: KeysConfig,
    pub metrics: MetricsConfig,
    pub logs: crate::logs::LogsConfig,
    /// Backups: pipeline, destinations, engine connections (see docs/backups.md).
    pub backup: crate::backup::BackupConfig,
    /// Database TLS certificates (InstallCertificate): the names they must carry, the check.
    pub database_tls: crate::dbtls::DbTlsConfig,
    /// Health probes feeding the downtime ledger (docs/configuration.md, `[health]`).
    pub health: crate::health::HealthSettings,
    /// PostgreSQL major upgrades (see docs/operations.md).
    pub upgrade: crate::upgrade::UpgradeConfig,
    /// Plan changes: restarts and PostgreSQL's settings file (see docs/operations.md).
    pub plans: PlansConfig,
    pub testing: TestingConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// mTLS gRPC listener. Loopback by default: production configs name the orchestrator-facing address.
    pub listen: SocketAddr,
    /// Connections above this are closed right after accept.
    pub max_connections: u32,
    /// A client that has not finished its TLS handshake by then is dropped.
    pub handshake_timeout_secs: u64,
    /// On SIGTERM, in-flight RPCs and operations get this long before the agent exits anyway.
    pub shutdown_grace_secs: u64,
    /// TLS handshakes in progress at once, across all clients; more are closed right after accept.
    /// Counted apart from `max_connections`, so slow handshakes cannot take every connection slot.
    pub max_pending_handshakes: u32,
    /// TLS handshakes in progress at once from one source address: one host cannot hold all of
    /// `max_pending_handshakes` open.
    pub max_handshakes_per_address: u32,
    /// HTTP/2 streams (calls) open at once on one connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_concurrent_streams: u32,
    /// A unary call that has not answered by then is ended with CANCELLED; streams are exempt.
    /// Long work belongs in operations, which answer at once.
    pub unary_timeout_secs: u64,
    /// A connection with no call open for this long is closed.
    pub idle_timeout_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA bundle that client certificates must chain to.
    pub client_ca: PathBuf,
    /// CRLs of the client CA, PEM or DER; re-read with the certificates on SIGHUP, when open
    /// connections whose certificate is now revoked are closed.
    pub crls: Vec<PathBuf>,
    /// What a CRL past its nextUpdate does: `report` (log an error, count it in the
    /// `dbagent_node_tls_stale_crls` metric, keep serving) or `refuse` (refuse every client
    /// certificate the stale CRL covers until a fresh CRL is loaded).
    pub stale_crl: StaleCrlPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StaleCrlPolicy {
    Report,
    Refuse,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Client certificate names (CN or DNS SAN) with full access.
    pub orchestrators: Vec<String>,
    /// Client certificate names with read-only access.
    pub monitors: Vec<String>,
    /// When set, an orchestrator certificate must also chain to this CA (PEM), not merely to
    /// `tls.client_ca`: a CA that issues monitor certificates cannot mint an orchestrator.
    pub orchestrator_ca: Option<PathBuf>,
    /// When set, a monitor certificate must also chain to this CA (PEM).
    pub monitor_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OperationsConfig {
    /// Operations running at once, across all instances.
    pub max_concurrent: u32,
    /// Finished operation records (and so their request_ids) are kept this long.
    pub retention_hours: u64,
    /// At most this many finished records are kept; the oldest go first.
    pub max_finished: usize,
    /// Enables the test-only `sleep` operation kind (always on in dev mode).
    pub enable_test_kinds: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InstancesConfig {
    /// Instance data directories must lie under one of these.
    pub data_roots: Vec<PathBuf>,
    /// Block devices given for volumes must start with one of these.
    pub device_prefixes: Vec<PathBuf>,
    /// Log file globs must lie below one of these (or below a data root).
    pub log_roots: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    pub format: LogFormat,
    /// A tracing filter: "info", "dbagent=debug,info", ...
    pub level: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Seconds between samples of the node and every instance.
    pub interval_secs: u64,
    /// Seconds of samples kept in memory (24 h by default; see docs/metrics.md for the memory cost).
    pub history_secs: u64,
    /// Where cgroup v2 is mounted; an instance's figures come from `<root>/system.slice/<unit>`.
    pub cgroup_root: PathBuf,
    /// Serve Prometheus text on `prometheus_listen` (plain HTTP, GET /metrics).
    pub prometheus_enabled: bool,
    /// Loopback by default. Port 9559 avoids the usual exporters on database hosts (node 9100,
    /// mysqld 9104, redis 9121, postgres 9187).
    pub prometheus_listen: SocketAddr,
    /// The endpoint is unauthenticated plain HTTP: any other address must be allowed explicitly.
    pub prometheus_allow_non_loopback: bool,
    /// OTLP/gRPC collector (`http://127.0.0.1:4317`, `https://...`); no push when absent.
    pub otlp_endpoint: Option<String>,
    /// Seconds between OTLP pushes.
    pub otlp_interval_secs: u64,
    /// CA bundle (PEM) that an https OTLP endpoint's certificate must chain to.
    pub otlp_ca: Option<PathBuf>,
}

/// Test-only switches. Never enable them on a production host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TestingConfig {
    /// Fault injection for tests (docs/packaging.md): SIGUSR2 makes the agent stop petting the systemd
    /// watchdog, as a hung runtime would. Off by default (SIGUSR2 then keeps its default effect).
    pub fault_switches: bool,
    /// The test-only `sleep` operation ignores cancellation, so it outlasts the shutdown grace as a
    /// step that cannot be interrupted would (tests of `api.shutdown_grace_secs`). Off by default.
    pub sleep_outlasts_shutdown: bool,
    /// Seconds added to the host's clock when the agent reads maintenance windows, so a test can
    /// put "now" just before a window (`maintenance::OffsetClock`). 0 (the host's clock) by default.
    pub clock_offset_secs: i64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            interval_secs: 10,
            history_secs: 24 * 3600,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            prometheus_enabled: true,
            prometheus_listen: SocketAddr::from(([127, 0, 0, 1], 9559)),
            prometheus_allow_non_loopback: false,
            otlp_endpoint: None,
            otlp_interval_secs: 60,
            otlp_ca: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/dbagent"),
            api: ApiConfig::default(),
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
            operations: OperationsConfig::default(),
            instances: InstancesConfig::default(),
            logging: LoggingConfig::default(),
            volumes: VolumesConfig::default(),
            keys: KeysConfig::default(),
            metrics: MetricsConfig::default(),
            logs: crate::logs::LogsConfig::default(),
            backup: crate::backup::BackupConfig::default(),
            database_tls: crate::dbtls::DbTlsConfig::default(),
            health: crate::health::HealthSettings::default(),
            upgrade: crate::upgrade::UpgradeConfig::default(),
            plans: PlansConfig::default(),
            testing: TestingConfig::default(),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7443)),
            max_connections: 4096,
            handshake_timeout_secs: 10,
            shutdown_grace_secs: 10,
            max_pending_handshakes: 256,
            max_handshakes_per_address: 16,
            max_concurrent_streams: 128,
            unary_timeout_secs: 300,
            idle_timeout_secs: 900,
        }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert: PathBuf::from("/etc/dbagent/tls/server.crt"),
            key: PathBuf::from("/etc/dbagent/tls/server.key"),
            client_ca: PathBuf::from("/etc/dbagent/tls/client-ca.crt"),
            crls: Vec::new(),
            stale_crl: StaleCrlPolicy::Report,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            orchestrators: vec!["orchestrator".into()],
            monitors: vec!["monitor".into()],
            orchestrator_ca: None,
            monitor_ca: None,
        }
    }
}

impl Default for OperationsConfig {
    fn default() -> Self {
        Self { max_concurrent: 4, retention_hours: 168, max_finished: 2000, enable_test_kinds: false }
    }
}

impl Default for InstancesConfig {
    fn default() -> Self {
        Self {
            data_roots: ["/var/lib/postgresql", "/var/lib/mysql", "/var/lib/redis", "/srv/dbagent"]
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            // Stable names only: /dev/sdb or /dev/vdc can name another disk after a reboot or a hotplug,
            // and then the agent would format it.
            device_prefixes: vec![PathBuf::from("/dev/disk/by-id/")],
            log_roots: ["/var/log/postgresql", "/var/log/mysql", "/var/log/redis"]
                .into_iter()
                .map(PathBuf::from)
                .collect(),
        }
    }
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".into() }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::parse(path, &text)
    }

    /// Parses and validates config text; `path` only names the source in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// The embedded development defaults: everything under `state_dir`, PKI generated there.
    pub fn dev(state_dir: &Path, listen: Option<SocketAddr>) -> Self {
        let tls = state_dir.join("tls");
        let mut config = Config { state_dir: state_dir.to_path_buf(), ..Config::default() };
        if let Some(listen) = listen {
            config.api.listen = listen;
        }
        config.tls = TlsConfig {
            cert: tls.join("server.crt"),
            key: tls.join("server.key"),
            client_ca: tls.join("ca.crt"),
            ..TlsConfig::default()
        };
        config.operations.enable_test_kinds = true;
        config.instances.data_roots = vec![state_dir.join("data")];
        config.api.shutdown_grace_secs = 5;
        // Dev and test drains listen on 127.0.0.1, without TLS.
        config.logs.drain_policy = crate::logs::settings::DrainPolicyConfig::loopback();
        // Dev hosts and test VMs: a generated KEK (keyslots are the shipped PBKDF2 minimum already).
        config.keys.kek_file = state_dir.join("kek");
        // A dev agent runs as its user, as do the servers its drills start: no folder to pass.
        config.backup.drill_dir = state_dir.join("drills");
        // Any free port: several dev agents (and the integration tests' agents) run side by side.
        config.metrics.prometheus_listen = SocketAddr::from(([127, 0, 0, 1], 0));
        // The dev backup destinations are three folders under the state dir: said in so many words.
        config.backup.accept_on_host_destinations = true;
        config
    }

    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid =
            |key: &'static str, message: String| Err(ConfigError::Invalid { path: path.into(), key, message });
        if !self.state_dir.is_absolute() {
            return invalid("state_dir", format!("{:?} must be an absolute path", self.state_dir));
        }
        if self.api.max_connections == 0 || self.api.max_connections > 1_000_000 {
            return invalid("api.max_connections", "must be between 1 and 1000000".into());
        }
        if !(1..=300).contains(&self.api.handshake_timeout_secs) {
            return invalid("api.handshake_timeout_secs", "must be between 1 and 300 seconds".into());
        }
        if !(1..=3600).contains(&self.api.shutdown_grace_secs) {
            return invalid("api.shutdown_grace_secs", "must be between 1 and 3600 seconds".into());
        }
        if !(1..=100_000).contains(&self.api.max_pending_handshakes) {
            return invalid("api.max_pending_handshakes", "must be between 1 and 100000".into());
        }
        if self.api.max_handshakes_per_address == 0
            || self.api.max_handshakes_per_address > self.api.max_pending_handshakes
        {
            return invalid(
                "api.max_handshakes_per_address",
                "must be at least 1 and at most api.max_pending_handshakes".into(),
            );
        }
        if !(1..=10_000).contains(&self.api.max_concurrent_streams) {
            return invalid("api.max_concurrent_streams", "must be between 1 and 10000".into());
        }
        if !(1..=3600).contains(&self.api.unary_timeout_secs) {
            return invalid("api.unary_timeout_secs", "must be between 1 and 3600 seconds".into());
        }
        if !(10..=7 * 86400).contains(&self.api.idle_timeout_secs) {
            return invalid("api.idle_timeout_secs", "must be between 10 and 604800 seconds".into());
        }
        for (key, p) in
            [("tls.cert", &self.tls.cert), ("tls.key", &self.tls.key), ("tls.client_ca", &self.tls.client_ca)]
        {
            if p.as_os_str().is_empty() {
                return invalid(key, "is required".into());
            }
        }
        if self.auth.orchestrators.is_empty() {
            return invalid(
                "auth.orchestrators",
                "needs at least one certificate name, or nothing could change the agent".into(),
            );
        }
        for (key, ca) in
            [("auth.orchestrator_ca", &self.auth.orchestrator_ca), ("auth.monitor_ca", &self.auth.monitor_ca)]
        {
            if ca.as_ref().is_some_and(|p| !p.is_absolute()) {
                return invalid(key, format!("{ca:?} must be an absolute path"));
            }
        }
        for name in self.auth.orchestrators.iter().chain(&self.auth.monitors) {
            if name.trim().is_empty() || name.len() > 255 {
                return invalid("auth", format!("certificate name {name:?} must be 1 to 255 characters"));
            }
        }
        if let Some(both) = self.auth.orchestrators.iter().find(|n| self.auth.monitors.contains(n)) {
            return invalid(
                "auth.monitors",
                format!("{both:?} is also listed in auth.orchestrators; give each name one role"),
            );
        }
        if !(1..=256).contains(&self.operations.max_concurrent) {
            return invalid("operations.max_concurrent", "must be between 1 and 256".into());
        }
        if !(1..=24 * 365).contains(&self.operations.retention_hours) {
            return invalid("operations.retention_hours", "must be between 1 and 8760 hours".into());
        }
        if !(10..=1_000_000).contains(&self.operations.max_finished) {
            return invalid("operations.max_finished", "must be between 10 and 1000000".into());
        }
        if self.instances.data_roots.is_empty() {
            return invalid("instances.data_roots", "needs at least one folder".into());
        }
        for root in &self.instances.data_roots {
            if !root.is_absolute() || root == Path::new("/") {
                return invalid("instances.data_roots", format!("{root:?} must be an absolute folder other than /"));
            }
        }
        for root in &self.instances.log_roots {
            if !root.is_absolute() || root == Path::new("/") {
                return invalid("instances.log_roots", format!("{root:?} must be an absolute folder other than /"));
            }
        }
        for prefix in &self.instances.device_prefixes {
            if !prefix.starts_with("/dev/") {
                return invalid("instances.device_prefixes", format!("{prefix:?} must start with /dev/"));
            }
        }
        if ![256, 512].contains(&self.volumes.key_bits) {
            return invalid(
                "volumes.key_bits",
                format!("is {}; aes-xts-plain64 takes 256 or 512", self.volumes.key_bits),
            );
        }
        if !(100..=60_000).contains(&self.volumes.pbkdf_time_ms) {
            return invalid("volumes.pbkdf_time_ms", "must be between 100 and 60000".into());
        }
        if self.volumes.pbkdf == PbkdfKind::Pbkdf2
            && self.volumes.pbkdf_iterations != 0
            && self.volumes.pbkdf_iterations < MIN_PBKDF2_ITERATIONS
        {
            return invalid(
                "volumes.pbkdf_iterations",
                "pbkdf2 needs at least 1000 iterations (libcryptsetup refuses fewer)".into(),
            );
        }
        if !(32..=4 * 1024 * 1024).contains(&self.volumes.pbkdf_memory_kib) {
            return invalid("volumes.pbkdf_memory_kib", "must be between 32 and 4194304 KiB".into());
        }
        if !(1..=16).contains(&self.volumes.pbkdf_parallel) {
            return invalid("volumes.pbkdf_parallel", "must be between 1 and 16".into());
        }
        if ![0, 512, 1024, 2048, 4096].contains(&self.volumes.sector_size) {
            return invalid("volumes.sector_size", "must be 0 (automatic), 512, 1024, 2048 or 4096".into());
        }
        if self.keys.provider == KeyProviderKind::Local && !self.keys.kek_file.is_absolute() {
            return invalid("keys.kek_file", format!("{:?} must be an absolute path", self.keys.kek_file));
        }
        if let Err(e) = crate::recovery_key::RecoveryRecipients::parse(&self.keys.recovery_recipients) {
            return invalid("keys.recovery_recipients", e.to_string());
        }
        if self.keys.provider == KeyProviderKind::Remote {
            let r = &self.keys.remote;
            if !r.endpoint.starts_with("https://") {
                return invalid(
                    "keys.remote.endpoint",
                    format!("{:?} must be an https:// URL (the KeyService is mTLS only)", r.endpoint),
                );
            }
            if !(1..=300).contains(&r.timeout_secs) {
                return invalid("keys.remote.timeout_secs", "must be between 1 and 300 seconds".into());
            }
        }
        self.validate_metrics(path)?;
        if let Err((key, message)) = self.plans.check() {
            return invalid(key, message);
        }
        if let Err((key, message)) = self.backup.validate() {
            return invalid(key, message);
        }
        if let Err((key, message)) = self.database_tls.validate() {
            return invalid(key, message);
        }
        if let Err((key, message)) = self.health.validate() {
            return invalid(key, message);
        }
        if let Err((key, message)) = self.upgrade.validate() {
            return invalid(key, message);
        }
        if tracing_subscriber::EnvFilter::try_new(&self.logging.level).is_err() {
            return invalid(
                "logging.level",
                format!("{:?} is not a filter such as \"info\" or \"dbagent=debug,info\"", self.logging.level),
            );
        }
        if let Some((key, message)) = self.logs.check() {
            return invalid(key, message);
        }
        Ok(())
    }

    fn validate_metrics(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid =
            |key: &'static str, message: String| Err(ConfigError::Invalid { path: path.into(), key, message });
        let m = &self.metrics;
        if !(1..=3600).contains(&m.interval_secs) {
            return invalid("metrics.interval_secs", "must be between 1 and 3600 seconds".into());
        }
        if m.history_secs < m.interval_secs || m.history_secs > 31 * 24 * 3600 {
            return invalid(
                "metrics.history_secs",
                "must be at least metrics.interval_secs and at most 31 days (2678400)".into(),
            );
        }
        if !m.cgroup_root.is_absolute() {
            return invalid("metrics.cgroup_root", format!("{:?} must be an absolute path", m.cgroup_root));
        }
        if m.prometheus_enabled && !m.prometheus_listen.ip().is_loopback() && !m.prometheus_allow_non_loopback {
            return invalid(
                "metrics.prometheus_listen",
                format!(
                    "{} is not a loopback address; the endpoint is plain unauthenticated HTTP. Use 127.0.0.1 or ::1, or set metrics.prometheus_allow_non_loopback = true",
                    m.prometheus_listen
                ),
            );
        }
        if let Some(e) = &m.otlp_endpoint
            && (!(e.starts_with("http://") || e.starts_with("https://")) || e.parse::<http::Uri>().is_err())
        {
            return invalid("metrics.otlp_endpoint", format!("{e:?} must be a URL such as http://127.0.0.1:4317"));
        }
        if !(1..=86400).contains(&m.otlp_interval_secs) {
            return invalid("metrics.otlp_interval_secs", "must be between 1 and 86400 seconds".into());
        }
        Ok(())
    }

    /// SHA-256 of the effective configuration without its secrets, reported by GetInfo (to the
    /// monitor role too) so the orchestrator sees drift. See [`digest`] for what is left out.
    pub fn digest(&self) -> String {
        digest::public_digest(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("test.toml"), text)
    }

    #[test]
    fn empty_config_is_the_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    /// Backups to destinations on the host are refused unless said in so many words: the
    /// packaged config does not, `--dev` does (its destinations are folders under its state dir).
    #[test]
    fn the_packaged_config_refuses_backups_that_die_with_the_host_and_dev_accepts_them() {
        let packaged = parse(include_str!("../../packaging/agent.toml")).unwrap();
        assert!(!packaged.backup.accept_on_host_destinations);
        assert!(Config::dev(Path::new("/tmp/dev"), None).backup.accept_on_host_destinations);
        let accepted = parse("[backup]\naccept_on_host_destinations = true").unwrap();
        assert!(accepted.backup.accept_on_host_destinations);
    }

    /// The packaged config refuses drains to loopback and plaintext syslog; `--dev` allows both
    /// on loopback only, for its own 127.0.0.1 receivers.
    #[test]
    fn the_packaged_config_refuses_loopback_drains_and_dev_allows_them() {
        use crate::logs::drain::policy::DrainPolicy;
        let packaged = parse(include_str!("../../packaging/agent.toml")).unwrap();
        let loopback: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        assert!(DrainPolicy::new(&packaged.logs.drain_policy).check_addr(loopback, false).is_err());
        let dev = Config::dev(Path::new("/tmp/dev"), None);
        assert!(DrainPolicy::new(&dev.logs.drain_policy).check_addr(loopback, true).is_ok());
        let private: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        assert!(DrainPolicy::new(&dev.logs.drain_policy).check_addr(private, false).is_err(), "only loopback");
        // What the integration tests' config files write: the section alone parses.
        let tests =
            parse("[logs.drain_policy]\nallowed_cidrs = [\"127.0.0.0/8\"]\nplaintext_syslog_cidrs = [\"127.0.0.0/8\"]")
                .unwrap();
        assert!(DrainPolicy::new(&tests.logs.drain_policy).check_addr(loopback, true).is_ok());
        let e = parse("[logs.drain_policy]\nallowed_cidrs = [\"127.0.0.0\"]").unwrap_err();
        assert!(e.to_string().contains("logs.drain_policy.allowed_cidrs"), "{e}");
    }

    #[test]
    fn plans_section_parses_and_its_bounds_name_the_key() {
        let c = parse("[plans]\nrestart_timeout_secs = 60\npostgresql_config_dir = \"/srv/pg-etc\"").unwrap();
        assert_eq!(c.plans.restart_timeout_secs, 60);
        assert_eq!(c.plans.postgresql_config_dir, Path::new("/srv/pg-etc"));
        let e = parse("[plans]\nrestart_timeout_secs = 5").unwrap_err();
        assert!(e.to_string().contains("plans.restart_timeout_secs"), "{e}");
        let e = parse("[plans]\npostgresql_config_dir = \"etc/postgresql\"").unwrap_err();
        assert!(e.to_string().contains("plans.postgresql_config_dir"), "{e}");
        assert_eq!(parse(include_str!("../../packaging/agent.toml")).unwrap().plans, PlansConfig::default());
    }

    #[test]
    fn full_config_parses() {
        let c = parse(
            r#"
            state_dir = "/srv/agent"
            [api]
            listen = "[::]:9443"
            [tls]
            crls = ["/etc/dbagent/tls/ca.crl"]
            [auth]
            orchestrators = ["orch.example"]
            monitors = ["dash.example"]
            [operations]
            max_concurrent = 2
            [logging]
            format = "json"
            "#,
        )
        .unwrap();
        assert_eq!(c.api.listen.port(), 9443);
        assert_eq!(c.logging.format, LogFormat::Json);
        assert_eq!(c.operations.max_concurrent, 2);
        assert_eq!(c.operations.retention_hours, 168);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse("[api]\nlisten_addr = \"x\"\n").unwrap_err().to_string();
        assert!(e.contains("listen_addr"), "{e}");
        assert!(e.contains("test.toml"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = parse("[api]\nlisten = \"nope\"\n").unwrap_err().to_string();
        assert!(e.contains("listen"), "{e}");
        let e = parse("state_dir = \"relative\"").unwrap_err().to_string();
        assert!(e.contains("state_dir"), "{e}");
        let e = parse("[operations]\nmax_concurrent = 0").unwrap_err().to_string();
        assert!(e.contains("operations.max_concurrent"), "{e}");
        let e = parse("[auth]\norchestrators = [\"a\"]\nmonitors = [\"a\"]").unwrap_err().to_string();
        assert!(e.contains("auth.monitors"), "{e}");
        let e = parse("[logging]\nlevel = \"info,,=x=\"").unwrap_err().to_string();
        assert!(e.contains("logging.level"), "{e}");
    }

    #[test]
    fn api_limits_and_auth_settings() {
        let c = parse(
            "[api]\nmax_pending_handshakes = 64\nmax_handshakes_per_address = 4\nmax_concurrent_streams = 8\n\
             unary_timeout_secs = 30\nidle_timeout_secs = 60\n\
             [tls]\nstale_crl = \"refuse\"\n\
             [auth]\norchestrator_ca = \"/etc/dbagent/tls/orch-ca.crt\"\nmonitor_ca = \"/etc/dbagent/tls/mon-ca.crt\"",
        )
        .unwrap();
        assert_eq!(
            (c.api.max_pending_handshakes, c.api.max_handshakes_per_address, c.api.max_concurrent_streams),
            (64, 4, 8)
        );
        assert_eq!((c.api.unary_timeout_secs, c.api.idle_timeout_secs), (30, 60));
        assert_eq!(c.tls.stale_crl, StaleCrlPolicy::Refuse);
        assert_eq!(c.auth.monitor_ca.as_deref(), Some(Path::new("/etc/dbagent/tls/mon-ca.crt")));
        let d = Config::default();
        assert_eq!(d.tls.stale_crl, StaleCrlPolicy::Report, "a stale CRL is reported, not refused, by default");
        assert_eq!((d.auth.orchestrator_ca, d.auth.monitor_ca), (None, None));
        for (text, key) in [
            ("[api]\nmax_pending_handshakes = 0", "api.max_pending_handshakes"),
            ("[api]\nmax_pending_handshakes = 8\nmax_handshakes_per_address = 9", "api.max_handshakes_per_address"),
            ("[api]\nmax_concurrent_streams = 0", "api.max_concurrent_streams"),
            ("[api]\nunary_timeout_secs = 0", "api.unary_timeout_secs"),
            ("[api]\nidle_timeout_secs = 1", "api.idle_timeout_secs"),
            ("[auth]\norchestrator_ca = \"relative.crt\"", "auth.orchestrator_ca"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
        let e = parse("[tls]\nstale_crl = \"ignore\"").unwrap_err().to_string();
        assert!(e.contains("ignore"), "{e}");
    }

    #[test]
    fn volume_and_key_settings() {
        let c = parse(
            "[volumes]\nkey_bits = 512\npbkdf = \"pbkdf2\"\npbkdf_iterations = 1000\n[keys]\nkek_file = \"/etc/k\"",
        )
        .unwrap();
        assert_eq!((c.volumes.key_bits, c.volumes.pbkdf), (512, PbkdfKind::Pbkdf2));
        assert!(c.volumes.no_workqueue);
        let e = parse("[volumes]\nkey_bits = 128").unwrap_err().to_string();
        assert!(e.contains("volumes.key_bits"), "{e}");
        let e = parse("[volumes]\npbkdf = \"scrypt\"").unwrap_err().to_string();
        assert!(e.contains("scrypt"), "{e}");
        let e = parse("[keys]\nprovider = \"remote\"\n[keys.remote]\nendpoint = \"http://x\"").unwrap_err().to_string();
        assert!(e.contains("keys.remote.endpoint"), "{e}");
    }

    #[test]
    fn metrics_config() {
        let c = parse("[metrics]\ninterval_secs = 5\notlp_endpoint = \"http://127.0.0.1:4317\"").unwrap();
        assert_eq!(c.metrics.interval_secs, 5);
        assert_eq!(c.metrics.history_secs, 86400);
        assert_eq!(c.metrics.prometheus_listen.port(), 9559);
        let e = parse("[metrics]\nprometheus_listen = \"0.0.0.0:9559\"").unwrap_err().to_string();
        assert!(e.contains("metrics.prometheus_listen") && e.contains("loopback"), "{e}");
        parse("[metrics]\nprometheus_listen = \"0.0.0.0:9559\"\nprometheus_allow_non_loopback = true").unwrap();
        parse("[metrics]\nprometheus_listen = \"[::1]:9559\"").unwrap();
        let e = parse("[metrics]\notlp_endpoint = \"127.0.0.1:4317\"").unwrap_err().to_string();
        assert!(e.contains("metrics.otlp_endpoint"), "{e}");
        let e = parse("[metrics]\ninterval_secs = 0").unwrap_err().to_string();
        assert!(e.contains("metrics.interval_secs"), "{e}");
    }

    #[test]
    fn fault_switches_are_off_unless_enabled() {
        assert!(!parse("").unwrap().testing.fault_switches);
        assert!(parse("[testing]\nfault_switches = true").unwrap().testing.fault_switches);
        assert!(!parse("").unwrap().testing.sleep_outlasts_shutdown);
        assert!(parse("[testing]\nsleep_outlasts_shutdown = true").unwrap().testing.sleep_outlasts_shutdown);
        assert_eq!(parse("").unwrap().testing.clock_offset_secs, 0);
        assert_eq!(parse("[testing]\nclock_offset_secs = -3600").unwrap().testing.clock_offset_secs, -3600);
        let e = parse("[testing]\nhang = true").unwrap_err().to_string();
        assert!(e.contains("hang"), "{e}");
    }
}
