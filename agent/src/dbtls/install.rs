//! One install, in the order that keeps the instance serving a good certificate throughout:
//! right server -> the engine can take it -> stage the files -> swap them in (old ones kept) ->
//! reload -> the agent's TLS client sees the new certificate -> the old files go. If the reload
//! fails or the new certificate is not served in time, the old files go back, the engine is
//! reloaded again, and the install fails saying why (both errors if putting back fails too).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::DbTlsError;
use super::files::{TlsFiles, TlsPaths};
use super::reload;
use super::served::served_certificate;
use super::validate::ValidBundle;
use crate::backup::settings::{BackupConfig, EngineConnection};
use crate::instances::Instance;

/// What an install needs besides the instance and the bundle.
#[derive(Clone)]
pub struct InstallContext {
    pub data_roots: Vec<PathBuf>,
    pub connections: BackupConfig,
    pub connect_host: IpAddr,
    pub served_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InstallOutcome {
    /// The new certificate is served; the previous files are gone.
    Installed,
    /// The engine already served this very certificate from the agent's files (not `force`).
    AlreadyServed,
}

fn owner(instance: &Instance) -> Result<(u32, u32), DbTlsError> {
    let user = nix::unistd::User::from_name(&instance.spec.os_user)
        .ok()
        .flatten()
        .ok_or_else(|| crate::command::CommandError::UnknownUser(instance.spec.os_user.clone()))?;
    Ok((user.uid.as_raw(), user.gid.as_raw()))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DbTlsError> + Send + 'static,
) -> Result<T, DbTlsError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(DbTlsError::Files(crate::beneath::BeneathError::Io {
            op: "file work",
            path: PathBuf::new(),
            source: std::io::Error::other(e.to_string()),
        }))
    })
}

/// Polls what the server serves until it is `leaf` or `within` has passed; the last difference
/// otherwise.
async fn wait_served(instance: &Instance, addr: SocketAddr, leaf: &[u8], within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(500));
        let why = match served_certificate(instance.spec.engine, addr, left).await {
            Ok(served) if served == leaf => return Ok(()),
            Ok(_) => "it still serves another certificate".to_owned(),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(format!("after {}s at {addr}: {why}", within.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Whether the agent's files already hold this certificate and the engine serves it.
async fn already_served(
    files: &std::sync::Arc<TlsFiles>,
    instance: &Instance,
    addr: SocketAddr,
    bundle: &ValidBundle,
) -> Result<bool, DbTlsError> {
    let f = files.clone();
    let installed = blocking(move || f.read_cert()).await?;
    let same_file =
        installed.and_then(|pem| super::validate::summarize(&pem)).is_some_and(|s| s.fingerprint == bundle.fingerprint);
    Ok(same_file
        && served_certificate(instance.spec.engine, addr, Duration::from_secs(5))
            .await
            .is_ok_and(|c| c == bundle.leaf_der))
}

pub async fn install(
    ctx: &InstallContext,
    instance: &Instance,
    bundle: ValidBundle,
    force: bool,
) -> Result<InstallOutcome, DbTlsError> {
    let engine = instance.spec.engine.as_str();
    let conn: EngineConnection = ctx.connections.connection_for(instance, &ctx.data_roots).await;
    crate::backup::server_check::check_serves(instance, &conn).await?;
    let paths = TlsPaths::in_data_dir(&instance.spec.data_dir);
    let before = reload::before(instance, &conn, &paths).await?;
    let addr = SocketAddr::new(ctx.connect_host, before.port);
    let (uid, gid) = owner(instance)?;
    let (roots, data_dir) = (ctx.data_roots.clone(), instance.spec.data_dir.clone());
    let files = std::sync::Arc::new(blocking(move || TlsFiles::open(&roots, &data_dir, uid, gid)).await?);

    if !force && already_served(&files, instance, addr, &bundle).await? {
        return Ok(InstallOutcome::AlreadyServed);
    }

    let leaf = bundle.leaf_der.clone();
    let swapped = blocking({
        let f = files.clone();
        move || {
            f.stage(&bundle)?;
            drop(bundle);
            f.swap_in()
        }
    })
    .await?;
    let reason = match reload::apply(instance, &conn, &paths).await {
        Ok(()) => match wait_served(instance, addr, &leaf, ctx.served_timeout).await {
            Ok(()) => {
                // The new certificate is served: leftovers are untidy, not a failed install.
                let discarded = blocking({
                    let f = files.clone();
                    move || f.discard_previous()
                })
                .await;
                if let Err(e) = discarded {
                    tracing::warn!(instance = %instance.id, "remove the previous certificate files: {e}");
                }
                return Ok(InstallOutcome::Installed);
            }
            Err(why) => why,
        },
        Err(e) => format!("the reload failed: {e}"),
    };
    tracing::warn!(instance = %instance.id, %reason, "the new certificate is not served; putting the previous one back");
    let restored = async {
        blocking({
            let f = files.clone();
            move || f.put_back(swapped)
        })
        .await?;
        reload::restore(instance, &conn, &before).await
    };
    match restored.await {
        Ok(()) => Err(DbTlsError::NotServed { engine, reason }),
        Err(e) => Err(DbTlsError::RestoreFailed { engine, reason, restore: e.to_string() }),
    }
}
