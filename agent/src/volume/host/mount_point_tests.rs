//! The handle walk without root: links, files and ways out on the way to a mount point. Mounting
//! itself needs root and a block device: `integration/tests/volume_mount_race.rs` mounts a loop
//! device under a tenant's exchange loop, and the VM check does it on dm-crypt.

use std::os::unix::fs::symlink;
use std::path::Path;

use super::*;

fn at<'a>(root: &'a Path, dir: &'a Path) -> MountPoint<'a> {
    MountPoint { root, dir }
}

fn refusal(e: HostError) -> String {
    match e {
        HostError::UnsafeMountPoint { reason, .. } => reason,
        other => panic!("expected UnsafeMountPoint, got {other:?}"),
    }
}

#[test]
fn missing_folders_are_made_beneath_the_root() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("a/b/c");
    assert!(open_dir(at(root.path(), &dir), false).unwrap().is_none(), "without create nothing is made");
    assert!(!root.path().join("a").exists());
    let opened = open_dir(at(root.path(), &dir), true).unwrap().unwrap();
    assert!(dir.is_dir());
    assert_eq!(opened.name, "c");
    let opened = rustix::fs::fstat(&opened.dir).unwrap();
    let by_path = rustix::fs::stat(&dir).unwrap();
    assert_eq!((opened.st_dev, opened.st_ino), (by_path.st_dev, by_path.st_ino), "the handle is the made folder");
}

#[test]
fn a_link_on_the_way_is_refused_and_nothing_is_made_through_it() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    symlink(outside.path(), root.path().join("a")).unwrap();
    let dir = root.path().join("a/b");
    let reason = refusal(open_dir(at(root.path(), &dir), true).unwrap_err());
    assert!(reason.contains("a on its way is a symbolic link"), "{reason}");
    assert!(!outside.path().join("b").exists(), "nothing was made through the link");

    // The same shape without the link works.
    std::fs::remove_file(root.path().join("a")).unwrap();
    assert!(open_dir(at(root.path(), &dir), true).unwrap().is_some());
    assert!(dir.is_dir());
}

#[test]
fn the_mount_point_itself_as_a_link_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    symlink(outside.path(), root.path().join("data")).unwrap();
    let reason = refusal(open_dir(at(root.path(), &root.path().join("data")), true).unwrap_err());
    assert!(reason.contains("data on its way is a symbolic link"), "{reason}");
    // A link that stays inside the root is refused as well: a link is never followed.
    std::fs::create_dir(root.path().join("real")).unwrap();
    symlink(root.path().join("real"), root.path().join("inside")).unwrap();
    let reason = refusal(open_dir(at(root.path(), &root.path().join("inside")), false).unwrap_err());
    assert!(reason.contains("symbolic link"), "{reason}");
    assert!(open_dir(at(root.path(), &root.path().join("real")), false).unwrap().is_some());
}

#[test]
fn a_file_or_fifo_on_the_way_is_refused() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("file"), b"x").unwrap();
    nix::unistd::mkfifo(&root.path().join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    for name in ["file", "fifo"] {
        let reason = refusal(open_dir(at(root.path(), &root.path().join(name)), true).unwrap_err());
        assert!(reason.contains(&format!("{name} on its way is not a folder")), "{reason}");
    }
    let reason = refusal(open_dir(at(root.path(), &root.path().join("file/below")), true).unwrap_err());
    assert!(reason.contains("file on its way is not a folder"), "{reason}");
}

#[test]
fn a_dir_outside_its_root_or_the_root_itself_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let reason = refusal(open_dir(at(root.path(), &elsewhere.path().join("x")), true).unwrap_err());
    assert!(reason.contains("not below its data root"), "{reason}");
    let reason = refusal(open_dir(at(root.path(), root.path()), true).unwrap_err());
    assert!(reason.contains("the data root itself"), "{reason}");
    let reason = refusal(open_dir(at(root.path(), &root.path().join("a/../b")), true).unwrap_err());
    assert!(reason.contains("'..'"), "{reason}");
    assert!(!elsewhere.path().join("x").exists());
}

#[test]
fn mount_roots_are_told_from_plain_folders() {
    let open = |p: &str| rustix::fs::open(p, DIR, Mode::empty()).unwrap();
    assert!(is_mount_root(&open("/"), &open("/proc")).unwrap(), "/proc is a mount of its own");
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("plain")).unwrap();
    let plain = root.path().join("plain");
    let opened = open_dir(at(root.path(), &plain), false).unwrap().unwrap();
    assert!(!is_mount_root(&opened.parent, &opened.dir).unwrap());
}

#[test]
fn an_unknown_owner_is_refused_before_anything_is_made() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let e =
        mount_beneath(Path::new("/dev/null"), "ext4", at(root.path(), &dir), Some("dbagent-no-such-user")).unwrap_err();
    assert!(matches!(&e, HostError::NoUser(u) if u == "dbagent-no-such-user"), "{e:?}");
    assert!(!dir.exists());
}

#[test]
fn root_and_system_accounts_never_get_the_volume() {
    // Accounts every Linux host has: root (uid 0) and daemon (uid 1).
    for user in ["root", "daemon"] {
        let e = lookup_user(user).unwrap_err();
        assert!(matches!(&e, HostError::RefusedOwner { user: u, .. } if u == user), "{e:?}");
        assert_eq!(crate::error::HasErrorCode::code(&e), crate::error::ErrorCode::FailedPrecondition);
    }
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let e = mount_beneath(Path::new("/dev/null"), "ext4", at(root.path(), &dir), Some("root")).unwrap_err();
    assert!(matches!(&e, HostError::RefusedOwner { .. }), "{e:?}");
    assert!(!dir.exists(), "refused before anything was made");
}
