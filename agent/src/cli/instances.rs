//! `dbagentctl instances ...`: the instance registry.

use super::Ctx;
use super::args::{InstanceSpecArgs, RequestIdArg};
use super::error::CliError;
use clap::Subcommand;
use dbagent_proto::v1 as pb;
use pb::instances_client::InstancesClient;

#[derive(Debug, Subcommand)]
pub enum InstancesCommand {
    /// Register a database instance with the agent (orchestrator identity). Registering does not
    /// create its volume; see `volumes create`.
    #[command(
        after_help = "Example:\n  dbagentctl instances register pg-42 --engine postgresql --engine-version 15 \\\n    \
        --unit postgresql@15-main.service --data-dir /var/lib/postgresql/15/main --os-user postgres \\\n    \
        --volume-size 10GiB --plan starter --cpu-millis 1000 --memory 2GiB \\\n    \
        --maintenance mon@02:00+60m --backup-at 03:00 --keep-daily 7"
    )]
    Register {
        /// Instance id: lower-case letters, digits and '-', at most 63 characters.
        id: String,
        #[command(flatten)]
        spec: InstanceSpecArgs,
        #[command(flatten)]
        request: RequestIdArg,
    },
    /// Change an instance's spec (orchestrator identity): fetches the current spec, applies the given
    /// flags, and refuses if someone else changed it in between.
    Update {
        id: String,
        #[command(flatten)]
        spec: InstanceSpecArgs,
        #[command(flatten)]
        request: RequestIdArg,
    },
    /// Remove an instance from the registry (orchestrator identity). Its volume is not destroyed.
    Remove {
        id: String,
        #[command(flatten)]
        request: RequestIdArg,
    },
    /// Show one instance's spec.
    Get { id: String },
    /// List registered instances.
    List,
}

pub async fn run(ctx: &Ctx, command: InstancesCommand) -> Result<(), CliError> {
    let mut client = InstancesClient::new(ctx.channel.clone());
    let instance = match command {
        InstancesCommand::Register { id, spec, request } => {
            let spec = spec.apply(None)?;
            let request_id = request.resolve()?;
            client
                .register_instance(ctx.unary(pb::RegisterInstanceRequest { request_id, id, spec: Some(spec) }))
                .await?
        }
        InstancesCommand::Update { id, spec: flags, request } => {
            let current = client.get_instance(ctx.unary(pb::GetInstanceRequest { id: id.clone() })).await?.into_inner();
            let spec = flags.apply(Some(current.spec.unwrap_or_default()))?;
            let request_id = request.resolve()?;
            let update = pb::UpdateInstanceRequest {
                request_id,
                id,
                spec: Some(spec),
                // Optimistic concurrency: a change made by someone else since our read fails with ABORTED.
                expected_generation: current.generation,
            };
            client.update_instance(ctx.unary(update)).await?
        }
        InstancesCommand::Remove { id, request } => {
            let request_id = request.resolve()?;
            client.remove_instance(ctx.unary(pb::RemoveInstanceRequest { request_id, id })).await?
        }
        InstancesCommand::Get { id } => client.get_instance(ctx.unary(pb::GetInstanceRequest { id })).await?,
        InstancesCommand::List => {
            let list = client.list_instances(ctx.unary(pb::ListInstancesRequest {})).await?;
            return ctx.print(list.get_ref());
        }
    };
    ctx.print(instance.get_ref())
}

#[cfg(test)]
mod tests {
    use super::super::Cli;
    use super::*;
    use clap::Parser;

    fn register_spec(extra: &[&str]) -> Result<pb::InstanceSpec, CliError> {
        let mut argv = vec![
            "dbagentctl",
            "instances",
            "register",
            "pg-42",
            "--engine",
            "postgresql",
            "--engine-version",
            "15",
            "--unit",
            "postgresql@15-main.service",
            "--data-dir",
            "/var/lib/postgresql/15/main",
            "--os-user",
            "postgres",
            "--volume-size",
            "10GiB",
            "--plan",
            "starter",
            "--cpu-millis",
            "1000",
            "--memory",
            "2GiB",
        ];
        argv.extend_from_slice(extra);
        let cli = Cli::try_parse_from(argv).unwrap();
        let super::super::Command::Instances(InstancesCommand::Register { spec, .. }) = cli.command else {
            panic!("parsed as another command")
        };
        spec.apply(None)
    }

    #[test]
    fn register_builds_the_full_spec() {
        let spec = register_spec(&[
            "--log-file",
            "/var/log/postgresql/*.log",
            "--maintenance",
            "tue@01:30+90m",
            "--backup-at",
            "03:00",
            "--keep-daily",
            "7",
        ])
        .unwrap();
        assert_eq!(spec.engine, pb::Engine::Postgresql as i32);
        assert_eq!(spec.volume.as_ref().map(|v| (v.size_bytes, v.filesystem.as_str())), Some((10 << 30, "ext4")));
        assert_eq!(spec.plan.as_ref().map(|p| (p.cpu_millis, p.memory_bytes)), Some((1000, 2 << 30)));
        assert_eq!(spec.log_sources.len(), 1);
        assert_eq!(spec.maintenance_window.map(|w| w.duration_minutes), Some(90));
        assert_eq!(spec.backup_policy.map(|b| (b.daily_at_minute_utc, b.keep_daily, b.enabled)), Some((180, 7, true)));
        assert_eq!(spec.backup_policy.map(|b| (b.keep_weekly, b.keep_monthly)), Some((None, None)), "the plan's");
    }

    #[test]
    fn weekly_and_monthly_retention_are_set_beside_the_daily_or_alone_on_an_existing_policy() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["dbagentctl", "instances", "update", "pg-1"];
            args.extend_from_slice(extra);
            let cli = Cli::try_parse_from(args).unwrap();
            let super::super::Command::Instances(InstancesCommand::Update { spec, .. }) = cli.command else { panic!() };
            spec
        };
        let existing = pb::InstanceSpec {
            plan: Some(pb::Plan { name: 1, cpu_millis: 1000, memory_bytes: 1 << 30, ..Default::default() }),
            backup_policy: Some(pb::BackupPolicy {
                daily_at_minute_utc: 60,
                keep_daily: 7,
                enabled: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        let spec = parse(&["--keep-weekly", "8", "--keep-monthly", "0"]).apply(Some(existing.clone())).unwrap();
        let p = spec.backup_policy.unwrap();
        assert_eq!((p.daily_at_minute_utc, p.keep_daily, p.keep_weekly, p.keep_monthly), (60, 7, Some(8), Some(0)));
        // Without a policy yet, a count alone is refused naming the missing time.
        let without = pb::InstanceSpec { backup_policy: None, ..existing };
        let e = parse(&["--keep-weekly", "8"]).apply(Some(without)).unwrap_err().to_string();
        assert!(e.contains("need --backup-at"), "{e}");
    }

    #[test]
    fn register_names_every_missing_flag() {
        let cli = Cli::try_parse_from(["dbagentctl", "instances", "register", "pg-1", "--engine", "redis"]).unwrap();
        let super::super::Command::Instances(InstancesCommand::Register { spec, .. }) = cli.command else { panic!() };
        let e = spec.apply(None).unwrap_err().to_string();
        assert!(e.contains("--engine-version") && e.contains("--memory") && !e.contains("--engine,"), "{e}");
        assert!(register_spec(&["--backup-at", "03:00"]).unwrap_err().to_string().contains("--keep-daily"));
    }

    #[test]
    fn update_overrides_only_given_flags() {
        let base = register_spec(&["--journald-unit", "postgresql@15-main.service"]).unwrap();
        let cli = Cli::try_parse_from(["dbagentctl", "instances", "update", "pg-42", "--memory", "4GiB"]).unwrap();
        let super::super::Command::Instances(InstancesCommand::Update { spec, .. }) = cli.command else { panic!() };
        let updated = spec.apply(Some(base.clone())).unwrap();
        assert_eq!(updated.plan.as_ref().map(|p| p.memory_bytes), Some(4 << 30));
        assert_eq!(updated.log_sources, base.log_sources);
        assert_eq!(updated.engine_version, "15");
    }
}
