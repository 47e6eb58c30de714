//! Each helper beside a planted link: refused (the outside untouched), and the normal path works.

use super::*;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, symlink};

/// A root to work beneath and, outside it, a folder with a file that must never change.
struct Scene {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

impl Scene {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), "keep").unwrap();
        Self { _tmp: tmp, root, outside }
    }

    fn handle(&self) -> DirHandle {
        DirHandle::open_root(&self.root).unwrap()
    }

    fn assert_outside_untouched(&self) {
        assert_eq!(fs::read_to_string(self.outside.join("secret")).unwrap(), "keep", "the outside file changed");
        let names: Vec<_> = fs::read_dir(&self.outside).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["secret"], "something was created or removed outside");
    }
}

fn refused(e: BeneathError) {
    assert!(matches!(e, BeneathError::Refused { .. }), "expected a refusal, got {e:?}");
}

/// O_EXCL answers EEXIST for any existing name, a link included (it is never followed).
fn already_exists(e: BeneathError) {
    assert!(
        matches!(&e, BeneathError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists),
        "expected EEXIST, got {e:?}"
    );
}

#[test]
fn open_root_refuses_a_root_reached_through_a_link_and_opens_the_real_one() {
    let s = Scene::new();
    let via_link = s.root.parent().unwrap().join("root-link");
    symlink(&s.root, &via_link).unwrap();
    refused(DirHandle::open_root(&via_link).unwrap_err());
    refused(DirHandle::open_root(&via_link.join("sub")).unwrap_err());
    assert!(DirHandle::open_root(Path::new("relative")).is_err());
    let h = DirHandle::open_root(&s.root).unwrap();
    assert_eq!(h.path(), s.root);
}

#[test]
fn open_dir_refuses_a_link_at_any_depth_and_a_climb_out() {
    let s = Scene::new();
    fs::create_dir_all(s.root.join("a/b")).unwrap();
    symlink(&s.outside, s.root.join("a/out")).unwrap();
    symlink("b", s.root.join("a/inner")).unwrap();
    let h = s.handle();
    refused(h.open_dir(Path::new("a/out")).unwrap_err());
    refused(h.open_dir(Path::new("a/inner")).unwrap_err());
    refused(h.open_dir(Path::new("a/out/anything")).unwrap_err());
    refused(h.open_dir(Path::new("../outside")).unwrap_err());
    refused(h.open_dir(&s.outside).unwrap_err());
    let b = h.open_dir(Path::new("a/b")).unwrap();
    assert_eq!(b.path(), s.root.join("a/b"));
}

#[test]
fn open_or_create_dir_creates_what_is_missing_but_never_through_a_link() {
    let s = Scene::new();
    let h = s.handle();
    symlink(&s.outside, s.root.join("planted")).unwrap();
    refused(h.open_or_create_dir(Path::new("planted/new"), 0o700).unwrap_err());
    refused(h.open_or_create_dir(Path::new("planted"), 0o700).unwrap_err());
    assert!(matches!(h.open_or_create_dir(Path::new("../x"), 0o700), Err(BeneathError::NotAName { .. })));
    s.assert_outside_untouched();

    let (d, outcome) = h.open_or_create_dir(Path::new("x/y"), 0o700).unwrap();
    assert_eq!(outcome, DirOutcome::Created);
    assert_eq!(fs::metadata(s.root.join("x/y")).unwrap().mode() & 0o777, 0o700);
    d.create_file(OsStr::new("f"), 0o600).unwrap();
    assert!(s.root.join("x/y/f").is_file());
    let (_, outcome) = h.open_or_create_dir(Path::new("x/y"), 0o700).unwrap();
    assert_eq!(outcome, DirOutcome::Existing);
}

#[test]
fn create_file_refuses_a_planted_link_or_any_existing_name() {
    let s = Scene::new();
    let h = s.handle();
    symlink(s.outside.join("secret"), s.root.join("dump.rdb")).unwrap();
    already_exists(h.create_file(OsStr::new("dump.rdb"), 0o600).unwrap_err());
    // A dangling link aimed at a file root would create: not created either.
    symlink(s.outside.join("new-file"), s.root.join("dangling")).unwrap();
    already_exists(h.create_file(OsStr::new("dangling"), 0o600).unwrap_err());
    s.assert_outside_untouched();
    fs::write(s.root.join("exists"), "x").unwrap();
    assert!(h.create_file(OsStr::new("exists"), 0o600).is_err());
    assert!(matches!(h.create_file(OsStr::new("a/b"), 0o600), Err(BeneathError::NotAName { .. })));

    let mut f = h.create_file(OsStr::new("fresh"), 0o600).unwrap();
    f.write_all(b"data").unwrap();
    assert_eq!(fs::read_to_string(s.root.join("fresh")).unwrap(), "data");
    assert_eq!(fs::metadata(s.root.join("fresh")).unwrap().mode() & 0o777, 0o600);
}

#[test]
fn open_regular_file_refuses_links_and_fifos_without_blocking() {
    let s = Scene::new();
    let h = s.handle();
    symlink(s.outside.join("secret"), s.root.join("link")).unwrap();
    refused(h.open_regular_file(Path::new("link")).unwrap_err());
    nix::unistd::mkfifo(&s.root.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let started = std::time::Instant::now();
    refused(h.open_regular_file(Path::new("fifo")).unwrap_err());
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "the FIFO blocked the open");
    fs::create_dir(s.root.join("sub")).unwrap();
    fs::write(s.root.join("sub/real"), "content").unwrap();
    let mut text = String::new();
    h.open_regular_file(Path::new("sub/real")).unwrap().read_to_string(&mut text).unwrap();
    assert_eq!(text, "content");
}

#[test]
fn chown_changes_the_opened_folder_even_after_its_name_was_swapped_for_a_link() {
    let s = Scene::new();
    let h = s.handle();
    let (dir, _) = h.open_or_create_dir(Path::new("data"), 0o700).unwrap();
    // The tenant moves the folder away and puts a link to the outside in its place.
    fs::rename(s.root.join("data"), s.root.join("moved")).unwrap();
    symlink(&s.outside, s.root.join("data")).unwrap();
    let before = fs::metadata(&s.outside).unwrap();
    let (uid, gid) = if nix::unistd::geteuid().is_root() {
        (65534, 65534)
    } else {
        (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw())
    };
    dir.chown(uid, gid).unwrap();
    let after = fs::metadata(&s.outside).unwrap();
    assert_eq!((before.uid(), before.gid()), (after.uid(), after.gid()), "the link's target was chowned");
    let moved = fs::metadata(s.root.join("moved")).unwrap();
    assert_eq!((moved.uid(), moved.gid()), (uid, gid), "the folder that was opened is the one chowned");
}

#[test]
fn rename_moves_between_handles_links_as_links_and_never_over_a_name() {
    let s = Scene::new();
    let h = s.handle();
    let (a, _) = h.open_or_create_dir(Path::new("a"), 0o700).unwrap();
    let (b, _) = h.open_or_create_dir(Path::new("b"), 0o700).unwrap();
    fs::write(s.root.join("a/file"), "x").unwrap();
    symlink(&s.outside, s.root.join("a/link")).unwrap();
    a.rename(OsStr::new("file"), &b, OsStr::new("file")).unwrap();
    a.rename(OsStr::new("link"), &b, OsStr::new("link")).unwrap();
    assert_eq!(fs::read_to_string(s.root.join("b/file")).unwrap(), "x");
    assert!(fs::symlink_metadata(s.root.join("b/link")).unwrap().file_type().is_symlink());
    fs::write(s.root.join("a/file"), "y").unwrap();
    assert!(a.rename(OsStr::new("file"), &b, OsStr::new("file")).is_err(), "an existing name is never replaced");
    assert_eq!(fs::read_to_string(s.root.join("b/file")).unwrap(), "x");
    // rename_over replaces a planted link (never following it).
    symlink(s.outside.join("secret"), s.root.join("b/over")).unwrap();
    a.rename_over(OsStr::new("file"), &b, OsStr::new("over")).unwrap();
    assert_eq!(fs::read_to_string(s.root.join("b/over")).unwrap(), "y");
    fs::remove_file(s.root.join("b/over")).unwrap();
    let mut names = b.entries().unwrap();
    names.sort();
    assert_eq!(names, ["file", "link"]);
    s.assert_outside_untouched();
}

#[test]
fn remove_tree_removes_links_as_links_and_never_enters_them() {
    let s = Scene::new();
    let h = s.handle();
    fs::create_dir_all(s.root.join("tree/deep/er")).unwrap();
    fs::write(s.root.join("tree/deep/er/f"), "x").unwrap();
    symlink(&s.outside, s.root.join("tree/deep/to-outside")).unwrap();
    symlink(s.outside.join("secret"), s.root.join("tree/secret-link")).unwrap();
    h.remove_tree(OsStr::new("tree")).unwrap();
    assert!(!s.root.join("tree").exists());
    s.assert_outside_untouched();

    // The folder itself swapped for a link: the link goes, its target stays.
    symlink(&s.outside, s.root.join("swapped")).unwrap();
    h.remove_tree(OsStr::new("swapped")).unwrap();
    assert!(fs::symlink_metadata(s.root.join("swapped")).is_err());
    s.assert_outside_untouched();
    // Missing is done; a path is not a name.
    h.remove_tree(OsStr::new("never-was")).unwrap();
    assert!(matches!(h.remove_tree(OsStr::new("../outside")), Err(BeneathError::NotAName { .. })));
    s.assert_outside_untouched();
}

#[test]
fn clear_empties_only_the_folder_it_holds_even_after_a_swap() {
    let s = Scene::new();
    let h = s.handle();
    let (data, _) = h.open_or_create_dir(Path::new("data"), 0o700).unwrap();
    fs::write(s.root.join("data/partial"), "x").unwrap();
    fs::rename(s.root.join("data"), s.root.join("moved")).unwrap();
    symlink(&s.outside, s.root.join("data")).unwrap();
    data.clear().unwrap();
    assert_eq!(fs::read_dir(s.root.join("moved")).unwrap().count(), 0);
    s.assert_outside_untouched();
    assert!(!h.holds(OsStr::new("data"), &data), "the name is a link now, not the folder");
    assert!(h.holds(OsStr::new("moved"), &data));
    // remove_dir on the link's name refuses (ENOTDIR) instead of following it.
    refused(h.remove_dir(OsStr::new("data")).unwrap_err());
    h.remove_dir(OsStr::new("moved")).unwrap();
    s.assert_outside_untouched();
}

#[test]
fn remove_tree_refuses_a_tree_nested_beyond_the_limit() {
    let s = Scene::new();
    let h = s.handle();
    let mut deep = s.root.join("nest");
    for _ in 0..=MAX_TREE_DEPTH {
        deep.push("d");
    }
    fs::create_dir_all(&deep).unwrap();
    assert!(matches!(h.remove_tree(OsStr::new("nest")), Err(BeneathError::TooDeep { .. })));
    // Within the limit it goes.
    fs::create_dir_all(s.root.join("shallow/a/b/c")).unwrap();
    h.remove_tree(OsStr::new("shallow")).unwrap();
    assert!(!s.root.join("shallow").exists());
}

#[test]
fn open_configured_root_follows_a_link_to_the_root_but_none_beneath_it() {
    let s = Scene::new();
    fs::create_dir(s.root.join("sub")).unwrap();
    symlink(&s.outside, s.root.join("out")).unwrap();
    // An administrator may name the root through a link: it is the configuration's own path.
    let via_link = s.root.parent().unwrap().join("root-link");
    symlink(&s.root, &via_link).unwrap();
    let h = DirHandle::open_configured_root(&via_link).unwrap();
    assert_eq!(h.path(), via_link);
    assert_eq!(h.open_dir(Path::new("sub")).unwrap().path(), via_link.join("sub"));
    refused(h.open_dir(Path::new("out")).unwrap_err());
    refused(h.open_for_reading(Path::new("out/secret")).unwrap_err());
    // O_PATH: it anchors resolution and creation, and lists nothing itself.
    assert_eq!(h.create_dir(OsStr::new("made"), 0o700).unwrap(), DirOutcome::Created);
    assert!(s.root.join("made").is_dir());
    assert!(h.entries().is_err());
    assert_eq!(h.open_dir(Path::new(".")).unwrap().entries().unwrap().len(), 3);
    // A file where the root should be is refused; a missing root is not found.
    let e = DirHandle::open_configured_root(&s.outside.join("secret")).unwrap_err();
    assert_eq!(e.errno(), Some(Errno::NOTDIR), "{e:?}");
    assert!(DirHandle::open_configured_root(&s.root.join("missing")).unwrap_err().is_not_found());
}

#[test]
fn refusals_say_why_a_last_link_is_a_link_and_a_file_is_not_a_folder() {
    let s = Scene::new();
    let h = s.handle();
    fs::write(s.root.join("file"), "x").unwrap();
    symlink(&s.outside, s.root.join("link")).unwrap();
    let reason = |e: BeneathError| match e {
        BeneathError::Refused { reason, .. } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(reason(h.open_dir(Path::new("link")).unwrap_err()), Refusal::Link);
    assert_eq!(reason(h.open_dir(Path::new("file")).unwrap_err()), Refusal::NotAFolder);
    assert_eq!(reason(h.open_dir(Path::new("file/below")).unwrap_err()), Refusal::NotAFolder);
    assert_eq!(reason(h.open_dir(Path::new("..")).unwrap_err()), Refusal::LeavesRoot);
    let e = h.open_dir(Path::new("link")).unwrap_err();
    assert_eq!(e.errno(), Some(Errno::LOOP));
    assert!(e.to_string().contains("(a symbolic link)"), "{e}");
    assert_eq!(h.open_dir(Path::new("missing")).unwrap_err().errno(), Some(Errno::NOENT));
}

#[test]
fn create_dir_makes_one_name_and_never_goes_through_a_link_there() {
    let s = Scene::new();
    let h = s.handle();
    assert_eq!(h.create_dir(OsStr::new("new"), 0o700).unwrap(), DirOutcome::Created);
    assert_eq!(fs::metadata(s.root.join("new")).unwrap().mode() & 0o777, 0o700);
    assert_eq!(h.create_dir(OsStr::new("new"), 0o700).unwrap(), DirOutcome::Existing);
    // A planted link takes the name: reported as there, and opening it is refused.
    symlink(&s.outside, s.root.join("planted")).unwrap();
    assert_eq!(h.create_dir(OsStr::new("planted"), 0o700).unwrap(), DirOutcome::Existing);
    refused(h.open_dir(Path::new("planted")).unwrap_err());
    assert!(matches!(h.create_dir(OsStr::new("a/b"), 0o700), Err(BeneathError::NotAName { .. })));
    s.assert_outside_untouched();
}

#[test]
fn open_for_reading_opens_a_fifo_without_blocking_and_lets_the_caller_judge_it() {
    let s = Scene::new();
    let h = s.handle();
    nix::unistd::mkfifo(&s.root.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let started = std::time::Instant::now();
    let (_, stat) = h.open_for_reading(Path::new("fifo")).unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "the FIFO blocked the open");
    assert_eq!(FileType::from_raw_mode(stat.st_mode), FileType::Fifo);
    fs::write(s.root.join("f"), "x").unwrap();
    fs::hard_link(s.root.join("f"), s.root.join("g")).unwrap();
    let (mut file, stat) = h.open_for_reading(Path::new("f")).unwrap();
    assert_eq!(stat.st_nlink, 2);
    let mut text = String::new();
    file.read_to_string(&mut text).unwrap();
    assert_eq!(text, "x");
    symlink(s.outside.join("secret"), s.root.join("link")).unwrap();
    refused(h.open_for_reading(Path::new("link")).unwrap_err());
    refused(h.open_for_reading(Path::new("../outside/secret")).unwrap_err());
}

#[test]
fn stat_entry_reports_a_link_as_a_link() {
    let s = Scene::new();
    let h = s.handle();
    symlink(&s.outside, s.root.join("link")).unwrap();
    fs::write(s.root.join("file"), "four").unwrap();
    assert_eq!(FileType::from_raw_mode(h.stat_entry(OsStr::new("link")).unwrap().st_mode), FileType::Symlink);
    assert_eq!(h.stat_entry(OsStr::new("file")).unwrap().st_size, 4);
    assert!(h.stat_entry(OsStr::new("missing")).unwrap_err().is_not_found());
    assert!(matches!(h.stat_entry(OsStr::new("../outside")), Err(BeneathError::NotAName { .. })));
}

#[test]
fn to_io_keeps_the_system_error_of_a_refusal_or_a_failure() {
    let s = Scene::new();
    let h = s.handle();
    symlink(&s.outside, s.root.join("link")).unwrap();
    assert_eq!(h.open_dir(Path::new("link")).unwrap_err().to_io().raw_os_error(), Some(Errno::LOOP.raw_os_error()));
    assert_eq!(h.open_dir(Path::new("missing")).unwrap_err().to_io().kind(), std::io::ErrorKind::NotFound);
    let e = h.create_file(OsStr::new("a/b"), 0o600).unwrap_err();
    assert!(e.to_io().to_string().contains("single file name"), "{}", e.to_io());
}

/// Under systemd's `RestrictSUIDSGID=` openat2 answers ENOSYS and the walk resolves instead: the
/// same refusals (a link on the way or at the end, `..`, an absolute path beneath a handle) and the
/// same allowed opens, from a handle and from `/`.
#[test]
fn the_fallback_walk_refuses_what_openat2_refuses_and_opens_the_rest() {
    let s = Scene::new();
    fs::create_dir_all(s.root.join("a/b")).unwrap();
    fs::write(s.root.join("a/b/f"), "inside").unwrap();
    symlink(&s.outside, s.root.join("a/out")).unwrap();
    symlink(s.outside.join("secret"), s.root.join("a/b/link")).unwrap();
    let h = s.handle();
    let dir = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
    let file = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let walk = |p: &str, flags| walk_beneath(h.as_fd(), Path::new(p), flags, Mode::empty(), true);

    let mut text = String::new();
    File::from(walk("a/b/f", file).unwrap()).read_to_string(&mut text).unwrap();
    assert_eq!(text, "inside");
    assert!(walk("a/b", dir).is_ok() && walk(".", dir).is_ok() && walk("", dir).is_ok());
    assert_eq!(walk("a/out/secret", file).unwrap_err(), Errno::LOOP, "a link on the way");
    assert_eq!(walk("a/out", dir).unwrap_err(), Errno::LOOP, "a link as the folder");
    assert_eq!(walk("a/b/link", file).unwrap_err(), Errno::LOOP, "a link as the file");
    assert_eq!(walk("a/../../outside/secret", file).unwrap_err(), Errno::XDEV);
    assert_eq!(walk("/etc/passwd", file).unwrap_err(), Errno::XDEV);
    assert_eq!(walk("a/missing", file).unwrap_err(), Errno::NOENT);

    // Create: O_EXCL on a planted link fails, a new name is made beneath the handle.
    let create = OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::WRONLY | OFlags::CLOEXEC;
    let made = |p: &str| walk_beneath(h.as_fd(), Path::new(p), create, Mode::from_bits_truncate(0o600), true);
    assert_eq!(made("a/b/link").unwrap_err(), Errno::EXIST);
    File::from(made("a/b/new").unwrap()).write_all(b"x").unwrap();
    assert_eq!(fs::read_to_string(s.root.join("a/b/new")).unwrap(), "x");

    // From `/` (open_root's case): a link anywhere on the way is refused, a plain path opens.
    let cwd = rustix::fs::CWD;
    assert!(walk_beneath(cwd, &s.root.join("a/b"), dir, Mode::empty(), false).is_ok());
    assert_eq!(walk_beneath(cwd, &s.root.join("a/out"), dir, Mode::empty(), false).unwrap_err(), Errno::LOOP);
    s.assert_outside_untouched();
}
