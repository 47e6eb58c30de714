//! "Right server, or nothing": before a dump, and before a logical restore into the instance's
//! server, the server at the connection must say it serves the instance's own data directory, so
//! that a connection aimed at another instance's server never mixes two instances' data.

use std::path::Path;

use super::BackupError;
use super::engine_commands;
use super::settings::EngineConnection;
use crate::command::CommandError;
use crate::instances::Instance;

/// Refuses unless the server at `conn` serves the instance's data directory (links resolved).
/// A server that does not answer is told apart from one that answers with another folder.
pub async fn check_serves(instance: &Instance, conn: &EngineConnection) -> Result<(), BackupError> {
    let engine = instance.spec.engine.as_str();
    let at = format!("{} port {}", conn.host, conn.port);
    let query = engine_commands::data_dir_query(instance.spec.engine, conn).run_as(&instance.spec.os_user)?;
    let said = match query.output().await {
        Ok(out) => out,
        Err(source @ CommandError::Failed { .. }) => {
            return Err(BackupError::ServerNotAnswering { engine, at, source });
        }
        Err(other) => return Err(other.into()),
    };
    let said = String::from_utf8_lossy(&said);
    let served = said.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or_default();
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    if served.is_empty() || canonical(Path::new(served)) != canonical(&instance.spec.data_dir) {
        return Err(BackupError::WrongServer {
            engine,
            at,
            served: served.to_owned(),
            data_dir: instance.spec.data_dir.clone(),
            instance: instance.id.clone(),
        });
    }
    Ok(())
}
