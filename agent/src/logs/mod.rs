//! Logs: following each instance's log files and journald units, TailLogs for clients, and shipping
//! to drains with at-least-once delivery. `docs/logs.md` describes the guarantees.
//!
//! Data path of a drain: sources (file globs across rotation, journald through journalctl) ->
//! joined records -> the drain's wire format -> its on-disk buffer (with the source checkpoint of
//! every batch) -> the transport, whose acknowledgement commits the checkpoint.
//!
//! Modules depend one way. `settings` (the `[logs]` config), `checkpoint` and `error` import nothing
//! of logs; `record` (records, and the batches sources hand on) and `lines` build on them; the
//! readers (`file_source`, `journald`), `buffer` and `drain` on those; `sources` starts the readers
//! with settings derived from the config; `pipeline` joins sources, buffer and a drain's transport;
//! `manager` runs it all per registered instance, with `hub` for TailLogs. This file only declares
//! and re-exports.

pub mod buffer;
pub mod checkpoint;
pub mod drain;
pub mod error;
pub mod file_source;
pub mod hub;
pub mod journald;
pub mod lines;
pub mod manager;
pub mod open_beneath;
pub mod pipeline;
pub mod record;
pub mod settings;
pub mod sources;

#[cfg(test)]
mod buffer_tests;
#[cfg(test)]
mod file_source_tests;
#[cfg(test)]
mod manager_tests;

pub use drain::{DrainSpec, DrainTarget};
pub use error::LogsError;
pub use hub::{TailItem, TailRequest};
pub use manager::LogManager;
pub use pipeline::DrainStatus;
pub use record::{LogRecord, Severity};
pub use settings::LogsConfig;
