//! The availability metrics in the Prometheus text format, for the metrics hub's expositions: per
//! instance, the current month's budget used ratio (alerts at 0.5 and 0.9) and unplanned downtime.

use std::fmt::Write as _;

use super::ledger::Ledger;
use super::month::{Month, MonthFigures, figures};
use crate::instances::model::PlanName;

/// A family: name, help, and the value of one instance's figures.
type Family = (&'static str, &'static str, fn(&MonthFigures) -> f64);

/// The families for `instances` (id and plan), this month as seen by the ledger's clock.
pub fn render(ledger: &Ledger, instances: &[(String, PlanName)]) -> String {
    if instances.is_empty() {
        return String::new();
    }
    let now = ledger.now();
    let month = Month::containing(now);
    let rows: Vec<(&str, MonthFigures)> =
        instances.iter().map(|(id, plan)| (id.as_str(), figures(month, *plan, &ledger.intervals(id), now))).collect();
    let families: [Family; 3] = [
        (
            "dbagent_availability_budget_used_ratio",
            "Unplanned downtime this calendar month (UTC) over the plan's allowed downtime for the month; alert at 0.5 and 0.9, above 1 the objective is missed.",
            |f| f.budget_used_ratio,
        ),
        (
            "dbagent_availability_unplanned_downtime_seconds",
            "Unplanned downtime of the instance this calendar month (UTC).",
            |f| f.unplanned_secs as f64,
        ),
        (
            "dbagent_availability_unknown_seconds",
            "Time this calendar month (UTC) the agent was not running and measured nothing.",
            |f| f.unknown_secs as f64,
        ),
    ];
    let mut out = String::new();
    for (name, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (id, f) in &rows {
            // Instance ids are [a-z0-9-]: nothing to escape in the label.
            let _ = writeln!(out, "{name}{{instance=\"{id}\"}} {}", value(f));
        }
    }
    out
}
