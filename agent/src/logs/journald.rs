//! Following one journald unit through `journalctl -o json -f` as a child process: no journal
//! library, and the cursor journalctl prints is the read position.

use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::checkpoint::Checkpoint;
use super::error::LogsError;
use super::record::{LogRecord, Severity, SourceBatch};
use crate::command::ToolCommand;

/// journalctl is restarted after this long when it exits, doubling up to [`MAX_RESTART_DELAY`]
/// while it keeps exiting without handing on an entry.
const MIN_RESTART_DELAY: Duration = Duration::from_millis(500);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalSettings {
    pub command: PathBuf,
    /// Extra arguments, e.g. `--directory=/var/log/journal` or `--file=...` (tests).
    pub extra_args: Vec<String>,
}

impl Default for JournalSettings {
    fn default() -> Self {
        Self { command: PathBuf::from("journalctl"), extra_args: Vec::new() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    pub cursor: String,
    pub time: SystemTime,
    pub severity: Severity,
    pub message: String,
}

/// Parses one line of `journalctl -o json`. MESSAGE is a string, or an array of bytes when it is not
/// valid UTF-8; PRIORITY and __REALTIME_TIMESTAMP (microseconds) are strings.
pub fn parse_entry(line: &str) -> Result<JournalEntry, LogsError> {
    let bad = |problem| LogsError::JournalOutput { problem, line: crate::ids::truncate_for_message(line) };
    let v: Value = serde_json::from_str(line).map_err(|_| bad("is not JSON"))?;
    let cursor = v.get("__CURSOR").and_then(Value::as_str).ok_or_else(|| bad("has no __CURSOR"))?.to_owned();
    let message = match v.get("MESSAGE") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(bytes)) => {
            let bytes: Vec<u8> = bytes.iter().filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok())).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        _ => String::new(),
    };
    let time = v
        .get("__REALTIME_TIMESTAMP")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<u64>().ok())
        .map_or_else(SystemTime::now, |us| UNIX_EPOCH + Duration::from_micros(us));
    let severity = v
        .get("PRIORITY")
        .and_then(Value::as_str)
        .and_then(|p| p.parse::<u8>().ok())
        .map_or(Severity::Unspecified, Severity::from_syslog_code);
    Ok(JournalEntry { cursor, time, severity, message })
}

/// The journalctl arguments: after the cursor if there is one, else the unit's whole journal
/// (drains) or its last lines (tailing).
pub fn journalctl_args(
    settings: &JournalSettings,
    unit: &str,
    cursor: Option<&str>,
    tail_lines: Option<u32>,
) -> Vec<String> {
    let mut args: Vec<String> = settings.extra_args.clone();
    args.extend(["-o", "json", "--no-pager", "-f", "-u", unit].map(String::from));
    match (cursor, tail_lines) {
        (Some(c), _) => args.push(format!("--after-cursor={c}")),
        (None, Some(n)) => args.push(format!("--lines={n}")),
        (None, None) => args.push("--lines=all".into()),
    }
    args
}

/// One journald unit to follow.
#[derive(Debug, Clone)]
pub struct JournalSource {
    /// Names the source in checkpoints.
    pub key: Arc<str>,
    pub unit: String,
    /// Resume after this cursor; `None`: the unit's whole journal, or `tail_lines` of it.
    pub cursor: Option<String>,
    pub tail_lines: Option<u32>,
    pub settings: JournalSettings,
    pub instance: Arc<str>,
}

/// Follows the unit until cancelled, restarting journalctl after the last cursor when it exits.
pub async fn run_journal_source(src: JournalSource, tx: mpsc::Sender<SourceBatch>, cancel: CancellationToken) {
    let JournalSource { key, unit, mut cursor, tail_lines, settings, instance } = src;
    let source: Arc<str> = Arc::from(format!("journald:{unit}").as_str());
    let follow = Follow { key: &key, source: &source, instance: &instance, tx: &tx, cancel: &cancel };
    let mut delay = MIN_RESTART_DELAY;
    loop {
        let command =
            ToolCommand::new(&settings.command).args(journalctl_args(&settings, &unit, cursor.as_deref(), tail_lines));
        let before = cursor.clone();
        match follow.run_once(&command, &unit, &mut cursor).await {
            Ok(Ended::Stopped) => return,
            Ok(Ended::Exited) => tracing::debug!(unit, "journalctl exited; restarting in {delay:?}"),
            Err(e) => tracing::warn!("{e:#}; restarting in {delay:?}"),
        }
        if cursor != before {
            delay = MIN_RESTART_DELAY;
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = cancel.cancelled() => return,
        }
        delay = (delay * 2).min(MAX_RESTART_DELAY);
    }
}

/// How one run of journalctl ended, when it did not fail.
enum Ended {
    /// Cancelled, or nobody receives batches any more: the source is done.
    Stopped,
    /// journalctl exited successfully (`--file` journals end, for one): run it again.
    Exited,
}

/// Why [`Follow::pump`] returned.
enum Pumped {
    /// journalctl closed its output (it exits).
    Closed,
    /// Reading its output failed while it may still run.
    ReadFailed(std::io::Error),
    /// Cancelled, or nobody receives batches any more.
    Stop,
}

struct Follow<'a> {
    key: &'a Arc<str>,
    source: &'a Arc<str>,
    instance: &'a Arc<str>,
    tx: &'a mpsc::Sender<SourceBatch>,
    cancel: &'a CancellationToken,
}

impl Follow<'_> {
    /// Runs journalctl once, handing on its entries until it exits or we must stop.
    async fn run_once(
        &self,
        command: &ToolCommand,
        unit: &str,
        cursor: &mut Option<String>,
    ) -> Result<Ended, LogsError> {
        let unavailable = |source| LogsError::JournalUnavailable { unit: unit.to_owned(), source };
        // stderr is drained alongside stdout by the exit watcher, so a chatty journalctl never
        // blocks on a full pipe; only its tail is kept for the error. Dropping `exit` kills it.
        let (stdout, exit) = command.spawn_reading().map_err(unavailable)?;
        match self.pump(&mut BufReader::new(stdout).lines(), cursor).await {
            Pumped::Closed => {}
            Pumped::Stop => return Ok(Ended::Stopped),
            Pumped::ReadFailed(source) => {
                return Err(LogsError::Io { context: format!("read the output of {}", command.shown()), source });
            }
        }
        // journalctl closed its output, so it is exiting; a shutdown still does not wait for it.
        tokio::select! {
            r = exit.wait() => r.map(|()| Ended::Exited).map_err(unavailable),
            () = self.cancel.cancelled() => Ok(Ended::Stopped),
        }
    }

    /// Reads entries into batches until journalctl closes its output, reading fails, or we must stop.
    async fn pump<R: tokio::io::AsyncBufRead + Unpin>(
        &self,
        lines: &mut tokio::io::Lines<R>,
        cursor: &mut Option<String>,
    ) -> Pumped {
        loop {
            let first = tokio::select! {
                l = lines.next_line() => l,
                () = self.cancel.cancelled() => return Pumped::Stop,
            };
            let first = match first {
                Ok(Some(line)) => line,
                Ok(None) => return Pumped::Closed,
                Err(e) => return Pumped::ReadFailed(e),
            };
            let mut records = Vec::new();
            self.push(&first, &mut records, cursor);
            // Gather what journalctl has already written into the same batch.
            while records.len() < 4096 {
                match tokio::time::timeout(Duration::from_millis(20), lines.next_line()).await {
                    Ok(Ok(Some(line))) => self.push(&line, &mut records, cursor),
                    _ => break,
                }
            }
            if let (false, Some(c)) = (records.is_empty(), cursor.clone()) {
                let batch =
                    SourceBatch { key: self.key.clone(), records, checkpoint: Checkpoint::Journal { cursor: c } };
                if self.tx.send(batch).await.is_err() {
                    return Pumped::Stop;
                }
            }
        }
    }

    fn push(&self, line: &str, records: &mut Vec<LogRecord>, cursor: &mut Option<String>) {
        match parse_entry(line) {
            Ok(e) => {
                records.push(LogRecord {
                    time: e.time,
                    instance: self.instance.clone(),
                    source: self.source.clone(),
                    severity: e.severity,
                    message: e.message,
                });
                *cursor = Some(e.cursor);
            }
            Err(e) => tracing::warn!("{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::CommandError;

    /// Captured from `journalctl -o json` (systemd 252).
    const CAPTURED: &str = r#"{"__CURSOR":"s=8f1c;i=1a2;b=3e;m=5f;t=61a;x=9d","__REALTIME_TIMESTAMP":"1714557600123456","__MONOTONIC_TIMESTAMP":"1234","_BOOT_ID":"3e","PRIORITY":"3","_SYSTEMD_UNIT":"postgresql@16-main.service","SYSLOG_IDENTIFIER":"postgres","MESSAGE":"ERROR:  division by zero"}
{"__CURSOR":"s=8f1c;i=1a3;b=3e;m=60;t=61b;x=9e","__REALTIME_TIMESTAMP":"1714557600223456","PRIORITY":"6","MESSAGE":[104,105,255]}
{"__CURSOR":"s=8f1c;i=1a4;b=3e;m=61;t=61c;x=9f","__REALTIME_TIMESTAMP":"1714557600323456","MESSAGE":null}"#;

    #[test]
    fn parses_captured_output() {
        let e: Vec<_> = CAPTURED.lines().map(|l| parse_entry(l).unwrap()).collect();
        assert_eq!(e[0].severity, Severity::Error);
        assert_eq!(e[0].message, "ERROR:  division by zero");
        assert_eq!(e[0].time, UNIX_EPOCH + Duration::from_micros(1_714_557_600_123_456));
        assert_eq!(e[0].cursor, "s=8f1c;i=1a2;b=3e;m=5f;t=61a;x=9d");
        assert_eq!(e[1].message, "hi\u{fffd}");
        assert_eq!(e[1].severity, Severity::Info);
        assert_eq!(e[2].message, "");
        assert_eq!(e[2].severity, Severity::Unspecified);
        assert!(matches!(parse_entry("{}"), Err(LogsError::JournalOutput { problem: "has no __CURSOR", .. })));
        assert!(matches!(parse_entry("not json"), Err(LogsError::JournalOutput { problem: "is not JSON", .. })));
    }

    #[test]
    fn arguments_resume_after_the_cursor() {
        let s = JournalSettings { command: "journalctl".into(), extra_args: vec!["--file=/x.journal".into()] };
        let a = journalctl_args(&s, "pg.service", Some("s=1;i=2"), None);
        assert_eq!(a[0], "--file=/x.journal");
        assert!(a.contains(&"--after-cursor=s=1;i=2".to_string()));
        assert!(a.contains(&"-f".to_string()) && a.contains(&"pg.service".to_string()));
        assert!(journalctl_args(&s, "u", None, None).contains(&"--lines=all".to_string()));
        assert!(journalctl_args(&s, "u", None, Some(50)).contains(&"--lines=50".to_string()));
    }

    /// A fake journalctl that prints captured output and exits: the follower parses it, batches it
    /// with the last cursor, and restarts journalctl after that cursor.
    #[tokio::test]
    async fn follows_and_resumes_after_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("journalctl");
        let argv_log = dir.path().join("argv");
        let data = dir.path().join("data.json");
        std::fs::write(&data, CAPTURED).unwrap();
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$@\" >> {}\ncase \"$*\" in *after-cursor*) sleep 5;; *) cat {};; esac\n",
                argv_log.display(),
                data.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let cancel = CancellationToken::new();
        let settings = JournalSettings { command: script, extra_args: vec![] };
        let src = JournalSource {
            key: "journald:pg.service".into(),
            unit: "pg.service".into(),
            cursor: None,
            tail_lines: None,
            settings,
            instance: "pg-1".into(),
        };
        let task = tokio::spawn(run_journal_source(src, tx, cancel.clone()));
        let batch = rx.recv().await.unwrap();
        assert_eq!(batch.records.len(), 3);
        assert_eq!(&*batch.records[0].source, "journald:pg.service");
        assert_eq!(batch.checkpoint, Checkpoint::Journal { cursor: "s=8f1c;i=1a4;b=3e;m=61;t=61c;x=9f".into() });
        // journalctl exited at the end of the data; the restart must resume after the last cursor.
        for _ in 0..50 {
            if std::fs::read_to_string(&argv_log).unwrap_or_default().contains("--after-cursor=s=8f1c;i=1a4") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            std::fs::read_to_string(&argv_log).unwrap().contains("--after-cursor=s=8f1c;i=1a4;b=3e;m=61;t=61c;x=9f")
        );
        cancel.cancel();
        task.await.unwrap();
    }

    /// What a [`Follow`] borrows, for tests that run journalctl once.
    struct FollowParts {
        name: Arc<str>,
        instance: Arc<str>,
        tx: mpsc::Sender<SourceBatch>,
        cancel: CancellationToken,
    }

    impl FollowParts {
        fn new() -> (Self, mpsc::Receiver<SourceBatch>) {
            let (tx, rx) = mpsc::channel(4);
            (Self { name: "journald:u".into(), instance: "pg-1".into(), tx, cancel: CancellationToken::new() }, rx)
        }

        fn follow(&self) -> Follow<'_> {
            Follow { key: &self.name, source: &self.name, instance: &self.instance, tx: &self.tx, cancel: &self.cancel }
        }
    }

    /// journalctl that cannot start, or that exits with a failure, is JournalUnavailable (UNAVAILABLE)
    /// naming the unit, the command and the end of its stderr; one that exits 0 is just restarted.
    #[tokio::test]
    async fn a_failing_journalctl_is_unavailable_with_its_reason() {
        use crate::error::{ErrorCode, HasErrorCode};
        let (parts, _rx) = FollowParts::new();
        let follow = parts.follow();
        let mut cursor = None;

        let missing = ToolCommand::new("/nonexistent/journalctl");
        let e = follow.run_once(&missing, "u", &mut cursor).await.err().expect("a missing journalctl fails");
        assert!(
            matches!(&e, LogsError::JournalUnavailable { unit, source: CommandError::Spawn { .. } } if unit == "u")
        );
        assert_eq!(e.code(), ErrorCode::Unavailable);

        // 20 000 bytes of noise on stderr before the reason: only the tail is kept.
        let failing = ToolCommand::new("sh")
            .args(["-c", "head -c 20000 /dev/zero | tr '\\0' x >&2; echo 'Failed to open journal' >&2; exit 1"]);
        let e = follow.run_once(&failing, "u", &mut cursor).await.err().expect("exit 1 fails");
        let LogsError::JournalUnavailable { source: CommandError::Failed { command, stderr, .. }, .. } = &e else {
            panic!("not a failed journalctl: {e}")
        };
        assert_eq!(command, "sh");
        assert!(stderr.ends_with("Failed to open journal"), "{stderr}");
        assert!(stderr.len() <= crate::command::STDERR_TAIL, "{}", stderr.len());

        let ended = follow.run_once(&ToolCommand::new("true"), "u", &mut cursor).await.expect("exit 0 is no error");
        assert!(matches!(ended, Ended::Exited));
        assert_eq!(cursor, None, "no entry, no cursor");
    }

    /// A cancelled source stops a running journalctl rather than waiting for it.
    #[tokio::test]
    async fn cancelling_stops_a_running_journalctl() {
        let (parts, _rx) = FollowParts::new();
        let follow = parts.follow();
        let mut cursor = None;
        let forever = ToolCommand::new("sleep").arg("600");
        let stopper = parts.cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            stopper.cancel();
        });
        let ended = tokio::time::timeout(Duration::from_secs(10), follow.run_once(&forever, "u", &mut cursor))
            .await
            .expect("run_once returns once cancelled")
            .expect("cancelling is no error");
        assert!(matches!(ended, Ended::Stopped));
    }

    /// Output that cannot be read (not UTF-8: journalctl's JSON always is) fails this run and stops
    /// journalctl, which would otherwise be waited for while it keeps following.
    #[tokio::test]
    async fn unreadable_output_stops_journalctl_instead_of_waiting_for_it() {
        let (parts, _rx) = FollowParts::new();
        let mut cursor = None;
        let garbled = ToolCommand::new("sh").args(["-c", "printf '\\377\\n'; exec sleep 600"]);
        let follow = parts.follow();
        let run = tokio::time::timeout(Duration::from_secs(10), follow.run_once(&garbled, "u", &mut cursor));
        let e = run.await.expect("run_once returns without waiting for journalctl").err().expect("a read error");
        assert!(matches!(&e, LogsError::Io { context, .. } if context.contains("sleep 600")), "{e}");
    }
}
