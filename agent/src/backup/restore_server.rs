//! A logical restore into a running server: all or nothing, and never as the superuser.
//!
//! - The whole backup is read and checked first (every chunk authenticated; chunk count, size and
//!   SHA-256 of the stream against the manifest) into nothing, and only then read again into the
//!   server: a copy damaged anywhere fails, naming the chunk, before the first statement reaches
//!   the server. The second read is checked as it goes too; for PostgreSQL `pg_restore
//!   --single-transaction` rolls back whatever a failure part-way (a copy changed between the two
//!   reads, a statement the server refuses) had done.
//! - PostgreSQL: the dump holds what the tenant put in their database (functions, triggers,
//!   defaults), so `pg_restore` runs as the target database's owner role (`--role`, the owner read
//!   from `pg_database.datdba`), with `--no-owner`: every object it makes belongs to that role.

use super::BackupError;
use super::decode::StoredCopy;
use super::engine_commands::{RestorePlan, RestoreSink, pg_database_owner_query, pg_restore_database};
use super::settings::EngineConnection;
use crate::ops::{JobContext, Progress};

/// Reads the whole copy, checking it, and writes it nowhere.
pub async fn verify_whole(copy: &StoredCopy<'_>, ctx: &JobContext) -> Result<(), BackupError> {
    ctx.progress(Progress {
        done: 0,
        total: copy.backup.manifest.raw_bytes,
        unit: "bytes".into(),
        message: format!("checking the whole backup on {} before restoring", copy.source),
    });
    copy.decode_into(&mut tokio::io::sink(), &ctx.cancel).await?;
    Ok(())
}

/// Makes `plan` run as the owner of the database it restores into: creates the database first if
/// it does not exist (its `before` step; it then belongs to the connecting role), then adds
/// `--role=<owner>` to `pg_restore`.
pub async fn as_database_owner(
    mut plan: RestorePlan,
    c: &EngineConnection,
    database: Option<&str>,
    os_user: &str,
) -> Result<RestorePlan, BackupError> {
    let db = pg_restore_database(c, database);
    let create = plan.before.take();
    let owner = match owner_of(c, db, os_user).await? {
        Some(owner) => owner,
        None => {
            if let Some(create) = create {
                create.run_as(os_user)?.output().await?;
            }
            owner_of(c, db, os_user).await?.ok_or_else(|| {
                BackupError::io(
                    format!("look up the owner of database {db}"),
                    std::io::Error::other("the database does not exist, even after createdb"),
                )
            })?
        }
    };
    tracing::info!(database = db, role = %owner, "restoring as the database's owner");
    plan.into = match plan.into {
        RestoreSink::Tool(tool) => RestoreSink::Tool(tool.arg(format!("--role={owner}"))),
        file @ RestoreSink::File(_) => file,
    };
    Ok(plan)
}

async fn owner_of(c: &EngineConnection, db: &str, os_user: &str) -> Result<Option<String>, BackupError> {
    let out = pg_database_owner_query(c, db).run_as(os_user)?.output().await?;
    let text = String::from_utf8_lossy(&out);
    Ok(text.lines().map(str::trim).rfind(|l| !l.is_empty()).map(str::to_owned))
}
