//! The restore drill (`backup.drill`): proof that a backup restores into a working database.
//!
//! Steps, each named in the error when it fails: the engine's binaries are found from the
//! instance's engine version; a scratch folder `<drill_dir>/<operation id>` is made; the backup
//! is restored into it through the restore code (`restore_job`, which authenticates the manifest
//! and checks every chunk): a physical backup into `data/`, a logical one into an empty server
//! initialised there; the engine runs on it as a throw-away server, as the instance's OS user, on
//! a unix socket in `run/` and no TCP port (checked from /proc once it answers); a real query
//! counts the rows of a table the instance owns; the server is stopped and the scratch folder
//! removed, on success, failure and cancel alike (and at start-up for a drill cut short by a
//! crash, `drill_scratch::clean_leftovers`). The outcome is recorded in the drill store either way.
//!
//! The scratch folder and `drill_dir` are root's with mode 0711: the instance's user must pass
//! through them to its data folder but can neither list nor change them; `data/` and `run/` are
//! that user's, 0700, so no other user reaches the server.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};
use thiserror::Error;

use super::BackupError;
use super::catalog::BackupInfo;
use super::drill_engine::{self as de, EngineBinaries, Scratch};
use super::drill_scratch::{listens_on_tcp, prepare_scratch, remove_scratch};
use super::drill_store::DrillOutcome;
use super::engine_commands::RestoreTarget;
use super::manifest::BackupMethod;
use super::resources::BackupResources;
use super::restore_job::{blocking, os_user_ids, run_beneath};
use super::settings::EngineConnection;
use crate::command::{CommandError, ToolCommand, ToolExit};
use crate::instances::{Engine, Instance};
use crate::ops::{JobContext, Progress};

/// How long a throw-away server may take to answer (a physical backup replays its WAL first).
const START_DEADLINE: Duration = Duration::from_secs(600);
/// How long the count may take.
const QUERY_DEADLINE: Duration = Duration::from_secs(600);
/// How long a stopped server may take to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(60);

#[derive(Debug, Error)]
pub enum DrillError {
    #[error(
        "the {engine} server binary {} needed by the drill is missing; install the engine's server package on this host",
        path.display()
    )]
    BinaryMissing { engine: &'static str, path: PathBuf },
    #[error(
        "the instance's engine_version {version:?} names no PostgreSQL major version, so the drill cannot choose a server binary; set it (e.g. \"15\")"
    )]
    NoPostgresMajor { version: String },
    #[error("instance {instance} has no complete backup to drill; take a backup first")]
    NoCompleteBackup { instance: String },
    #[error("restore drill failed at step \"{step}\": {source}")]
    Step { step: &'static str, source: Box<BackupError> },
    #[error("restore drill failed at step \"{step}\": {message}")]
    Failed { step: &'static str, message: String },
}

impl crate::error::HasErrorCode for DrillError {
    fn code(&self) -> crate::error::ErrorCode {
        use crate::error::ErrorCode;
        match self {
            DrillError::BinaryMissing { .. } | DrillError::NoPostgresMajor { .. } => ErrorCode::FailedPrecondition,
            DrillError::NoCompleteBackup { .. } => ErrorCode::NotFound,
            DrillError::Step { source, .. } => source.code(),
            DrillError::Failed { .. } => ErrorCode::Internal,
        }
    }
}

fn step<T>(name: &'static str, r: Result<T, impl Into<BackupError>>) -> Result<T, BackupError> {
    r.map_err(|e| match e.into() {
        // Already a drill error (a nested step): keep the innermost step's name.
        e @ BackupError::Drill(_) => e,
        BackupError::Cancelled => BackupError::Cancelled,
        e => DrillError::Step { step: name, source: Box::new(e) }.into(),
    })
}

fn failed(step: &'static str, message: impl Into<String>) -> BackupError {
    DrillError::Failed { step, message: message.into() }.into()
}

/// What the drill found in the restored database.
#[derive(Debug, Default)]
struct Found {
    database: String,
    table: String,
    rows: u64,
}

/// The `backup.drill` operation's body.
pub async fn run(
    res: &BackupResources,
    instance: &Instance,
    info: &BackupInfo,
    source: &str,
    ctx: &JobContext,
) -> Result<serde_json::Value, BackupError> {
    let started = Instant::now();
    let op_id = ctx.operation_id();
    let scratch = Scratch { root: res.settings.drill_dir.join(&op_id) };
    let result = drill(res, instance, info, source, &scratch, ctx).await;
    let drill_dir = res.settings.drill_dir.clone();
    let removed = tokio::task::spawn_blocking(move || remove_scratch(&drill_dir, &op_id)).await;
    if let Ok(Err(e)) | Err(e) = removed.map_err(|e| BackupError::io("join a blocking task", std::io::Error::other(e)))
    {
        tracing::error!(instance = %instance.id, "restore drill: remove the scratch folder {}: {e:#}", scratch.root.display());
    }
    let backup_id = info.manifest.backup_id.clone();
    // A cancelled drill (CancelOperation, shutdown) proved nothing either way: not recorded, not
    // counted as a failure; the scheduler's request id for this slot keeps it from running again.
    if let Err(BackupError::Cancelled) = result {
        return Err(BackupError::Cancelled);
    }
    let found = result.as_ref().ok();
    let outcome = DrillOutcome {
        operation_id: ctx.operation_id(),
        backup_id: backup_id.clone(),
        ok: result.is_ok(),
        reason: result.as_ref().err().map(|e| format!("{e:#}")).unwrap_or_default(),
        table: found.map(|f| f.table.clone()).unwrap_or_default(),
        database: found.map(|f| f.database.clone()).unwrap_or_default(),
        rows: found.map_or(0, |f| f.rows),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        finished: SystemTime::now(),
    };
    match &result {
        Ok(f) => {
            tracing::info!(instance = %instance.id, backup = %backup_id, table = %f.table, rows = f.rows, "restore drill succeeded")
        }
        Err(e) => tracing::warn!(instance = %instance.id, backup = %backup_id, "restore drill failed: {e:#}"),
    }
    let duration_ms = outcome.duration_ms;
    res.drills.record(&instance.id, outcome)?;
    let found = result?;
    Ok(serde_json::json!({
        "backup_id": backup_id,
        "ok": true,
        "database": found.database,
        "table": found.table,
        "rows": found.rows,
        "duration_ms": duration_ms,
    }))
}

async fn drill(
    res: &BackupResources,
    instance: &Instance,
    info: &BackupInfo,
    source: &str,
    scratch: &Scratch,
    ctx: &JobContext,
) -> Result<Found, BackupError> {
    let engine = instance.spec.engine;
    let method = info.manifest.method;
    let bins = find_binaries(engine, method, &instance.spec.engine_version)?;
    let user = instance.spec.os_user.clone();
    let superuser = if user.is_empty() { "postgres".to_owned() } else { user.clone() };
    let report = |message: &str| {
        ctx.progress(Progress { done: 0, total: 0, unit: String::new(), message: format!("drill: {message}") })
    };

    report("prepare the scratch folder");
    let owner = step("prepare the scratch folder", os_user_ids(&user))?;
    let (drill_dir, name, files) = (
        res.settings.drill_dir.clone(),
        scratch.root.file_name().map(|n| n.to_owned()).unwrap_or_default(),
        de::config_files(engine, scratch),
    );
    step("prepare the scratch folder", blocking(move || prepare_scratch(&drill_dir, &name, owner, &files)).await)?;
    let conn = de::connection(engine, &bins, scratch, &superuser);

    let mut server = if method == BackupMethod::Logical {
        report("initialise an empty server");
        if let Some(init) = de::init_command(engine, &bins, scratch, &superuser) {
            step("initialise an empty server", cancellable(ctx, init.run_as(&user)?.output()).await)?;
        }
        let mut server = start(engine, &bins, scratch, &user, &conn, ctx).await?;
        report("load the dump");
        let target = RestoreTarget::Server { connection: conn.clone(), database: None, instance_server: false };
        let loaded = server
            .while_up("load the dump", run_beneath(res, &res.keys, &[], instance, info, source, &target, ctx))
            .await;
        if let Err(e) = step("load the dump", loaded) {
            let _ = server.stop().await;
            return Err(e);
        }
        server
    } else {
        report("restore the backup");
        let target = RestoreTarget::DataDir(scratch.data());
        let roots = [scratch.root.clone()];
        step("restore the backup", run_beneath(res, &res.keys, &roots, instance, info, source, &target, ctx).await)?;
        start(engine, &bins, scratch, &user, &conn, ctx).await?
    };

    report("query a table");
    let found = server.while_up("query a table", query(engine, &conn, &user, ctx)).await;
    let stopped = server.stop().await;
    let found = found?;
    if let Err(e) = stopped {
        tracing::info!(instance = %instance.id, "restore drill: the throw-away server's exit: {e:#}");
    }
    Ok(found)
}

fn find_binaries(engine: Engine, method: BackupMethod, version: &str) -> Result<EngineBinaries, BackupError> {
    let bins =
        de::binaries(engine, version).ok_or_else(|| DrillError::NoPostgresMajor { version: version.to_owned() })?;
    let mut needed = vec![&bins.server];
    if method == BackupMethod::Logical {
        needed.extend(bins.init.as_ref());
    }
    if let Some(missing) = needed.into_iter().find(|p| !p.is_file()) {
        return Err(DrillError::BinaryMissing { engine: engine.as_str(), path: missing.clone() }.into());
    }
    Ok(bins)
}

async fn cancellable<T>(
    ctx: &JobContext,
    work: impl std::future::Future<Output = Result<T, CommandError>>,
) -> Result<T, BackupError> {
    tokio::select! {
        r = work => Ok(r?),
        () = ctx.cancel.cancelled() => Err(BackupError::Cancelled),
    }
}

/// A throw-away server while it runs.
struct Server {
    pid: u32,
    stop_signal: nix::sys::signal::Signal,
    exit: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), CommandError>> + Send>>,
    exited: bool,
}

impl Server {
    /// Runs `work` unless the server exits first (then the server's exit, with its stderr tail,
    /// is the error).
    async fn while_up<T>(
        &mut self,
        step: &'static str,
        work: impl std::future::Future<Output = Result<T, BackupError>>,
    ) -> Result<T, BackupError> {
        tokio::select! {
            r = work => r,
            exit = &mut self.exit, if !self.exited => {
                self.exited = true;
                Err(failed(step, format!("the throw-away server stopped: {}", match exit {
                    Ok(()) => "it exited with status 0".to_owned(),
                    Err(e) => e.to_string(),
                })))
            }
        }
    }

    /// Asks the server to stop, kills it after a grace time; its exit (with stderr tail).
    async fn stop(mut self) -> Result<(), CommandError> {
        if self.exited {
            return Ok(());
        }
        // Already exited and reaped: its pid may belong to another process by now, never signal it.
        if let Some(exit) = futures::FutureExt::now_or_never(&mut self.exit) {
            return exit;
        }
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid).unwrap_or(i32::MAX));
        let _ = nix::sys::signal::kill(pid, self.stop_signal);
        match tokio::time::timeout(STOP_GRACE, &mut self.exit).await {
            Ok(exit) => exit,
            // Dropping the exit watcher kills the server (kill_on_drop).
            Err(_) => Ok(()),
        }
    }
}

/// Starts the throw-away server and waits until it answers; checks that it opened no TCP port.
async fn start(
    engine: Engine,
    bins: &EngineBinaries,
    scratch: &Scratch,
    user: &str,
    conn: &EngineConnection,
    ctx: &JobContext,
) -> Result<Server, BackupError> {
    let command = step("start the server", de::server_command(engine, bins, scratch).run_as(user))?;
    let (pid, exit): (u32, ToolExit) = step("start the server", command.spawn_service())?;
    let stop_signal = match engine {
        // Fast shutdown: no waiting for clients.
        Engine::Postgresql => nix::sys::signal::Signal::SIGINT,
        Engine::Mariadb | Engine::Redis => nix::sys::signal::Signal::SIGTERM,
    };
    let mut server = Server { pid, stop_signal, exit: Box::pin(exit.wait()), exited: false };
    let probe = step("start the server", de::ready_probe(engine, conn).run_as(user))?;
    let ready = server.while_up("start the server", wait_ready(engine, &probe, ctx)).await;
    if let Err(e) = ready {
        let exit = server.stop().await;
        return Err(match (e, exit) {
            (BackupError::Drill(DrillError::Failed { step, message }), Err(exit)) if message.contains("timed out") => {
                failed(step, format!("{message}; the server's exit: {exit}"))
            }
            (e, _) => e,
        });
    }
    match listens_on_tcp(pid) {
        Ok(false) => Ok(server),
        Ok(true) => {
            let _ = server.stop().await;
            Err(failed("start the server", "the throw-away server listens on a TCP port; it was stopped"))
        }
        Err(e) => {
            let _ = server.stop().await;
            Err(failed("start the server", format!("check the throw-away server's sockets in /proc: {e}")))
        }
    }
}

async fn wait_ready(engine: Engine, probe: &ToolCommand, ctx: &JobContext) -> Result<(), BackupError> {
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        let answered = match engine {
            // While Redis loads the RDB it answers LOADING, not PONG.
            Engine::Redis => probe.output().await.is_ok_and(|o| String::from_utf8_lossy(&o).trim() == "PONG"),
            Engine::Postgresql | Engine::Mariadb => probe.succeeds().await,
        };
        if answered {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(failed(
                "start the server",
                format!("the server did not answer within {START_DEADLINE:?} (timed out)"),
            ));
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            () = ctx.cancel.cancelled() => return Err(BackupError::Cancelled),
        }
    }
}

/// Runs `tool` as `user` with the query deadline; its stdout as text.
async fn ask(tool: ToolCommand, user: &str, ctx: &JobContext) -> Result<String, BackupError> {
    let tool = step("query a table", tool.run_as(user))?;
    match tokio::time::timeout(QUERY_DEADLINE, cancellable(ctx, tool.output())).await {
        Ok(out) => Ok(String::from_utf8_lossy(&step("query a table", out)?).into_owned()),
        Err(_) => Err(failed("query a table", format!("{} did not answer within {QUERY_DEADLINE:?}", tool.name()))),
    }
}

fn count(out: &str, table: &str) -> Result<u64, BackupError> {
    de::parse_count(out)
        .ok_or_else(|| failed("query a table", format!("the count of {table} is not a number: {out:?}")))
}

async fn query(engine: Engine, c: &EngineConnection, user: &str, ctx: &JobContext) -> Result<Found, BackupError> {
    match engine {
        Engine::Postgresql => {
            let databases = ask(de::psql(c, "postgres", de::PG_DATABASES), user, ctx).await?;
            // The table with the most rows across every database of the cluster.
            let mut best: Option<(u64, u64, String, String)> = None;
            for db in databases.lines().map(str::trim).filter(|d| !d.is_empty()).take(1000) {
                let out = ask(de::psql(c, db, de::PG_LARGEST_TABLE), user, ctx).await?;
                if let Some((rows, bytes, table)) = out.lines().next().and_then(de::parse_pg_largest)
                    && best.as_ref().is_none_or(|b| (rows, bytes) > (b.0, b.1))
                {
                    best = Some((rows, bytes, table, db.to_owned()));
                }
            }
            let Some((_, _, table, database)) = best else {
                return Ok(Found::default());
            };
            let out = ask(de::psql(c, &database, &de::count_rows(&table)), user, ctx).await?;
            Ok(Found { rows: count(&out, &table)?, table, database })
        }
        Engine::Mariadb => {
            let out = ask(de::mariadb(c, &de::maria_largest_table()), user, ctx).await?;
            let Some(table) = out.lines().map(str::trim).find(|l| !l.is_empty()).map(str::to_owned) else {
                return Ok(Found::default());
            };
            let out = ask(de::mariadb(c, &de::count_rows(&table)), user, ctx).await?;
            Ok(Found { rows: count(&out, &table)?, table, database: String::new() })
        }
        Engine::Redis => {
            let out = ask(de::redis_cli(c, &["DBSIZE"]), user, ctx).await?;
            let rows = count(&out, "DBSIZE")?;
            if rows == 0 {
                return Ok(Found::default());
            }
            let key = ask(de::redis_cli(c, &["RANDOMKEY"]), user, ctx).await?;
            let key = key.strip_suffix('\n').unwrap_or(&key).to_owned();
            // DUMP reads the whole value, whatever its type.
            let value = ask(de::redis_cli(c, &["DUMP", &key]), user, ctx).await?;
            if value.trim().is_empty() {
                return Err(failed("query a table", format!("key {key:?} named by RANDOMKEY could not be read")));
            }
            Ok(Found { rows, table: key, database: "0".into() })
        }
    }
}
