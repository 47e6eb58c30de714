use super::*;
use crate::instances::fixtures::{GIB, rules, spec};
use crate::instances::model::*;

/// Applies `change` to a good spec and returns the field named by the refusal.
fn refused(change: impl FnOnce(&mut InstanceSpec)) -> String {
    let mut s = spec("pg-1");
    change(&mut s);
    match validate_spec(&s, &rules()) {
        Ok(()) => panic!("accepted {s:?}"),
        Err(e) => {
            assert!(!e.reason.is_empty());
            e.field
        }
    }
}

fn accepted(change: impl FnOnce(&mut InstanceSpec)) {
    let mut s = spec("pg-1");
    change(&mut s);
    if let Err(e) = validate_spec(&s, &rules()) {
        panic!("refused {s:?}: {e}");
    }
}

#[test]
fn good_spec_passes() {
    accepted(|_| {});
    accepted(|s| {
        s.maintenance_window = None;
        s.backup_policy = None;
        s.log_sources.clear();
    });
}

#[test]
fn engine_version() {
    for ok in ["15", "10.11", "7.2.4", "0.0.0"] {
        accepted(|s| s.engine_version = ok.to_owned());
    }
    for bad in ["", "15.", ".15", "1.2.3.4", "15a", "v15", "1 5", "12345678901234567", "15\0"] {
        assert_eq!(refused(|s| s.engine_version = bad.to_owned()), "spec.engine_version", "{bad:?}");
    }
}

#[test]
fn systemd_unit() {
    accepted(|s| s.systemd_unit = "mariadb.service".to_owned());
    let long = format!("{}.service", "a".repeat(249));
    for bad in ["", ".service", "pg", "pg.socket", "pg/x.service", "p g.service", "pg\n.service", &long] {
        assert_eq!(refused(|s| s.systemd_unit = bad.to_owned()), "spec.systemd_unit", "{bad:?}");
    }
}

#[test]
fn data_dir() {
    accepted(|s| s.data_dir = "/var/lib/dbagent/data/pg-1/main".into());
    let long = format!("/srv/db/{}", "a".repeat(4096));
    for bad in [
        "",
        "srv/db/x",
        "/srv/db",
        "/srv/db/",
        "/srv/db/x/",
        "/srv//db/x",
        "/srv/db/./x",
        "/srv/db/../etc",
        "/srv/dbx/y",
        "/srv/db2",
        "/etc/x",
        "/srv/db/x\u{7}",
        &long,
    ] {
        assert_eq!(refused(|s| s.data_dir = bad.into()), "spec.data_dir", "{bad:?}");
    }
}

#[test]
fn data_dir_needs_a_configured_root() {
    let s = spec("pg-1");
    let e = validate_spec(&s, &ValidationRules { data_roots: vec![], ..rules() }).unwrap_err();
    assert_eq!(e.field, "spec.data_dir");
    assert!(e.reason.contains("none configured"), "{}", e.reason);
}

#[test]
fn os_user() {
    for ok in ["postgres", "_x", "redis-1", &"a".repeat(32)] {
        accepted(|s| s.os_user = ok.to_owned());
    }
    for bad in ["", "Postgres", "1pg", "-pg", "pg.x", "root user", &"a".repeat(33), "pg\0"] {
        assert_eq!(refused(|s| s.os_user = bad.to_owned()), "spec.os_user", "{bad:?}");
    }
}

#[test]
fn os_user_root_and_nobody_are_refused_by_name() {
    for bad in ["root", "nobody"] {
        let mut s = spec("pg-1");
        s.os_user = bad.to_owned();
        let e = validate_spec(&s, &rules()).unwrap_err();
        assert_eq!(e.field, "spec.os_user");
        assert!(e.reason.contains("root or a system account"), "{}", e.reason);
    }
    accepted(|s| s.os_user = "rooted".to_owned());
}

#[test]
fn os_user_account_refuses_root_and_static_system_accounts_and_allows_engine_users() {
    for (uid, gid) in [(0, 0), (0, 1000), (1000, 0), (1, 1), (99, 99), (65534, 65534), (1000, 65534)] {
        let e = os_user_account("spec.os_user", "x", uid, gid).unwrap_err();
        assert_eq!(e.field, "spec.os_user", "{uid}:{gid}");
    }
    for (uid, gid) in [(100, 100), (105, 110), (999, 999), (1000, 1000), (65533, 65533)] {
        os_user_account("spec.os_user", "x", uid, gid).unwrap_or_else(|e| panic!("{uid}:{gid}: {e}"));
    }
}

#[test]
fn volume_device() {
    for ok in ["/dev/vdb", "/dev/disk/by-id/virtio-pg1"] {
        accepted(|s| s.volume.device = Some(ok.into()));
    }
    for bad in [
        "/dev/sda",
        "/dev/vd",
        "/dev/disk/by-id/",
        "/dev/disk/by-id/../../sda",
        "/dev/vdb/",
        "dev/vdb",
        "/dev//vdb",
        "/dev/vdb\n",
    ] {
        assert_eq!(refused(|s| s.volume.device = Some(bad.into())), "spec.volume.device", "{bad:?}");
    }
}

#[test]
fn volume_size() {
    accepted(|s| {
        s.volume.size_bytes = 32 << 20;
        s.plan.disk_bytes = 0;
    });
    accepted(|s| {
        s.volume.size_bytes = 316 << 20;
        s.volume.filesystem = crate::instances::Filesystem::Xfs;
        s.plan.disk_bytes = 0;
    });
    // A volume no larger than its LUKS2 header has no room for a file system; xfs needs 300 MiB.
    let e = refused(|s| {
        s.volume.size_bytes = (316 << 20) - 1;
        s.volume.filesystem = crate::instances::Filesystem::Xfs;
        s.plan.disk_bytes = 0;
    });
    assert_eq!(e, "spec.volume.size_bytes");
    accepted(|s| {
        s.volume.size_bytes = 64 << 40;
        s.plan.disk_bytes = 0;
    });
    for bad in [0, 16 << 20, (32 << 20) - 1, (64 << 40) + 1] {
        assert_eq!(refused(|s| s.volume.size_bytes = bad), "spec.volume.size_bytes", "{bad}");
    }
}

#[test]
fn log_sources() {
    let ok = "/var/log/postgresql/x.log";
    accepted(|s| s.log_sources = vec![LogSource::FileGlob(ok.to_owned()); 32]);
    assert_eq!(refused(|s| s.log_sources = vec![LogSource::FileGlob(ok.to_owned()); 33]), "spec.log_sources");
    // Below a data root (PostgreSQL's logging_collector writes into the data directory).
    accepted(|s| s.log_sources = vec![LogSource::FileGlob("/srv/db/pg-1/log/*.log".to_owned())]);
    for bad in [
        "",
        "var/log/*.log",
        "/var/log/../../etc/shadow",
        "/var/log/postgresql/../../../etc/dbagent/kek",
        "/var/log/",
        "/var//log",
        "/var/log/\0x",
        "/etc/dbagent/kek",
        "/var/log/postgresql",
        "/var/log/*/x.log",
        "/x",
    ] {
        let field = refused(|s| s.log_sources.push(LogSource::FileGlob(bad.to_owned())));
        assert_eq!(field, "spec.log_sources[2].file_glob", "{bad:?}");
    }
    for bad in ["", "pg", "pg.socket", "pg;rm.service"] {
        let field = refused(|s| s.log_sources.insert(0, LogSource::JournaldUnit(bad.to_owned())));
        assert_eq!(field, "spec.log_sources[0].journald_unit", "{bad:?}");
    }
}

#[test]
fn plan() {
    accepted(|s| s.plan.cpu_millis = 100);
    accepted(|s| s.plan.cpu_millis = 256_000);
    accepted(|s| s.plan.memory_bytes = 64 << 20);
    accepted(|s| s.plan.memory_bytes = 4 << 40);
    accepted(|s| s.plan.disk_bytes = 0);
    accepted(|s| s.plan.disk_bytes = 20 * GIB);
    for bad in [0, 99, 256_001] {
        assert_eq!(refused(|s| s.plan.cpu_millis = bad), "spec.plan.cpu_millis", "{bad}");
    }
    for bad in [0, (64 << 20) - 1, (4 << 40) + 1] {
        assert_eq!(refused(|s| s.plan.memory_bytes = bad), "spec.plan.memory_bytes", "{bad}");
    }
    assert_eq!(refused(|s| s.plan.disk_bytes = 10 * GIB - 1), "spec.plan.disk_bytes");
}

#[test]
fn maintenance_window() {
    accepted(|s| {
        s.maintenance_window =
            Some(MaintenanceWindow { weekday: Weekday::Monday, start_minute_utc: 1439, duration_minutes: 720 })
    });
    accepted(|s| {
        s.maintenance_window =
            Some(MaintenanceWindow { weekday: Weekday::Monday, start_minute_utc: 0, duration_minutes: 30 })
    });
    let window = |start, duration| {
        Some(MaintenanceWindow { weekday: Weekday::Friday, start_minute_utc: start, duration_minutes: duration })
    };
    assert_eq!(refused(|s| s.maintenance_window = window(1440, 60)), "spec.maintenance_window.start_minute_utc");
    assert_eq!(refused(|s| s.maintenance_window = window(0, 29)), "spec.maintenance_window.duration_minutes");
    assert_eq!(refused(|s| s.maintenance_window = window(0, 721)), "spec.maintenance_window.duration_minutes");
}

#[test]
fn backup_policy() {
    let gfs = |d, w, m| {
        Some(BackupPolicy { daily_at_minute_utc: 1439, keep_daily: d, enabled: false, keep_weekly: w, keep_monthly: m })
    };
    accepted(|s| s.backup_policy = gfs(365, None, None));
    accepted(|s| s.backup_policy = gfs(1, Some(0), Some(0)));
    accepted(|s| s.backup_policy = gfs(7, Some(260), Some(120)));
    let policy = |at, keep| {
        Some(BackupPolicy {
            daily_at_minute_utc: at,
            keep_daily: keep,
            enabled: true,
            keep_weekly: None,
            keep_monthly: None,
        })
    };
    assert_eq!(refused(|s| s.backup_policy = policy(1440, 7)), "spec.backup_policy.daily_at_minute_utc");
    assert_eq!(refused(|s| s.backup_policy = policy(0, 0)), "spec.backup_policy.keep_daily");
    assert_eq!(refused(|s| s.backup_policy = policy(0, 366)), "spec.backup_policy.keep_daily");
    assert_eq!(refused(|s| s.backup_policy = gfs(7, Some(261), None)), "spec.backup_policy.keep_weekly");
    assert_eq!(refused(|s| s.backup_policy = gfs(7, None, Some(121))), "spec.backup_policy.keep_monthly");
}

#[test]
fn reasons_say_what_is_expected() {
    let mut s = spec("pg-1");
    s.plan.cpu_millis = 50;
    let e = validate_spec(&s, &rules()).unwrap_err();
    assert_eq!(e.to_string(), "invalid spec.plan.cpu_millis: is 50; it must be from 100 to 256000 (1000 = one CPU)");
    s = spec("pg-1");
    s.data_dir = "/srv/db/x\0y".into();
    let e = validate_spec(&s, &rules()).unwrap_err();
    assert!(e.reason.contains("control characters") && e.reason.contains("\\0"), "{}", e.reason);
}
