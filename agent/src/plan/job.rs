//! The plan-change operation and the restart it may leave for the maintenance window.
//!
//! `plan.change` (exclusive on the instance, not disruptive): check (disk against what is used,
//! memory against the engine's running buffers unless `force`, I/O against an open volume), grow
//! the volume if the plan's disk is larger, set the unit's limits at runtime, set the engine's
//! dynamic settings, write the ones that need a restart, store the plan. Limits go before
//! settings: the memory check guarantees the running buffers fit the new limit, and a larger
//! limit must be in place before the buffers grow into it.
//!
//! `plan.restart` (disruptive: waits for the window unless `force`): restarts the unit through
//! systemd and checks that the server now runs with the written settings.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::engine::EngineControl;
use super::engine_settings::{EngineSetting, HowApplied, buffer_setting, settings_for};
use super::limits::{cpu_memory_properties, io_device, io_properties, limits_io};
use super::volumes::{PlanVolumes, VolumeView};
use super::{CHANGE_KIND, PlanError, RESTART_KIND};
use crate::error::ErrorCode;
use crate::ids::{self, InvalidField};
use crate::instances::{Instance, Plan, Registry};
use crate::maintenance::WeeklyWindow;
use crate::ops::engine::JobFn;
use crate::ops::{Disruptive, JobContext, NewOperation, OpError, OperationEngine, OperationRecord, Outcome, Progress};
use crate::systemd::ServiceManager;
use crate::volume::VolumeOutcome;

/// How long a restart is expected to take, for the window gate.
const RESTART_EXPECTED: Duration = Duration::from_secs(120);
const STEPS: u64 = 5;

/// Everything a plan change uses; cheap to clone into each job.
#[derive(Clone)]
pub struct PlanChanges {
    pub registry: Arc<Registry>,
    pub volumes: Arc<dyn PlanVolumes>,
    pub operations: OperationEngine,
    pub services: Arc<dyn ServiceManager>,
    pub engines: Arc<dyn EngineControl>,
    /// How long a unit's restart may take before the operation fails.
    pub restart_timeout: Duration,
}

/// What the checks found, for the steps after them.
struct Checked {
    volume: Option<VolumeView>,
    grow_to: Option<u64>,
}

fn progress(ctx: &JobContext, done: u64, message: &str) {
    ctx.progress(Progress { done, total: STEPS, unit: "steps".into(), message: message.into() });
}

fn op_error(e: &PlanError) -> OpError {
    OpError::from_error(e)
}

impl PlanChanges {
    /// Validates the request, runs the checks once so a refusal answers the call itself (with the
    /// numbers), then submits `plan.change`; the job checks again under the instance's lock right
    /// before the work. A retry with the same request_id returns the operation it started.
    pub async fn change(
        &self,
        request_id: &str,
        instance_id: &str,
        plan: Plan,
        force: bool,
    ) -> Result<(OperationRecord, Outcome), PlanError> {
        ids::request_id(request_id)?;
        ids::instance_id("instance_id", instance_id)?;
        crate::instances::validate::plan_limits("plan", &plan)?;
        let instance = self.registry.get(instance_id)?;
        let params = json!({ "plan": plan, "force": force });
        if self.operations.by_request(request_id).is_none() {
            self.check(&instance, &plan, force).await?;
        }
        let new = NewOperation {
            request_id: request_id.to_owned(),
            kind: CHANGE_KIND,
            target: instance_id.to_owned(),
            params,
            exclusive: true,
        };
        let this = self.clone();
        let id = instance_id.to_owned();
        let job: JobFn = Box::new(move |ctx| {
            Box::pin(async move {
                if ctx.cancel.is_cancelled() {
                    return Err(OpError { code: ErrorCode::Cancelled, message: "cancelled before it started".into() });
                }
                this.run_change(&ctx, &id, plan, force).await.map(Some).map_err(|e| op_error(&e))
            })
        });
        Ok(self.operations.submit(new, job).await?)
    }

    /// The refusals: a disk below what is used, a disk below the volume (volumes do not shrink),
    /// growth without a volume, I/O limits without an open volume, memory below the running
    /// server's buffers (unless `force`).
    async fn check(&self, instance: &Instance, plan: &Plan, force: bool) -> Result<Checked, PlanError> {
        let id = &instance.id;
        let volume = self.volumes.view(id).await?;
        let mut grow_to = None;
        if plan.disk_bytes != 0 {
            match &volume {
                Some(v) => {
                    if let Some(used) = v.used_bytes.filter(|used| plan.disk_bytes < *used) {
                        return Err(PlanError::DiskBelowUsed {
                            instance: id.clone(),
                            requested: plan.disk_bytes,
                            used,
                        });
                    }
                    if plan.disk_bytes < v.size_bytes {
                        return Err(InvalidField::new(
                            "plan.disk_bytes",
                            format!(
                                "is {}; the volume has {} bytes and volumes do not shrink: give 0 (keep) or at least that",
                                plan.disk_bytes, v.size_bytes
                            ),
                        )
                        .into());
                    }
                    if plan.disk_bytes > v.size_bytes {
                        grow_to = Some(plan.disk_bytes);
                    }
                }
                None if plan.disk_bytes > instance.spec.volume.size_bytes => {
                    return Err(PlanError::NoVolume { instance: id.clone() });
                }
                None => {}
            }
        }
        if limits_io(plan) && volume.as_ref().and_then(|v| v.mapping.as_ref()).is_none() {
            return Err(PlanError::VolumeNotOpen { instance: id.clone() });
        }
        if !force {
            let setting = buffer_setting(instance.spec.engine);
            let configured = self.engines.read(instance, setting).await?;
            if plan.memory_bytes < configured {
                return Err(PlanError::MemoryBelowBuffers {
                    instance: id.clone(),
                    requested: plan.memory_bytes,
                    setting: setting.to_owned(),
                    configured,
                });
            }
        }
        Ok(Checked { volume, grow_to })
    }

    async fn run_change(
        &self,
        ctx: &JobContext,
        id: &str,
        plan: Plan,
        force: bool,
    ) -> Result<serde_json::Value, PlanError> {
        progress(ctx, 0, "checking the plan against the instance");
        let instance = self.registry.get(id)?;
        let checked = self.check(&instance, &plan, force).await?;

        progress(ctx, 1, "growing the volume");
        let volume = match checked.grow_to {
            Some(size) => self.volumes.grow(id, size).await?,
            None => VolumeOutcome::Unchanged,
        };

        progress(ctx, 2, "applying the limits to the unit");
        let unit = &instance.spec.systemd_unit;
        let mut props = cpu_memory_properties(&plan);
        let mapping = checked.volume.as_ref().and_then(|v| v.mapping.as_deref());
        if let Some(mapping) = mapping {
            props.extend(io_properties(&plan, &io_device(mapping)));
        }
        self.services.set_unit_properties(unit, true, &props).await?;
        let limits: serde_json::Map<String, serde_json::Value> =
            props.iter().map(|p| (p.name().to_owned(), json!(p.shown()))).collect();

        progress(ctx, 3, "applying the engine settings");
        let (settings, restart) = self.apply_settings(&instance, &plan, force).await?;
        let mut restart_op = None;
        if !restart.is_empty() {
            let written = self.engines.write_for_restart(&instance, &restart).await?;
            let (record, _) = self.submit_restart(&ctx.operation_id(), &instance, &restart, force).await?;
            tracing::info!(instance = id, file = %written.display(), op = %record.id, "plan settings written; restart submitted");
            restart_op = Some(
                json!({ "operation_id": record.id, "state": record.state.as_str(), "file": written.display().to_string() }),
            );
        }

        progress(ctx, 4, "storing the plan");
        self.registry.set_plan_in_operation(id, plan).await?;
        progress(ctx, STEPS, "done");
        Ok(json!({
            "unit": unit,
            "limits": limits,
            "io_device": mapping.map(|m| m.display().to_string()),
            "volume": volume,
            "settings": settings,
            "restart": restart_op,
        }))
    }

    /// Each setting the plan gives: unchanged, set at runtime, or left for the restart (returned).
    async fn apply_settings(
        &self,
        instance: &Instance,
        plan: &Plan,
        force: bool,
    ) -> Result<(Vec<serde_json::Value>, Vec<EngineSetting>), PlanError> {
        let wanted = settings_for(instance.spec.engine, plan);
        let mut report = Vec::new();
        let mut restart = Vec::new();
        for s in &wanted {
            let running = match self.engines.read(instance, &s.name).await {
                Ok(v) => Some(v),
                // Forced: a server that does not answer gets its settings at the next start.
                Err(e) if force && s.needs_restart => {
                    tracing::warn!(instance = %instance.id, "read {}: {e}", s.name);
                    None
                }
                Err(e) => return Err(e),
            };
            let how = if running == Some(s.value) {
                HowApplied::Unchanged
            } else if s.needs_restart {
                HowApplied::Restart
            } else {
                self.engines.set_runtime(instance, s).await?;
                HowApplied::Runtime
            };
            report.push(json!({ "name": s.name, "value": s.config_value(), "was": running, "applied": how }));
        }
        // Settings set at runtime are kept for the next start too: every one the plan gives, also
        // those unchanged now (set at runtime by an earlier change, they live only in the server).
        let runtime: Vec<EngineSetting> = wanted.iter().filter(|s| !s.needs_restart).cloned().collect();
        if !runtime.is_empty() {
            let kept = self.engines.keep_for_next_start(instance, &runtime).await?;
            for r in report.iter_mut().filter(|r| r["applied"] != json!(HowApplied::Restart)) {
                r["kept_in"] = json!(kept);
            }
        }
        // The file holds every restart setting, so a later restart never loses one that was unchanged.
        if report.iter().any(|r| r["applied"] == json!(HowApplied::Restart)) {
            restart = wanted.into_iter().filter(|s| s.needs_restart).collect();
        }
        Ok((report, restart))
    }

    async fn submit_restart(
        &self,
        change_op: &str,
        instance: &Instance,
        settings: &[EngineSetting],
        force: bool,
    ) -> Result<(OperationRecord, Outcome), PlanError> {
        let params = json!({ "settings": settings, "force": force, "change_operation": change_op });
        let new = NewOperation {
            // Derived from the change's operation id: a fresh one per change, the same on a replay.
            request_id: format!("{change_op}.restart"),
            kind: RESTART_KIND,
            target: instance.id.clone(),
            params,
            exclusive: true,
        };
        let gate = self.restart_gate(instance, force);
        let job = self.restart_job(instance.id.clone(), settings.to_vec());
        Ok(self.operations.submit_disruptive(new, gate, job).await?)
    }

    fn restart_gate(&self, instance: &Instance, force: bool) -> Disruptive {
        let window = instance.spec.maintenance_window.as_ref().map(WeeklyWindow::from);
        Disruptive { window, expected: RESTART_EXPECTED, force }
    }

    fn restart_job(&self, id: String, settings: Vec<EngineSetting>) -> JobFn {
        let this = self.clone();
        Box::new(move |ctx| {
            Box::pin(async move {
                if ctx.cancel.is_cancelled() {
                    return Err(OpError { code: ErrorCode::Cancelled, message: "cancelled before it started".into() });
                }
                this.run_restart(&ctx, &id, &settings).await.map(Some).map_err(|e| op_error(&e))
            })
        })
    }

    async fn run_restart(
        &self,
        ctx: &JobContext,
        id: &str,
        settings: &[EngineSetting],
    ) -> Result<serde_json::Value, PlanError> {
        let instance = self.registry.get(id)?;
        let unit = &instance.spec.systemd_unit;
        ctx.progress(Progress { done: 0, total: 2, unit: "steps".into(), message: format!("restarting {unit}") });
        let before = self.services.main_pid(unit).await?;
        self.services.restart_unit(unit, self.restart_timeout).await?;
        let after = self.services.main_pid(unit).await?;
        ctx.progress(Progress { done: 1, total: 2, unit: "steps".into(), message: "checking the settings".into() });
        let mut report = Vec::new();
        for s in settings {
            let running = self.engines.read(&instance, &s.name).await?;
            if running != s.value {
                return Err(PlanError::NotTaken {
                    instance: id.to_owned(),
                    setting: s.name.clone(),
                    running,
                    wanted: s.value,
                });
            }
            report.push(json!({ "name": s.name, "value": s.config_value(), "applied": HowApplied::Restart }));
        }
        Ok(json!({ "unit": unit, "main_pid_before": before, "main_pid_after": after, "settings": report }))
    }

    /// Re-arms a `plan.restart` the last stop left waiting for its window, from its stored
    /// parameters and the instance's window as registered now.
    pub fn rearm_restart(&self, record: &OperationRecord) -> Result<(), PlanError> {
        let settings: Vec<EngineSetting> = serde_json::from_value(record.params["settings"].clone())
            .map_err(|e| InvalidField::new("params.settings", e.to_string()))?;
        let force = record.params["force"].as_bool().unwrap_or(false);
        let instance = self.registry.get(&record.target)?;
        let gate = self.restart_gate(&instance, force);
        let job = self.restart_job(instance.id.clone(), settings);
        Ok(self.operations.resume_waiting(&record.id, true, gate, job)?)
    }
}

#[cfg(test)]
#[path = "job_tests.rs"]
mod tests;
