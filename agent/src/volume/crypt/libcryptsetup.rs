//! [`CryptBackend`] through libcryptsetup (libcryptsetup-rs). `CryptDevice` is not `Send` and the
//! library is not thread-safe (the crate's `mutex` feature serialises calls): every method makes its
//! own context and must run inside `spawn_blocking`.

use libcryptsetup_rs::consts::flags::{CryptActivate, CryptDeactivate, CryptPbkdf, CryptVolumeKey};
use libcryptsetup_rs::consts::vals::{CryptKdf, EncryptionFormat, KeyslotInfo};
use libcryptsetup_rs::{
    CryptDevice, CryptInit, CryptParamsLuks2, CryptParamsLuks2Ref, CryptPbkdfType, CryptTokenInfo, Either, LibcryptErr,
    TokenInput,
};
use std::path::Path;

use super::*;
use crate::config::PbkdfKind;

/// LUKS2 has 32 keyslots and 32 token slots.
const MAX_KEYSLOTS: u32 = 32;
const MAX_TOKENS: u32 = 32;

#[derive(Debug, Default, Clone, Copy)]
pub struct LibCryptsetup;

/// The errno of a libcryptsetup failure; the crate's other errors (bad strings, JSON) become
/// `io::Error::other` so [`CryptError::Failed`] has one source type.
fn os_error(e: LibcryptErr) -> std::io::Error {
    match e {
        LibcryptErr::IOError(io) => io,
        other => std::io::Error::other(other),
    }
}

fn failed<'a>(op: &'static str, target: &'a Path) -> impl FnOnce(LibcryptErr) -> CryptError + 'a {
    move |e| CryptError::Failed { op, target: target.display().to_string(), source: os_error(e) }
}

/// EPERM is libcryptsetup's answer for a passphrase that no keyslot accepts; ENOENT for a header
/// without any keyslot (the device was opened already, so it is not a missing file).
fn unlock_failed(target: &Path) -> impl FnOnce(LibcryptErr) -> CryptError + '_ {
    move |e| match &e {
        LibcryptErr::IOError(io) if matches!(io.raw_os_error(), Some(1 | 2)) => {
            CryptError::WrongKey(target.display().to_string())
        }
        _ => CryptError::Failed { op: "unlock", target: target.display().to_string(), source: os_error(e) },
    }
}

fn load(device: &Path) -> Result<CryptDevice, CryptError> {
    let mut cd = CryptInit::init(device).map_err(failed("open", device))?;
    cd.context_handle()
        .load::<()>(Some(EncryptionFormat::Luks2), None)
        .map_err(failed("read the LUKS2 header of", device))?;
    Ok(cd)
}

fn pbkdf_type(p: &PbkdfParams) -> CryptPbkdfType {
    let (type_, memory, parallel) = match p.kind {
        PbkdfKind::Argon2id => (CryptKdf::Argon2Id, p.memory_kib, p.parallel),
        PbkdfKind::Pbkdf2 => (CryptKdf::Pbkdf2, 0, 0),
    };
    CryptPbkdfType {
        type_,
        hash: Some(HASH.to_owned()),
        time_ms: p.time_ms,
        iterations: p.iterations,
        max_memory_kb: memory,
        parallel_threads: parallel,
        flags: if p.iterations > 0 { CryptPbkdf::NO_BENCHMARK } else { CryptPbkdf::empty() },
    }
}

fn activate_flags(f: ActivationFlags) -> CryptActivate {
    let mut out = CryptActivate::empty();
    if f.no_read_workqueue {
        out |= CryptActivate::NO_READ_WORKQUEUE;
    }
    if f.no_write_workqueue {
        out |= CryptActivate::NO_WRITE_WORKQUEUE;
    }
    out
}

impl CryptBackend for LibCryptsetup {
    fn is_luks(&self, device: &Path) -> Result<bool, CryptError> {
        let mut cd = CryptInit::init(device).map_err(failed("open", device))?;
        Ok(cd.context_handle().load::<()>(Some(EncryptionFormat::Luks2), None).is_ok()
            || cd.context_handle().load::<()>(Some(EncryptionFormat::Luks1), None).is_ok())
    }

    fn format(&self, device: &Path, params: &FormatParams, passphrase: &[u8]) -> Result<u32, CryptError> {
        let mut cd = CryptInit::init(device).map_err(failed("open", device))?;
        let luks2 = CryptParamsLuks2 {
            pbkdf: Some(pbkdf_type(&params.pbkdf)),
            integrity: None,
            integrity_params: None,
            data_alignment: 0,
            data_device: None,
            sector_size: params.sector_size,
            label: Some(params.label.clone()),
            subsystem: None,
        };
        let mut luks2_ref: CryptParamsLuks2Ref<'_> =
            (&luks2).try_into().map_err(failed("prepare LUKS2 parameters for", device))?;
        cd.context_handle()
            .format(
                EncryptionFormat::Luks2,
                (CIPHER, CIPHER_MODE),
                None,
                Either::Right(params.key_bits as usize / 8),
                Some(&mut luks2_ref),
            )
            .map_err(failed("format LUKS2 on", device))?;
        cd.settings_handle().set_pbkdf_type(&pbkdf_type(&params.pbkdf)).map_err(failed("set the PBKDF of", device))?;
        cd.keyslot_handle()
            .add_by_key(None, None, passphrase, CryptVolumeKey::empty())
            .map_err(failed("add the first keyslot to", device))
    }

    fn verify(&self, device: &Path, passphrase: &[u8]) -> Result<u32, CryptError> {
        let mut cd = load(device)?;
        cd.activate_handle()
            .activate_by_passphrase(None, None, passphrase, CryptActivate::empty())
            .map_err(unlock_failed(device))
    }

    fn activate(&self, device: &Path, name: &str, passphrase: &[u8], flags: ActivationFlags) -> Result<(), CryptError> {
        let mut cd = load(device)?;
        cd.activate_handle()
            .activate_by_passphrase(Some(name), None, passphrase, activate_flags(flags))
            .map_err(unlock_failed(device))?;
        Ok(())
    }

    fn deactivate(&self, name: &str) -> Result<(), CryptError> {
        let path = Path::new(name);
        let mut cd = CryptInit::init_by_name_and_header(name, None).map_err(failed("find mapping", path))?;
        cd.activate_handle().deactivate(name, CryptDeactivate::empty()).map_err(failed("deactivate", path))
    }

    fn active(&self, name: &str) -> Result<Option<ActivationFlags>, CryptError> {
        use libcryptsetup_rs::consts::vals::CryptStatusInfo;
        let path = Path::new(name);
        match libcryptsetup_rs::status(None, name).map_err(failed("status of mapping", path))? {
            CryptStatusInfo::Active | CryptStatusInfo::Busy => {}
            _ => return Ok(None),
        }
        let mut cd = CryptInit::init_by_name_and_header(name, None).map_err(failed("find mapping", path))?;
        let active = cd.runtime_handle(name).get_active_device().map_err(failed("read mapping", path))?;
        Ok(Some(ActivationFlags {
            no_read_workqueue: active.flags.contains(CryptActivate::NO_READ_WORKQUEUE),
            no_write_workqueue: active.flags.contains(CryptActivate::NO_WRITE_WORKQUEUE),
        }))
    }

    fn resize(&self, device: &Path, name: &str, passphrase: &[u8]) -> Result<(), CryptError> {
        // With the volume key in the kernel keyring (the LUKS2 default), libcryptsetup needs the key
        // loaded into the context first, as `cryptsetup resize` does.
        let mut cd = CryptInit::init_by_name_and_header(name, None).map_err(failed("find mapping", device))?;
        cd.activate_handle()
            .activate_by_passphrase(None, None, passphrase, CryptActivate::KEYRING_KEY)
            .map_err(unlock_failed(device))?;
        cd.context_handle().resize(name, 0).map_err(failed("resize mapping of", device))
    }

    fn add_keyslot(&self, device: &Path, old: &[u8], new: &[u8], pbkdf: &PbkdfParams) -> Result<u32, CryptError> {
        let mut cd = load(device)?;
        cd.settings_handle().set_pbkdf_type(&pbkdf_type(pbkdf)).map_err(failed("set the PBKDF of", device))?;
        cd.keyslot_handle().add_by_passphrase(None, old, new).map_err(|e| match unlock_failed(device)(e) {
            CryptError::Failed { target, source, .. } => CryptError::Failed { op: "add a keyslot to", target, source },
            wrong => wrong,
        })
    }

    fn destroy_keyslot(&self, device: &Path, slot: u32) -> Result<(), CryptError> {
        let mut cd = load(device)?;
        cd.keyslot_handle().destroy(slot).map_err(failed("destroy a keyslot of", device))
    }

    fn erase_keyslots(&self, device: &Path) -> Result<(), CryptError> {
        let mut cd = load(device)?;
        for slot in active_keyslots(&mut cd) {
            cd.keyslot_handle().destroy(slot).map_err(failed("destroy a keyslot of", device))?;
        }
        Ok(())
    }

    fn header_info(&self, device: &Path) -> Result<HeaderInfo, CryptError> {
        let mut cd = load(device)?;
        let mut status = cd.status_handle();
        let cipher = format!(
            "{}-{}",
            status.get_cipher().map_err(failed("read the cipher of", device))?,
            status.get_cipher_mode().map_err(failed("read the cipher mode of", device))?
        );
        let key_bits = u32::try_from(status.get_volume_key_size()).unwrap_or(0) * 8;
        let sector_size = u32::try_from(libcryptsetup_rs::get_sector_size(Some(&mut cd))).unwrap_or(0);
        Ok(HeaderInfo { cipher, key_bits, sector_size })
    }

    fn header_backup(&self, device: &Path, file: &Path) -> Result<(), CryptError> {
        let mut cd = load(device)?;
        cd.backup_handle()
            .header_backup(Some(EncryptionFormat::Luks2), file)
            .map_err(failed("back up the header of", device))
    }

    fn read_token(&self, device: &Path, token_type: &str) -> Result<Option<String>, CryptError> {
        let mut cd = load(device)?;
        let Some(token) = token_of_type(&mut cd, token_type) else { return Ok(None) };
        let json = cd.token_handle().json_get(token).map_err(failed("read a token of", device))?;
        Ok(Some(json.to_string()))
    }

    fn write_token(&self, device: &Path, token_type: &str, json: &str) -> Result<(), CryptError> {
        let value: serde_json::Value = serde_json::from_str(json).map_err(|e| CryptError::Failed {
            op: "prepare a token for",
            target: device.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        })?;
        let mut cd = load(device)?;
        let input = match token_of_type(&mut cd, token_type) {
            Some(token) => TokenInput::ReplaceToken(token, &value),
            None => TokenInput::AddToken(&value),
        };
        cd.token_handle().json_set(input).map_err(failed("write a token to", device))?;
        Ok(())
    }
}

/// The first token slot holding a token of `token_type` (ours are external, user-defined types).
fn token_of_type(cd: &mut CryptDevice, token_type: &str) -> Option<u32> {
    (0..MAX_TOKENS).find(|t| {
        matches!(cd.token_handle().status(*t),
            Ok(CryptTokenInfo::External(ty) | CryptTokenInfo::ExternalUnknown(ty)) if ty == token_type)
    })
}

fn active_keyslots(cd: &mut CryptDevice) -> Vec<u32> {
    (0..MAX_KEYSLOTS)
        .filter(|s| matches!(cd.keyslot_handle().status(*s), Ok(KeyslotInfo::Active | KeyslotInfo::ActiveLast)))
        .collect()
}

#[cfg(test)]
#[path = "libcryptsetup_tests.rs"]
mod tests;
