//! The `logship-test` helper (one dbagent drain pipeline) as a fixture: started, SIGKILLed,
//! restarted; killed on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct Shipper {
    child: Option<Child>,
    args: Vec<String>,
    binary: PathBuf,
}

impl Shipper {
    /// `binary` is `env!("CARGO_BIN_EXE_logship-test")` of the calling test.
    pub fn start(binary: &str, state: &Path, glob: &str, address: &str, extra: &[&str]) -> Self {
        let mut args = vec![
            "--state".into(),
            state.display().to_string(),
            "--glob".into(),
            glob.into(),
            "--address".into(),
            address.into(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut s = Self { child: None, args, binary: PathBuf::from(binary) };
        s.spawn();
        s
    }

    pub fn spawn(&mut self) {
        let mut child = Command::new(&self.binary)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start logship-test");
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            BufReader::new(out).read_line(&mut line).expect("read readiness");
        }
        assert_eq!(line.trim(), "ready", "logship-test did not start");
        self.child = Some(child);
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("shipper running");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
        c.wait().expect("wait for logship-test")
    }
}

impl Drop for Shipper {
    fn drop(&mut self) {
        self.kill9();
    }
}
