//! Reading the agent's Prometheus endpoint in a test: its address from the start-up log, one
//! scrape, one series' value.

use std::io::{Read, Write};

use crate::Agent;

const LOGGED: &str = "Prometheus metrics at http://";

/// The address the agent's latest run serves Prometheus on (the last one logged: an agent
/// restarted by a test logs a new port).
pub fn address(agent: &Agent) -> String {
    let log = agent.log();
    let at = log.rfind(LOGGED).unwrap_or_else(|| panic!("no Prometheus address in the agent's log\n{log}"));
    let rest = &log[at + LOGGED.len()..];
    rest[..rest.find("/metrics").expect("the logged address ends in /metrics")].to_owned()
}

/// One `GET /metrics` from `addr`: the raw response (headers and body).
pub fn scrape(addr: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .expect("send the scrape");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("read the scrape");
    body
}

/// The value of the series whose line starts with `series` (name and labels), if present.
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}
