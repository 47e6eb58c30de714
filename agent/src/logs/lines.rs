//! Joining physical lines into records and reading severities, per engine log format.
//!
//! PostgreSQL: continuation lines start with a tab or space, and DETAIL/HINT/CONTEXT/STATEMENT/QUERY/
//! LOCATION lines belong to the record before them. MariaDB and Redis: a record starts with a
//! timestamp or pid (a digit, or `[` for old Redis); anything else continues the record before.

use super::record::Severity;
use crate::instances::Engine;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFormat {
    Postgresql,
    Mariadb,
    Redis,
    /// One line, one record.
    Plain,
}

impl From<Engine> for LineFormat {
    fn from(e: Engine) -> Self {
        match e {
            Engine::Postgresql => LineFormat::Postgresql,
            Engine::Mariadb => LineFormat::Mariadb,
            Engine::Redis => LineFormat::Redis,
        }
    }
}

/// A joined record with the byte range it came from in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub message: String,
    pub severity: Severity,
    /// File offset just past the record's last line: the position to commit once it is shipped.
    pub end: u64,
}

/// Caps a record so one runaway multi-line message cannot hold unbounded memory.
const MAX_RECORD_BYTES: usize = 256 * 1024;

#[derive(Debug)]
pub struct Joiner {
    format: LineFormat,
    pending: Option<Pending>,
}

#[derive(Debug)]
struct Pending {
    message: String,
    severity: Severity,
    start: u64,
    end: u64,
}

impl Joiner {
    pub fn new(format: LineFormat) -> Self {
        Self { format, pending: None }
    }

    /// Feeds one line (without its newline) that occupies `start..end` in the file. A record that
    /// this line completes is pushed to `out`.
    pub fn push(&mut self, line: &[u8], start: u64, end: u64, out: &mut Vec<Joined>) {
        let line = trim_cr(line);
        if self.format != LineFormat::Plain
            && let Some(p) = &mut self.pending
            && is_continuation(self.format, line)
        {
            if p.message.len() < MAX_RECORD_BYTES {
                p.message.push('\n');
                p.message.push_str(&String::from_utf8_lossy(line));
            }
            p.end = end;
            return;
        }
        self.flush(out);
        let message = String::from_utf8_lossy(line).into_owned();
        let severity = severity_of(self.format, line);
        if self.format == LineFormat::Plain {
            out.push(Joined { message, severity, end });
        } else {
            self.pending = Some(Pending { message, severity, start, end });
        }
    }

    /// Emits the pending record, if any: its continuation lines, if more come, are lost to it.
    pub fn flush(&mut self, out: &mut Vec<Joined>) {
        if let Some(p) = self.pending.take() {
            out.push(Joined { message: p.message, severity: p.severity, end: p.end });
        }
    }

    /// Where the record still being joined starts: reading must resume there after a restart.
    pub fn pending_start(&self) -> Option<u64> {
        self.pending.as_ref().map(|p| p.start)
    }

    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn is_continuation(format: LineFormat, line: &[u8]) -> bool {
    match format {
        LineFormat::Postgresql => {
            matches!(line.first(), Some(b' ' | b'\t'))
                || matches!(pg_level(line), Some("DETAIL" | "HINT" | "CONTEXT" | "STATEMENT" | "QUERY" | "LOCATION"))
        }
        LineFormat::Mariadb => !line.first().is_some_and(u8::is_ascii_digit),
        LineFormat::Redis => !matches!(line.first(), Some(b'0'..=b'9' | b'[')),
        LineFormat::Plain => false,
    }
}

pub fn severity_of(format: LineFormat, line: &[u8]) -> Severity {
    match format {
        LineFormat::Postgresql => match pg_level(line) {
            Some(l) if l.starts_with("DEBUG") => Severity::Debug,
            Some("LOG" | "INFO" | "STATEMENT" | "DETAIL" | "HINT" | "CONTEXT") => Severity::Info,
            Some("NOTICE") => Severity::Notice,
            Some("WARNING") => Severity::Warning,
            Some("ERROR") => Severity::Error,
            Some("FATAL" | "PANIC") => Severity::Critical,
            _ => Severity::Unspecified,
        },
        LineFormat::Mariadb => mariadb_level(line),
        LineFormat::Redis => redis_level(line),
        LineFormat::Plain => Severity::Unspecified,
    }
}

/// The level word before the first `:  ` (PostgreSQL writes two spaces after it), whatever
/// `log_line_prefix` put before.
fn pg_level(line: &[u8]) -> Option<&str> {
    let head = &line[..line.len().min(512)];
    let colon = head.windows(3).position(|w| w == b":  ")?;
    let word_start = head[..colon].iter().rposition(|b| !b.is_ascii_alphanumeric()).map_or(0, |i| i + 1);
    let word = std::str::from_utf8(&head[word_start..colon]).ok()?;
    (!word.is_empty() && word.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())).then_some(word)
}

/// `2024-01-01 12:00:00 0 [Note] ...`: the first bracketed word.
fn mariadb_level(line: &[u8]) -> Severity {
    let head = &line[..line.len().min(128)];
    let Some(open) = head.iter().position(|&b| b == b'[') else { return Severity::Unspecified };
    let rest = &head[open + 1..];
    let Some(close) = rest.iter().position(|&b| b == b']') else { return Severity::Unspecified };
    match &rest[..close] {
        b"Note" | b"System" => Severity::Info,
        b"Warning" => Severity::Warning,
        b"ERROR" => Severity::Error,
        _ => Severity::Unspecified,
    }
}

/// `pid:role dd Mon yyyy hh:mm:ss.mmm L message`, L one of `.` `-` `*` `#`.
fn redis_level(line: &[u8]) -> Severity {
    let head = &line[..line.len().min(96)];
    match head.split(|&b| b == b' ').nth(5) {
        Some(b".") => Severity::Debug,
        Some(b"-") => Severity::Info,
        Some(b"*") => Severity::Notice,
        Some(b"#") => Severity::Warning,
        _ => Severity::Unspecified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(format: LineFormat, text: &str) -> Vec<Joined> {
        let mut j = Joiner::new(format);
        let mut out = Vec::new();
        let mut pos = 0u64;
        for line in text.split('\n') {
            let end = pos + line.len() as u64 + 1;
            j.push(line.as_bytes(), pos, end, &mut out);
            pos = end;
        }
        j.flush(&mut out);
        out
    }

    #[test]
    fn postgresql_continuations_and_levels() {
        let text = "2024-05-01 10:00:00.000 UTC [42] ERROR:  relation \"x\" does not exist at character 15\n\
                    2024-05-01 10:00:00.000 UTC [42] STATEMENT:  select *\n\
                    \tfrom x\n\
                    2024-05-01 10:00:01.000 UTC [43] LOG:  checkpoint starting: time\n\
                    2024-05-01 10:00:02.000 UTC [44] FATAL:  password authentication failed for user \"a\"";
        let r = join(LineFormat::Postgresql, text);
        assert_eq!(r.len(), 3, "{r:#?}");
        assert_eq!(r[0].severity, Severity::Error);
        assert!(r[0].message.ends_with("STATEMENT:  select *\n\tfrom x"), "{}", r[0].message);
        assert_eq!(r[1].severity, Severity::Info);
        assert_eq!(r[2].severity, Severity::Critical);
        assert_eq!(severity_of(LineFormat::Postgresql, b"2024 [1] WARNING:  x"), Severity::Warning);
        assert_eq!(severity_of(LineFormat::Postgresql, b"2024 [1] DEBUG2:  x"), Severity::Debug);
        assert_eq!(severity_of(LineFormat::Postgresql, b"2024 [1] PANIC:  x"), Severity::Critical);
        assert_eq!(severity_of(LineFormat::Postgresql, b"no level here"), Severity::Unspecified);
    }

    #[test]
    fn mariadb_levels_and_continuations() {
        let text = "2024-05-01 10:00:00 0 [Note] Starting MariaDB\n\
                    2024-05-01 10:00:00 0 [Warning] Aborted connection\n\
                    2024-05-01 10:00:01 3 [ERROR] Query failed:\n\
                    SELECT 1\n\
                    FROM dual";
        let r = join(LineFormat::Mariadb, text);
        assert_eq!(r.len(), 3);
        assert_eq!(
            r.iter().map(|r| r.severity).collect::<Vec<_>>(),
            [Severity::Info, Severity::Warning, Severity::Error]
        );
        assert!(r[2].message.ends_with("SELECT 1\nFROM dual"));
    }

    #[test]
    fn redis_levels_and_banner() {
        let text = "1:C 01 May 2024 10:00:00.000 # oO0OoO0OoO0Oo Redis is starting\n\
                    1:M 01 May 2024 10:00:00.001 * Ready to accept connections tcp\n\
                    \x20   _._\n\
                    1:M 01 May 2024 10:00:00.002 - Client closed\n\
                    1:M 01 May 2024 10:00:00.003 . debug";
        let r = join(LineFormat::Redis, text);
        assert_eq!(r.len(), 4);
        assert_eq!(
            r.iter().map(|r| r.severity).collect::<Vec<_>>(),
            [Severity::Warning, Severity::Notice, Severity::Info, Severity::Debug]
        );
        assert!(r[1].message.ends_with("\n    _._"));
    }

    #[test]
    fn pending_record_holds_the_commit_position() {
        let mut j = Joiner::new(LineFormat::Postgresql);
        let mut out = Vec::new();
        j.push(b"a [1] LOG:  one", 0, 16, &mut out);
        j.push(b"\tmore", 16, 22, &mut out);
        assert!(out.is_empty());
        assert_eq!(j.pending_start(), Some(0));
        j.push(b"a [1] LOG:  two", 22, 38, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].end, 22);
        assert_eq!(j.pending_start(), Some(22));
    }

    #[test]
    fn severity_filter_lets_unknown_through() {
        assert!(Severity::Unspecified.passes(Severity::Error));
        assert!(!Severity::Info.passes(Severity::Warning));
        assert!(Severity::Critical.passes(Severity::Warning));
    }
}
