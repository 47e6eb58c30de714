//! Prometheus text exposition format 0.0.4 of the latest snapshots.
//!
//! Names: `dbagent_node_<metric>` and `dbagent_instance_<metric>` with the instance id in the
//! `instance` label, base units in the name (`_bytes`, `_seconds`, `_ratio`), `_total` on counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use super::model::{Kind, Metric, Owner, Snapshot};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn family_name(owner: &Owner, metric: Metric) -> String {
    let prefix = match owner {
        Owner::Node => "dbagent_node_",
        Owner::Instance(_) => "dbagent_instance_",
    };
    format!("{prefix}{}", metric.info().name)
}

fn escape_label(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Renders every snapshot; families are contiguous with one HELP and TYPE line each, as the format
/// requires.
pub fn render(snapshots: &[Arc<Snapshot>]) -> String {
    // (is_instance, metric) -> lines of that family
    let mut families: BTreeMap<(bool, Metric), String> = BTreeMap::new();
    for s in snapshots {
        let instance = match &s.owner {
            Owner::Node => None,
            Owner::Instance(id) => Some(id.as_str()),
        };
        for p in &s.points {
            let family = families.entry((instance.is_some(), p.key.metric)).or_default();
            family.push_str(&family_name(&s.owner, p.key.metric));
            let labels = instance
                .map(|id| ("instance", id))
                .into_iter()
                .chain(p.key.labels.iter().map(|(k, v)| (*k, v.as_str())));
            let mut first = true;
            for (k, v) in labels {
                family.push(if first { '{' } else { ',' });
                first = false;
                family.push_str(k);
                family.push_str("=\"");
                escape_label(v, family);
                family.push('"');
            }
            if !first {
                family.push('}');
            }
            let _ = writeln!(family, " {}", p.value());
        }
    }
    let mut out = String::with_capacity(families.values().map(|f| f.len() + 160).sum());
    for ((is_instance, metric), lines) in &families {
        let owner = if *is_instance { Owner::Instance(String::new()) } else { Owner::Node };
        let name = family_name(&owner, *metric);
        let info = metric.info();
        let kind = match info.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(out, "# HELP {name} {}", info.help);
        let _ = writeln!(out, "# TYPE {name} {kind}");
        out.push_str(lines);
    }
    out
}
