//! The journald source against a real journal file and the real journalctl: entries are written
//! into a journal file by systemd-journal-remote (journald itself does not run on hosts without
//! systemd as PID 1; the VM harness covers a real unit), read through `journalctl --file -o json -f -u`,
//! and a restart resumes after the committed cursor.

use dbagent::logs::Severity;
use dbagent::logs::checkpoint::Checkpoint;
use dbagent::logs::journald::{JournalSettings, JournalSource, run_journal_source};
use dbagent::logs::record::SourceBatch;
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";

fn write_entries(journal: &Path, unit: &str, range: std::ops::Range<u64>) {
    let mut export = String::new();
    for i in range {
        export.push_str(&format!(
            "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID=0123456789abcdef0123456789abcdef\n_SYSTEMD_UNIT={unit}\nPRIORITY=3\nMESSAGE=entry {i}\n\n",
            1_714_557_600_000_000 + i,
            i + 1
        ));
    }
    let file = journal.with_extension("export");
    std::fs::write(&file, export).expect("write export file");
    let status = std::process::Command::new(JOURNAL_REMOTE)
        .arg(format!("--output={}", journal.display()))
        .arg(&file)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run systemd-journal-remote");
    assert!(status.success());
}

async fn collect(rx: &mut mpsc::Receiver<SourceBatch>, n: usize) -> (Vec<String>, Checkpoint) {
    let mut messages = Vec::new();
    let mut last = None;
    while messages.len() < n {
        let batch = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("entries in time")
            .expect("source runs");
        assert!(batch.records.iter().all(|r| r.severity == Severity::Error && &*r.source == "journald:pg.service"));
        messages.extend(batch.records.into_iter().map(|r| r.message));
        last = Some(batch.checkpoint);
    }
    (messages, last.expect("a batch"))
}

#[tokio::test]
async fn journal_file_entries_come_through_and_resume_after_the_cursor() {
    if !Path::new(JOURNAL_REMOTE).exists() || !Path::new("/usr/bin/journalctl").exists() {
        panic!(
            "this test needs {JOURNAL_REMOTE} and journalctl: apt-get install systemd-journal-remote (integration/run-tests.sh installs it)"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("test.journal");
    write_entries(&journal, "pg.service", 0..3);
    write_entries(&journal, "other.service", 100..102);
    let settings =
        JournalSettings { command: "journalctl".into(), extra_args: vec![format!("--file={}", journal.display())] };

    let (tx, mut rx) = mpsc::channel(8);
    let cancel = CancellationToken::new();
    let src = |cursor| JournalSource {
        key: "journald:pg.service".into(),
        unit: "pg.service".into(),
        cursor,
        tail_lines: None,
        settings: settings.clone(),
        instance: "pg-1".into(),
    };
    let task = tokio::spawn(run_journal_source(src(None), tx, cancel.clone()));
    let (got, checkpoint) = collect(&mut rx, 3).await;
    assert_eq!(got, ["entry 0", "entry 1", "entry 2"]);
    // Following: entries written after start arrive too.
    write_entries(&journal, "pg.service", 3..4);
    let (got, checkpoint_after) = collect(&mut rx, 1).await;
    assert_eq!(got, ["entry 3"]);
    assert_ne!(checkpoint, checkpoint_after);
    cancel.cancel();
    task.await.unwrap();

    // Restart from the committed cursor: only what came after it.
    write_entries(&journal, "pg.service", 4..6);
    let Checkpoint::Journal { cursor } = checkpoint_after else { panic!("journal checkpoint") };
    let (tx, mut rx) = mpsc::channel(8);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_journal_source(src(Some(cursor)), tx, cancel.clone()));
    let (got, _) = collect(&mut rx, 2).await;
    assert_eq!(got, ["entry 4", "entry 5"]);
    cancel.cancel();
    task.await.unwrap();
}
