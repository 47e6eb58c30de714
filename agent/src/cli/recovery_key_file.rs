//! Reading the operator's recovery key file (`--recovery-key FILE`, an age identity as
//! `age-keygen` or `dbagentctl` writes it) for one request. The key opens every escrowed volume key
//! and backup key of the platform, so a file that others on this machine can read is refused
//! rather than used: the operator fixes its mode first.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use zeroize::Zeroizing;

use super::error::CliError;

/// An identity file is a few hundred bytes; anything larger is not one.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// The file's bytes, refused when it is not a regular file, is readable or writable by group or
/// others, or is larger than an identity file can be. The text is checked by the agent.
pub fn read(path: &Path) -> Result<Zeroizing<Vec<u8>>, CliError> {
    let shown = path.display();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| CliError::Usage(format!("--recovery-key {shown}: {e}")))?;
    let meta = file.metadata().map_err(|e| CliError::Usage(format!("--recovery-key {shown}: {e}")))?;
    if !meta.is_file() {
        return Err(CliError::Usage(format!("--recovery-key {shown} is not a regular file")));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CliError::Usage(format!(
            "--recovery-key {shown} has mode {mode:o}: a recovery key must be readable by its owner only; chmod 600 {shown}"
        )));
    }
    if meta.len() > MAX_KEY_FILE {
        return Err(CliError::Usage(format!(
            "--recovery-key {shown} is {} bytes: not an age identity file",
            meta.len()
        )));
    }
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_KEY_FILE)
        .read_to_end(&mut bytes)
        .map_err(|e| CliError::Usage(format!("--recovery-key {shown}: {e}")))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_key_file_others_can_read_is_refused_and_a_private_one_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recovery.key");
        std::fs::write(&path, b"AGE-SECRET-KEY-1TEST\n").unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = read(&path).unwrap_err();
            assert!(e.to_string().contains("chmod 600"), "mode {mode:o}: {e}");
            assert!(!e.to_string().contains("AGE-SECRET"), "the error shows key text: {e}");
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(&read(&path).unwrap()[..], b"AGE-SECRET-KEY-1TEST\n");
        }
        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(read(&link).is_err(), "a symbolic link is not followed");
        assert!(read(dir.path()).is_err(), "a folder is refused");
    }
}
