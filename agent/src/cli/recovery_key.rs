//! `dbagentctl recovery-key generate` and the `--recovery-key FILE` of `backups restore|verify`:
//! the operator-held age identity that opens backups on a new host (docs/backups.md, "Disaster
//! recovery"). The file is read like ssh reads a private key: refused when group or others can
//! read it, so a key left readable is noticed before it is used.

use clap::Subcommand;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

use super::error::CliError;
use crate::recovery_key::RecoveryIdentity;

/// An identity file is one key line and a few comments; anything larger is not one.
const MAX_KEY_FILE_BYTES: u64 = 4096;

#[derive(Debug, Subcommand)]
pub enum RecoveryKeyCommand {
    /// Make a new recovery key (an age X25519 identity) in FILE, mode 0600, and print its public
    /// key for `keys.recovery_recipients`. Needs no agent. Keep FILE off every host: whoever holds
    /// it can open every backup sealed to it.
    Generate {
        /// Where to write the identity; an existing file is never overwritten.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

pub fn run(command: RecoveryKeyCommand) -> Result<(), CliError> {
    match command {
        RecoveryKeyCommand::Generate { out } => {
            let recipient = generate(&out)?;
            super::emit(&format!(
                "wrote the recovery key to {}\npublic key (add it to keys.recovery_recipients on every host):\n{recipient}\n",
                out.display()
            ))
        }
    }
}

/// Writes a new identity to `out` (created, mode 0600, never overwritten); returns its public key.
pub fn generate(out: &Path) -> Result<String, CliError> {
    let identity = RecoveryIdentity::generate();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(out)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                CliError::Usage(format!("{} already exists; a recovery key is never overwritten", out.display()))
            }
            _ => CliError::Other(format!("create {}: {e}", out.display())),
        })?;
    file.write_all(identity.to_file_text().as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| CliError::Other(format!("write {}: {e}", out.display())))?;
    Ok(identity.recipient())
}

/// The text of the identity file at `path`, for a request's `recovery_key`. Refused when the file
/// is readable by group or others, not a regular file, or too large to be an identity. Its content
/// is checked by the agent; it is wiped from this process's memory when dropped.
pub fn read_key_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, CliError> {
    read_secret_file("--recovery-key", "an age identity file", path, MAX_KEY_FILE_BYTES)
}

/// A private key file given as `flag`: a regular file (no link followed) readable by its owner
/// only, at most `max` bytes (`what` names what it should be), wiped from memory when dropped.
pub fn read_secret_file(flag: &str, what: &str, path: &Path, max: u64) -> Result<Zeroizing<Vec<u8>>, CliError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| CliError::Usage(format!("{flag} {}: {e}", path.display())))?;
    let meta = file.metadata().map_err(|e| CliError::Usage(format!("{flag} {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(CliError::Usage(format!("{flag} {} is not a regular file", path.display())));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(CliError::Usage(format!(
            "{flag} {}: permissions {:04o} are too open, the key must be readable by its owner only (chmod 600 {})",
            path.display(),
            meta.mode() & 0o7777,
            path.display()
        )));
    }
    let mut text = Zeroizing::new(Vec::new());
    file.take(max + 1)
        .read_to_end(&mut text)
        .map_err(|e| CliError::Usage(format!("{flag} {}: {e}", path.display())))?;
    if text.len() as u64 > max {
        return Err(CliError::Usage(format!("{flag} {} is larger than {max} bytes; it is not {what}", path.display())));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generate_writes_a_0600_identity_once_and_read_key_file_returns_it() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("recovery.key");
        let recipient = generate(&out).unwrap();
        assert!(recipient.starts_with("age1"), "{recipient}");
        assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
        let text = read_key_file(&out).unwrap();
        assert_eq!(RecoveryIdentity::parse(&text).unwrap().recipient(), recipient);
        let before = std::fs::read(&out).unwrap();
        let e = generate(&out).unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        assert_eq!(std::fs::read(&out).unwrap(), before, "the existing key is untouched");
    }

    #[test]
    fn a_key_file_readable_by_group_or_others_is_refused_like_ssh_does() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("recovery.key");
        generate(&out).unwrap();
        for mode in [0o640, 0o604, 0o644] {
            std::fs::set_permissions(&out, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = read_key_file(&out).unwrap_err();
            assert!(e.to_string().contains("too open") && e.to_string().contains("chmod 600"), "{mode:o}: {e}");
        }
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o400)).unwrap();
        read_key_file(&out).unwrap();
        // A link is not followed.
        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(&out, &link).unwrap();
        assert!(read_key_file(&link).is_err());
    }
}
