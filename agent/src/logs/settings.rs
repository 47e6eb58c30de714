//! The `[logs]` section of the agent config: plain data, imported by the modules it configures and
//! importing none of them (sources and pipelines turn it into each part's settings).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogsConfig {
    /// Disk space of each drain's buffer; when full, the oldest records are dropped and counted.
    pub buffer_max_bytes: u64,
    /// Size of one buffer segment file; the buffer drops whole segments.
    pub segment_bytes: u64,
    /// Largest batch sent to a drain at once (one connection per syslog batch, one POST per HTTPS batch).
    pub batch_max_bytes: u64,
    /// Wait this long for more data before sending a small batch.
    pub linger_ms: u64,
    /// Buffered frames are fsynced at most this long after they were written.
    pub sync_interval_ms: u64,
    /// How often files are checked for new data when they are quiet.
    pub poll_interval_ms: u64,
    /// A file renamed away by rotation is read until it has been quiet this long.
    pub rotate_wait_ms: u64,
    /// A multi-line record is handed on after this long without a next line.
    pub flush_after_ms: u64,
    /// Records per instance kept in memory for `TailLogs` (last N lines, since a time).
    pub tail_records: usize,
    /// Records queued per `TailLogs` client; a client further behind misses records and is told how many.
    pub client_queue: usize,
    /// The journalctl binary, and extra arguments (e.g. "--directory=/var/log/journal").
    pub journalctl: PathBuf,
    pub journalctl_args: Vec<String>,
    /// Where drains may send (`[logs.drain_policy]`).
    pub drain_policy: DrainPolicyConfig,
}

/// Where drains may send. A drain ships a customer's logs off the host, and whoever sets it could
/// otherwise aim it at the host's own services or the internal network. Checked when drains are
/// set (INVALID_ARGUMENT naming the field) and again on every connection, on the resolved
/// addresses, which are the ones connected to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DrainPolicyConfig {
    /// Host names a drain may name (`logs.example.com`, or `*.example.com` for every name below
    /// it). Empty (the default): any host name, subject to the address checks.
    pub allowed_hosts: Vec<String>,
    /// Networks (`10.20.0.0/16`, `fd00::/8`, `127.0.0.1/32`) a drain may reach although they are
    /// loopback, link-local, private or otherwise not public. Public addresses are always allowed.
    /// Default: none.
    pub allowed_cidrs: Vec<String>,
    /// Networks plaintext syslog (`tls = false`) may reach; elsewhere syslog needs TLS.
    /// Default: none.
    pub plaintext_syslog_cidrs: Vec<String>,
}

impl DrainPolicyConfig {
    /// Loopback only, for `--dev` and tests, whose drains run on 127.0.0.1.
    pub fn loopback() -> Self {
        let loopback = vec!["127.0.0.0/8".to_owned(), "::1/128".to_owned()];
        Self { allowed_hosts: Vec::new(), allowed_cidrs: loopback.clone(), plaintext_syslog_cidrs: loopback }
    }

    fn check(&self) -> Option<(&'static str, String)> {
        for (key, list) in [
            ("logs.drain_policy.allowed_cidrs", &self.allowed_cidrs),
            ("logs.drain_policy.plaintext_syslog_cidrs", &self.plaintext_syslog_cidrs),
        ] {
            if let Some(bad) = list.iter().find(|c| Cidr::parse(c).is_none()) {
                return Some((key, format!("{bad:?} is not a network such as 10.0.0.0/8 or fd00::/8")));
            }
        }
        let name_ok = |h: &str| {
            let h = h.strip_prefix("*.").unwrap_or(h);
            !h.is_empty() && h.len() <= 253 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        };
        if let Some(bad) = self.allowed_hosts.iter().find(|h| !name_ok(h)) {
            return Some(("logs.drain_policy.allowed_hosts", format!("{bad:?} is not a host name or *.domain")));
        }
        None
    }
}

/// A network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: std::net::IpAddr,
    len: u8,
}

impl Cidr {
    /// `ADDRESS/LEN`, the address given with its host bits zero or not.
    pub fn parse(s: &str) -> Option<Self> {
        let (addr, len) = s.split_once('/')?;
        let net: std::net::IpAddr = addr.parse().ok()?;
        let len: u8 = len.parse().ok()?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        (len <= max).then_some(Self { net, len })
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let (net, ip, bits) = match (self.net, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(i)) => (u128::from(n.to_bits()), u128::from(i.to_bits()), 32),
            (IpAddr::V6(n), IpAddr::V6(i)) => (n.to_bits(), i.to_bits(), 128),
            _ => return false,
        };
        let shift = bits - u32::from(self.len);
        shift >= bits || (net >> shift) == (ip >> shift)
    }
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self {
            buffer_max_bytes: 256 * 1024 * 1024,
            segment_bytes: 8 * 1024 * 1024,
            batch_max_bytes: 2 * 1024 * 1024,
            linger_ms: 200,
            sync_interval_ms: 500,
            poll_interval_ms: 200,
            rotate_wait_ms: 5000,
            flush_after_ms: 500,
            tail_records: 5000,
            client_queue: 1024,
            journalctl: PathBuf::from("journalctl"),
            journalctl_args: Vec::new(),
            drain_policy: DrainPolicyConfig::default(),
        }
    }
}

impl LogsConfig {
    /// The first bad key and why, for the config loader to report.
    pub fn check(&self) -> Option<(&'static str, String)> {
        const MIB: u64 = 1024 * 1024;
        if self.segment_bytes < 64 * 1024 || self.segment_bytes > 1024 * MIB {
            return Some(("logs.segment_bytes", "must be from 65536 to 1073741824".into()));
        }
        if self.buffer_max_bytes < 2 * self.segment_bytes {
            return Some(("logs.buffer_max_bytes", "must be at least twice logs.segment_bytes".into()));
        }
        if !(4096..=64 * MIB).contains(&self.batch_max_bytes) || self.batch_max_bytes > self.segment_bytes {
            return Some((
                "logs.batch_max_bytes",
                "must be from 4096 to 67108864 and at most logs.segment_bytes".into(),
            ));
        }
        for (key, v, max) in [
            ("logs.linger_ms", self.linger_ms, 10_000),
            ("logs.sync_interval_ms", self.sync_interval_ms, 60_000),
            ("logs.poll_interval_ms", self.poll_interval_ms, 10_000),
            ("logs.rotate_wait_ms", self.rotate_wait_ms, 600_000),
            ("logs.flush_after_ms", self.flush_after_ms, 60_000),
        ] {
            if v > max || (key == "logs.poll_interval_ms" && v == 0) {
                return Some((key, format!("must be from {} to {max} ms", u64::from(key == "logs.poll_interval_ms"))));
            }
        }
        if !(1..=1_000_000).contains(&self.tail_records) {
            return Some(("logs.tail_records", "must be from 1 to 1000000".into()));
        }
        if !(16..=1_000_000).contains(&self.client_queue) {
            return Some(("logs.client_queue", "must be from 16 to 1000000".into()));
        }
        self.drain_policy.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert_eq!(LogsConfig::default().check(), None);
        let c = LogsConfig { buffer_max_bytes: 1, ..LogsConfig::default() };
        assert_eq!(c.check().unwrap().0, "logs.buffer_max_bytes");
        let c = LogsConfig { poll_interval_ms: 0, ..LogsConfig::default() };
        assert_eq!(c.check().unwrap().0, "logs.poll_interval_ms");
        let c: LogsConfig = toml::from_str("batch_max_bytes = 65536\njournalctl_args = [\"--directory=/j\"]").unwrap();
        assert_eq!(c.batch_max_bytes, 65536);
        assert!(toml::from_str::<LogsConfig>("nope = 1").is_err());
    }

    #[test]
    fn the_drain_policy_parses_refuses_by_default_and_names_a_bad_network() {
        assert_eq!(LogsConfig::default().drain_policy, DrainPolicyConfig::default(), "nothing allowed by default");
        let c: LogsConfig = toml::from_str(
            "[drain_policy]\nallowed_hosts = [\"*.logs.example\"]\nallowed_cidrs = [\"10.20.0.0/16\"]\nplaintext_syslog_cidrs = [\"10.20.0.0/16\"]",
        )
        .unwrap();
        assert_eq!(c.check(), None);
        assert_eq!(c.drain_policy.allowed_hosts, ["*.logs.example"]);
        let bad = LogsConfig {
            drain_policy: DrainPolicyConfig {
                allowed_cidrs: vec!["10.0.0.0/33".into()],
                ..DrainPolicyConfig::default()
            },
            ..LogsConfig::default()
        };
        assert_eq!(bad.check().unwrap().0, "logs.drain_policy.allowed_cidrs");
        let bad = LogsConfig {
            drain_policy: DrainPolicyConfig { allowed_hosts: vec!["a b".into()], ..DrainPolicyConfig::default() },
            ..LogsConfig::default()
        };
        assert_eq!(bad.check().unwrap().0, "logs.drain_policy.allowed_hosts");
        assert!(toml::from_str::<LogsConfig>("[drain_policy]\nallow_all = true").is_err(), "unknown keys refused");
    }

    #[test]
    fn networks_contain_their_addresses_only() {
        let net = Cidr::parse("10.20.0.0/16").unwrap();
        assert!(net.contains("10.20.255.1".parse().unwrap()));
        assert!(!net.contains("10.21.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.20.0.1".parse().unwrap()), "an IPv4-mapped address is its IPv4 address");
        assert!(!net.contains("fd00::1".parse().unwrap()));
        assert!(Cidr::parse("::/0").unwrap().contains("2001:db8::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0").is_none() && Cidr::parse("x/8").is_none());
    }
}
