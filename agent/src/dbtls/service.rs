//! The database TLS service: InstallCertificate as a durable operation (kind `dbtls.install`,
//! exclusive per instance), and what is installed, read back from the instance's files.
//!
//! The operation's parameters are the certificate's fingerprint, subject and expiry, and that a
//! key was given ([`crate::ops::IN_MEMORY_ONLY`]): the key itself lives in the job's memory only
//! (zeroized when the job ends), so an install cut short by a restart is reported interrupted
//! with "submit again".

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::UnixTime;
use serde_json::json;

use super::DbTlsError;
use super::files::TlsFiles;
use super::install::{InstallContext, install};
use super::settings::DbTlsConfig;
use super::validate::{CertSummary, CertificateInput, required_names, summarize, validate};
use crate::backup::settings::BackupConfig;
use crate::error::ErrorCode;
use crate::instances::registry::Registry;
use crate::ops::{NewOperation, OpError, OperationEngine, OperationRecord};

pub const KIND_INSTALL: &str = "dbtls.install";

#[derive(Clone)]
pub struct DbTlsService {
    registry: Arc<Registry>,
    operations: OperationEngine,
    config: DbTlsConfig,
    hostname: String,
    ctx: InstallContext,
}

/// An installed certificate and how long it has left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub instance_id: String,
    pub summary: CertSummary,
    /// Negative once expired.
    pub seconds_left: i64,
    /// Within `database_tls.warn_days` of expiry (or past it).
    pub warn: bool,
}

/// `secs` since the epoch as a time (before the epoch: the epoch).
pub fn unix_time(secs: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// The warning GetStatus gives for `installed`.
pub fn expiry_message(installed: &Installed) -> String {
    let at = crate::timefmt::format(unix_time(installed.summary.not_after));
    if installed.seconds_left < 0 {
        format!("the TLS certificate of {} expired at {at}; install a new one", installed.instance_id)
    } else {
        let days = installed.seconds_left / 86_400;
        format!("the TLS certificate of {} expires in {days} days ({at}); install a new one", installed.instance_id)
    }
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

impl DbTlsService {
    pub fn new(
        registry: Arc<Registry>,
        operations: OperationEngine,
        config: DbTlsConfig,
        connections: BackupConfig,
        data_roots: Vec<PathBuf>,
        hostname: String,
    ) -> Self {
        // Validated with the config: an IP address.
        let connect_host = config.connect_host.parse().unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let ctx = InstallContext {
            data_roots,
            connections,
            connect_host,
            served_timeout: Duration::from_secs(config.served_timeout_secs),
        };
        Self { registry, operations, config, hostname, ctx }
    }

    /// Checks the bundle for the instance (INVALID_ARGUMENT naming the problem, before anything is
    /// written or recorded) and submits the install.
    pub async fn submit_install(
        &self,
        request_id: String,
        instance_id: &str,
        input: CertificateInput,
        force: bool,
    ) -> Result<OperationRecord, DbTlsError> {
        crate::ids::request_id(&request_id)?;
        crate::ids::instance_id("instance_id", instance_id)?;
        let instance = self.registry.get(instance_id)?;
        let names = required_names(&self.config.names, &self.hostname, instance_id);
        let bundle = validate(input, &names, UnixTime::now())?;
        let new = NewOperation {
            request_id,
            kind: KIND_INSTALL,
            target: instance_id.to_owned(),
            params: json!({
                "fingerprint_sha256": bundle.fingerprint,
                "subject": bundle.subject,
                "not_after": bundle.not_after,
                "force": force,
                "key_pem": crate::ops::IN_MEMORY_ONLY,
            }),
            exclusive: true,
        };
        let ctx = self.ctx.clone();
        let job: crate::ops::engine::JobFn = Box::new(move |job| {
            Box::pin(async move {
                if job.cancel.is_cancelled() {
                    return Err(OpError { code: ErrorCode::Cancelled, message: "cancelled before it started".into() });
                }
                // Not cancelled halfway: between the swap and the check, stopping would leave the
                // old files set aside; the install ends within served_timeout_secs either way.
                let (fingerprint, not_after) = (bundle.fingerprint.clone(), bundle.not_after);
                match install(&ctx, &instance, bundle, force).await {
                    Ok(outcome) => Ok(Some(json!({
                        "outcome": outcome,
                        "fingerprint_sha256": fingerprint,
                        "not_after": not_after,
                    }))),
                    Err(e) => Err(OpError::from_error(&e)),
                }
            })
        });
        let (record, _) = self.operations.submit(new, job).await.map_err(|e| match e {
            crate::ops::OpsError::Invalid(f) => DbTlsError::Invalid(f),
            other => DbTlsError::Operations(other),
        })?;
        Ok(record)
    }

    /// The certificate installed for `instance_id`, if any.
    pub fn installed(&self, instance_id: &str) -> Result<Option<Installed>, DbTlsError> {
        crate::ids::instance_id("instance_id", instance_id)?;
        let instance = self.registry.get(instance_id)?;
        // Opened as root, but only read: the owner given is not used.
        let files = TlsFiles::open(&self.ctx.data_roots, &instance.spec.data_dir, 0, 0)?;
        let Some(pem) = files.read_cert()? else { return Ok(None) };
        let Some(summary) = summarize(&pem) else { return Ok(None) };
        let seconds_left = summary.not_after - now_secs();
        let warn_secs = i64::try_from(self.config.warn_days * 86_400).unwrap_or(i64::MAX);
        Ok(Some(Installed {
            instance_id: instance_id.to_owned(),
            summary,
            seconds_left,
            warn: seconds_left < warn_secs,
        }))
    }

    /// Every registered instance's installed certificate (those whose files can be read).
    pub fn all_installed(&self) -> Vec<Installed> {
        self.registry.list().iter().filter_map(|i| self.installed(&i.id).ok().flatten()).collect()
    }

    /// Prometheus text: `dbagent_instance_tls_cert_expiry_seconds` per instance with a certificate.
    pub fn metrics_text(&self) -> String {
        let all = self.all_installed();
        if all.is_empty() {
            return String::new();
        }
        let mut out = String::from(
            "# HELP dbagent_instance_tls_cert_expiry_seconds Seconds until the instance's installed TLS certificate \
             expires (negative: expired).\n# TYPE dbagent_instance_tls_cert_expiry_seconds gauge\n",
        );
        for i in all {
            out.push_str(&format!(
                "dbagent_instance_tls_cert_expiry_seconds{{instance=\"{}\"}} {}\n",
                i.instance_id, i.seconds_left
            ));
        }
        out
    }
}
