//! `dbagentctl window set|show INSTANCE`: an instance's weekly maintenance window, and whether it is
//! open now and when it next opens (read against this machine's clock).

use super::args::RequestIdArg;
use super::error::CliError;
use super::render::ToJson;
use super::table::{ToTable, fields};
use super::{Ctx, parse};
use crate::api::convert::instance::maintenance_window_from_proto;
use crate::maintenance::WeeklyWindow;
use crate::maintenance::window::WindowPosition;
use clap::Subcommand;
use dbagent_proto::v1 as pb;
use serde_json::{Value, json};
use std::time::SystemTime;

#[derive(Debug, Subcommand)]
pub enum WindowCommand {
    /// Set the instance's weekly maintenance window (orchestrator identity). Disruptive work waits for
    /// it unless forced.
    Set {
        instance_id: String,
        /// DAY@HH:MM+DURATION in UTC, 15m to 24h, e.g. tue@02:00+1h or sun@23:30+3h (crosses midnight).
        #[arg(value_parser = parse::maintenance_window)]
        window: pb::MaintenanceWindow,
        #[command(flatten)]
        request: RequestIdArg,
    },
    /// Show the instance's window, whether it is open now and when it next opens.
    Show { instance_id: String },
}

/// An instance's window as `window show` prints it.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowView {
    pub instance_id: String,
    pub window: Option<pb::MaintenanceWindow>,
    /// When the window now open closes; `None` when it is closed (or there is none).
    pub closes: Option<SystemTime>,
    pub next_start: Option<SystemTime>,
}

impl WindowView {
    pub fn at(instance_id: String, window: Option<pb::MaintenanceWindow>, now: SystemTime) -> Self {
        let weekly =
            window.and_then(|w| maintenance_window_from_proto("window", w).ok()).map(|w| WeeklyWindow::from(&w));
        let (closes, next_start) = match weekly {
            None => (None, None),
            Some(weekly) => match weekly.position(now) {
                WindowPosition::Inside { end, .. } => (Some(end), Some(weekly.next_start_after(now))),
                WindowPosition::Outside { next } => (None, Some(next)),
            },
        };
        Self { instance_id, window, closes, next_start }
    }
}

impl ToJson for WindowView {
    fn to_json(&self) -> Value {
        json!({
            "instance_id": self.instance_id,
            "window": self.window.as_ref().map(ToJson::to_json),
            "open_now": self.closes.is_some(),
            "closes": self.closes.map(crate::timefmt::format),
            "next_start": self.next_start.map(crate::timefmt::format),
        })
    }
}

impl ToTable for WindowView {
    fn to_table(&self) -> String {
        let Some(window) = &self.window else {
            return fields(&[
                ("instance", self.instance_id.clone()),
                ("window", "none: disruptive work runs at once".into()),
            ]);
        };
        let mut pairs = vec![("instance", self.instance_id.clone())];
        let body = window.to_table();
        let open = match self.closes {
            Some(end) => format!("yes, until {}", crate::timefmt::format(end)),
            None => "no".to_owned(),
        };
        pairs.push(("open now", open));
        pairs.push(("next start", self.next_start.map_or_else(|| "-".to_owned(), crate::timefmt::format)));
        format!("{body}{}", fields(&pairs))
    }
}

pub async fn run(ctx: &Ctx, command: WindowCommand) -> Result<(), CliError> {
    match command {
        WindowCommand::Set { instance_id, window, request } => {
            let request =
                pb::SetMaintenanceWindowRequest { request_id: request.resolve()?, instance_id, window: Some(window) };
            let mut client = pb::upgrades_client::UpgradesClient::new(ctx.channel.clone());
            ctx.print(client.set_maintenance_window(ctx.unary(request)).await?.get_ref())
        }
        WindowCommand::Show { instance_id } => {
            let mut client = pb::instances_client::InstancesClient::new(ctx.channel.clone());
            let instance =
                client.get_instance(ctx.unary(pb::GetInstanceRequest { id: instance_id.clone() })).await?.into_inner();
            let window = instance.spec.and_then(|s| s.maintenance_window);
            ctx.print(&WindowView::at(instance_id, window, SystemTime::now()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn t(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    fn tuesday() -> pb::MaintenanceWindow {
        pb::MaintenanceWindow { weekday: pb::Weekday::Tuesday as i32, start_minute_utc: 120, duration_minutes: 60 }
    }

    #[test]
    fn set_and_show_parse_and_a_bad_window_is_a_usage_error() {
        let cli = Cli::try_parse_from(["dbagentctl", "window", "set", "pg-1", "tue@02:00+1h"]).unwrap();
        let crate::cli::Command::Window(WindowCommand::Set { instance_id, window, .. }) = cli.command else {
            panic!("window set parses as WindowCommand::Set");
        };
        assert_eq!((instance_id.as_str(), window), ("pg-1", tuesday()));
        assert!(Cli::try_parse_from(["dbagentctl", "window", "set", "pg-1", "tue@02:00+10m"]).is_err());
        assert!(Cli::try_parse_from(["dbagentctl", "window", "show", "pg-1", "--output", "json"]).is_ok());
    }

    #[test]
    fn show_says_whether_the_window_is_open_and_when_it_next_opens() {
        let open = WindowView::at("pg-1".into(), Some(tuesday()), t("2026-12-01T02:30:00Z")).to_json();
        assert_eq!(open["open_now"], true);
        assert_eq!(open["closes"], "2026-12-01T03:00:00.000Z");
        assert_eq!(open["next_start"], "2026-12-08T02:00:00.000Z");
        assert_eq!(open["window"]["weekday"], "tuesday");
        let closed = WindowView::at("pg-1".into(), Some(tuesday()), t("2026-12-01T03:00:00Z")).to_json();
        assert_eq!((&closed["open_now"], &closed["closes"]), (&Value::Bool(false), &Value::Null));
        assert_eq!(closed["next_start"], "2026-12-08T02:00:00.000Z");
        let none = WindowView::at("pg-1".into(), None, t("2026-12-01T03:00:00Z"));
        assert_eq!(none.to_json()["window"], Value::Null);
        assert!(none.to_table().contains("runs at once"));
    }
}
