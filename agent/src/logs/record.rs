//! One log record as the agent sees it, whatever the source: a joined multi-line message with the
//! severity the engine's format gave it; and the batch of records a source hands on with its read
//! position after them.

use std::sync::Arc;
use std::time::SystemTime;

use super::checkpoint::Checkpoint;

/// Ordered from least to most severe, so a minimum-severity filter is a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Severity {
    /// The format gave no severity; passes every filter.
    #[default]
    Unspecified,
    Debug,
    Info,
    Notice,
    Warning,
    Error,
    Critical,
}

impl Severity {
    /// The syslog severity number (RFC 5424 section 6.2.1); unspecified records ship as "notice".
    pub fn syslog_code(self) -> u8 {
        match self {
            Severity::Critical => 2,
            Severity::Error => 3,
            Severity::Warning => 4,
            Severity::Unspecified | Severity::Notice => 5,
            Severity::Info => 6,
            Severity::Debug => 7,
        }
    }

    /// From a syslog/journald PRIORITY (0 emergency .. 7 debug).
    pub fn from_syslog_code(code: u8) -> Self {
        match code {
            0..=2 => Severity::Critical,
            3 => Severity::Error,
            4 => Severity::Warning,
            5 => Severity::Notice,
            6 => Severity::Info,
            _ => Severity::Debug,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Unspecified => "-",
            Severity::Debug => "debug",
            Severity::Info => "info",
            Severity::Notice => "notice",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }

    /// True if a record of this severity passes a `min` filter. Unknown severities always pass:
    /// hiding a line because its format was not understood would hide it from everyone.
    pub fn passes(self, min: Severity) -> bool {
        self == Severity::Unspecified || self >= min
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// When the agent read the record (files), or journald's receive time.
    pub time: SystemTime,
    pub instance: Arc<str>,
    /// The file path, or `journald:UNIT`.
    pub source: Arc<str>,
    pub severity: Severity,
    pub message: String,
}

/// What a source hands on: records, and where reading resumes after them. A drain stores the
/// checkpoint with the records in its buffer and commits it once the drain acknowledged them.
#[derive(Debug)]
pub struct SourceBatch {
    /// Names the source in checkpoints (see `sources::source_key`).
    pub key: Arc<str>,
    pub records: Vec<LogRecord>,
    pub checkpoint: Checkpoint,
}
