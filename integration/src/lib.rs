//! Fixtures for the end-to-end tests: real servers on free 127.0.0.1 ports with private data
//! folders, stopped by RAII guards (also on panic).

pub mod servers;
pub mod backup_harness;
pub mod garage;
