//! dbagent: the node agent of a managed-database platform.
//!
//! The binaries (`dbagent`, `dbagentctl`) are thin; everything lives in this library so it is tested
//! without root and without a network.

pub mod api;
pub mod availability;
pub mod backup;
pub mod beneath;
pub mod cli;
pub mod command;
pub mod config;
pub mod daemon;
pub mod dbtls;
pub mod error;
pub mod fsutil;
pub mod health;
pub mod hex;
pub mod host_inventory;
pub mod ids;
pub mod instances;
pub mod json_store;
pub mod keyservice_client;
pub mod locks;
pub mod logs;
pub mod maintenance;
pub mod metrics;
pub mod ops;
pub mod plan;
pub mod recovery_key;
pub mod requests;
pub mod systemd;
pub mod timefmt;
pub mod tls;
pub mod upgrade;
pub mod volume;
