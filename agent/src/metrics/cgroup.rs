//! Parsers for cgroup v2 interface files, and where a systemd unit's cgroup lives.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `key value` files: cpu.stat, memory.stat, memory.events.
pub fn parse_flat_keyed(text: &str) -> BTreeMap<&str, u64> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_ascii_whitespace();
            let (key, value) = (f.next()?, f.next()?.parse().ok()?);
            Some((key, value))
        })
        .collect()
}

/// A single number (memory.current, memory.peak); `None` for "max" or garbage.
pub fn parse_single(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// One device line of io.stat: `8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoStat {
    /// Signed like procfs's `DiskStat` numbers, which name the device.
    pub major: i32,
    pub minor: i32,
    pub rbytes: u64,
    pub wbytes: u64,
    pub rios: u64,
    pub wios: u64,
}

pub fn parse_io_stat(text: &str) -> Vec<IoStat> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_ascii_whitespace();
            let (major, minor) = f.next()?.split_once(':')?;
            let mut io = IoStat { major: major.parse().ok()?, minor: minor.parse().ok()?, ..IoStat::default() };
            for pair in f {
                let Some((k, v)) = pair.split_once('=') else { continue };
                let Ok(v) = v.parse() else { continue };
                match k {
                    "rbytes" => io.rbytes = v,
                    "wbytes" => io.wbytes = v,
                    "rios" => io.rios = v,
                    "wios" => io.wios = v,
                    _ => {}
                }
            }
            Some(io)
        })
        .collect()
}

/// The cgroup folder of a system service. A template instance (`postgresql@15-main.service`) lives
/// in its template's slice, `system-postgresql.slice`, with `-` in the prefix escaped as systemd does.
pub fn unit_cgroup(root: &Path, unit: &str) -> Option<PathBuf> {
    let system = root.join("system.slice");
    let direct = system.join(unit);
    if direct.is_dir() {
        return Some(direct);
    }
    let (prefix, _) = unit.split_once('@')?;
    let templated = system.join(format!("system-{}.slice", prefix.replace('-', "\\x2d"))).join(unit);
    templated.is_dir().then_some(templated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_stat_of_a_debian_host() {
        let text = "usage_usec 1520334\nuser_usec 1101212\nsystem_usec 419122\ncore_sched.force_idle_usec 0\n\
                    nr_periods 120\nnr_throttled 7\nthrottled_usec 350211\nnr_bursts 0\nburst_usec 0\n";
        let m = parse_flat_keyed(text);
        assert_eq!(m["usage_usec"], 1_520_334);
        assert_eq!(m["nr_throttled"], 7);
        assert_eq!(m["throttled_usec"], 350_211);
    }

    #[test]
    fn truncated_lines_are_skipped() {
        let m = parse_flat_keyed("usage_usec 10\nuser_usec\nsystem_usec 1x\n");
        assert_eq!(m.len(), 1);
        let io =
            parse_io_stat("8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n254:0 rbytes=12 wby\nbroken\n");
        assert_eq!(io.len(), 2);
        assert_eq!(io[0], IoStat { major: 8, minor: 0, rbytes: 4096, wbytes: 8192, rios: 1, wios: 2 });
        assert_eq!(io[1].rbytes, 12);
        assert_eq!(io[1].wbytes, 0);
        assert_eq!(parse_single("max\n"), None);
        assert_eq!(parse_single("1048576\n"), Some(1_048_576));
    }

    #[test]
    fn template_units_live_in_their_slice() {
        let root = tempfile::tempdir().unwrap();
        let t = root.path().join("system.slice/system-postgresql.slice/postgresql@15-main.service");
        std::fs::create_dir_all(&t).unwrap();
        std::fs::create_dir_all(root.path().join("system.slice/redis-server.service")).unwrap();
        assert_eq!(unit_cgroup(root.path(), "postgresql@15-main.service"), Some(t));
        assert!(unit_cgroup(root.path(), "redis-server.service").is_some());
        assert_eq!(unit_cgroup(root.path(), "mariadb.service"), None);
        let t = root.path().join("system.slice/system-my\\x2dsql.slice/my-sql@a.service");
        std::fs::create_dir_all(&t).unwrap();
        assert_eq!(unit_cgroup(root.path(), "my-sql@a.service"), Some(t));
    }
}
