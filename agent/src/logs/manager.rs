//! The log manager: for every registered instance, a tail reader feeding TailLogs and one pipeline
//! per drain. It follows the registry (instances added, removed, their log sources changed) and owns
//! the drain configuration under `<state_dir>/logs/<instance>/`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::drain::policy::DrainPolicy;
use super::drain::{DrainSpec, load_drains, store_drains, validate_drains};
use super::error::LogsError;
use super::hub::{Hub, Tail, TailRequest};
use super::lines::LineFormat;
use super::pipeline::{DrainPipeline, DrainStatus, PipelineContext};
use super::settings::LogsConfig;
use super::sources::{LiveSources, Mode, SourceSet, spawn_sources};
use crate::instances::registry::Registry;
use crate::instances::{Instance, LogSource};

/// How soon an instance whose log shipping failed to start is tried again. Otherwise the manager
/// sleeps until the registry changes: an idle agent has no timer of its own here.
const RETRY_FAILED_START: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct LogManager {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    cfg: LogsConfig,
    hostname: String,
    registry: Arc<Registry>,
    hub: Arc<Hub>,
    running: Mutex<BTreeMap<String, InstanceLogs>>,
    cancel: CancellationToken,
    live: LiveSources,
}

struct InstanceLogs {
    format: LineFormat,
    sources: Vec<LogSource>,
    cancel: CancellationToken,
    tail_tasks: Vec<JoinHandle<()>>,
    drains: BTreeMap<String, DrainPipeline>,
}

impl LogManager {
    /// `dir` is `<state_dir>/logs`. Nothing runs until `run`.
    pub fn new(
        dir: PathBuf,
        cfg: LogsConfig,
        hostname: String,
        registry: Arc<Registry>,
        cancel: CancellationToken,
    ) -> Self {
        let hub = Arc::new(Hub::new(cfg.tail_records, cfg.client_queue));
        let running = Mutex::default();
        let live = LiveSources::default();
        Self { inner: Arc::new(Inner { dir, cfg, hostname, registry, hub, running, cancel, live }) }
    }

    /// Follows the registry until cancelled, then stops every pipeline: in-flight batches get a short
    /// grace to be acknowledged, and buffers are synced.
    pub async fn run(self) {
        let mut changes = self.inner.registry.changes();
        loop {
            changes.mark_unchanged();
            let failed = self.reconcile().await;
            tokio::select! {
                // The registry lives as long as the manager holds it, so the channel cannot close.
                _ = changes.changed() => {}
                () = tokio::time::sleep(RETRY_FAILED_START), if failed => {}
                () = self.inner.cancel.cancelled() => break,
            }
        }
        let running = std::mem::take(&mut *self.inner.running.lock().await);
        for (_, logs) in running {
            logs.stop().await;
        }
        tracing::info!("log shipping stopped; read positions committed");
    }

    /// Brings the running shipping in line with the registry; true if an instance failed to start.
    async fn reconcile(&self) -> bool {
        let mut failed = false;
        let instances = self.inner.registry.list();
        let mut running = self.inner.running.lock().await;
        let gone: Vec<String> = running.keys().filter(|id| !instances.iter().any(|i| &i.id == *id)).cloned().collect();
        for id in gone {
            if let Some(logs) = running.remove(&id) {
                logs.stop().await;
            }
            self.inner.hub.forget(&id);
            let dir = self.inner.dir.join(&id);
            if let Err(e) = std::fs::remove_dir_all(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!("remove log state of removed instance {id} ({}): {e}", dir.display());
            }
        }
        for instance in &instances {
            let format = LineFormat::from(instance.spec.engine);
            let same =
                running.get(&instance.id).is_some_and(|l| l.format == format && l.sources == instance.spec.log_sources);
            if same || self.inner.cancel.is_cancelled() {
                continue;
            }
            if let Some(old) = running.remove(&instance.id) {
                old.stop().await;
            }
            match self.start_instance(instance).await {
                Ok(logs) => {
                    running.insert(instance.id.clone(), logs);
                }
                Err(e) => {
                    failed = true;
                    tracing::error!(instance = %instance.id, "start log shipping: {e:#}");
                }
            }
        }
        failed
    }

    /// Starts the instance's tail reader and drains. A start that fails stops (and waits for)
    /// what it had started: it is retried, and every retry would otherwise leave source threads and
    /// journalctl processes behind until the agent runs out of them.
    async fn start_instance(&self, instance: &Instance) -> Result<InstanceLogs, LogsError> {
        let mut logs = self.start_tail(instance);
        match self.start_drains(&instance.id, &mut logs) {
            Ok(()) => Ok(logs),
            Err(e) => {
                logs.stop().await;
                Err(e)
            }
        }
    }

    fn start_tail(&self, instance: &Instance) -> InstanceLogs {
        let cancel = self.inner.cancel.child_token();
        let format = LineFormat::from(instance.spec.engine);
        let sources = instance.spec.log_sources.clone();
        let name: Arc<str> = Arc::from(instance.id.as_str());
        let (tx, mut rx) = mpsc::channel(4);
        let set = SourceSet {
            instance: name.clone(),
            format,
            sources: &sources,
            roots: self.read_roots(),
            live: self.inner.live.clone(),
            // TailLogs has no status to show it in; the follower logs each refused path once.
            refused: Arc::default(),
        };
        let mut tail_tasks = spawn_sources(&set, &BTreeMap::new(), Mode::Tail, &self.inner.cfg, &tx, &cancel);
        let hub = self.inner.hub.clone();
        tail_tasks.push(tokio::spawn(async move {
            while let Some(batch) = rx.recv().await {
                hub.publish(batch.records);
            }
        }));
        InstanceLogs { format, sources, cancel, tail_tasks, drains: BTreeMap::new() }
    }

    fn start_drains(&self, id: &str, logs: &mut InstanceLogs) -> Result<(), LogsError> {
        for spec in load_drains(&self.inner.dir.join(id))? {
            let pipeline = self.start_drain(id, logs, spec)?;
            logs.drains.insert(pipeline.spec.name.clone(), pipeline);
        }
        Ok(())
    }

    fn start_drain(&self, id: &str, logs: &InstanceLogs, spec: DrainSpec) -> Result<DrainPipeline, LogsError> {
        let ctx = PipelineContext {
            instance: Arc::from(id),
            format: logs.format,
            sources: &logs.sources,
            dir: self.inner.dir.join(id).join(&spec.name),
            cfg: &self.inner.cfg,
            hostname: &self.inner.hostname,
            roots: self.read_roots(),
            live: self.inner.live.clone(),
        };
        DrainPipeline::start(&ctx, spec, &logs.cancel)
    }

    /// Where log files may be read from: the configured log roots and data roots.
    fn read_roots(&self) -> Arc<[PathBuf]> {
        Arc::from(self.inner.registry.log_read_roots())
    }

    /// The registered instance `id`: a malformed id answers INVALID_ARGUMENT and an unknown one
    /// NOT_FOUND, as the registry says.
    fn instance(&self, id: &str) -> Result<Instance, LogsError> {
        Ok(self.inner.registry.get(id)?)
    }

    pub fn tail(&self, req: &TailRequest) -> Result<Tail, LogsError> {
        if let Some(id) = &req.instance {
            self.instance(id)?;
        }
        Ok(self.inner.hub.tail(req))
    }

    pub fn list_drains(&self, id: &str) -> Result<Vec<DrainSpec>, LogsError> {
        self.instance(id)?;
        load_drains(&self.inner.dir.join(id))
    }

    /// Replaces the instance's drains. Unchanged drains keep running; a drain whose target changed
    /// keeps its buffer if the wire format is the same; removed drains lose their buffer.
    pub async fn set_drains(&self, id: &str, drains: Vec<DrainSpec>) -> Result<Vec<DrainSpec>, LogsError> {
        validate_drains(&drains, &DrainPolicy::new(&self.inner.cfg.drain_policy))?;
        let instance = self.instance(id)?;
        if self.inner.cancel.is_cancelled() {
            return Err(LogsError::ShuttingDown);
        }
        let dir = self.inner.dir.join(id);
        let mut running = self.inner.running.lock().await;
        store_drains(&dir, &drains)?;
        if !running.contains_key(id) {
            let logs = self.start_instance(&instance).await?;
            running.insert(id.to_owned(), logs);
            return Ok(drains);
        }
        let Some(logs) = running.get_mut(id) else { return Ok(drains) };
        let old = std::mem::take(&mut logs.drains);
        for (name, pipeline) in old {
            match drains.iter().find(|d| d.name == name) {
                Some(new) if *new == pipeline.spec => {
                    logs.drains.insert(name, pipeline);
                }
                Some(new) => {
                    let keep_buffer = new.target.wire_kind() == pipeline.spec.target.wire_kind();
                    pipeline.stop().await;
                    if !keep_buffer {
                        remove_drain_dir(&dir.join(&name));
                    }
                }
                None => {
                    pipeline.stop().await;
                    remove_drain_dir(&dir.join(&name));
                    tracing::info!(instance = id, drain = name, "drain removed");
                }
            }
        }
        for spec in &drains {
            if !logs.drains.contains_key(&spec.name) {
                let pipeline = self.start_drain(id, logs, spec.clone())?;
                tracing::info!(instance = id, drain = spec.name, "drain started");
                logs.drains.insert(spec.name.clone(), pipeline);
            }
        }
        Ok(drains)
    }

    /// Sources running now (file followers and journalctl readers), for status and tests.
    pub fn live_sources(&self) -> usize {
        self.inner.live.count()
    }

    pub async fn drain_status(&self, id: &str, drain: &str) -> Result<DrainStatus, LogsError> {
        self.instance(id)?;
        let running = self.inner.running.lock().await;
        running
            .get(id)
            .and_then(|l| l.drains.get(drain))
            .map(DrainPipeline::status)
            .ok_or_else(|| LogsError::DrainNotFound { instance: id.to_owned(), drain: drain.to_owned() })
    }
}

fn remove_drain_dir(dir: &std::path::Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("remove drain buffer {}: {e}", dir.display());
    }
}

impl InstanceLogs {
    async fn stop(self) {
        self.cancel.cancel();
        for (_, d) in self.drains {
            d.stop().await;
        }
        for t in self.tail_tasks {
            let _ = t.await;
        }
    }
}
