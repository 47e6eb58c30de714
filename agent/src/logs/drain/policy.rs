//! Where drains may send (`[logs.drain_policy]`): host names, networks, and plaintext syslog.
//!
//! Loopback, link-local, private and other non-public addresses are refused unless a configured
//! network allows them: a drain pointed at them would make the root agent talk to the host's own
//! services or the internal network on a caller's behalf. A host name is checked on each
//! resolution, and the addresses checked are the ones connected to, so a name that later resolves
//! elsewhere (DNS rebinding) is refused then.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::logs::settings::{Cidr, DrainPolicyConfig};

#[derive(Debug, Clone, Default)]
pub struct DrainPolicy {
    hosts: Vec<String>,
    allowed: Vec<Cidr>,
    plaintext: Vec<Cidr>,
}

/// Why a destination is refused; the message completes "drain destination ...".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("host {0:?} is not in logs.drain_policy.allowed_hosts")]
    Host(String),
    #[error("{addr} is {range}; allowed only where logs.drain_policy.allowed_cidrs includes it")]
    Range { addr: IpAddr, range: &'static str },
    #[error(
        "plaintext syslog to {0} is refused (use tls = true, or list the network in logs.drain_policy.plaintext_syslog_cidrs)"
    )]
    Plaintext(IpAddr),
}

impl DrainPolicy {
    /// From the validated config (a network that does not parse was refused at start-up).
    pub fn new(cfg: &DrainPolicyConfig) -> Self {
        let cidrs = |list: &[String]| list.iter().filter_map(|c| Cidr::parse(c)).collect();
        Self {
            hosts: cfg.allowed_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            allowed: cidrs(&cfg.allowed_cidrs),
            plaintext: cidrs(&cfg.plaintext_syslog_cidrs),
        }
    }

    /// Checks `host` as written in the drain: a literal address fully, a name against the allowed
    /// names (its addresses are checked when it is resolved).
    pub fn check_host(&self, host: &str, plaintext: bool) -> Result<(), Refused> {
        match host.parse::<IpAddr>() {
            Ok(ip) => self.check_addr(ip, plaintext),
            Err(_) => self.check_name(host),
        }
    }

    fn check_name(&self, host: &str) -> Result<(), Refused> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let listed = self.hosts.iter().any(|h| match h.strip_prefix("*.") {
            Some(domain) => host.strip_suffix(domain).is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None => *h == host,
        });
        if self.hosts.is_empty() || listed { Ok(()) } else { Err(Refused::Host(host)) }
    }

    /// Checks one address a drain would connect to.
    pub fn check_addr(&self, ip: IpAddr, plaintext: bool) -> Result<(), Refused> {
        let ip = ip.to_canonical();
        if let Some(range) = special_range(ip)
            && !self.allowed.iter().any(|c| c.contains(ip))
        {
            return Err(Refused::Range { addr: ip, range });
        }
        if plaintext && !self.plaintext.iter().any(|c| c.contains(ip)) {
            return Err(Refused::Plaintext(ip));
        }
        Ok(())
    }

    /// Resolves `host:port` and keeps the addresses the policy allows; refused if none is left.
    pub async fn resolve(&self, host: &str, port: u16, plaintext: bool) -> Result<Vec<SocketAddr>, ResolveError> {
        self.check_host(host, plaintext).map_err(ResolveError::Refused)?;
        let found: Vec<SocketAddr> =
            tokio::net::lookup_host((host, port)).await.map_err(ResolveError::Lookup)?.collect();
        let mut first_refusal = None;
        let allowed: Vec<SocketAddr> = found
            .into_iter()
            .filter(|a| match self.check_addr(a.ip(), plaintext) {
                Ok(()) => true,
                Err(r) => {
                    first_refusal.get_or_insert(r);
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), first_refusal) {
            (false, _) => Ok(allowed),
            (true, Some(r)) => Err(ResolveError::Refused(r)),
            (true, None) => Err(ResolveError::Lookup(std::io::Error::other("no address"))),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{0}")]
    Refused(Refused),
    #[error("resolve: {0}")]
    Lookup(std::io::Error),
}

/// The name of the non-public range `ip` lies in, if any.
fn special_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified (this host)")
    } else if ip.is_private() {
        Some("a private address (RFC 1918)")
    } else if ip.is_link_local() {
        Some("link-local (cloud metadata lives here)")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared address space (RFC 6598)")
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Some("multicast or reserved")
    } else {
        None
    }
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified (this host)")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if first & 0xfe00 == 0xfc00 {
        Some("a unique local address (fc00::/7)")
    } else if ip.is_multicast() {
        Some("multicast")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: &[&str], plaintext: &[&str], hosts: &[&str]) -> DrainPolicy {
        let list = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect();
        DrainPolicy::new(&DrainPolicyConfig {
            allowed_hosts: list(hosts),
            allowed_cidrs: list(allowed),
            plaintext_syslog_cidrs: list(plaintext),
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn non_public_ranges_are_refused_unless_a_network_allows_them() {
        let strict = policy(&[], &[], &[]);
        for (addr, range) in [
            ("127.0.0.1", "loopback"),
            ("::1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("fe80::1", "link-local"),
            ("fd00::5", "unique local"),
            ("0.0.0.0", "unspecified"),
            ("100.64.0.1", "shared"),
            // An IPv4-mapped IPv6 address is checked as the IPv4 address it is.
            ("::ffff:127.0.0.1", "loopback"),
        ] {
            let e = strict.check_addr(ip(addr), false).unwrap_err();
            assert!(matches!(e, Refused::Range { .. }) && e.to_string().contains(range), "{addr}: {e}");
        }
        assert_eq!(strict.check_addr(ip("192.0.2.10"), false), Ok(()), "a public address is allowed");
        assert_eq!(strict.check_addr(ip("2001:db8::1"), false), Ok(()));

        let allowing = policy(&["10.20.0.0/16", "127.0.0.1/32"], &[], &[]);
        assert_eq!(allowing.check_addr(ip("10.20.9.9"), false), Ok(()));
        assert_eq!(allowing.check_addr(ip("127.0.0.1"), false), Ok(()));
        assert!(allowing.check_addr(ip("10.21.0.1"), false).is_err(), "only the listed network");
        assert!(allowing.check_addr(ip("127.0.0.2"), false).is_err());
    }

    #[test]
    fn plaintext_syslog_goes_only_to_listed_networks() {
        let p = policy(&["127.0.0.0/8"], &["127.0.0.0/8"], &[]);
        assert_eq!(p.check_addr(ip("127.0.0.1"), true), Ok(()));
        assert_eq!(p.check_addr(ip("192.0.2.10"), true), Err(Refused::Plaintext(ip("192.0.2.10"))));
        assert_eq!(p.check_addr(ip("192.0.2.10"), false), Ok(()), "with TLS the public address is fine");
    }

    #[test]
    fn host_names_must_be_listed_when_a_list_is_given() {
        let p = policy(&[], &[], &["logs.example.com", "*.corp.example"]);
        assert_eq!(p.check_host("logs.example.com", false), Ok(()));
        assert_eq!(p.check_host("LOGS.example.com.", false), Ok(()));
        assert_eq!(p.check_host("a.corp.example", false), Ok(()));
        assert_eq!(p.check_host("corp.example", false), Err(Refused::Host("corp.example".into())));
        assert_eq!(p.check_host("evilcorp.example", false), Err(Refused::Host("evilcorp.example".into())));
        assert_eq!(policy(&[], &[], &[]).check_host("anything.example", false), Ok(()), "no list: any name");
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_a_refused_address_is_refused_on_resolution() {
        let strict = policy(&[], &[], &[]);
        let e = strict.resolve("localhost", 514, false).await.unwrap_err();
        assert!(matches!(e, ResolveError::Refused(Refused::Range { range: "loopback", .. })), "{e}");
        let dev = policy(&["127.0.0.0/8", "::1/128"], &["127.0.0.0/8", "::1/128"], &[]);
        let addrs = dev.resolve("localhost", 514, true).await.unwrap();
        assert!(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 514), "{addrs:?}");
    }
}
