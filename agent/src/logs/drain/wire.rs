//! How records look on the wire: RFC 5424 syslog messages framed by octet counting, or JSON lines.

use std::io::Write;
use std::time::SystemTime;

use crate::logs::record::LogRecord;

/// syslog facility local0: database logs are the platform's, not the kernel's or a user's.
const FACILITY: u8 = 16;
/// The example private enterprise number of RFC 5612, for our structured-data id.
const SD_ID: &str = "dbagent@32473";

#[derive(Debug, Clone)]
pub enum WireFormat {
    Syslog { hostname: String },
    JsonLines { hostname: String },
}

impl WireFormat {
    pub fn encode(&self, r: &LogRecord, out: &mut Vec<u8>) {
        match self {
            WireFormat::Syslog { hostname } => encode_syslog(hostname, r, out),
            WireFormat::JsonLines { hostname } => {
                let line = serde_json::json!({
                    "time": rfc3339(r.time),
                    "host": hostname,
                    "instance": &*r.instance,
                    "source": &*r.source,
                    "severity": r.severity.as_str(),
                    "message": r.message,
                });
                let _ = serde_json::to_writer(&mut *out, &line);
                out.push(b'\n');
            }
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

/// `LEN SP <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG`. Octet counting lets messages
/// hold newlines (joined multi-line records) safely.
fn encode_syslog(hostname: &str, r: &LogRecord, out: &mut Vec<u8>) {
    let mut msg = Vec::with_capacity(r.message.len() + 160);
    let pri = FACILITY * 8 + r.severity.syslog_code();
    let _ = write!(
        msg,
        "<{pri}>1 {} {} {} - - [{SD_ID} instance=\"",
        rfc3339(r.time),
        header_field(hostname, 255),
        header_field(&r.instance, 48)
    );
    sd_escape(&r.instance, &mut msg);
    msg.extend_from_slice(b"\" source=\"");
    sd_escape(&r.source, &mut msg);
    msg.extend_from_slice(b"\"] ");
    msg.extend_from_slice(r.message.as_bytes());
    let _ = write!(out, "{} ", msg.len());
    out.extend_from_slice(&msg);
}

/// Header fields are printable US-ASCII without spaces, `-` when empty.
fn header_field(s: &str, max: usize) -> String {
    let f: String = s.chars().filter(|c| c.is_ascii_graphic()).take(max).collect();
    if f.is_empty() { "-".into() } else { f }
}

fn sd_escape(s: &str, out: &mut Vec<u8>) {
    for b in s.bytes() {
        if matches!(b, b'"' | b'\\' | b']') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::record::Severity;
    use std::time::{Duration, UNIX_EPOCH};

    fn record(message: &str) -> LogRecord {
        LogRecord {
            time: UNIX_EPOCH + Duration::from_micros(1_714_557_600_123_456),
            instance: "pg-1".into(),
            source: "/var/log/pg \"x\".log".into(),
            severity: Severity::Error,
            message: message.into(),
        }
    }

    #[test]
    fn syslog_is_octet_counted_rfc5424() {
        let mut out = Vec::new();
        WireFormat::Syslog { hostname: "db1".into() }.encode(&record("ERROR:  boom\n\tdetail"), &mut out);
        let text = String::from_utf8(out).unwrap();
        let (len, msg) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), msg.len());
        assert_eq!(
            msg,
            "<131>1 2024-05-01T10:00:00.123456Z db1 pg-1 - - [dbagent@32473 instance=\"pg-1\" source=\"/var/log/pg \\\"x\\\".log\"] ERROR:  boom\n\tdetail"
        );
    }

    #[test]
    fn json_lines_are_one_object_per_line() {
        let mut out = Vec::new();
        WireFormat::JsonLines { hostname: "db1".into() }.encode(&record("a\nb"), &mut out);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["severity"], "error");
        assert_eq!(v["message"], "a\nb");
        assert_eq!(v["time"], "2024-05-01T10:00:00.123456Z");
    }
}
