//! No false zones: which destinations lie off this host's disks. Backups exist for the day the host
//! is gone; three `dir` folders on its own disk (the defaults) or a Garage on loopback die with it.
//! In production an instance's backups are refused unless at least [`MIN_OFF_HOST`] destinations
//! are off the host, or the config says `backup.accept_on_host_destinations = true`.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;

use super::settings::{BackupConfig, DestinationConfig};

/// Destinations off the host an instance's backups need (without the explicit config flag).
pub const MIN_OFF_HOST: usize = 2;

/// Where one destination keeps its data, and why we think so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub name: String,
    pub off_host: bool,
    pub why: String,
}

/// The placement of every configured destination (the defaults included).
pub fn placements(config: &BackupConfig, state_dir: &Path) -> Vec<Placement> {
    config.effective_destinations(state_dir).iter().map(placement).collect()
}

pub fn placement(dest: &DestinationConfig) -> Placement {
    let (off_host, why) = match dest {
        DestinationConfig::S3 { endpoint, .. } => s3_placement(endpoint),
        DestinationConfig::Dir { path, .. } => dir_placement(path),
    };
    Placement { name: dest.name().to_owned(), off_host, why }
}

/// `None` when enough destinations are off the host (or the operator accepted on-host ones);
/// else the text of the refusal, naming each destination's placement.
pub fn shortfall(placements: &[Placement], accept_on_host: bool) -> Option<String> {
    let off = placements.iter().filter(|p| p.off_host).count();
    if accept_on_host || off >= MIN_OFF_HOST {
        return None;
    }
    let each: Vec<String> = placements
        .iter()
        .map(|p| format!("{} {} ({})", p.name, if p.off_host { "off the host" } else { "on this host" }, p.why))
        .collect();
    Some(format!("{off} of {} destinations are off this host's disks: {}", placements.len(), each.join("; ")))
}

/// An empty endpoint is AWS. Otherwise the endpoint's host: a loopback or unspecified address,
/// `localhost`, or an address of this host (a name resolving to one) is on the host.
fn s3_placement(endpoint: &str) -> (bool, String) {
    if endpoint.trim().is_empty() {
        return (true, "S3 at AWS".into());
    }
    let Some(host) = endpoint_host(endpoint) else {
        return (false, format!("S3 endpoint {endpoint:?} names no host"));
    };
    if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
        return (false, format!("S3 at {host}, a loopback name"));
    }
    let addresses: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        // A name that does not resolve now is not one of ours (loopback names always resolve):
        // a DNS outage must not stop the backups.
        Err(_) => std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), 0))
            .map(|a| a.map(|s: SocketAddr| s.ip()).collect())
            .unwrap_or_default(),
    };
    match addresses.iter().find(|ip| is_host_address(**ip)) {
        Some(ip) => (false, format!("S3 at {host}, an address of this host ({ip})")),
        None => (true, format!("S3 at {host}")),
    }
}

/// The host of `scheme://[user@]host[:port]/path`, brackets of an IPv6 literal removed.
pub fn endpoint_host(endpoint: &str) -> Option<String> {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split_once(']')?.0
    } else {
        host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
    };
    (!host.is_empty()).then(|| host.to_owned())
}

/// Loopback, unspecified, or assigned to one of this host's interfaces (binding to it succeeds:
/// the kernel refuses an address the host does not hold).
pub fn is_host_address(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified() || UdpSocket::bind((ip, 0)).is_ok()
}

/// A `dir` destination is off the host only on a network file system.
fn dir_placement(path: &Path) -> (bool, String) {
    // The folder may not exist yet: its nearest existing ancestor is where it will be made.
    let Some(existing) = path.ancestors().find(|p| p.exists()) else {
        return (false, format!("{} does not exist", path.display()));
    };
    let magic = match rustix::fs::statfs(existing) {
        Ok(s) => s.f_type as u64,
        Err(e) => return (false, format!("statfs {}: {e}", existing.display())),
    };
    let fuse_type = (magic == FUSE_MAGIC).then(|| fuse_fstype(existing)).flatten();
    match network_fs(magic, fuse_type.as_deref()) {
        Some(name) => (true, format!("{} on {name}", path.display())),
        None => (false, format!("{} on a local file system", path.display())),
    }
}

const FUSE_MAGIC: u64 = 0x6573_5546;

/// The network file system a statfs magic (and for FUSE, the mount's type) names; `None` for local ones.
pub fn network_fs(magic: u64, fuse_type: Option<&str>) -> Option<String> {
    let kernel = match magic {
        0x6969 => "NFS",
        0xFF53_4D42 => "CIFS",
        0xFE53_4D42 => "SMB2",
        0x517B => "SMB",
        0x00C3_6400 => "ceph",
        0x5346_414F | 0x6B41_4653 => "AFS",
        0x7375_7245 => "Coda",
        0x0BD0_0BD0 => "Lustre",
        0x4750_4653 => "GPFS",
        FUSE_MAGIC => {
            let sub = fuse_type?.strip_prefix("fuse.")?;
            const NETWORK_FUSE: &[&str] =
                &["sshfs", "s3fs", "rclone", "gcsfuse", "goofys", "glusterfs", "ceph-fuse", "juicefs", "davfs"];
            return NETWORK_FUSE.contains(&sub).then(|| format!("fuse.{sub}"));
        }
        _ => return None,
    };
    Some(kernel.to_owned())
}

/// The type (`fuse.sshfs`, ...) of the mount holding `path`, from /proc/self/mountinfo: the
/// longest mount point that is an ancestor of its real path.
fn fuse_fstype(path: &Path) -> Option<String> {
    let real = std::fs::canonicalize(path).ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mount_type_of(&info, &real)
}

pub fn mount_type_of(mountinfo: &str, real: &Path) -> Option<String> {
    let mut best: Option<(usize, String)> = None;
    for line in mountinfo.lines() {
        let (left, right) = line.split_once(" - ")?;
        let mount_point = left.split(' ').nth(4)?.replace("\\040", " ");
        let fstype = right.split(' ').next()?;
        let len = Path::new(&mount_point).components().count();
        if real.starts_with(&mount_point) && best.as_ref().is_none_or(|(l, _)| len >= *l) {
            best = Some((len, fstype.to_owned()));
        }
    }
    best.map(|(_, t)| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(endpoint: &str) -> DestinationConfig {
        DestinationConfig::S3 {
            name: "z".into(),
            bucket: "b".into(),
            endpoint: endpoint.into(),
            region: "us-east-1".into(),
            access_key_id: "k".into(),
            secret_access_key: "s".into(),
            prefix: String::new(),
            allow_http: false,
        }
    }

    #[test]
    fn s3_at_aws_or_a_remote_address_is_off_the_host_loopback_and_own_addresses_are_not() {
        assert!(placement(&s3("")).off_host);
        assert!(placement(&s3("https://192.0.2.10:9000")).off_host, "TEST-NET-1 is no address of ours");
        for on_host in ["http://127.0.0.1:3900", "http://[::1]:3900/", "http://localhost:3900", "http://0.0.0.0:1"] {
            let p = placement(&s3(on_host));
            assert!(!p.off_host, "{on_host}: {}", p.why);
        }
    }

    #[test]
    fn endpoint_hosts_are_parsed_with_ports_users_and_ipv6_brackets() {
        assert_eq!(endpoint_host("https://s3.eu-1a.example/bucket").as_deref(), Some("s3.eu-1a.example"));
        assert_eq!(endpoint_host("http://u:p@10.1.2.3:9000").as_deref(), Some("10.1.2.3"));
        assert_eq!(endpoint_host("http://[fd00::5]:3900").as_deref(), Some("fd00::5"));
        assert_eq!(endpoint_host("http://").as_deref(), None);
    }

    #[test]
    fn network_file_systems_are_off_the_host_local_ones_and_local_fuse_are_not() {
        assert_eq!(network_fs(0x6969, None).as_deref(), Some("NFS"));
        assert_eq!(network_fs(0xFE53_4D42, None).as_deref(), Some("SMB2"));
        assert_eq!(network_fs(0x00C3_6400, None).as_deref(), Some("ceph"));
        assert_eq!(network_fs(FUSE_MAGIC, Some("fuse.sshfs")).as_deref(), Some("fuse.sshfs"));
        assert_eq!(network_fs(FUSE_MAGIC, Some("fuse.bindfs")), None);
        assert_eq!(network_fs(0xEF53, None), None, "ext4");
        assert_eq!(network_fs(0x5846_5342, None), None, "xfs");
    }

    #[test]
    fn the_mount_type_is_that_of_the_longest_mount_point_above_the_path() {
        let info = "22 1 252:0 / / rw - ext4 /dev/vda rw\n\
                    40 22 0:40 / /mnt/remote rw - fuse.sshfs u@h: rw\n\
                    41 40 0:41 / /mnt/remote/local rw - tmpfs tmpfs rw\n";
        assert_eq!(mount_type_of(info, Path::new("/mnt/remote/x")).as_deref(), Some("fuse.sshfs"));
        assert_eq!(mount_type_of(info, Path::new("/mnt/remote/local/y")).as_deref(), Some("tmpfs"));
        assert_eq!(mount_type_of(info, Path::new("/srv")).as_deref(), Some("ext4"));
    }

    #[test]
    fn the_default_destinations_are_on_the_host_and_refused_unless_accepted_in_so_many_words() {
        let tmp = tempfile::tempdir().unwrap();
        let config = BackupConfig::default();
        let p = placements(&config, tmp.path());
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|p| !p.off_host), "{p:?}");
        let refusal = shortfall(&p, false).expect("refused");
        assert!(refusal.contains("0 of 3 destinations are off this host's disks"), "{refusal}");
        assert!(refusal.contains("az1 on this host"), "{refusal}");
        assert_eq!(shortfall(&p, true), None, "accepted by the flag");
        // Two remote S3 destinations beside a local folder are enough.
        let mixed = [placement(&s3("")), placement(&s3("https://192.0.2.10")), p[0].clone()];
        assert_eq!(shortfall(&mixed, false), None);
        assert!(shortfall(&mixed[1..], false).is_some(), "one off-host destination is not enough");
    }
}
