//! Engine settings that follow the plan's memory, and how each is applied.
//!
//! | engine | setting | formula | applied |
//! |---|---|---|---|
//! | PostgreSQL | `shared_buffers` | 25 % of memory, whole MiB | restart (in the window) |
//! | PostgreSQL | `max_connections` | memory / 8 MiB, from 20 to 1000 | restart (in the window) |
//! | MariaDB | `innodb_buffer_pool_size` | 50 % of memory, whole MiB, at least 32 MiB | `SET GLOBAL` (dynamic) |
//! | Redis | `maxmemory` | 75 % of memory, whole MiB | `CONFIG SET` (dynamic) |
//!
//! What stays of the memory is for the engine's per-connection and fork memory and the page cache;
//! `MemoryHigh` (90 %) sits above every one of these.

use serde::{Deserialize, Serialize};

use crate::instances::{Engine, Plan};

const MIB: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HowApplied {
    /// Set in the running server (Redis `CONFIG SET`, MariaDB `SET GLOBAL`).
    Runtime,
    /// Written for the next start; the server restarts inside the maintenance window.
    Restart,
    /// The server already runs with this value.
    Unchanged,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineSetting {
    pub name: String,
    /// The number the setting is compared by: bytes, or a count (`max_connections`).
    pub value: u64,
    /// Only a restart makes the server take it.
    pub needs_restart: bool,
}

impl EngineSetting {
    /// As the engine's configuration writes it (PostgreSQL: `128MB`; the others: bytes).
    pub fn config_value(&self) -> String {
        if self.name == "shared_buffers" { format!("{}MB", self.value / MIB) } else { self.value.to_string() }
    }
}

fn whole_mib(bytes: u64) -> u64 {
    bytes / MIB * MIB
}

/// The settings `plan` gives an instance of `engine`.
pub fn settings_for(engine: Engine, plan: &Plan) -> Vec<EngineSetting> {
    let m = plan.memory_bytes;
    let s = |name: &str, value: u64, needs_restart: bool| EngineSetting { name: name.into(), value, needs_restart };
    match engine {
        Engine::Postgresql => vec![
            s("shared_buffers", whole_mib(m / 4), true),
            s("max_connections", (m / (8 * MIB)).clamp(20, 1000), true),
        ],
        Engine::Mariadb => vec![s("innodb_buffer_pool_size", whole_mib(m / 2).max(32 * MIB), false)],
        Engine::Redis => vec![s("maxmemory", whole_mib(m / 4 * 3), false)],
    }
}

/// The name of the engine's memory buffer that a memory limit must not undercut.
pub fn buffer_setting(engine: Engine) -> &'static str {
    match engine {
        Engine::Postgresql => "shared_buffers",
        Engine::Mariadb => "innodb_buffer_pool_size",
        Engine::Redis => "maxmemory",
    }
}

/// The contents of PostgreSQL's settings file the agent owns (`conf.d/90-dbagent-plan.conf`).
pub fn postgresql_conf(settings: &[EngineSetting]) -> String {
    let mut out =
        String::from("# Written by dbagent from the instance's plan; changed at every plan change. Do not edit.\n");
    for s in settings {
        out.push_str(&format!("{} = '{}'\n", s.name, s.config_value()));
    }
    out
}

/// The MariaDB option group a unit's server reads: Debian's `mariadb@<name>.service` starts it
/// with `--defaults-group-suffix=.<name>`, the single `mariadb.service` reads `[mariadbd]`.
pub fn mariadb_group(unit: &str) -> String {
    let name = unit.strip_suffix(".service").unwrap_or(unit);
    match name.strip_prefix("mariadb@").or_else(|| name.strip_prefix("mysql@")) {
        Some(suffix) if !suffix.is_empty() => format!("mariadbd.{suffix}"),
        _ => "mariadbd".into(),
    }
}

/// The contents of MariaDB's settings file the agent owns for one instance
/// (`90-dbagent-plan-<instance>.cnf` in the server's `conf.d`).
pub fn mariadb_cnf(unit: &str, settings: &[EngineSetting]) -> String {
    let mut out =
        String::from("# Written by dbagent from the instance's plan; changed at every plan change. Do not edit.\n");
    out.push_str(&format!("[{}]\n", mariadb_group(unit)));
    for s in settings {
        out.push_str(&format!("{} = {}\n", s.name, s.config_value()));
    }
    out
}
