//! How `dbagentctl logs` prints records: one line per record, continuation lines indented, and a
//! visible note when the client was too slow and records were skipped.

use std::fmt::Write;
use std::time::SystemTime;

use super::record::Severity;

/// One record as the CLI gets it from the API.
pub struct RenderedRecord<'a> {
    pub time: SystemTime,
    pub instance: &'a str,
    pub severity: Severity,
    pub message: &'a str,
    pub missed_before: u64,
}

/// `2024-05-01T10:00:00.123Z pg-1 error  ERROR:  boom` (+ indented continuation lines).
pub fn render(r: &RenderedRecord<'_>, show_instance: bool) -> String {
    let mut out = String::new();
    if r.missed_before > 0 {
        let _ = writeln!(out, "-- {} records skipped: this client fell behind --", r.missed_before);
    }
    let _ = write!(out, "{} ", humantime::format_rfc3339_millis(r.time));
    if show_instance {
        let _ = write!(out, "{} ", r.instance);
    }
    let _ = write!(out, "{:<8} ", r.severity.as_str());
    let mut lines = r.message.split('\n');
    out.push_str(lines.next().unwrap_or_default());
    for l in lines {
        out.push_str("\n    ");
        out.push_str(l);
    }
    out
}

/// Parses `--severity` values: debug, info, notice, warning (warn), error, critical (crit).
pub fn parse_severity(s: &str) -> Option<Severity> {
    Some(match s.to_ascii_lowercase().as_str() {
        "debug" => Severity::Debug,
        "info" => Severity::Info,
        "notice" => Severity::Notice,
        "warning" | "warn" => Severity::Warning,
        "error" | "err" => Severity::Error,
        "critical" | "crit" | "fatal" => Severity::Critical,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_continuations_and_gaps() {
        let r = RenderedRecord {
            time: SystemTime::UNIX_EPOCH,
            instance: "pg-1",
            severity: Severity::Error,
            message: "ERROR:  x\n\tdetail",
            missed_before: 3,
        };
        assert_eq!(
            render(&r, true),
            "-- 3 records skipped: this client fell behind --\n1970-01-01T00:00:00.000Z pg-1 error    ERROR:  x\n    \tdetail"
        );
        assert_eq!(parse_severity("WARN"), Some(Severity::Warning));
        assert_eq!(parse_severity("x"), None);
    }
}
