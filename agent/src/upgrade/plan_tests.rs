use super::*;

#[test]
fn target_major_accepts_known_majors_and_refuses_minors_unknowns_and_words() {
    assert_eq!(target_major("17").unwrap(), 17);
    for (text, says) in [
        ("", "is required"),
        ("17.2", "minor"),
        ("seventeen", "not a PostgreSQL major"),
        ("9", "not a major this agent knows"),
        ("170", "not a major this agent knows"),
    ] {
        let e = target_major(text).unwrap_err().to_string();
        assert!(e.starts_with("target_version: ") && e.contains(says), "{text:?}: {e}");
    }
}

#[test]
fn current_major_reads_major_and_minor_versions() {
    assert_eq!(current_major("a", "15").unwrap(), 15);
    assert_eq!(current_major("a", "15.8").unwrap(), 15);
    assert!(current_major("a", "latest").unwrap_err().to_string().contains("\"latest\""));
}

#[test]
fn cluster_from_unit_takes_postgresql_common_units_only() {
    let c = Cluster::from_unit("a", "postgresql@15-main.service").unwrap();
    assert_eq!(c, Cluster { major: 15, name: "main".into() });
    assert_eq!(c.with_major(17).unit(), "postgresql@17-main.service");
    assert_eq!(c.with_major(17).shown(), "17/main");
    for unit in ["postgresql.service", "postgresql@x-main", "postgresql@15-", "postgresql@15-../x", "mariadb"] {
        let e = Cluster::from_unit("a", unit).unwrap_err().to_string();
        assert!(e.contains("postgresql-common cluster unit"), "{unit}: {e}");
    }
}

#[test]
fn new_data_dir_replaces_the_major_component_or_takes_a_sibling() {
    assert_eq!(
        new_data_dir(Path::new("/srv/dbagent/a/15/main"), 15, 17).unwrap(),
        PathBuf::from("/srv/dbagent/a/17/main")
    );
    // The last component naming the major is the one replaced; an instance id "15" stays.
    assert_eq!(new_data_dir(Path::new("/srv/15/pg/15"), 15, 17).unwrap(), PathBuf::from("/srv/15/pg/17"));
    assert_eq!(
        new_data_dir(Path::new("/srv/dbagent/a/pgdata"), 15, 17).unwrap(),
        PathBuf::from("/srv/dbagent/a/pgdata-17")
    );
}

#[test]
fn copy_mode_clones_only_on_reflink_file_systems_and_sizes_the_copy() {
    assert_eq!(mode_for_fs_type(0xEF53), CopyMode::Copy); // ext4
    assert_eq!(mode_for_fs_type(0x5846_5342), CopyMode::Clone); // xfs
    assert!(CopyMode::Copy.space_needed(1 << 30) > 1 << 30);
    assert!(CopyMode::Clone.space_needed(1 << 30) < 1 << 30);
}
