//! Logs: proto <-> domain.

use dbagent_proto::v1 as pb;
use dbagent_proto::v1::drain::Target;
use std::time::SystemTime;

use super::timestamp;
use crate::ids::InvalidField;
use crate::logs::{DrainSpec, DrainStatus, DrainTarget, LogRecord, Severity, TailRequest};

pub fn severity_to_proto(s: Severity) -> pb::Severity {
    match s {
        Severity::Unspecified => pb::Severity::Unspecified,
        Severity::Debug => pb::Severity::Debug,
        Severity::Info => pb::Severity::Info,
        Severity::Notice => pb::Severity::Notice,
        Severity::Warning => pb::Severity::Warning,
        Severity::Error => pb::Severity::Error,
        Severity::Critical => pb::Severity::Critical,
    }
}

pub fn severity_from_proto(s: i32) -> Result<Severity, InvalidField> {
    Ok(
        match pb::Severity::try_from(s)
            .map_err(|_| InvalidField::new("min_severity", format!("{s} is not a Severity")))?
        {
            pb::Severity::Unspecified => Severity::Unspecified,
            pb::Severity::Debug => Severity::Debug,
            pb::Severity::Info => Severity::Info,
            pb::Severity::Notice => Severity::Notice,
            pb::Severity::Warning => Severity::Warning,
            pb::Severity::Error => Severity::Error,
            pb::Severity::Critical => Severity::Critical,
        },
    )
}

pub fn tail_request_from_proto(r: pb::TailLogsRequest) -> Result<TailRequest, InvalidField> {
    let since = r
        .since
        .map(SystemTime::try_from)
        .transpose()
        .map_err(|_| InvalidField::new("since", "is not a valid timestamp"))?;
    Ok(TailRequest {
        instance: (!r.instance_id.is_empty()).then_some(r.instance_id),
        last_lines: r.last_lines,
        since,
        follow: r.follow,
        min_severity: severity_from_proto(r.min_severity)?,
    })
}

pub fn record_to_proto(r: &LogRecord, missed_before: u64) -> pb::LogRecord {
    pb::LogRecord {
        time: Some(timestamp(r.time)),
        instance_id: r.instance.to_string(),
        source: r.source.to_string(),
        severity: severity_to_proto(r.severity).into(),
        message: r.message.clone(),
        missed_before,
    }
}

pub fn drain_from_proto(i: usize, d: pb::Drain) -> Result<DrainSpec, InvalidField> {
    let target = match d.target {
        Some(Target::Syslog(s)) => DrainTarget::Syslog { address: s.address, tls: s.tls, ca_pem: s.ca_pem },
        Some(Target::Https(h)) => DrainTarget::Https { url: h.url, ca_pem: h.ca_pem },
        None => return Err(InvalidField::new(format!("drains[{i}]"), "needs a target: syslog or https")),
    };
    Ok(DrainSpec { name: d.name, target })
}

pub fn drain_to_proto(d: &DrainSpec) -> pb::Drain {
    let target = match &d.target {
        DrainTarget::Syslog { address, tls, ca_pem } => {
            Target::Syslog(pb::SyslogDrain { address: address.clone(), tls: *tls, ca_pem: ca_pem.clone() })
        }
        DrainTarget::Https { url, ca_pem } => {
            Target::Https(pb::HttpsDrain { url: url.clone(), ca_pem: ca_pem.clone() })
        }
    };
    pb::Drain { name: d.name.clone(), target: Some(target) }
}

/// As [`drain_to_proto`], for a caller who must not see secrets: URLs without user-info and query.
pub fn drain_to_proto_redacted(d: &DrainSpec) -> pb::Drain {
    let mut drain = drain_to_proto(d);
    if let Some(Target::Https(h)) = &mut drain.target {
        h.url = crate::logs::drain::endpoint::redact_url(&h.url);
    }
    drain
}

pub fn drain_status_to_proto(s: &DrainStatus) -> pb::DrainStatus {
    pb::DrainStatus {
        drain: s.name.clone(),
        buffered_bytes: s.buffer.buffered_bytes,
        dropped_records: s.buffer.dropped_records,
        last_ack: s.buffer.last_ack.map(timestamp),
        last_error: s.last_error.clone(),
        buffered_records: s.buffer.buffered_records,
        delivered_records: s.delivered_records,
        buffer_error: s.buffer_error.clone(),
        buffer_write_failures: s.buffer_write_failures,
        corrupt_frames: s.buffer.corrupt_frames,
        refused_files: s.refused_files,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drains_round_trip_and_severities_map() {
        let d = DrainSpec {
            name: "a".into(),
            target: DrainTarget::Syslog { address: "h:1".into(), tls: true, ca_pem: "x".into() },
        };
        assert_eq!(drain_from_proto(0, drain_to_proto(&d)).unwrap(), d);
        assert!(drain_from_proto(0, pb::Drain { name: "a".into(), target: None }).is_err());
        assert_eq!(severity_from_proto(pb::Severity::Warning.into()).unwrap(), Severity::Warning);
        assert!(severity_from_proto(99).is_err());
        let r = tail_request_from_proto(pb::TailLogsRequest {
            instance_id: String::new(),
            follow: true,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(r.instance, None);
    }
}
