//! Conversions between the generated `dbagent.v1` types and the domain model, at the API edge only.

pub mod instance;

use std::time::SystemTime;

/// A protobuf timestamp for `t`; times before 1970 become negative seconds with positive nanos,
/// as google.protobuf.Timestamp requires.
pub fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
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
