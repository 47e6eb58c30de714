use dbagent_proto::v1 as pb;
use std::time::SystemTime;

use super::timestamp;
use crate::ids::InvalidField;
use crate::metrics::model::Kind;
use crate::metrics::{Owner, Snapshot};

impl From<&Snapshot> for pb::MetricSnapshot {
    fn from(s: &Snapshot) -> Self {
        pb::MetricSnapshot {
            time: Some(timestamp(s.time)),
            instance_id: match &s.owner {
                Owner::Node => String::new(),
                Owner::Instance(id) => id.clone(),
            },
            samples: s
                .points
                .iter()
                .map(|p| {
                    let info = p.key.metric.info();
                    pb::Sample {
                        name: info.name.into(),
                        labels: p.key.labels.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
                        value: p.value(),
                        counter: info.kind == Kind::Counter,
                    }
                })
                .collect(),
        }
    }
}

/// `None` when absent (the latest sample); a missing end means now.
pub fn range_from_proto(range: Option<pb::TimeRange>) -> Result<Option<(SystemTime, SystemTime)>, InvalidField> {
    let Some(range) = range else { return Ok(None) };
    let time = |field: &str, t: prost_types::Timestamp| {
        SystemTime::try_from(t).map_err(|_| InvalidField::new(field, "is not a valid timestamp"))
    };
    let start = range.start.map(|t| time("range.start", t)).transpose()?.unwrap_or(SystemTime::UNIX_EPOCH);
    let end = range.end.map(|t| time("range.end", t)).transpose()?.unwrap_or_else(SystemTime::now);
    Ok(Some((start, end)))
}
