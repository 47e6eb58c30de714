//! LUKS2 header work with the real libcryptsetup on plain files: the time to format (create) and to
//! unlock (open) a volume, with the shipped PBKDF2 keyslots and with argon2id at the settings the
//! agent shipped before (what a human-passphrase slot would cost).
//! `cargo bench -p dbagent --bench volume_header`; figures in docs/benchmarks.md (Volumes).
//! argon2id costs seconds and 1 GiB of memory per keyslot, which is why this is a benchmark and not
//! a test.

use dbagent::config::PbkdfKind;
use dbagent::volume::crypt::{CryptBackend, FormatParams, LibCryptsetup, PbkdfParams};
use std::time::Instant;

const KEY: &[u8] = &[0x5a; 32];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let cheap = PbkdfParams { kind: PbkdfKind::Pbkdf2, time_ms: 100, iterations: 1000, memory_kib: 32, parallel: 1 };
    let production =
        PbkdfParams { kind: PbkdfKind::Argon2id, time_ms: 2000, iterations: 0, memory_kib: 1024 * 1024, parallel: 4 };
    for (name, pbkdf) in [
        ("pbkdf2, 1000 iterations (shipped default)", cheap),
        ("argon2id, 2000 ms, 1 GiB, 4 threads (the former default)", production),
    ] {
        for key_bits in [256, 512] {
            let image = dir.path().join(format!("{key_bits}-{}.img", pbkdf.iterations));
            std::fs::File::create(&image)?.set_len(32 << 20)?;
            let params = FormatParams { key_bits, sector_size: 0, pbkdf: pbkdf.clone(), label: "dbagent-bench".into() };
            let t = Instant::now();
            LibCryptsetup.format(&image, &params, KEY)?;
            let format = t.elapsed();
            let t = Instant::now();
            LibCryptsetup.verify(&image, KEY)?;
            let unlock = t.elapsed();
            println!("{name}, {key_bits}-bit key: format + keyslot {format:.2?}, unlock {unlock:.2?}");
        }
    }
    Ok(())
}
