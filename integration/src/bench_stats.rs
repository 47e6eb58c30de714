//! Figures of repeated benchmark runs as the benchmark sections print them: the median and the
//! spread (min-max) of each measurement.

/// The median and the spread of a set of runs.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

impl Spread {
    /// `None` for no runs. The median of an even count is the mean of the two middle values.
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Some(Self { median, min: v[0], max: v[n - 1], runs: n })
    }

    /// `median [min-max]` with `decimals` digits after the point.
    pub fn show(&self, decimals: usize) -> String {
        format!("{:.d$} [{:.d$}-{:.d$}]", self.median, self.min, self.max, d = decimals)
    }
}

/// [`Spread::show`] of `values`, or "-" when there are none.
pub fn show(values: &[f64], decimals: usize) -> String {
    Spread::of(values).map_or_else(|| "-".to_owned(), |s| s.show(decimals))
}

/// The median of `values` (NaN when there are none).
pub fn median(values: &[f64]) -> f64 {
    Spread::of(values).map_or(f64::NAN, |s| s.median)
}

/// utime + stime of a process in seconds, from /proc/PID/stat (fields 14 and 15).
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default().split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    let (Some(utime), Some(stime)) = (field(11), field(12)) else {
        anyhow::bail!("/proc/{pid}/stat has no utime/stime");
    };
    Ok((utime + stime) / clock_ticks())
}

/// A value in kB of /proc/PID/status (`VmHWM`, `VmRSS`), in MiB.
pub fn status_mib(pid: u32, key: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("/proc/{pid}/status has no {key}"))?;
    Ok(kib / 1024.0)
}

/// The kernel's USER_HZ: 100 on every Linux architecture Debian ships.
fn clock_ticks() -> f64 {
    100.0
}

/// Load average (1, 5, 15 min) as /proc/loadavg shows it.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts_and_spread() {
        let s = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.runs), (2.0, 1.0, 3.0, 3));
        assert_eq!(Spread::of(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert!(Spread::of(&[]).is_none());
        assert_eq!(show(&[1.0, 2.0, 4.0], 1), "2.0 [1.0-4.0]");
    }
}
