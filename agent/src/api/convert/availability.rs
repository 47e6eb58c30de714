//! A month's availability figures to the proto answer.

use dbagent_proto::v1 as pb;

use crate::availability::MonthFigures;
use crate::health::ProbeStatus;

/// `probe`: the instance's last health probe, if one ran since the agent started.
pub fn availability_to_proto(
    instance_id: &str,
    f: &MonthFigures,
    picture: String,
    probe: Option<&ProbeStatus>,
) -> pb::Availability {
    pb::Availability {
        instance_id: instance_id.to_owned(),
        month: f.month.to_string(),
        objective_percent: f.objective_percent,
        allowed_downtime_seconds: f.allowed_downtime_secs,
        downtime_seconds: f.unplanned_secs,
        last_probe: probe.map(|p| prost_types::Timestamp::from(p.at)),
        healthy: probe.is_some_and(|p| p.healthy),
        uptime_percent: f.uptime_percent,
        unplanned_downtime_seconds: f.unplanned_secs,
        planned_downtime_seconds: f.planned_secs,
        unknown_seconds: f.unknown_secs,
        month_seconds: f.month_secs,
        measured_seconds: f.measured_secs,
        budget_left_seconds: f.budget_left_secs,
        budget_used_ratio: f.budget_used_ratio,
        complete: f.measured_secs == f.month_secs,
        picture,
    }
}
