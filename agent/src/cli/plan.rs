//! `dbagentctl plan set|show INSTANCE`: change an instance's plan (its unit's CPU, memory and I/O
//! limits, its disk, and the engine settings that follow the memory), or show the stored plan with
//! the limits and settings it gives.

use super::Ctx;
use super::args::{OperationArgs, PlanArgs};
use super::error::CliError;
use super::operations::finish;
use super::render::ToJson;
use super::table::{ToTable, bytes, fields};
use crate::api::convert::instance::{plan_from_proto, plan_to_proto, spec_from_proto};
use crate::instances::Engine;
use crate::plan::engine_settings::settings_for;
use crate::plan::limits::{cpu_memory_properties, io_properties};
use clap::Subcommand;
use dbagent_proto::v1 as pb;
use serde_json::{Value, json};
use std::path::Path;

#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// Change the plan (orchestrator identity): only the given flags change. Limits apply at once,
    /// without a restart; engine settings that need a restart wait for the maintenance window
    /// unless --force. --force also skips the check that the memory is not below the engine's buffers.
    Set {
        instance_id: String,
        #[command(flatten)]
        plan: PlanArgs,
        /// Apply a memory below the engine's buffers, and restart outside the maintenance window.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        op: OperationArgs,
    },
    /// Show the stored plan, the unit limits and the engine settings it gives.
    Show { instance_id: String },
}

/// A plan as `plan show` prints it.
pub struct PlanView {
    pub instance_id: String,
    pub engine: Engine,
    pub plan: pb::Plan,
}

impl ToJson for PlanView {
    fn to_json(&self) -> Value {
        let (limits, settings) = derived(self);
        json!({ "instance_id": self.instance_id, "plan": self.plan.to_json(), "limits": limits, "engine_settings": settings })
    }
}

/// The unit properties and engine settings the plan gives (the I/O ones on the volume's mapping).
fn derived(view: &PlanView) -> (Value, Value) {
    let Ok(plan) = plan_from_proto("plan", Some(view.plan)) else { return (json!({}), json!([])) };
    let mut props = cpu_memory_properties(&plan);
    props.extend(io_properties(&plan, Path::new("<volume mapping>")));
    let limits: serde_json::Map<String, Value> =
        props.iter().map(|p| (p.name().to_owned(), json!(p.shown()))).collect();
    let settings: Vec<Value> = settings_for(view.engine, &plan)
        .iter()
        .map(|s| json!({ "name": s.name, "value": s.config_value(), "needs_restart": s.needs_restart }))
        .collect();
    (Value::Object(limits), Value::Array(settings))
}

impl ToTable for PlanView {
    fn to_table(&self) -> String {
        let p = &self.plan;
        let limit = |v: u64, unit: &str| if v == 0 { "none".to_owned() } else { format!("{v}{unit}") };
        let mut pairs = vec![
            ("instance", self.instance_id.clone()),
            ("cpu", format!("{} millis", p.cpu_millis)),
            ("memory", bytes(p.memory_bytes)),
            ("disk", if p.disk_bytes == 0 { "no limit".into() } else { bytes(p.disk_bytes) }),
            ("read iops", limit(u64::from(p.io_read_iops), "")),
            ("write iops", limit(u64::from(p.io_write_iops), "")),
            ("read bandwidth", if p.io_read_bps == 0 { "none".into() } else { format!("{}/s", bytes(p.io_read_bps)) }),
            (
                "write bandwidth",
                if p.io_write_bps == 0 { "none".into() } else { format!("{}/s", bytes(p.io_write_bps)) },
            ),
        ];
        let (limits, settings) = derived(self);
        let unit: Vec<String> = limits
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect();
        pairs.push(("unit limits", unit.join(" ")));
        let engine: Vec<String> = settings
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let how = if s["needs_restart"] == json!(true) { "restart" } else { "runtime" };
                format!("{}={} ({how})", s["name"].as_str().unwrap_or(""), s["value"].as_str().unwrap_or(""))
            })
            .collect();
        pairs.push(("engine settings", engine.join(" ")));
        fields(&pairs)
    }
}

async fn current(ctx: &Ctx, instance_id: &str) -> Result<pb::Instance, CliError> {
    let mut client = pb::instances_client::InstancesClient::new(ctx.channel.clone());
    Ok(client.get_instance(ctx.unary(pb::GetInstanceRequest { id: instance_id.to_owned() })).await?.into_inner())
}

pub async fn run(ctx: &Ctx, command: PlanCommand) -> Result<(), CliError> {
    match command {
        PlanCommand::Set { instance_id, plan, force, op } => {
            let base = current(ctx, &instance_id).await?.spec.and_then(|s| s.plan);
            let mut missing = Vec::new();
            let plan = plan.apply(base, &mut missing);
            let request =
                pb::ChangePlanRequest { request_id: op.request.resolve()?, instance_id, plan: Some(plan), force };
            let mut client = pb::upgrades_client::UpgradesClient::new(ctx.channel.clone());
            let operation = client.change_plan(ctx.unary(request)).await?.into_inner();
            finish(ctx, operation, op.watch).await
        }
        PlanCommand::Show { instance_id } => {
            let instance = current(ctx, &instance_id).await?;
            let spec =
                spec_from_proto(instance.spec).map_err(|e| CliError::Usage(format!("the agent answered {e}")))?;
            let plan = plan_to_proto(&spec.plan);
            ctx.print(&PlanView { instance_id, engine: spec.engine, plan })
        }
    }
}
