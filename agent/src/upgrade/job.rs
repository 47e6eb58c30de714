//! The major upgrade as an operation. Two phases:
//! 1. Checks, nothing disrupted: the old server's settings and extensions, disk space, the new
//!    cluster created with the old one's encoding, locale and checksum setting, `pg_upgrade --check`
//!    against the running old server. A refusal drops the new cluster and names the reason.
//! 2. Downtime: the old cluster stops, pg_upgrade copies (or clones) into the new one, the new one
//!    takes the old port and starts, and must pass the health check and accept a write. Any failure
//!    stops whatever pg_upgrade left running, drops the new cluster and starts the old one, which
//!    pg_upgrade's copy and clone modes never modify. Only then is the instance record changed.
//!
//! Downtime is measured from the last write the old server accepted to the first the new one did.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use super::UpgradeError;
use super::cluster::{self, Layout, UpgradeRun};
use super::health::UpgradeHealth;
use super::plan::{self, Cluster, CopyMode};
use super::recover::{STEP_CREATE_NEW, STEP_STOP_OLD};
use super::server::{OldSettings, ServerAt};
use super::upgrade_port::UpgradePort;
use crate::command::ToolCommand;
use crate::instances::{Instance, Registry};
use crate::ops::{JobContext, JobResult, OpError, Progress};

/// The steps reported as progress.
const STEPS: u64 = 8;

pub struct UpgradeJob {
    pub instance: Instance,
    pub target: u32,
    pub layout: Layout,
    pub share_dir: PathBuf,
    pub data_root: PathBuf,
    pub registry: Arc<Registry>,
    pub health: UpgradeHealth,
    /// Where the instance's server listens (the backup connection's socket folder and port).
    pub socket_dir: String,
    pub port: u16,
}

/// What phase 1 found and made, for phase 2.
struct Prepared {
    old: Cluster,
    new: Cluster,
    new_data: PathBuf,
    mode: CopyMode,
    settings: OldSettings,
    extensions: Vec<String>,
    size_bytes: u64,
}

impl UpgradeJob {
    pub async fn run(self, ctx: JobContext) -> JobResult {
        match self.upgrade(&ctx).await {
            Ok(result) => Ok(Some(result)),
            Err(e) => {
                tracing::warn!(instance = %self.instance.id, "PostgreSQL major upgrade failed: {e}");
                Err(OpError::from_error(&e))
            }
        }
    }

    /// Every step is written to the journal before it is taken: after a crash the recovery at the
    /// next start reads from it how far the upgrade got ([`super::recover`]).
    async fn progress(ctx: &JobContext, done: u64, message: &str) {
        ctx.checkpoint(Progress { done, total: STEPS, unit: "steps".into(), message: message.into() }).await;
    }

    fn server(&self, major_for_psql: u32) -> ServerAt {
        ServerAt {
            os_user: self.instance.spec.os_user.clone(),
            socket_dir: self.socket_dir.clone(),
            port: self.port,
            psql: self.layout.bin(major_for_psql).join("psql"),
        }
    }

    async fn upgrade(&self, ctx: &JobContext) -> Result<serde_json::Value, UpgradeError> {
        Self::progress(ctx, 0, "checking the old cluster").await;
        let p = self.prepare(ctx).await?;
        if ctx.cancel.is_cancelled() {
            let _ = cluster::drop_cluster(&p.new).await;
            return Err(UpgradeError::Cancelled);
        }
        self.switch(ctx, p).await
    }

    /// Phase 1: checks, and the new cluster created and checked by pg_upgrade. Nothing disrupted.
    async fn prepare(&self, ctx: &JobContext) -> Result<Prepared, UpgradeError> {
        let id = &self.instance.id;
        let spec = &self.instance.spec;
        let from = plan::current_major(id, &spec.engine_version)?;
        let old = Cluster::from_unit(id, &spec.systemd_unit)?;
        if old.major != from {
            return Err(UpgradeError::Unsupported {
                instance: id.clone(),
                message: format!("its unit {} is not of its engine_version {from}", spec.systemd_unit),
            });
        }
        let new = old.with_major(self.target);
        let at = self.server(self.target);
        let read = |step: &'static str| move |message: String| UpgradeError::Step { step, message };
        let settings = at.settings().await.map_err(read("read the old server's settings"))?;
        if settings.version_num / 10000 != from {
            return Err(UpgradeError::Unsupported {
                instance: id.clone(),
                message: format!("the server on port {} runs {}, not {from}", self.port, settings.version_num),
            });
        }
        let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        if canonical(&settings.data_dir) != canonical(&spec.data_dir) {
            return Err(UpgradeError::Unsupported {
                instance: id.clone(),
                message: format!(
                    "the server on port {} serves {}, not the instance's {}",
                    self.port,
                    settings.data_dir.display(),
                    spec.data_dir.display()
                ),
            });
        }

        Self::progress(ctx, 1, "checking extensions and disk space").await;
        let extensions = at.extensions().await.map_err(read("list the installed extensions"))?;
        let ext_dir = self.share_dir.join(self.target.to_string()).join("extension");
        let missing: Vec<&str> =
            extensions.iter().filter(|e| !ext_dir.join(format!("{e}.control")).is_file()).map(String::as_str).collect();
        if !missing.is_empty() {
            return Err(UpgradeError::ExtensionsMissing { target: self.target, missing: missing.join(", ") });
        }
        let new_data = plan::new_data_dir(&spec.data_dir, from, self.target).ok_or_else(|| {
            UpgradeError::Unsupported { instance: id.clone(), message: "its data_dir has no folder name".into() }
        })?;
        if self.registry.data_root_of(&new_data).as_deref() != Some(self.data_root.as_path()) {
            return Err(UpgradeError::Unsupported {
                instance: id.clone(),
                message: format!("the new data folder {} would leave the data root", new_data.display()),
            });
        }
        if self.layout.conf_folder(&new).exists() {
            return Err(UpgradeError::Unsupported {
                instance: id.clone(),
                message: format!(
                    "a cluster {} exists already ({}); drop it (pg_dropcluster) or upgrade by hand",
                    new.shown(),
                    self.layout.conf_folder(&new).display()
                ),
            });
        }
        let size_bytes = at.size_bytes().await.map_err(read("measure the old cluster"))?;
        let probe = existing_ancestor(&new_data);
        let fs = rustix::fs::statfs(&probe).map_err(|e| UpgradeError::Step {
            step: "check the disk space",
            message: format!("statfs {}: {e}", probe.display()),
        })?;
        #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets
        let mut mode = plan::mode_for_fs_type(fs.f_type as i64);
        let free = fs.f_bavail * fs.f_bsize as u64;
        let needed = CopyMode::Copy.space_needed(size_bytes);
        if mode == CopyMode::Copy && free < needed {
            return Err(UpgradeError::NoSpace { dir: probe, needed, free, mode: "copy" });
        }

        Self::progress(ctx, STEP_CREATE_NEW, &format!("creating the new cluster {}", new.shown())).await;
        cluster::prepare_parent(&self.data_root, &new_data)?;
        // A port of its own until the switch, so it never meets the old server's.
        let temp_port = self.port.checked_add(1000).unwrap_or(self.port - 1000);
        cluster::create(&new, &new_data, &settings, &spec.os_user, temp_port).await?;
        if let Err(e) = cluster::carry_configuration(&self.layout, &old, &new, &spec.os_user).await {
            let _ = cluster::drop_cluster(&new).await;
            return Err(e);
        }

        Self::progress(ctx, 3, "pg_upgrade --check against the running old cluster").await;
        let mut checked = self.check(&old, &new, &new_data, mode).await;
        if checked.is_err() && mode == CopyMode::Clone {
            // XFS made without reflink: the check says so; copy instead, if the space is there.
            tracing::info!(instance = %id, "pg_upgrade --clone refused; checking --copy");
            mode = CopyMode::Copy;
            checked = if free < needed {
                Err(format!("cloning is not supported here and a copy needs {needed} bytes, {free} free"))
            } else {
                self.check(&old, &new, &new_data, mode).await
            };
        }
        if let Err(reasons) = checked {
            let logs = self.log_tails(&reasons, &new_data).await;
            let _ = cluster::drop_cluster(&new).await;
            return Err(UpgradeError::CheckFailed { reasons: pg_upgrade_reasons(&reasons) + &logs });
        }
        Ok(Prepared { old, new, new_data, mode, settings, extensions, size_bytes })
    }

    fn run_args<'a>(
        &'a self,
        old: &'a Cluster,
        new: &'a Cluster,
        new_data: &'a Path,
        mode: CopyMode,
        port: &UpgradePort,
    ) -> UpgradeRun<'a> {
        UpgradeRun {
            port: port.port(),
            layout: &self.layout,
            old,
            new,
            old_data: &self.instance.spec.data_dir,
            new_data,
            mode,
            os_user: &self.instance.spec.os_user,
            socket_dir: &self.socket_dir,
        }
    }

    async fn check(&self, old: &Cluster, new: &Cluster, new_data: &Path, mode: CopyMode) -> Result<(), String> {
        let port = UpgradePort::reserve(Path::new(&self.socket_dir))?;
        let cmd = self.run_args(old, new, new_data, mode, &port).command(Some(self.port))?;
        cmd.output().await.map(drop).map_err(|e| e.to_string())
    }

    /// Phase 2: the downtime, with rollback to the old cluster on any failure.
    async fn switch(&self, ctx: &JobContext, p: Prepared) -> Result<serde_json::Value, UpgradeError> {
        let os_user = &self.instance.spec.os_user;
        let old_at = self.server(self.target);
        Self::progress(ctx, STEP_STOP_OLD, &format!("stopping {}", p.old.unit())).await;
        if let Err(e) = old_at.accepts_write().await {
            let _ = cluster::drop_cluster(&p.new).await;
            return Err(UpgradeError::Step { step: "a write on the old server before stopping it", message: e });
        }
        let last_old_write = Instant::now();
        if let Err(e) = cluster::systemctl("stop", &p.old.unit()).await {
            return Err(self.rollback(&p, "stop the old cluster", e, false).await);
        }

        Self::progress(ctx, 5, &format!("pg_upgrade {} ({})", p.new.shown(), p.mode.as_str())).await;
        let started = Instant::now();
        // Held until pg_upgrade ends (the end of this function).
        let port = UpgradePort::reserve(Path::new(&self.socket_dir));
        let run = port.and_then(|port| {
            let cmd = self.run_args(&p.old, &p.new, &p.new_data, p.mode, &port).command(None)?;
            Ok((cmd, port))
        });
        let (cmd, _port) = match run {
            Ok(run) => run,
            Err(e) => return Err(self.rollback(&p, "pg_upgrade", e, false).await),
        };
        let upgraded = tokio::select! {
            r = cmd.output() => r.map(drop).map_err(|e| pg_upgrade_reasons(&e.to_string())),
            () = ctx.cancel.cancelled() => Err("cancelled during pg_upgrade".to_owned()),
        };
        if let Err(e) = upgraded {
            let logs = self.log_tails(&e, &p.new_data).await;
            return Err(self.rollback(&p, "pg_upgrade", e + &logs, false).await);
        }
        let pg_upgrade_ms = started.elapsed().as_millis() as u64;

        Self::progress(ctx, 6, &format!("starting {} on port {}", p.new.unit(), self.port)).await;
        let switched = async {
            cluster::set_port(&p.new, self.port, os_user).await?;
            cluster::set_start(&self.layout, &p.new, "auto", os_user).await?;
            cluster::set_start(&self.layout, &p.old, "manual", os_user).await?;
            cluster::systemctl("start", &p.new.unit()).await
        };
        if let Err(e) = switched.await {
            return Err(self.rollback(&p, "start the new cluster", e, true).await);
        }
        let new_at = self.server(self.target);
        let health = match self.healthy(&new_at, &p.new, &p.new_data).await {
            Ok(h) => h,
            Err(e) => return Err(self.rollback(&p, "the new cluster's health check", e, true).await),
        };
        let first_new_write = Instant::now();
        let downtime_ms = first_new_write.duration_since(last_old_write).as_millis() as u64;
        tracing::info!(instance = %self.instance.id, downtime_ms, "PostgreSQL {} -> {} switched", p.old.major, p.new.major);

        // The new cluster serves: from here on a failure is reported, never rolled back (the new
        // cluster may have taken writes the old one never saw).
        let mut spec = self.instance.spec.clone();
        spec.engine_version = self.target.to_string();
        spec.systemd_unit = p.new.unit();
        spec.data_dir = p.new_data.clone();
        self.registry.record_major_upgrade(&self.instance.id, spec).await.map_err(|e| UpgradeError::Step {
            step: "record the upgrade",
            message: format!("the new cluster {} serves, but the instance record was not updated: {e}", p.new.shown()),
        })?;

        Self::progress(ctx, 7, "vacuumdb --all --analyze-in-stages").await;
        let analyze = self.analyze(&new_at).await;
        Self::progress(ctx, STEPS, "done").await;
        Ok(json!({
            "from_version": p.old.major.to_string(),
            "to_version": p.new.major.to_string(),
            "mode": p.mode.as_str(),
            "downtime_ms": downtime_ms,
            "pg_upgrade_ms": pg_upgrade_ms,
            "old_cluster": p.old.shown(),
            "old_cluster_kept": format!(
                "{} is stopped and kept (start.conf manual); drop it with pg_dropcluster {} {} once the new cluster is trusted",
                p.old.shown(), p.old.major, p.old.name
            ),
            "new_cluster": p.new.shown(),
            "new_data_dir": p.new_data.display().to_string(),
            "new_unit": p.new.unit(),
            "size_bytes": p.size_bytes,
            "encoding": p.settings.encoding,
            "lc_collate": p.settings.collate,
            "lc_ctype": p.settings.ctype,
            "data_checksums": p.settings.data_checksums,
            "extensions": p.extensions,
            "health": health,
            "analyze": analyze,
        }))
    }

    /// The shared health check of cluster `c` on `data_dir` (at its major), then a write.
    async fn healthy(&self, at: &ServerAt, c: &Cluster, data_dir: &Path) -> Result<String, String> {
        self.health.serves(&self.instance, c, data_dir, Some(at)).await
    }

    /// `vacuumdb --all --analyze-in-stages` (the planner has no statistics after pg_upgrade), and
    /// what it produced: the statistics rows in every database. A failure is reported, not fatal.
    async fn analyze(&self, at: &ServerAt) -> serde_json::Value {
        let started = Instant::now();
        let run = ToolCommand::new(self.layout.bin(self.target).join("vacuumdb"))
            .args(["--all", "--analyze-in-stages", "--no-password"])
            .arg(format!("--host={}", at.socket_dir))
            .arg(format!("--port={}", at.port))
            .run_as(&self.instance.spec.os_user);
        let outcome = match run {
            Ok(cmd) => cmd.output().await.map(drop).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let ms = started.elapsed().as_millis() as u64;
        let mut rows = 0u64;
        for db in at.databases().await.unwrap_or_default() {
            if let Ok(r) = at.query(&db, "SELECT count(*) FROM pg_catalog.pg_statistic").await {
                rows += r.first().and_then(|r| r.first()).and_then(|v| v.parse::<u64>().ok()).unwrap_or_default();
            }
        }
        match outcome {
            Ok(()) => json!({ "ok": true, "ms": ms, "statistics_rows": rows }),
            Err(e) => json!({ "ok": false, "ms": ms, "statistics_rows": rows, "error": e }),
        }
    }

    /// The last lines of the logs pg_upgrade points to ("Consult the last few lines of ..."), read
    /// as the engine's user (the files are in the new data folder, which that user owns) before the
    /// new cluster is dropped with them. Empty when there are none.
    async fn log_tails(&self, output: &str, new_data: &Path) -> String {
        let mut out = String::new();
        for path in output.split('"').filter(|p| p.ends_with(".log") && Path::new(p).starts_with(new_data)) {
            let Ok(cmd) =
                ToolCommand::new("tail").args(["-n", "8", "--"]).arg(path).run_as(&self.instance.spec.os_user)
            else {
                continue;
            };
            if let Ok(text) = cmd.output().await {
                let text = String::from_utf8_lossy(&text);
                let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
                let name = Path::new(path).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                out.push_str(&format!(" || {name}: {}", lines.join(" | ")));
            }
        }
        out
    }

    /// Back to the old cluster: stop what pg_upgrade or the switch left running, drop the new
    /// cluster, start the old one and check it serves its data again.
    async fn rollback(&self, p: &Prepared, step: &'static str, cause: String, new_started: bool) -> UpgradeError {
        let os_user = &self.instance.spec.os_user;
        tracing::warn!(instance = %self.instance.id, step, "upgrade failed, rolling back: {cause}");
        if new_started {
            let _ = cluster::systemctl("stop", &p.new.unit()).await;
        }
        // A killed pg_upgrade leaves the servers it started running on their own.
        for (major, dir) in [(p.old.major, self.instance.spec.data_dir.as_path()), (p.new.major, p.new_data.as_path())]
        {
            if let Ok(cmd) = ToolCommand::new(self.layout.bin(major).join("pg_ctl"))
                .args(["stop", "-m", "fast", "-w", "-D"])
                .arg(dir)
                .run_as(os_user)
            {
                let _ = cmd.output().await;
            }
        }
        let _ = cluster::set_start(&self.layout, &p.old, "auto", os_user).await;
        if let Err(e) = cluster::drop_cluster(&p.new).await {
            tracing::warn!(instance = %self.instance.id, "drop the new cluster {}: {e}", p.new.shown());
        }
        let restarted = async {
            cluster::systemctl("start", &p.old.unit()).await?;
            self.healthy(&self.server(self.target), &p.old, &self.instance.spec.data_dir).await
        };
        match restarted.await {
            Ok(_) => UpgradeError::RolledBack { step, cause },
            Err(restart) => UpgradeError::RollbackFailed { step, cause, restart },
        }
    }
}

/// The nearest folder of `path` that exists (for statfs before the new folder is made).
fn existing_ancestor(path: &Path) -> PathBuf {
    path.ancestors().find(|a| a.is_dir()).unwrap_or(Path::new("/")).to_path_buf()
}

/// pg_upgrade's output reduced to what says why: its "fatal"/"failure" lines and what follows,
/// else the whole tail.
fn pg_upgrade_reasons(output: &str) -> String {
    let lines: Vec<&str> = output.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let from = lines.iter().position(|l| {
        let l = l.to_ascii_lowercase();
        l.contains("fatal") || l.contains("failure") || l.contains("your installation")
    });
    match from {
        Some(i) => lines[i.saturating_sub(1)..].join(" | "),
        None => lines.join(" | "),
    }
}
