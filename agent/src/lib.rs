//! dbagent: the node agent of a managed-database platform.
//!
//! The binaries (`dbagent`, `dbagentctl`) are thin; everything lives in this library so it is tested
//! without root and without a network.

pub mod api;
pub mod cli;
pub mod backup;
pub mod config;
pub mod daemon;
pub mod fsutil;
pub mod ids;
pub mod instances;
pub mod locks;
pub mod logging;
pub mod metrics;
pub mod logs;
pub mod notify;
pub mod ops;
pub mod requests;
pub mod timefmt;
pub mod tls;
pub mod volume;
