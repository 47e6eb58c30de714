//! Availability (issue 15): the durable downtime ledger (`ledger`) and a calendar month's figures
//! against the plan's objective (`month`), served by `Upgrades/GetAvailability`, exported as
//! metrics (`metrics_text`) and shown by `dbagentctl availability`. The health probes
//! (`crate::health`) open and close the intervals: unplanned, planned while a disruptive operation
//! runs on the instance, unknown when the agent could not measure.

pub mod heartbeat;
pub mod ledger;
pub mod metrics_text;
pub mod month;

#[cfg(test)]
mod ledger_tests;
#[cfg(test)]
mod month_tests;

pub use ledger::{Interval, IntervalKind, Ledger, LedgerError, Recovery};
pub use month::{BadMonth, Month, MonthFigures, figures, objective_percent};
