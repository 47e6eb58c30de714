//! The `logship-test` helper (one dbagent drain pipeline) as a fixture: started, SIGKILLed,
//! restarted; killed on drop. And the numbered log lines the drain tests write, with the check of
//! what arrived: every line byte for byte, and where repeats arrived.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct Shipper {
    child: Option<Child>,
    args: Vec<String>,
    binary: PathBuf,
}

impl Shipper {
    /// `binary` is `env!("CARGO_BIN_EXE_logship-test")` of the calling test.
    pub fn start(binary: &str, state: &Path, glob: &str, address: &str, extra: &[&str]) -> Self {
        let mut args = vec![
            "--state".into(),
            state.display().to_string(),
            "--glob".into(),
            glob.into(),
            "--address".into(),
            address.into(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut s = Self { child: None, args, binary: PathBuf::from(binary) };
        s.spawn();
        s
    }

    pub fn spawn(&mut self) {
        let mut child = Command::new(&self.binary)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start logship-test");
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            BufReader::new(out).read_line(&mut line).expect("read readiness");
        }
        assert_eq!(line.trim(), "ready", "logship-test did not start");
        self.child = Some(child);
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("shipper running");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
        c.wait().expect("wait for logship-test")
    }
}

impl Drop for Shipper {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Line `seq` of the numbered logs the drain tests write (without its newline): a PostgreSQL log
/// line whose text varies with the number (length, timestamp, pid, a non-ASCII user name), so a
/// line that arrives cut, shifted or mixed with another shows, not only one that is missing.
pub fn numbered_line(seq: usize) -> String {
    let user = ["app", "reporting", "müller", "svc_backup"][seq % 4];
    format!(
        "2024-05-01 10:{:02}:{:02}.{:03} UTC [{}] LOG:  seq={seq:08} connection authorized: user={user} database=db{} application_name=a{}",
        seq / 60_000 % 60,
        seq / 1000 % 60,
        seq % 1000,
        1000 + seq % 7919,
        seq % 13,
        "x".repeat(seq % 37)
    )
}

/// The number in a [`numbered_line`].
pub fn seq_of(line: &str) -> Option<usize> {
    line.split("seq=").nth(1).and_then(|s| s.get(..8)).and_then(|s| s.parse().ok())
}

/// Removes the messages a kill of the shipper cut in the middle. A process killed while writing a
/// frame leaves the receiver a part of it, and rsyslogd writes what it holds of a frame when the
/// connection closes, so the last arrival before a kill may be the first bytes of a line (the whole
/// line comes again from the next run, which resumes from the last acknowledged offset). Only that
/// position is forgiven, and only a strict prefix of a written line: anything else stays for
/// [`Deliveries::check`] to refuse. `kills` are the arrival counts at each kill, ascending; returns the
/// kept arrivals, the kill points moved to the kept positions, and how many were removed.
pub fn drop_torn_at_kills(received: &[String], kills: &[usize], n: usize) -> (Vec<String>, Vec<usize>, usize) {
    let torn = |line: &str| -> bool {
        match seq_of(line) {
            Some(seq) if seq < n => is_strict_prefix(line, &numbered_line(seq)),
            _ => (0..n).any(|seq| is_strict_prefix(line, &numbered_line(seq))),
        }
    };
    let cut: Vec<usize> =
        kills.iter().filter(|&&k| k > 0 && k <= received.len() && torn(&received[k - 1])).map(|&k| k - 1).collect();
    let kept = received.iter().enumerate().filter(|(at, _)| !cut.contains(at)).map(|(_, l)| l.clone()).collect();
    let moved = kills.iter().map(|&k| k - cut.iter().filter(|&&c| c < k).count()).collect();
    (kept, moved, cut.len())
}

fn is_strict_prefix(part: &str, line: &str) -> bool {
    part.len() < line.len() && line.starts_with(part)
}

/// What a drain delivered, in order of arrival, after checking every arrived line byte for byte.
pub struct Deliveries {
    /// The number of each arrived line.
    seqs: Vec<usize>,
    /// Where each number first arrived.
    first: Vec<Option<usize>>,
}

impl Deliveries {
    /// Checks each of `received` (the messages as the receiver wrote them, the syslog framing and
    /// header removed) against the [`numbered_line`] of its number, below `n`; panics on the first
    /// line that differs.
    pub fn check(received: &[String], n: usize) -> Self {
        let mut seqs = Vec::with_capacity(received.len());
        let mut first = vec![None; n];
        for (at, line) in received.iter().enumerate() {
            let seq = seq_of(line)
                .filter(|&s| s < n)
                .unwrap_or_else(|| panic!("arrived line {at} is none of the {n} written: {line:?}"));
            let written = numbered_line(seq);
            assert_eq!(line, &written, "arrived line {at} differs from the line written as number {seq}");
            first[seq].get_or_insert(at);
            seqs.push(seq);
        }
        Self { seqs, first }
    }

    pub fn seqs(&self) -> &[usize] {
        &self.seqs
    }

    /// How many of the written lines arrived at least once.
    pub fn distinct(&self) -> usize {
        self.first.iter().filter(|f| f.is_some()).count()
    }

    /// Up to 20 numbers that never arrived.
    pub fn missing(&self) -> Vec<usize> {
        self.first.iter().enumerate().filter(|(_, f)| f.is_none()).map(|(s, _)| s).take(20).collect()
    }

    /// How many of the lines that arrived at positions `from..to` had arrived before.
    pub fn repeats_in(&self, from: usize, to: usize) -> usize {
        (from..to.min(self.seqs.len())).filter(|&at| self.first[self.seqs[at]] != Some(at)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrived(seqs: &[usize]) -> Vec<String> {
        seqs.iter().map(|&s| numbered_line(s)).collect()
    }

    #[test]
    fn repeats_are_counted_where_they_arrived() {
        let got = Deliveries::check(&arrived(&[0, 1, 2, 3, 2, 3, 4, 5, 4]), 6);
        assert_eq!((got.distinct(), got.missing()), (6, vec![]));
        assert_eq!((got.repeats_in(0, 4), got.repeats_in(4, 7), got.repeats_in(7, 9)), (0, 2, 1));
        assert_eq!(Deliveries::check(&arrived(&[0, 2]), 3).missing(), vec![1]);
    }

    #[test]
    fn only_a_cut_line_at_a_kill_is_dropped() {
        let mut lines = arrived(&[0, 1, 2, 1, 2, 3]);
        lines.insert(2, numbered_line(2)[..4].to_string());
        lines.insert(6, numbered_line(2)[..70].to_string());
        // Kills after arrivals 3 and 7: both cut lines sit just before a kill.
        let (kept, kills, cut) = drop_torn_at_kills(&lines, &[3, 7], 4);
        assert_eq!((kept, kills, cut), (arrived(&[0, 1, 2, 1, 2, 3]), vec![2, 5], 2));
        // The same cut line anywhere else stays, and check refuses it.
        let (kept, _, cut) = drop_torn_at_kills(&lines, &[4], 4);
        assert_eq!((kept.len(), cut), (lines.len(), 0));
        // A line that is not the start of a written line is not forgiven at a kill either.
        let odd = vec![numbered_line(0), "2024-05-01 garbage".to_string()];
        assert_eq!(drop_torn_at_kills(&odd, &[2], 1).2, 0);
    }

    #[test]
    #[should_panic(expected = "differs from the line written as number 1")]
    fn a_line_changed_after_its_number_is_refused() {
        let mut lines = arrived(&[0, 1]);
        lines[1].pop();
        Deliveries::check(&lines, 2);
    }
}
