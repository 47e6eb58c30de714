//! `dbagentctl tls install|show`: an instance's database TLS certificate. The key file is read
//! like an ssh key (a regular file, no link followed, readable by its owner only), sent once, and
//! never stored by the agent beyond the operation's memory.

use super::Ctx;
use super::args::OperationArgs;
use super::error::CliError;
use super::operations::finish;
use super::recovery_key::read_secret_file;
use super::render::{ToJson, time_text};
use super::table::{ToTable, fields};
use clap::Subcommand;
use dbagent_proto::v1 as pb;
use pb::upgrades_client::UpgradesClient;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// The agent refuses larger fields (`dbtls::validate`); the CLI says so before sending.
const MAX_KEY_FILE: u64 = 16 * 1024;
const MAX_CERT_FILE: u64 = 256 * 1024;

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Install a certificate the database serves, without a restart (orchestrator identity). The
    /// agent checks the key against the certificate, the chain against --ca, the dates and the
    /// names before it writes anything; the old certificate is kept until the new one is served.
    Install {
        instance_id: String,
        /// PEM certificate, then its intermediates.
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// PEM private key, readable by its owner only (chmod 600).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// PEM CA certificate(s) the chain must verify to.
        #[arg(long, value_name = "FILE")]
        ca: PathBuf,
        /// Write and reload even if the instance already serves this certificate.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        op: OperationArgs,
    },
    /// Show the installed certificate: subject, names, fingerprint, expiry.
    Show { instance_id: String },
}

fn read_public(what: &str, path: &Path) -> Result<String, CliError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| CliError::Usage(format!("read {what} {}: {e}", path.display())))?;
    if text.len() as u64 > MAX_CERT_FILE {
        return Err(CliError::Usage(format!("{what} {} is larger than {MAX_CERT_FILE} bytes", path.display())));
    }
    Ok(text)
}

/// The InstallCertificate request for these files.
pub fn install_request(
    request_id: String,
    instance_id: String,
    cert: &Path,
    key: &Path,
    ca: &Path,
    force: bool,
) -> Result<pb::InstallCertificateRequest, CliError> {
    let key_bytes = read_secret_file("--key", "a PEM private key", key, MAX_KEY_FILE)?;
    let key_pem = std::str::from_utf8(&key_bytes)
        .map_err(|_| CliError::Usage(format!("--key {} is not PEM text", key.display())))?
        .to_owned();
    Ok(pb::InstallCertificateRequest {
        request_id,
        instance_id,
        cert_pem: read_public("--cert", cert)?,
        key_pem,
        ca_pem: read_public("--ca", ca)?,
        force,
    })
}

pub async fn run(ctx: &Ctx, command: TlsCommand) -> Result<(), CliError> {
    let mut client = UpgradesClient::new(ctx.channel.clone());
    match command {
        TlsCommand::Install { instance_id, cert, key, ca, force, op } => {
            let request = install_request(op.request.resolve()?, instance_id, &cert, &key, &ca, force)?;
            let started = client.install_certificate(ctx.unary(request)).await?.into_inner();
            finish(ctx, started, op.watch).await
        }
        TlsCommand::Show { instance_id } => {
            let info = client.get_certificate(ctx.unary(pb::GetCertificateRequest { instance_id })).await?;
            ctx.print(info.get_ref())
        }
    }
}

impl ToJson for pb::CertificateInfo {
    fn to_json(&self) -> Value {
        json!({
            "instance_id": self.instance_id, "installed": self.installed, "subject": self.subject,
            "fingerprint_sha256": self.fingerprint_sha256, "not_after": time_text(self.not_after.as_ref()),
            "seconds_left": self.seconds_left, "names": self.names, "expires_soon": self.expires_soon,
        })
    }
}

impl ToTable for pb::CertificateInfo {
    fn to_table(&self) -> String {
        if !self.installed {
            return format!("{}: no certificate installed by the agent\n", self.instance_id);
        }
        let left =
            if self.seconds_left < 0 { "EXPIRED".to_owned() } else { format!("{} days", self.seconds_left / 86_400) };
        let warning = if self.expires_soon { " (install a new one)" } else { "" };
        fields(&[
            ("instance", self.instance_id.clone()),
            ("subject", self.subject.clone()),
            ("names", self.names.join(", ")),
            ("fingerprint (sha256)", self.fingerprint_sha256.clone()),
            ("expires", time_text(self.not_after.as_ref()).unwrap_or_default()),
            ("left", format!("{left}{warning}")),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_key_file_must_be_private_and_the_request_carries_all_three() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, ca) = (dir.path().join("c.pem"), dir.path().join("k.pem"), dir.path().join("ca.pem"));
        std::fs::write(&cert, "CERT").unwrap();
        std::fs::write(&ca, "CA").unwrap();
        std::fs::write(&key, "KEY").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = install_request("r".into(), "pg-1".into(), &cert, &key, &ca, false).unwrap_err();
        assert!(e.to_string().contains("too open"), "{e}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("link.pem");
        std::os::unix::fs::symlink(&key, &link).unwrap();
        assert!(install_request("r".into(), "pg-1".into(), &cert, &link, &ca, false).is_err(), "no link followed");
        let r = install_request("r".into(), "pg-1".into(), &cert, &key, &ca, true).unwrap();
        assert_eq!((r.cert_pem.as_str(), r.key_pem.as_str(), r.ca_pem.as_str(), r.force), ("CERT", "KEY", "CA", true));
    }

    #[test]
    fn show_renders_expiry_in_both_forms() {
        let info = pb::CertificateInfo {
            instance_id: "pg-1".into(),
            installed: true,
            subject: "CN=pg-1".into(),
            fingerprint_sha256: "ab".into(),
            not_after: Some(prost_types::Timestamp { seconds: 4_070_908_800, nanos: 0 }),
            seconds_left: 20 * 86_400,
            names: vec!["pg-1.db.example.com".into()],
            expires_soon: true,
        };
        let table = info.to_table();
        assert!(table.contains("20 days (install a new one)") && table.contains("2099-01-01"), "{table}");
        assert_eq!(info.to_json()["expires_soon"], true);
        let none = pb::CertificateInfo { instance_id: "pg-1".into(), ..Default::default() };
        assert!(none.to_table().contains("no certificate"), "{}", none.to_table());
    }
}
