//! Running external tools (dump programs, mkfs, losetup, journalctl, systemctl): the one place that
//! decides how a tool is started, as which user, with what stdin, how much of its stderr is kept and
//! how a failure reads. Every module that runs a tool goes through [`ToolCommand`].
//!
//! Policy:
//! - A tool runs in `/` with stdin closed unless the caller pipes it, and dies with its handle
//!   (`kill_on_drop`), so a cancelled job never leaves a dump running.
//! - `run_as(user)` drops to the engine's OS user, with all its groups, when the agent is root
//!   (dumps and restores must not write files a database user cannot own; a drill's server reads
//!   its TLS key through `ssl-cert`); as a non-root agent (tests) it runs as itself.
//! - Only the last [`STDERR_TAIL`] bytes of stderr are kept: a tool that prints gigabytes of
//!   warnings cannot grow the agent's memory, and the end of stderr is where the reason is.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{ChildStdin, ChildStdout};
use tokio_util::task::AbortOnDropHandle;

/// How much of a tool's stderr is kept for its error message.
pub const STDERR_TAIL: usize = 8 * 1024;

#[derive(Debug, Error)]
pub enum CommandError {
    #[error("start {command}: {source}")]
    Spawn { command: String, source: std::io::Error },
    #[error("wait for {command}: {source}")]
    Wait { command: String, source: std::io::Error },
    /// `status.code()` is the exit code, `None` when a signal ended the tool.
    #[error("{command} failed ({status}): {stderr}")]
    Failed { command: String, status: ExitStatus, stderr: String },
    #[error("system user {0:?} does not exist")]
    UnknownUser(String),
    #[error("read the groups of system user {user:?}: {source}")]
    Groups { user: String, source: std::io::Error },
}

impl crate::error::HasErrorCode for CommandError {
    fn code(&self) -> crate::error::ErrorCode {
        use crate::error::ErrorCode;
        match self {
            CommandError::UnknownUser(_) => ErrorCode::FailedPrecondition,
            CommandError::Spawn { .. }
            | CommandError::Wait { .. }
            | CommandError::Failed { .. }
            | CommandError::Groups { .. } => ErrorCode::Internal,
        }
    }
}

/// The user a tool runs as, with all its groups: std's `uid()` would leave the tool only the
/// primary group (it clears the supplementary ones), and an engine's tools need theirs (PostgreSQL
/// reads its TLS key through `ssl-cert`).
#[derive(Debug, Clone)]
struct RunAs {
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
    groups: Vec<nix::unistd::Gid>,
    home: PathBuf,
}

/// util-linux's `setpriv` (Essential in Debian) sets the groups, the group and the user, then
/// executes the tool in the same process: setting them ourselves between fork and exec would need
/// `unsafe` (`pre_exec`), which the crate denies.
const SETPRIV: &str = "/usr/bin/setpriv";

impl RunAs {
    /// The `setpriv` arguments that run the tool as this user, before the tool's own command line.
    fn setpriv_args(&self) -> Vec<OsString> {
        let groups: Vec<String> = self.groups.iter().map(|g| g.to_string()).collect();
        let mut args: Vec<OsString> =
            vec!["--reuid".into(), self.uid.to_string().into(), "--regid".into(), self.gid.to_string().into()];
        if groups.is_empty() {
            args.push("--clear-groups".into());
        } else {
            args.extend(["--groups".into(), groups.join(",").into()]);
        }
        args.push("--".into());
        args
    }
}

/// A program, its arguments and the user it runs as.
#[derive(Debug, Clone)]
pub struct ToolCommand {
    program: PathBuf,
    args: Vec<OsString>,
    user: Option<RunAs>,
}

impl ToolCommand {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self { program: program.into(), args: Vec::new(), user: None }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Runs the tool as `os_user` when the agent is root; empty or "root" keeps root.
    pub fn run_as(mut self, os_user: &str) -> Result<Self, CommandError> {
        if !nix::unistd::geteuid().is_root() || os_user.is_empty() || os_user == "root" {
            return Ok(self);
        }
        let user = nix::unistd::User::from_name(os_user)
            .ok()
            .flatten()
            .ok_or_else(|| CommandError::UnknownUser(os_user.to_owned()))?;
        let name = std::ffi::CString::new(os_user).map_err(|_| CommandError::UnknownUser(os_user.to_owned()))?;
        let groups = nix::unistd::getgrouplist(&name, user.gid)
            .map_err(|e| CommandError::Groups { user: os_user.to_owned(), source: e.into() })?;
        self.user = Some(RunAs { uid: user.uid, gid: user.gid, groups, home: user.dir });
        Ok(self)
    }

    pub fn program(&self) -> &Path {
        &self.program
    }

    /// The program's file name, for messages and manifests.
    pub fn name(&self) -> String {
        self.program.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }

    /// The command line as shown in errors and logs.
    pub fn shown(&self) -> String {
        let mut s = self.program.display().to_string();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }

    /// A tokio command with the policy applied (stdin closed, stdout and stderr piped).
    fn tokio(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::from(self.std());
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        cmd
    }

    /// The command both forms start from: the user dropped to through `setpriv`, run in `/`, stdin
    /// closed.
    fn std(&self) -> std::process::Command {
        let mut cmd = match &self.user {
            Some(u) => {
                let mut cmd = std::process::Command::new(SETPRIV);
                cmd.args(u.setpriv_args()).arg(&self.program).env("HOME", &u.home);
                cmd
            }
            None => std::process::Command::new(&self.program),
        };
        cmd.args(&self.args).current_dir("/").stdin(Stdio::null());
        cmd
    }

    /// Starts the tool with its stdout piped to the caller (a dump feeding the backup pipeline,
    /// journalctl following a unit).
    pub fn spawn_reading(&self) -> Result<(ChildStdout, ToolExit), CommandError> {
        let mut child = self.tokio().spawn().map_err(|source| self.spawn_error(source))?;
        let stdout =
            child.stdout.take().ok_or_else(|| self.spawn_error(std::io::Error::other("stdout is not piped")))?;
        Ok((stdout, ToolExit::watch(self.name(), child)))
    }

    /// Starts the tool with its stdin piped from the caller (a restore tool the decoded stream
    /// fills); its stdout is discarded. The tool sees the end of its input when stdin is dropped.
    pub fn spawn_writing(&self) -> Result<(ChildStdin, ToolExit), CommandError> {
        let mut cmd = self.tokio();
        cmd.stdin(Stdio::piped()).stdout(Stdio::null());
        let mut child = cmd.spawn().map_err(|source| self.spawn_error(source))?;
        let stdin = child.stdin.take().ok_or_else(|| self.spawn_error(std::io::Error::other("stdin is not piped")))?;
        Ok((stdin, ToolExit::watch(self.name(), child)))
    }

    /// Starts a long-running program (a restore drill's throw-away server) with stdin and stdout
    /// closed; its stderr tail is kept for the error its exit gives. Returns its pid, for the
    /// signal that stops it; dropping the `ToolExit` kills it.
    pub fn spawn_service(&self) -> Result<(u32, ToolExit), CommandError> {
        let mut cmd = self.tokio();
        cmd.stdout(Stdio::null());
        let child = cmd.spawn().map_err(|source| self.spawn_error(source))?;
        let pid = child.id().ok_or_else(|| self.spawn_error(std::io::Error::other("exited at once")))?;
        Ok((pid, ToolExit::watch(self.name(), child)))
    }

    fn spawn_error(&self, source: std::io::Error) -> CommandError {
        CommandError::Spawn { command: self.name(), source }
    }

    /// Runs the tool to completion and returns its stdout; a non-zero exit is an error carrying the
    /// tail of stderr.
    pub async fn output(&self) -> Result<Vec<u8>, CommandError> {
        let out = self.tokio().output().await.map_err(|source| self.spawn_error(source))?;
        check(&self.name(), out.status, &out.stderr)?;
        Ok(out.stdout)
    }

    /// The first non-empty line the program prints for `--version` (some, like mariabackup, print
    /// it on stderr); empty if it says nothing. Runs as the agent, whatever `run_as` was given.
    pub async fn version_line(&self) -> String {
        let out = ToolCommand::new(&self.program).arg("--version").tokio().output().await;
        let first_line =
            |b: Vec<u8>| String::from_utf8_lossy(&b).lines().find(|l| !l.trim().is_empty()).map(str::to_owned);
        out.ok().and_then(|o| first_line(o.stdout).or_else(|| first_line(o.stderr))).unwrap_or_default()
    }

    /// Whether the tool exits 0; for probes whose failure is an answer, not an error.
    pub async fn succeeds(&self) -> bool {
        let mut cmd = self.tokio();
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        cmd.status().await.is_ok_and(|s| s.success())
    }

    /// The blocking form of [`ToolCommand::output`], for code already on a blocking thread.
    pub fn output_blocking(&self) -> Result<Vec<u8>, CommandError> {
        let out = self.std().output().map_err(|source| CommandError::Spawn { command: self.shown(), source })?;
        check(&self.shown(), out.status, &out.stderr)?;
        Ok(out.stdout)
    }
}

/// How a started tool ends: `Ok` on exit 0, else its name, exit status and the tail of stderr.
///
/// The exit is awaited by a task started with the tool, which drains stderr from the first byte: a
/// tool that writes more than a pipe buffer (64 KiB) of stderr before its output ends (mariabackup
/// logs every file it copies) would otherwise block on stderr while the caller waits for its stdout,
/// and both would stall forever. Dropping a `ToolExit` (a cancelled job, a stopped source) aborts
/// that task, which drops the child, which kills it (`kill_on_drop`).
pub struct ToolExit {
    name: String,
    watcher: AbortOnDropHandle<Result<(), CommandError>>,
}

impl ToolExit {
    fn watch(name: String, mut child: tokio::process::Child) -> Self {
        let watcher = tokio::spawn({
            let name = name.clone();
            async move {
                let tail = tokio::spawn(read_tail(child.stderr.take()));
                let status =
                    child.wait().await.map_err(|source| CommandError::Wait { command: name.clone(), source })?;
                let tail = tail.await.unwrap_or_default();
                check(&name, status, tail.as_bytes())
            }
        });
        Self { name, watcher: AbortOnDropHandle::new(watcher) }
    }

    pub async fn wait(self) -> Result<(), CommandError> {
        let Self { name, watcher } = self;
        watcher.await.map_err(|e| CommandError::Wait { command: name, source: std::io::Error::other(e) })?
    }
}

fn check(name: &str, status: ExitStatus, stderr: &[u8]) -> Result<(), CommandError> {
    if status.success() {
        return Ok(());
    }
    let from = stderr.len().saturating_sub(STDERR_TAIL);
    Err(CommandError::Failed {
        command: name.to_owned(),
        status,
        stderr: String::from_utf8_lossy(&stderr[from..]).trim().to_owned(),
    })
}

/// Reads a stream to its end, keeping only the last [`STDERR_TAIL`] bytes.
async fn read_tail<R: AsyncRead + Unpin>(stream: Option<R>) -> String {
    let Some(mut stream) = stream else { return String::new() };
    let mut tail = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > STDERR_TAIL {
            tail.drain(..tail.len() - STDERR_TAIL);
        }
    }
    String::from_utf8_lossy(&tail).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_failure_carries_the_status_and_only_the_tail_of_stderr() {
        // 20 000 'x' then the reason: the message keeps the reason and at most STDERR_TAIL bytes.
        let cmd = ToolCommand::new("sh")
            .args(["-c", "head -c 20000 /dev/zero | tr '\\0' x >&2; echo THE-REASON >&2; exit 3"]);
        let err = cmd.output().await.unwrap_err();
        let CommandError::Failed { command, status, stderr } = err else { panic!("not Failed: {err}") };
        assert_eq!(command, "sh");
        assert_eq!(status.code(), Some(3), "{status}");
        assert!(stderr.ends_with("THE-REASON"), "{stderr}");
        assert!(stderr.len() <= STDERR_TAIL, "{}", stderr.len());
    }

    #[tokio::test]
    async fn success_returns_stdout_and_runs_in_root_dir() {
        let out = ToolCommand::new("sh").args(["-c", "pwd"]).output().await.unwrap();
        assert_eq!(String::from_utf8_lossy(&out).trim(), "/");
        assert!(ToolCommand::new("true").succeeds().await);
        assert!(!ToolCommand::new("false").succeeds().await);
    }

    #[tokio::test]
    async fn a_missing_program_is_a_spawn_error_and_an_unknown_user_is_refused() {
        let err = ToolCommand::new("/nonexistent/tool").output().await.unwrap_err();
        assert!(matches!(err, CommandError::Spawn { .. }), "{err}");
        if nix::unistd::geteuid().is_root() {
            let err = ToolCommand::new("true").run_as("no-such-user-dbagent").unwrap_err();
            assert!(matches!(err, CommandError::UnknownUser(_)), "{err}");
            // An existing user is accepted, and root stays root.
            assert!(ToolCommand::new("true").run_as("nobody").is_ok());
            assert!(ToolCommand::new("true").run_as("root").unwrap().user.is_none());
        }
    }

    /// postgres is in ssl-cert on Debian (postgresql-common adds it), and reads its TLS key
    /// through it: a tool run as postgres must keep that group, and none of root's.
    #[tokio::test]
    async fn a_tool_run_as_a_user_has_all_its_groups_and_none_of_roots() {
        assert!(nix::unistd::geteuid().is_root(), "this test drops to another user: run it as root");
        let user = "postgres";
        let ssl_cert =
            nix::unistd::Group::from_name("ssl-cert").unwrap().expect("group ssl-cert (apt install ssl-cert)");
        assert!(
            ssl_cert.mem.iter().any(|m| m == user),
            "{user} is not in ssl-cert here (install postgresql-common, which adds it)"
        );
        let id = |cmd: ToolCommand| async move {
            let out = cmd.output().await.unwrap();
            let mut ids: Vec<u32> =
                String::from_utf8_lossy(&out).split_whitespace().map(|g| g.parse().unwrap()).collect();
            ids.sort();
            ids
        };
        let groups = id(ToolCommand::new("id").arg("-G").run_as(user).unwrap()).await;
        let pg = nix::unistd::User::from_name(user).unwrap().unwrap();
        assert!(groups.contains(&ssl_cert.gid.as_raw()), "ssl-cert missing from {groups:?}");
        assert!(groups.contains(&pg.gid.as_raw()) && !groups.contains(&0), "{groups:?}");
        assert_eq!(id(ToolCommand::new("id").arg("-u").run_as(user).unwrap()).await, vec![pg.uid.as_raw()]);
        // The blocking form drops the same way.
        let out = ToolCommand::new("id").arg("-G").run_as(user).unwrap().output_blocking().unwrap();
        assert!(String::from_utf8_lossy(&out).split_whitespace().any(|g| g == ssl_cert.gid.to_string()));
        // Without run_as the tool stays root.
        assert_eq!(id(ToolCommand::new("id").arg("-u")).await, vec![0]);
    }

    #[test]
    fn blocking_forms_match_the_async_ones() {
        let err = ToolCommand::new("sh").args(["-c", "echo why >&2; exit 1"]).output_blocking().unwrap_err();
        assert!(err.to_string().contains("why"), "{err}");
        assert_eq!(ToolCommand::new("echo").arg("hi").output_blocking().unwrap(), b"hi\n");
    }

    #[tokio::test]
    async fn a_tool_that_floods_stderr_before_its_output_does_not_stall() {
        // 1 MiB of stderr first: without draining it from the start the tool blocks on stderr
        // and the reader below waits for stdout forever.
        let tool = ToolCommand::new("sh").args(["-c", "head -c 1048576 /dev/zero >&2; echo out"]);
        let run = async {
            let (mut stdout, exit) = tool.spawn_reading().unwrap();
            let mut out = String::new();
            stdout.read_to_string(&mut out).await.unwrap();
            exit.wait().await.unwrap();
            out
        };
        let out = tokio::time::timeout(Duration::from_secs(20), run).await.expect("the tool stalled");
        assert_eq!(out, "out\n");
    }

    #[tokio::test]
    async fn a_failed_writer_reports_its_name_status_and_stderr_tail() {
        let ok = ToolCommand::new("sh").args(["-c", "cat >/dev/null"]);
        let (mut stdin, exit) = ok.spawn_writing().unwrap();
        stdin.write_all(b"data").await.unwrap();
        drop(stdin);
        exit.wait().await.unwrap();

        let failing = ToolCommand::new("sh").args(["-c", "cat >/dev/null; echo THE-REASON >&2; exit 4"]);
        let (stdin, exit) = failing.spawn_writing().unwrap();
        drop(stdin);
        let e = exit.wait().await.unwrap_err();
        let CommandError::Failed { command, status, stderr } = &e else { panic!("not Failed: {e}") };
        assert_eq!(command, "sh");
        assert_eq!(status.code(), Some(4), "{status}");
        assert_eq!(stderr, "THE-REASON");
    }

    #[tokio::test]
    async fn dropping_the_exit_kills_the_tool() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("still-running");
        let script = format!("sleep 2; touch {}", marker.display());
        let (stdout, exit) = ToolCommand::new("sh").args(["-c", &script]).spawn_reading().unwrap();
        drop(exit);
        drop(stdout);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!marker.exists(), "the tool outlived its job");
    }
}
