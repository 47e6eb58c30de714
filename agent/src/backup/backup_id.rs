//! Backup ids: `b` + 20 lower-case hex digits, 12 of them the creation time in milliseconds since
//! the epoch and 8 random. Ids sort by the time they were made, and an id is never made twice:
//! an id that came back (a request retried after its operation record was pruned) would let that
//! run's failure clean-up delete the completed backup it collided with. The backup job also checks
//! that no destination holds anything under a new id before writing (`backup_job`).

use std::time::SystemTime;

use super::BackupError;
use crate::ids::InvalidField;

/// A fresh backup id for a backup starting at `now`.
pub fn new_backup_id(now: SystemTime) -> Result<String, BackupError> {
    let millis = now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let mut random = [0u8; 4];
    getrandom::fill(&mut random).map_err(BackupError::Random)?;
    // 48 bits of milliseconds last until the year 10889.
    Ok(format!("b{:012x}{}", millis & 0xffff_ffff_ffff, crate::hex::encode(&random)))
}

pub fn check_backup_id(id: &str) -> Result<(), InvalidField> {
    let ok = id.len() == 21 && id.starts_with('b') && id[1..].bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(())
    } else {
        Err(InvalidField::new(
            "backup_id",
            format!("{:?} is not a backup id (b and 20 hex digits)", crate::ids::truncate_for_message(id)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ids_are_valid_distinct_and_sort_by_time() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let a = new_backup_id(t).unwrap();
        let b = new_backup_id(t).unwrap();
        check_backup_id(&a).unwrap();
        assert_ne!(a, b, "the same millisecond still gives two ids");
        assert_eq!(a[..13], b[..13], "both carry the same time");
        let later = new_backup_id(t + Duration::from_millis(1)).unwrap();
        assert!(later > a && later > b, "{later} sorts after {a} and {b}");
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| new_backup_id(t).unwrap()).collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn only_backup_ids_pass() {
        check_backup_id("b0123456789abcdef0123").unwrap();
        for bad in ["../etc", "b0123456789abcdef012", "b0123456789abcdef0123/..", "x0123456789abcdef0123", ""] {
            assert_eq!(check_backup_id(bad).unwrap_err().field, "backup_id", "{bad}");
        }
    }
}
