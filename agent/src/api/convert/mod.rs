//! Conversions between the generated `dbagent.v1` types and the domain model, at the API edge only.

pub mod availability;
pub mod backup;
pub mod certificate;
pub mod host_inventory;
pub mod instance;
pub mod logs;
pub mod metrics;
pub mod operation;
pub mod volume;

use std::time::{Duration, SystemTime};

/// A protobuf timestamp for `t`; times before 1970 become negative seconds with positive nanos,
/// as google.protobuf.Timestamp requires.
pub fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

pub fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A proto duration that must be present and not negative.
pub fn duration_from_proto(
    field: &str,
    d: Option<prost_types::Duration>,
) -> Result<Duration, crate::ids::InvalidField> {
    let d = d.ok_or_else(|| crate::ids::InvalidField::new(field, "is required"))?;
    let (Ok(secs), Ok(nanos)) = (u64::try_from(d.seconds), u32::try_from(d.nanos)) else {
        return Err(crate::ids::InvalidField::new(field, "must not be negative"));
    };
    if nanos >= 1_000_000_000 {
        return Err(crate::ids::InvalidField::new(field, "has nanos out of range"));
    }
    Ok(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps() {
        let t = timestamp(UNIX_EPOCH + Duration::new(1_700_000_000, 5_000_000));
        assert_eq!((t.seconds, t.nanos), (1_700_000_000, 5_000_000));
        let t = timestamp(UNIX_EPOCH - Duration::from_millis(1500));
        assert_eq!((t.seconds, t.nanos), (-2, 500_000_000));
    }
}
