//! The restore folder's life (prepare, commit, rollback), each step also with the folder or the
//! set-aside copy swapped for a link to a folder outside the data root, as a tenant would.

use super::*;
use std::fs;
use std::os::unix::fs::symlink;

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// A data root, and outside it a folder with one file that must survive everything.
struct Scene {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

impl Scene {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let (root, outside) = (tmp.path().join("db"), tmp.path().join("agent-state"));
        write(&outside.join("keystore.json"), "keep");
        fs::create_dir_all(&root).unwrap();
        Self { _tmp: tmp, root, outside }
    }

    fn roots(&self) -> Vec<PathBuf> {
        vec![self.root.clone()]
    }

    fn assert_outside_untouched(&self) {
        assert_eq!(fs::read_to_string(self.outside.join("keystore.json")).unwrap(), "keep");
        assert_eq!(fs::read_dir(&self.outside).unwrap().count(), 1, "something appeared in or left the outside folder");
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<_> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    n.sort();
    n
}

#[test]
fn in_place_failure_puts_the_old_data_back_and_success_drops_it() {
    let s = Scene::new();
    let dir = s.root.join("data");
    write(&dir.join("PG_VERSION"), "15");
    write(&dir.join("base/1/1259"), "old");
    fs::create_dir(dir.join(LOST_FOUND)).unwrap();

    let r = RestoreDir::prepare(&s.roots(), &dir, RestoreInto::InPlace).unwrap();
    assert_eq!(names(&dir), [ASIDE, LOST_FOUND], "only lost+found and the set-aside folder remain");
    write(&dir.join("PG_VERSION"), "16");
    write(&dir.join("half-written"), "x");
    r.rollback();
    assert_eq!(fs::read_to_string(dir.join("PG_VERSION")).unwrap(), "15");
    assert_eq!(fs::read_to_string(dir.join("base/1/1259")).unwrap(), "old");
    assert!(!dir.join("half-written").exists() && !dir.join(ASIDE).exists());
    assert!(dir.join(LOST_FOUND).is_dir());

    let r = RestoreDir::prepare(&s.roots(), &dir, RestoreInto::InPlace).unwrap();
    write(&dir.join("PG_VERSION"), "16");
    r.commit();
    assert_eq!(fs::read_to_string(dir.join("PG_VERSION")).unwrap(), "16");
    assert!(!dir.join("base").exists() && !dir.join(ASIDE).exists());
}

#[test]
fn a_new_folder_is_removed_again_and_leftovers_or_content_refuse_a_restore() {
    let s = Scene::new();
    let dir = s.root.join("new/data");
    let r = RestoreDir::prepare(&s.roots(), &dir, RestoreInto::NewFolder).unwrap();
    write(&dir.join("partial"), "x");
    r.rollback();
    assert!(!dir.exists());

    fs::create_dir_all(dir.join(ASIDE)).unwrap();
    let e = RestoreDir::prepare(&s.roots(), &dir, RestoreInto::InPlace).unwrap_err();
    assert!(matches!(&e, BackupError::RestoreLeftoverFound { aside } if aside.ends_with(ASIDE)), "{e:?}");
    fs::remove_dir(dir.join(ASIDE)).unwrap();

    write(&dir.join("PG_VERSION"), "15");
    let e = RestoreDir::prepare(&s.roots(), &dir, RestoreInto::NewFolder).unwrap_err();
    assert!(matches!(&e, BackupError::RestoreTargetNotEmpty { dir: d } if *d == dir), "{e:?}");
    assert_eq!(fs::read_to_string(dir.join("PG_VERSION")).unwrap(), "15", "a refused folder is left as it was");
}

#[test]
fn a_folder_reached_through_a_link_or_outside_the_roots_is_refused_before_anything_is_written() {
    let s = Scene::new();
    symlink(&s.outside, s.root.join("link")).unwrap();
    for dir in [s.root.join("link"), s.root.join("link/data")] {
        let e = RestoreDir::prepare(&s.roots(), &dir, RestoreInto::NewFolder).unwrap_err();
        assert!(matches!(e, BackupError::Beneath(BeneathError::Refused { .. })), "{}: {e:?}", dir.display());
        let e = RestoreDir::prepare(&s.roots(), &dir, RestoreInto::InPlace).unwrap_err();
        assert!(matches!(e, BackupError::Beneath(BeneathError::Refused { .. })), "{}: {e:?}", dir.display());
    }
    s.assert_outside_untouched();
    for dir in [s.outside.clone(), s.root.clone()] {
        let e = RestoreDir::prepare(&s.roots(), &dir, RestoreInto::NewFolder).unwrap_err();
        assert!(matches!(e, BackupError::RestoreDirOutsideRoots { .. }), "{e:?}");
    }
    s.assert_outside_untouched();
    RestoreDir::prepare(&s.roots(), &s.root.join("real"), RestoreInto::NewFolder).unwrap().commit();
    assert!(s.root.join("real").is_dir());
}

#[test]
fn rollback_after_the_new_folder_was_swapped_for_a_link_touches_nothing_outside() {
    let s = Scene::new();
    let dir = s.root.join("data");
    let r = RestoreDir::prepare(&s.roots(), &dir, RestoreInto::NewFolder).unwrap();
    write(&dir.join("partial"), "x");
    // The tenant moves the half-restored folder away and puts a link to the agent's state there.
    fs::rename(&dir, s.root.join("moved")).unwrap();
    symlink(&s.outside, &dir).unwrap();
    r.rollback();
    s.assert_outside_untouched();
    assert!(fs::symlink_metadata(&dir).unwrap().file_type().is_symlink(), "the planted link is left alone");
    assert!(names(&s.root.join("moved")).is_empty(), "what the restore wrote is removed from the real folder");
}

#[test]
fn in_place_rollback_and_commit_after_swaps_touch_nothing_outside() {
    let s = Scene::new();
    let dir = s.root.join("data");
    write(&dir.join("PG_VERSION"), "15");
    let r = RestoreDir::prepare(&s.roots(), &dir, RestoreInto::InPlace).unwrap();
    write(&dir.join("PG_VERSION"), "16");
    // The set-aside folder swapped for a link to the outside: the old data is still moved back
    // from the folder the agent holds, and neither the link nor its target is removed.
    fs::rename(dir.join(ASIDE), s.root.join("aside-moved")).unwrap();
    symlink(&s.outside, dir.join(ASIDE)).unwrap();
    r.rollback();
    s.assert_outside_untouched();
    assert_eq!(fs::read_to_string(dir.join("PG_VERSION")).unwrap(), "15");
    fs::remove_file(dir.join(ASIDE)).unwrap();

    let r = RestoreDir::prepare(&s.roots(), &dir, RestoreInto::InPlace).unwrap();
    write(&dir.join("PG_VERSION"), "16");
    fs::rename(dir.join(ASIDE), s.root.join("aside-moved-2")).unwrap();
    symlink(&s.outside, dir.join(ASIDE)).unwrap();
    r.commit();
    s.assert_outside_untouched();
    assert!(names(&s.root.join("aside-moved-2")).is_empty(), "the old data was dropped from the held folder");
    assert_eq!(fs::read_to_string(dir.join("PG_VERSION")).unwrap(), "16");
}
