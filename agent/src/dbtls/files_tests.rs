//! The files as root beneath a folder the engine's user writes: the links that user can plant
//! where the key goes never make the agent write elsewhere, and the previous files survive until
//! they are discarded or put back.

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use zeroize::Zeroizing;

use super::*;
use crate::dbtls::validate::{CertificateInput, ValidBundle};

fn bundle(tag: &str) -> ValidBundle {
    ValidBundle {
        input: CertificateInput {
            cert_pem: format!("cert {tag}"),
            key_pem: Zeroizing::new(format!("key {tag}")),
            ca_pem: format!("ca {tag}"),
        },
        leaf_der: Vec::new(),
        fingerprint: String::new(),
        not_after: 0,
        subject: String::new(),
    }
}

/// A data root with the instance's data directory `data` in it.
fn root() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    (dir, data)
}

fn me() -> (u32, u32) {
    (rustix::process::getuid().as_raw(), rustix::process::getgid().as_raw())
}

fn open(root: &Path, data: &Path) -> TlsFiles {
    let (uid, gid) = me();
    TlsFiles::open(&[root.to_owned()], data, uid, gid).unwrap()
}

fn read(data: &Path, name: &str) -> String {
    std::fs::read_to_string(data.join(name)).unwrap()
}

#[test]
fn the_key_is_written_owner_only_and_the_previous_files_kept_until_discarded() {
    let (dir, data) = root();
    let files = open(dir.path(), &data);
    files.stage(&bundle("one")).unwrap();
    assert_eq!(files.swap_in().unwrap(), Swapped { had_previous: false });
    assert_eq!(read(&data, KEY), "key one");
    let key = std::fs::metadata(data.join(KEY)).unwrap();
    assert_eq!(key.permissions().mode() & 0o777, 0o600, "PostgreSQL refuses a key others can read");
    assert_eq!((key.uid(), key.gid()), me(), "owned by the engine's user");
    assert_eq!(std::fs::metadata(data.join(CERT)).unwrap().permissions().mode() & 0o777, 0o644);

    files.stage(&bundle("two")).unwrap();
    assert_eq!(files.swap_in().unwrap(), Swapped { had_previous: true });
    assert_eq!(read(&data, CERT), "cert two");
    assert_eq!(read(&data, "dbagent-tls.crt.old"), "cert one", "kept until the new one is served");
    files.discard_previous().unwrap();
    assert!(!data.join("dbagent-tls.crt.old").exists() && !data.join("dbagent-tls.key.old").exists());
    assert_eq!(read(&data, KEY), "key two");
    let summary = files.read_cert().unwrap();
    assert_eq!(summary.as_deref(), Some(&b"cert two"[..]));
}

#[test]
fn put_back_restores_the_previous_files_or_removes_a_first_install() {
    let (dir, data) = root();
    let files = open(dir.path(), &data);
    files.stage(&bundle("one")).unwrap();
    let first = files.swap_in().unwrap();
    files.stage(&bundle("two")).unwrap();
    let second = files.swap_in().unwrap();
    files.put_back(second).unwrap();
    assert_eq!(read(&data, CERT), "cert one");
    assert_eq!(read(&data, KEY), "key one");
    assert_eq!(read(&data, CA), "ca one");
    files.put_back(first).unwrap();
    assert!(!data.join(CERT).exists() && !data.join(KEY).exists(), "a refused first install leaves nothing");
}

#[test]
fn a_link_planted_where_the_key_goes_never_makes_root_write_elsewhere() {
    let (dir, data) = root();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("shadow");
    std::fs::write(&victim, "root's file").unwrap();
    // The engine's user plants links at the live name and at the staging name of the key.
    symlink(&victim, data.join(KEY)).unwrap();
    symlink(&victim, data.join("dbagent-tls.key.new")).unwrap();
    let files = open(dir.path(), &data);
    files.stage(&bundle("one")).unwrap();
    files.swap_in().unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's file", "nothing written through a link");
    let key = std::fs::symlink_metadata(data.join(KEY)).unwrap();
    assert!(key.file_type().is_file(), "the link was replaced by the key file, not followed");
    assert_eq!(read(&data, KEY), "key one");
    // A planted link is not taken for a previous file to keep and put back.
    files.stage(&bundle("two")).unwrap();
    symlink(&victim, data.join("dbagent-tls.key.old")).unwrap();
    let swapped = files.swap_in().unwrap();
    files.put_back(swapped).unwrap();
    assert_eq!(read(&data, KEY), "key one");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's file");
}

#[test]
fn a_data_directory_swapped_for_a_link_is_refused() {
    let (dir, data) = root();
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::remove_dir(&data).unwrap();
    symlink(elsewhere.path(), &data).unwrap();
    let (uid, gid) = me();
    let e = TlsFiles::open(&[dir.path().to_owned()], &data, uid, gid).err().unwrap();
    assert!(matches!(e, DbTlsError::Files(crate::beneath::BeneathError::Refused { .. })), "{e:?}");
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    let e = TlsFiles::open(&[elsewhere.path().to_owned()], Path::new("/etc/ssl"), uid, gid).err().unwrap();
    assert!(matches!(e, DbTlsError::NotBeneathDataRoot(_)), "{e:?}");
}

#[test]
fn a_link_at_the_certificate_is_not_read() {
    let (dir, data) = root();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("x"), "secret").unwrap();
    symlink(outside.path().join("x"), data.join(CERT)).unwrap();
    let files = open(dir.path(), &data);
    assert!(files.read_cert().is_err(), "refused, not followed");
    std::fs::remove_file(data.join(CERT)).unwrap();
    assert_eq!(files.read_cert().unwrap(), None);
}
