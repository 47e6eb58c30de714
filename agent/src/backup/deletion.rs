//! Removing a backup everywhere, for DeleteBackup and for retention: manifests first on every
//! destination, so the backup stops existing before its data goes; then the data objects.

use std::sync::Arc;

use super::BackupError;
use super::backup_id::check_backup_id;
use super::destination::Destination;
use super::manifest::{data_key, manifest_key};

/// Removes `backup` of `instance` from every destination. Destinations that fail are named in the
/// error; the others are cleaned all the same, and a retry finishes the job. The object names come
/// from the two ids alone, checked here again since this is the last step before anything goes.
pub async fn delete_everywhere(
    destinations: &[Arc<dyn Destination>],
    instance: &str,
    backup: &str,
) -> Result<(), BackupError> {
    crate::ids::instance_id("instance_id", instance)?;
    check_backup_id(backup)?;
    let mut reasons = Vec::new();
    for key in [manifest_key(instance, backup), data_key(instance, backup)] {
        for dest in destinations {
            if let Err(e) = dest.delete(&key).await {
                reasons.push(e.to_string());
            }
        }
    }
    if reasons.is_empty() { Ok(()) } else { Err(BackupError::DeleteIncomplete { backup: backup.to_owned(), reasons }) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::destination::dir::DirDestination;
    use bytes::Bytes;

    #[tokio::test]
    async fn a_destination_that_cannot_delete_is_named_and_the_others_are_cleaned() {
        let root = tempfile::tempdir().unwrap();
        let dests: Vec<Arc<dyn Destination>> = ["az1", "az2"]
            .iter()
            .map(|az| Arc::new(DirDestination::new(az, &root.path().join(az))) as Arc<dyn Destination>)
            .collect();
        for d in &dests {
            d.put(&manifest_key("i1", "b0000000000000000000b"), Bytes::from_static(b"{}")).await.unwrap();
            d.put(&data_key("i1", "b0000000000000000000b"), Bytes::from_static(b"data")).await.unwrap();
        }
        // az2's data object became a folder with something in it: it cannot be deleted as a file.
        let stuck = root.path().join("az2").join(data_key("i1", "b0000000000000000000b"));
        std::fs::remove_file(&stuck).unwrap();
        std::fs::create_dir_all(stuck.join("x")).unwrap();

        let e = delete_everywhere(&dests, "i1", "b0000000000000000000b").await.unwrap_err();
        let BackupError::DeleteIncomplete { backup, reasons } = &e else { panic!("{e:?}") };
        assert_eq!(backup, "b0000000000000000000b");
        assert!(reasons.len() == 1 && reasons[0].contains("az2"), "{reasons:?}");
        assert!(!root.path().join("az1/i1/b0000000000000000000b").exists(), "az1 is cleaned all the same");
        assert!(!root.path().join("az2").join(manifest_key("i1", "b0000000000000000000b")).exists(), "manifest first");

        std::fs::remove_dir_all(&stuck).unwrap();
        delete_everywhere(&dests, "i1", "b0000000000000000000b").await.unwrap();
    }
}
