//! The tenant's side of the attack tests: run as an engine's OS user (uid/gid set by the test), it
//! exchanges two names beneath a folder that user owns, as fast as it can, with `renameat2`
//! `RENAME_EXCHANGE` (atomic: at every instant one of the two names is the real file and the other is
//! the planted link, FIFO or folder).
//!
//! `tenant-attack exchange A B` loops until its stdin closes, then prints how many exchanges it made,
//! so a test can show the attack really ran while the agent worked.
//!
//! `tenant-attack plant-link TARGET LINK` makes a symbolic link LINK -> TARGET whenever LINK is
//! missing (the agent removed or moved it), in the same loop, and prints how many it made.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [cmd, a, b] = args.as_slice() else {
        eprintln!(
            "usage: tenant-attack exchange A B | plant-link TARGET LINK   (loops until stdin closes, prints the count)"
        );
        std::process::exit(2);
    };
    let plant = match cmd.as_str() {
        "exchange" => false,
        "plant-link" => true,
        _ => {
            eprintln!("unknown command {cmd}");
            std::process::exit(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let stop_reader = Arc::clone(&stop);
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        stop_reader.store(true, Ordering::Relaxed);
    });
    let (mut done, mut failed) = (0u64, 0u64);
    let mut last_error = None;
    while plant && !stop.load(Ordering::Relaxed) {
        match std::os::unix::fs::symlink(a, b) {
            Ok(()) => done += 1,
            Err(e) => {
                // Mostly EEXIST: the link (or the agent's own file) is there; try again.
                failed += 1;
                last_error = Some(nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)));
                std::thread::yield_now();
            }
        }
    }
    if plant {
        println!("{done} {failed} {}", last_error.map(|e| e.to_string()).unwrap_or_default());
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        match renameat2(AT_FDCWD, a.as_str(), AT_FDCWD, b.as_str(), RenameFlags::RENAME_EXCHANGE) {
            Ok(()) => done += 1,
            Err(e) => {
                // One of the names can be gone for a moment (the agent moved or removed it); keep going.
                failed += 1;
                last_error = Some(e);
                std::thread::yield_now();
            }
        }
    }
    // An even count leaves both names where they started.
    if done % 2 == 1 && renameat2(AT_FDCWD, a.as_str(), AT_FDCWD, b.as_str(), RenameFlags::RENAME_EXCHANGE).is_ok() {
        done += 1;
    }
    println!("{done} {failed} {}", last_error.map(|e| e.to_string()).unwrap_or_default());
}
