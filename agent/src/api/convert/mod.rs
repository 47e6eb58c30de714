//! Proto <-> domain conversions, at the API edge only.

pub mod instance;
pub mod operation;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp { seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX), nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0) }
}

pub fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX), nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0) }
}

/// A proto duration that must be present and not negative.
pub fn duration_from_proto(field: &str, d: Option<prost_types::Duration>) -> Result<Duration, crate::ids::InvalidField> {
    let d = d.ok_or_else(|| crate::ids::InvalidField::new(field, "is required"))?;
    let (Ok(secs), Ok(nanos)) = (u64::try_from(d.seconds), u32::try_from(d.nanos)) else {
        return Err(crate::ids::InvalidField::new(field, "must not be negative"));
    };
    if nanos >= 1_000_000_000 {
        return Err(crate::ids::InvalidField::new(field, "has nanos out of range"));
    }
    Ok(Duration::new(secs, nanos))
}
