//! The `Agent` fixture: one real `dbagent` process on 127.0.0.1, killed when the fixture drops.

use crate::client::{ClientIdentity, connect};
use crate::ready::speaks_tls;
use crate::servers::ReservedPort;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tonic::transport::Channel;

/// How long an agent may take from spawn to accepting TLS before the test fails.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the binary under test is: `DBAGENT_BIN`, else the debug build in the cargo target dir.
pub fn agent_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("DBAGENT_BIN") {
        return PathBuf::from(bin);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new("."));
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace.join("target"));
    let target = if target.is_absolute() { target } else { workspace.join(target) };
    let bin = target.join("debug").join("dbagent");
    assert!(bin.exists(), "{} does not exist; build it first: cargo build -p dbagent --bins", bin.display());
    bin
}

/// What a config-file generator needs to know about the agent it configures.
#[derive(Debug, Clone)]
pub struct LaunchContext {
    /// The test's private directory; the state dir, the config file and the logs live under it.
    pub work_dir: PathBuf,
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
}

type ConfigFn = Box<dyn Fn(&LaunchContext) -> String>;

enum Mode {
    Dev,
    Config(ConfigFn),
}

/// Chooses how an [`Agent`] is started.
pub struct AgentBuilder {
    mode: Mode,
    extra_args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    wait_ready: bool,
}

impl AgentBuilder {
    /// `dbagent --dev --state-dir DIR --listen 127.0.0.1:PORT`: the agent makes its own PKI.
    pub fn dev() -> Self {
        Self { mode: Mode::Dev, extra_args: Vec::new(), env: Vec::new(), wait_ready: true }
    }

    /// `dbagent --config FILE`, with the file's TOML made by `render` from the launch context.
    pub fn config(render: impl Fn(&LaunchContext) -> String + 'static) -> Self {
        Self { mode: Mode::Config(Box::new(render)), extra_args: Vec::new(), env: Vec::new(), wait_ready: true }
    }

    /// One more command-line argument after those of the mode, e.g. `--sim`.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Return right after spawning, without waiting for the TLS port (for tests of readiness itself).
    pub fn no_wait(mut self) -> Self {
        self.wait_ready = false;
        self
    }

    pub fn start(self) -> Agent {
        crate::install_crypto_provider();
        let dir = tempfile::Builder::new().prefix("dbagent-it-").tempdir().expect("create the test's temp dir");
        // The agent's config names its port and it does not report a port 0 back, so the fixture
        // reserves one (the agent's tokio listener binds it beside the reservation).
        let port = ReservedPort::new();
        let ctx = LaunchContext {
            work_dir: dir.path().to_owned(),
            state_dir: dir.path().join("state"),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, port.port())),
        };
        let mut args: Vec<OsString> = match &self.mode {
            Mode::Dev => vec![
                "--dev".into(),
                "--state-dir".into(),
                ctx.state_dir.clone().into(),
                "--listen".into(),
                ctx.listen.to_string().into(),
            ],
            Mode::Config(render) => {
                let file = ctx.work_dir.join("agent.toml");
                std::fs::write(&file, render(&ctx)).expect("write the agent's config file");
                vec!["--config".into(), file.into()]
            }
        };
        args.extend(self.extra_args);
        let mut agent = Agent { bin: agent_binary(), args, env: self.env, ctx, child: None, _port: port, _dir: dir };
        agent.spawn();
        if self.wait_ready {
            agent.wait_ready();
        }
        agent
    }
}

/// One running `dbagent`. Dropping it kills the process and removes its directory.
pub struct Agent {
    bin: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    ctx: LaunchContext,
    child: Option<Child>,
    /// Held for the fixture's life: no other process can take the port, also between a kill and
    /// a restart.
    _port: ReservedPort,
    _dir: TempDir,
}

impl Agent {
    /// A dev-mode agent, ready to serve.
    pub fn start_dev() -> Self {
        AgentBuilder::dev().start()
    }

    pub fn addr(&self) -> SocketAddr {
        self.ctx.listen
    }

    pub fn state_dir(&self) -> &Path {
        &self.ctx.state_dir
    }

    /// Where dev mode lets instance data dirs live.
    pub fn dev_data_root(&self) -> PathBuf {
        self.ctx.state_dir.join("data")
    }

    pub fn work_dir(&self) -> &Path {
        &self.ctx.work_dir
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn stdout_path(&self) -> PathBuf {
        self.ctx.work_dir.join("agent.stdout.log")
    }

    fn stderr_path(&self) -> PathBuf {
        self.ctx.work_dir.join("agent.stderr.log")
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "the agent is already running");
        // Append, so the log of a restarted agent still shows what the previous run said.
        let open = |p: PathBuf| -> File {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
        };
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args)
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(open(self.stdout_path()))
            .stderr(open(self.stderr_path()));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("start {}: {e}", self.bin.display()));
        self.child = Some(child);
    }

    /// Blocks until the port answers TLS; panics with the captured log if the agent exits or
    /// [`START_TIMEOUT`] passes.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.try_wait() {
                panic!("dbagent exited with {status} before serving on {}\n{}", self.addr(), self.log());
            }
            if speaks_tls(self.addr(), Duration::from_secs(1)) {
                return;
            }
            if Instant::now() > deadline {
                panic!("dbagent did not accept TLS on {} within {START_TIMEOUT:?}\n{}", self.addr(), self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit status if the process has exited (and reaps it), `None` while it runs.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status)
            }
            Ok(None) => None,
            Err(e) => panic!("wait for dbagent: {e}"),
        }
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            // Already reaped (or never started): nothing to wait for.
            self.child.as_ref()?;
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to the running agent.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = self.pid().expect("the agent is not running");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits in i32"));
        nix::sys::signal::kill(pid, signal).unwrap_or_else(|e| panic!("send {signal} to dbagent: {e}"));
    }

    /// SIGKILL, then reap: the agent gets no chance to persist anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait up to `timeout` for the exit; panics (after SIGKILL) with the log if it
    /// does not exit in time.
    pub fn sigterm(&mut self, timeout: Duration) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        match self.wait_exit(timeout) {
            Some(status) => status,
            None => {
                self.kill9();
                panic!("dbagent did not exit within {timeout:?} of SIGTERM\n{}", self.log());
            }
        }
    }

    /// Starts the agent again on the same state dir and port and waits until it serves. A still
    /// running agent is stopped with SIGTERM first.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.sigterm(Duration::from_secs(15));
        }
        self.spawn();
        self.wait_ready();
    }

    /// Everything the agent wrote to stderr and stdout, over all its runs.
    pub fn log(&self) -> String {
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "--- dbagent stderr ---\n{}--- dbagent stdout ---\n{}",
            read(self.stderr_path()),
            read(self.stdout_path())
        )
    }

    /// The identity dev mode issued under `<state>/tls/<name>.crt|key` (e.g. "orchestrator", "monitor").
    pub fn dev_identity(&self, name: &str) -> ClientIdentity {
        let tls = self.ctx.state_dir.join("tls");
        ClientIdentity::from_files(
            &tls.join("ca.crt"),
            &tls.join(format!("{name}.crt")),
            &tls.join(format!("{name}.key")),
        )
        .unwrap_or_else(|e| panic!("load the dev identity {name:?}: {e:#}"))
    }

    /// The dev CA alone, for a client without a certificate.
    pub fn dev_ca_pem(&self) -> String {
        let path = self.ctx.state_dir.join("tls").join("ca.crt");
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    pub async fn channel(&self, identity: &ClientIdentity) -> Channel {
        connect(self.addr(), identity).await.unwrap_or_else(|e| panic!("connect to dbagent: {e:?}\n{}", self.log()))
    }

    /// A channel with the dev orchestrator identity.
    pub async fn orchestrator(&self) -> Channel {
        self.channel(&self.dev_identity("orchestrator")).await
    }

    /// A channel with the dev monitor identity.
    pub async fn monitor(&self) -> Channel {
        self.channel(&self.dev_identity("monitor")).await
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// What a run of the binary that was expected to stop on its own left behind.
#[derive(Debug)]
pub struct Finished {
    /// `None` when it did not exit within the timeout (it was then killed).
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Runs `dbagent ARGS` to completion (or kills it at `timeout`), for start-up failures.
pub fn run_to_exit(args: &[OsString], timeout: Duration) -> Finished {
    let dir = tempfile::tempdir().expect("create a temp dir for the output");
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let create = |p: &Path| File::create(p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
    let bin = agent_binary();
    let started = Instant::now();
    let mut child = Command::new(&bin)
        .args(args)
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(create(&out))
        .stderr(create(&err))
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for dbagent") {
            break Some(status);
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    Finished { status, stdout: read(&out), stderr: read(&err), elapsed: started.elapsed() }
}
