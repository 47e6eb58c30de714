//! A dump tool whose stdout feeds the backup pipeline, or a restore tool whose stdin the decoded
//! stream fills, started through [`ToolCommand`].
//!
//! Why this is more than `spawn()` + `finish()`: the tool's stderr must be drained from the moment
//! it starts. A tool that writes more than a pipe buffer (64 KiB) of stderr before its output ends
//! (mariabackup logs every file it copies) would otherwise block on stderr while the agent waits
//! for its stdout: both stall forever. So the exit is awaited by a task started with the tool,
//! which keeps the bounded tail of stderr; dropping [`ToolExit`] (a cancelled job) aborts that
//! task, which drops the child, which kills it (`kill_on_drop`).

use std::process::Stdio;
use tokio::process::{ChildStdin, ChildStdout};
use tokio_util::task::AbortOnDropHandle;

use crate::command::{self, CommandError, ToolCommand};

/// How a started tool ends: `Ok` on exit 0, else its name, exit status and the tail of stderr.
pub struct ToolExit {
    name: String,
    watcher: AbortOnDropHandle<Result<(), CommandError>>,
}

impl ToolExit {
    fn watch(tool: &ToolCommand, child: tokio::process::Child) -> Self {
        let name = tool.name();
        let watcher = tokio::spawn({
            let name = name.clone();
            async move { command::finish(&name, child).await }
        });
        Self { name, watcher: AbortOnDropHandle::new(watcher) }
    }

    pub async fn wait(self) -> Result<(), CommandError> {
        let Self { name, watcher } = self;
        watcher.await.map_err(|e| CommandError::Wait { command: name, source: std::io::Error::other(e) })?
    }
}

/// Starts `tool` with stdout piped to the caller.
pub fn spawn_reading(tool: &ToolCommand) -> Result<(ChildStdout, ToolExit), CommandError> {
    let mut child = tool.spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| not_piped(tool, "stdout"))?;
    Ok((stdout, ToolExit::watch(tool, child)))
}

/// Starts `tool` with stdin piped from the caller; its stdout is discarded. The tool sees the end
/// of its input when the returned stdin is dropped.
pub fn spawn_writing(tool: &ToolCommand) -> Result<(ChildStdin, ToolExit), CommandError> {
    let mut cmd = tool.tokio();
    cmd.stdin(Stdio::piped()).stdout(Stdio::null());
    let mut child = cmd.spawn().map_err(|source| CommandError::Spawn { command: tool.name(), source })?;
    let stdin = child.stdin.take().ok_or_else(|| not_piped(tool, "stdin"))?;
    Ok((stdin, ToolExit::watch(tool, child)))
}

fn not_piped(tool: &ToolCommand, stream: &str) -> CommandError {
    CommandError::Spawn { command: tool.name(), source: std::io::Error::other(format!("{stream} is not piped")) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_tool_that_floods_stderr_before_its_output_does_not_stall() {
        // 1 MiB of stderr first: without draining it from the start the tool blocks on stderr
        // and the reader below waits for stdout forever.
        let tool = ToolCommand::new("sh").args(["-c", "head -c 1048576 /dev/zero >&2; echo out"]);
        let run = async {
            let (mut stdout, exit) = spawn_reading(&tool).unwrap();
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
        let (mut stdin, exit) = spawn_writing(&ok).unwrap();
        stdin.write_all(b"data").await.unwrap();
        drop(stdin);
        exit.wait().await.unwrap();

        let failing = ToolCommand::new("sh").args(["-c", "cat >/dev/null; echo THE-REASON >&2; exit 4"]);
        let (stdin, exit) = spawn_writing(&failing).unwrap();
        drop(stdin);
        let e = exit.wait().await.unwrap_err();
        let CommandError::Failed { command, status, stderr } = &e else { panic!("not Failed: {e}") };
        assert_eq!(command, "sh");
        assert!(status.contains('4'), "{status}");
        assert_eq!(stderr, "THE-REASON");
    }

    #[tokio::test]
    async fn dropping_the_exit_kills_the_tool() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("still-running");
        let script = format!("sleep 2; touch {}", marker.display());
        let (stdout, exit) = spawn_reading(&ToolCommand::new("sh").args(["-c", &script])).unwrap();
        drop(exit);
        drop(stdout);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!marker.exists(), "the tool outlived its job");
    }
}
