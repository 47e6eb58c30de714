//! The real [`ServiceManager`]: systemd's D-Bus API (`org.freedesktop.systemd1`) on the system
//! bus through zbus, never by parsing `systemctl` output. Not systemd's private socket
//! (`/run/systemd/private`, what `systemctl` uses as root): systemd sends its well-known name as
//! the sender there, which zbus refuses as an invalid unique name (seen in the VM test), so a
//! D-Bus daemon must run. The connection is made on first use, so an agent on a host without a
//! system bus (a development machine) starts and only a plan change fails, saying why.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::OnceCell;
use zbus::message::Type as MessageType;
use zbus::{Connection, MatchRule, MessageStream, OwnedObjectPath, OwnedVariant, Variant};

use super::{ServiceManager, SystemdError, UnitProperty};

const DEST: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";
const NO_SUCH_UNIT: &str = "org.freedesktop.systemd1.NoSuchUnit";
const ALREADY_SUBSCRIBED: &str = "org.freedesktop.systemd1.AlreadySubscribed";

#[derive(Default)]
pub struct DbusServiceManager {
    conn: OnceCell<Connection>,
}

impl DbusServiceManager {
    pub fn new() -> Self {
        Self::default()
    }

    async fn conn(&self) -> Result<&Connection, SystemdError> {
        self.conn
            .get_or_try_init(|| async { Connection::system().await })
            .await
            .map_err(|e| SystemdError::Connect(format!("the system bus: {e}")))
    }

    /// Calls a Manager method about `unit`; systemd's "no such unit" becomes [`SystemdError::NoSuchUnit`].
    async fn manager_call<B>(&self, method: &'static str, unit: &str, body: &B) -> Result<zbus::Message, SystemdError>
    where
        B: serde::Serialize + zbus::DynamicType,
    {
        let conn = self.conn().await?;
        conn.call_method(Some(DEST), PATH, Some(MANAGER), method, body).await.map_err(|e| call_error(method, unit, e))
    }

    async fn unit_path(&self, unit: &str) -> Result<OwnedObjectPath, SystemdError> {
        let reply = self.manager_call("GetUnit", unit, &(unit,)).await?;
        reply.body().deserialize::<OwnedObjectPath>().map_err(|e| call_error("GetUnit", unit, e))
    }

    async fn unit_property(&self, unit: &str, interface: &str, name: &str) -> Result<OwnedVariant, SystemdError> {
        let path = self.unit_path(unit).await?;
        let conn = self.conn().await?;
        let reply = conn
            .call_method(Some(DEST), path.as_str(), Some(PROPERTIES), "Get", &(interface, name))
            .await
            .map_err(|e| call_error("Get", unit, e))?;
        reply.body().deserialize::<OwnedVariant>().map_err(|e| call_error("Get", unit, e))
    }

    /// Starts a job with `method` (`ReloadUnit`, `RestartUnit`) and waits for systemd's
    /// `JobRemoved` of that job. The signal stream is opened before the job is queued, so a job
    /// that ends at once is not missed.
    async fn run_job(
        &self,
        method: &'static str,
        verb: &'static str,
        unit: &str,
        timeout: Duration,
    ) -> Result<(), SystemdError> {
        let conn = self.conn().await?;
        // systemd emits JobRemoved only while some client is subscribed. The connection stays
        // subscribed, so a second job on it is answered AlreadySubscribed: that is the state wanted.
        match conn.call_method(Some(DEST), PATH, Some(MANAGER), "Subscribe", &()).await {
            Ok(_) => {}
            Err(zbus::Error::MethodError(name, _, _)) if name.as_str() == ALREADY_SUBSCRIBED => {}
            Err(e) => return Err(call_error("Subscribe", unit, e)),
        }
        // Anyone on the bus may emit a signal with systemd's path and interface: only systemd's count.
        let rule = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .sender(DEST)
            .interface(MANAGER)
            .member("JobRemoved")
            .path(PATH)
            .build()
            .map_err(|e| call_error(method, unit, e))?;
        let mut signals =
            MessageStream::for_match_rule(rule, conn, None).await.map_err(|e| call_error(method, unit, e))?;
        let reply = self.manager_call(method, unit, &(unit, "replace")).await?;
        let job: OwnedObjectPath = reply.body().deserialize().map_err(|e| call_error(method, unit, e))?;
        let wait = async {
            while let Some(message) = signals.next().await {
                let Ok(message) = message else { continue };
                let Ok((_, removed, _, result)) =
                    message.body().deserialize::<(u32, OwnedObjectPath, String, String)>()
                else {
                    continue;
                };
                if removed == job {
                    return Some(result);
                }
            }
            None
        };
        let result = tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| SystemdError::JobTimeout { verb, unit: unit.to_owned(), timeout })?
            .ok_or_else(|| SystemdError::Connect("the system bus closed while waiting for a job".into()))?;
        if result == "done" { Ok(()) } else { Err(SystemdError::JobFailed { verb, unit: unit.to_owned(), result }) }
    }
}

fn call_error(method: &'static str, unit: &str, e: zbus::Error) -> SystemdError {
    match &e {
        zbus::Error::MethodError(name, _, _) if name.as_str() == NO_SUCH_UNIT => {
            SystemdError::NoSuchUnit { unit: unit.to_owned() }
        }
        _ => SystemdError::Call { method, unit: unit.to_owned(), message: e.to_string() },
    }
}

fn variant(prop: &UnitProperty) -> Variant<'static> {
    let per_device = |d: &std::path::Path, v: u64| Variant::from(vec![(d.display().to_string(), v)]);
    match prop {
        UnitProperty::CpuQuotaPerSecUsec(v)
        | UnitProperty::CpuWeight(v)
        | UnitProperty::MemoryMax(v)
        | UnitProperty::MemoryHigh(v) => Variant::from(*v),
        UnitProperty::IoReadBandwidthMax(d, v)
        | UnitProperty::IoWriteBandwidthMax(d, v)
        | UnitProperty::IoReadIopsMax(d, v)
        | UnitProperty::IoWriteIopsMax(d, v) => per_device(d, *v),
    }
}

#[async_trait::async_trait]
impl ServiceManager for DbusServiceManager {
    async fn set_unit_properties(&self, unit: &str, runtime: bool, props: &[UnitProperty]) -> Result<(), SystemdError> {
        let props: Vec<(&str, Variant<'static>)> = props.iter().map(|p| (p.name(), variant(p))).collect();
        self.manager_call("SetUnitProperties", unit, &(unit, runtime, props)).await?;
        Ok(())
    }

    async fn main_pid(&self, unit: &str) -> Result<u32, SystemdError> {
        let v = self.unit_property(unit, "org.freedesktop.systemd1.Service", "MainPID").await?;
        u32::try_from(v).map_err(|e| call_error("Get", unit, e))
    }

    async fn active_state(&self, unit: &str) -> Result<String, SystemdError> {
        let v = self.unit_property(unit, "org.freedesktop.systemd1.Unit", "ActiveState").await?;
        String::try_from(v).map_err(|e| call_error("Get", unit, e))
    }

    async fn reload_unit(&self, unit: &str, timeout: Duration) -> Result<(), SystemdError> {
        self.run_job("ReloadUnit", "reload", unit, timeout).await
    }

    async fn restart_unit(&self, unit: &str, timeout: Duration) -> Result<(), SystemdError> {
        self.run_job("RestartUnit", "restart", unit, timeout).await
    }
}
