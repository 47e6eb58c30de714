//! Parsers for flag values (sizes, durations, times of day, maintenance windows), usable as clap
//! `value_parser`s; their errors say what format is expected.

use dbagent_proto::v1::{MaintenanceWindow, Weekday};
use std::time::Duration;

/// `10GiB`, `512MiB`, `1.5TiB`, `4096`, `20GB` (decimal units exist because operators type them).
pub fn size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(format!("{text:?}: unknown unit {unit:?}; use bytes or KiB, MiB, GiB, TiB (e.g. 10GiB)")),
    };
    let bad = || format!("{text:?} is not a size; use bytes or a number with KiB, MiB, GiB, TiB (e.g. 10GiB)");
    if number.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = number.parse::<u64>() {
        return n.checked_mul(factor).ok_or_else(|| format!("{text:?} is too large"));
    }
    let n: f64 = number.parse().map_err(|_| bad())?;
    let bytes = n * factor as f64;
    if !(0.0..1.8e19).contains(&bytes) {
        return Err(format!("{text:?} is too large"));
    }
    // Fractions of a unit are rounded down to whole bytes.
    Ok(bytes as u64)
}

/// humantime durations (`5s`, `1h30m`); a plain number means seconds, as `--timeout 30` suggests.
pub fn duration(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.trim().parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(text.trim()).map_err(|e| format!("{text:?} is not a duration ({e}); e.g. 30s, 5m, 1h30m"))
}

/// `HH:MM` in UTC, as minutes after midnight.
pub fn time_of_day(text: &str) -> Result<u32, String> {
    let bad = || format!("{text:?} is not a time of day; use HH:MM in UTC, e.g. 03:00");
    let (h, m) = text.trim().split_once(':').ok_or_else(bad)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h >= 24 || m >= 60 || text.trim().len() > 5 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// `mon@02:00+60m`: weekday, start (UTC) and length. The agent enforces 15 minutes to 24 hours; the client
/// checks it too so the mistake is reported before anything is sent.
pub fn maintenance_window(text: &str) -> Result<MaintenanceWindow, String> {
    let bad = |why: &str| format!("{text:?}: {why}; expected DAY@HH:MM+DURATION in UTC, e.g. mon@02:00+60m");
    let (day, rest) = text.trim().split_once('@').ok_or_else(|| bad("missing '@'"))?;
    let (start, length) = rest.split_once('+').ok_or_else(|| bad("missing '+'"))?;
    let weekday = weekday(day).ok_or_else(|| bad("unknown weekday"))?;
    let start_minute_utc = time_of_day(start).map_err(|_| bad("bad start time"))?;
    let length = humantime::parse_duration(length).map_err(|_| bad("bad duration"))?;
    if length.as_secs() % 60 != 0 {
        return Err(bad("the duration must be whole minutes"));
    }
    let duration_minutes = u32::try_from(length.as_secs() / 60).map_err(|_| bad("duration too long"))?;
    if !(15..=1440).contains(&duration_minutes) {
        return Err(bad("the duration must be between 15m and 24h"));
    }
    Ok(MaintenanceWindow { weekday: weekday as i32, start_minute_utc, duration_minutes })
}

fn weekday(text: &str) -> Option<Weekday> {
    let t = text.to_ascii_lowercase();
    let all = [
        ("monday", Weekday::Monday),
        ("tuesday", Weekday::Tuesday),
        ("wednesday", Weekday::Wednesday),
        ("thursday", Weekday::Thursday),
        ("friday", Weekday::Friday),
        ("saturday", Weekday::Saturday),
        ("sunday", Weekday::Sunday),
    ];
    all.into_iter().find(|(name, _)| t.len() >= 3 && name.starts_with(&t)).map(|(_, day)| day)
}

/// `NAME=VALUE` pairs for drains.
pub fn name_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((n, v)) if !n.is_empty() && !v.is_empty() => Ok((n.to_owned(), v.to_owned())),
        _ => Err(format!("{text:?}: expected NAME=VALUE")),
    }
}

/// A fresh idempotency key: 16 random bytes as hex.
pub fn new_request_id() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| format!("generate a request id: {e}"))?;
    Ok(crate::hex::encode(&bytes))
}

/// A calendar month written YYYY-MM, checked here so a typo fails before any connection.
pub fn month(text: &str) -> Result<String, String> {
    crate::availability::Month::parse(text).map(|m| m.to_string()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size("10GiB"), Ok(10 << 30));
        assert_eq!(size("512MiB"), Ok(512 << 20));
        assert_eq!(size("4096"), Ok(4096));
        assert_eq!(size("1.5 GiB"), Ok(3 << 29));
        assert_eq!(size("20GB"), Ok(20_000_000_000));
        assert!(size("10 parsecs").unwrap_err().contains("unknown unit"));
        assert!(size("GiB").is_err());
        assert!(size("99999999999TiB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(duration("soon").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn times_of_day() {
        assert_eq!(time_of_day("03:00"), Ok(180));
        assert_eq!(time_of_day("23:59"), Ok(1439));
        assert!(time_of_day("24:00").is_err());
        assert!(time_of_day("3").is_err());
    }

    #[test]
    fn windows() {
        let w = maintenance_window("mon@02:00+60m").unwrap();
        assert_eq!((w.weekday, w.start_minute_utc, w.duration_minutes), (Weekday::Monday as i32, 120, 60));
        let w = maintenance_window("Sunday@23:30+2h").unwrap();
        assert_eq!((w.weekday, w.start_minute_utc, w.duration_minutes), (Weekday::Sunday as i32, 1410, 120));
        assert!(maintenance_window("mon@02:00+10m").unwrap_err().contains("between 15m and 24h"));
        assert!(maintenance_window("mon@02:00+25h").unwrap_err().contains("between 15m and 24h"));
        assert_eq!(maintenance_window("mon@02:00+24h").unwrap().duration_minutes, 1440);
        assert!(maintenance_window("mo@02:00+60m").unwrap_err().contains("weekday"));
        assert!(maintenance_window("mon 02:00").unwrap_err().contains("'@'"));
        assert!(maintenance_window("mon@02:00+90s").is_err());
    }

    #[test]
    fn request_ids_are_hex_and_valid() {
        let id = new_request_id().unwrap();
        assert_eq!(id.len(), 32);
        assert!(crate::ids::request_id(&id).is_ok());
        assert_ne!(id, new_request_id().unwrap());
    }
}
