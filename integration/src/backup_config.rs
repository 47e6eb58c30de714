//! The TOML of a real agent that takes and restores backups: the shared test config
//! ([`custom_config`]) plus a host KEK, data roots, `dir` destinations under the work folder and the
//! dump tools aimed at the tests' servers on 127.0.0.1.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use crate::agent::LaunchContext;
use crate::config::{custom_config, toml_path};
use crate::pki::ServerPki;
use crate::servers::PG_BIN;
use dbagent::recovery_key::RecoveryIdentity;

/// What differs between the backup tests' agents.
pub struct BackupAgentConfig<'a> {
    /// Whether `<work_dir>/kek` is written (mode 0600); without it the agent refuses backups.
    pub write_kek: bool,
    pub data_roots: &'a [PathBuf],
    /// The names of `dir` destinations, each at `<work_dir>/dest/<name>`.
    pub destinations: &'a [&'a str],
    pub pg_port: u16,
    /// The database `[backup.postgresql]` connects to.
    pub pg_database: &'a str,
    /// `[backup.redis]` is written only with a port.
    pub redis_port: Option<u16>,
    /// `backup.accept_on_host_destinations`: the tests' destinations are on this host, so true
    /// unless a test shows the refusal.
    pub accept_on_host_destinations: bool,
    /// `backup.scheduler_interval_secs`; 3600 (one pass at start) when `None`.
    pub scheduler_interval_secs: Option<u64>,
}

/// Where [`BackupAgentConfig::toml`] writes the recovery key (mode 0600) whose public key the
/// config lists in `keys.recovery_recipients`: production agents refuse backups without an
/// off-host key.
pub fn recovery_key_file(ctx: &LaunchContext) -> PathBuf {
    ctx.work_dir.join("recovery.key")
}

/// A new recovery key in `path` (mode 0600, as `dbagentctl recovery-key generate` writes it);
/// returns its public key. An existing file is kept: an agent restarted on the same work folder
/// keeps its recipient.
pub fn write_recovery_key(path: &Path) -> String {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(text) = std::fs::read(path) {
        return RecoveryIdentity::parse(&text).expect("the recovery key written before").recipient();
    }
    let identity = RecoveryIdentity::generate();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("create the recovery key");
    file.write_all(identity.to_file_text().as_bytes()).expect("write the recovery key");
    identity.recipient()
}

impl BackupAgentConfig<'_> {
    /// The agent's config, with `pki`'s files written under the work folder and a recovery key
    /// generated for this agent ([`recovery_key_file`]).
    pub fn toml(&self, ctx: &LaunchContext, pki: &ServerPki) -> String {
        let files = pki.write(&ctx.work_dir.join("pki"));
        let kek = ctx.work_dir.join("kek");
        if self.write_kek {
            std::fs::write(&kek, [0x5au8; 32]).expect("write the test KEK");
            std::fs::set_permissions(&kek, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .expect("chmod the test KEK");
        }
        let recipient = write_recovery_key(&recovery_key_file(ctx));
        // The destinations are folders on this host: a production agent refuses backups to them
        // unless the config accepts, in so many words, that backups die with the host.
        let mut toml = format!(
            "{base}\n[keys]\nkek_file = {kek}\nrecovery_recipients = [\"{recipient}\"]\n\n[instances]\ndata_roots = [{roots}]\n\n[backup]\nscheduler_interval_secs = {interval}\naccept_on_host_destinations = {accept}\n",
            interval = self.scheduler_interval_secs.unwrap_or(3600),
            accept = self.accept_on_host_destinations,
            base = custom_config(ctx, &files, &[], &["orchestrator"], &["monitor"]),
            kek = toml_path(&kek),
            roots = self.data_roots.iter().map(|r| toml_path(r)).collect::<Vec<_>>().join(", "),
        );
        for name in self.destinations {
            let path = toml_path(&ctx.work_dir.join("dest").join(name));
            let _ = write!(toml, "\n[[backup.destinations]]\nkind = \"dir\"\nname = \"{name}\"\npath = {path}\n");
        }
        let _ = write!(
            toml,
            "\n[backup.postgresql]\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"postgres\"\ndatabase = \"{db}\"\nbin_dir = {bin}\n",
            port = self.pg_port,
            db = self.pg_database,
            bin = toml_path(Path::new(PG_BIN)),
        );
        if let Some(port) = self.redis_port {
            let _ = write!(toml, "\n[backup.redis]\nhost = \"127.0.0.1\"\nport = {port}\n");
        }
        toml
    }
}
