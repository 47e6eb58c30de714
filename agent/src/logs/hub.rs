//! TailLogs fan-out: the last records of each instance in memory, and one bounded queue per client.
//! Publishing never waits: a client whose queue is full misses records, and the next record it gets
//! says how many (`missed_before`). Neither other clients nor drains are slowed by it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::record::{LogRecord, Severity};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TailRequest {
    /// `None`: every instance.
    pub instance: Option<String>,
    /// 0 and no `since`: the last `DEFAULT_LINES` records.
    pub last_lines: u32,
    pub since: Option<SystemTime>,
    pub follow: bool,
    pub min_severity: Severity,
}

pub const DEFAULT_LINES: u32 = 50;

#[derive(Debug, Clone)]
pub struct TailItem {
    pub record: Arc<LogRecord>,
    pub missed_before: u64,
}

pub struct Tail {
    pub backlog: Vec<Arc<LogRecord>>,
    pub follow: Option<mpsc::Receiver<TailItem>>,
}

struct Client {
    instance: Option<String>,
    min: Severity,
    tx: mpsc::Sender<TailItem>,
    missed: u64,
}

pub struct Hub {
    ring_capacity: usize,
    queue_capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    rings: HashMap<Arc<str>, VecDeque<Arc<LogRecord>>>,
    clients: Vec<Client>,
}

impl Hub {
    pub fn new(ring_capacity: usize, queue_capacity: usize) -> Self {
        Self { ring_capacity, queue_capacity, inner: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn publish(&self, records: Vec<LogRecord>) {
        let mut inner = self.lock();
        let Inner { rings, clients } = &mut *inner;
        for record in records {
            let record = Arc::new(record);
            let ring = rings.entry(record.instance.clone()).or_default();
            if ring.len() == self.ring_capacity {
                ring.pop_front();
            }
            ring.push_back(record.clone());
            clients.retain_mut(|c| {
                // A gone client whose filter rarely matches would otherwise stay until a record it wants.
                if c.tx.is_closed() {
                    return false;
                }
                if !record.severity.passes(c.min) || c.instance.as_deref().is_some_and(|i| i != &*record.instance) {
                    return true;
                }
                match c.tx.try_send(TailItem { record: record.clone(), missed_before: c.missed }) {
                    Ok(()) => {
                        c.missed = 0;
                        true
                    }
                    Err(TrySendError::Full(_)) => {
                        c.missed += 1;
                        true
                    }
                    Err(TrySendError::Closed(_)) => false,
                }
            });
        }
    }

    /// The backlog the request asks for and, with `follow`, a queue of what comes after it: taken
    /// under one lock, so nothing is missed or repeated between the two.
    pub fn tail(&self, req: &TailRequest) -> Tail {
        let mut inner = self.lock();
        let matches = |r: &&Arc<LogRecord>| {
            r.severity.passes(req.min_severity)
                && req.instance.as_deref().is_none_or(|i| i == &*r.instance)
                && req.since.is_none_or(|s| r.time >= s)
        };
        let mut backlog: Vec<Arc<LogRecord>> =
            inner.rings.values().flat_map(|ring| ring.iter().filter(matches).cloned()).collect();
        if inner.rings.len() > 1 {
            backlog.sort_by_key(|r| r.time);
        }
        let limit = match (req.last_lines, req.since) {
            (0, None) => Some(DEFAULT_LINES),
            (0, Some(_)) => None,
            (n, _) => Some(n),
        };
        if let Some(n) = limit {
            let skip = backlog.len().saturating_sub(n as usize);
            backlog.drain(..skip);
        }
        let follow = req.follow.then(|| {
            let (tx, rx) = mpsc::channel(self.queue_capacity);
            inner.clients.push(Client { instance: req.instance.clone(), min: req.min_severity, tx, missed: 0 });
            rx
        });
        Tail { backlog, follow }
    }

    /// Forgets an instance's backlog (it was removed).
    pub fn forget(&self, instance: &str) {
        self.lock().rings.remove(instance);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: usize, severity: Severity) -> LogRecord {
        LogRecord {
            time: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(i as u64),
            instance: "pg-1".into(),
            source: "f".into(),
            severity,
            message: format!("line {i}"),
        }
    }

    #[test]
    fn backlog_then_follow_with_filters() {
        let hub = Hub::new(100, 16);
        hub.publish((0..10).map(|i| rec(i, if i % 2 == 0 { Severity::Error } else { Severity::Info })).collect());
        let req = TailRequest {
            instance: Some("pg-1".into()),
            last_lines: 3,
            follow: true,
            min_severity: Severity::Warning,
            ..Default::default()
        };
        let mut t = hub.tail(&req);
        assert_eq!(t.backlog.iter().map(|r| r.message.as_str()).collect::<Vec<_>>(), ["line 4", "line 6", "line 8"]);
        hub.publish(vec![rec(10, Severity::Info), rec(11, Severity::Critical)]);
        let item = t.follow.as_mut().unwrap().try_recv().unwrap();
        assert_eq!(item.record.message, "line 11");
        let since = TailRequest {
            since: Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(9)),
            ..Default::default()
        };
        assert_eq!(hub.tail(&since).backlog.len(), 3);
        let other = TailRequest { instance: Some("other".into()), ..Default::default() };
        assert!(hub.tail(&other).backlog.is_empty());
    }

    #[test]
    fn slow_client_misses_records_and_is_told() {
        let hub = Hub::new(10, 16);
        let mut slow = hub.tail(&TailRequest { follow: true, ..Default::default() }).follow.unwrap();
        let mut fast = hub.tail(&TailRequest { follow: true, ..Default::default() }).follow.unwrap();
        let mut fast_got = 0;
        for i in 0..100 {
            hub.publish(vec![rec(i, Severity::Info)]);
            while fast.try_recv().is_ok() {
                fast_got += 1;
            }
        }
        assert_eq!(fast_got, 100, "a slow client must not cost a fast one anything");
        let mut got = Vec::new();
        while let Ok(item) = slow.try_recv() {
            got.push(item);
        }
        assert_eq!(got.len(), 16);
        hub.publish(vec![rec(100, Severity::Info)]);
        let next = slow.try_recv().unwrap();
        assert_eq!(next.missed_before, 84);
        assert_eq!(next.record.message, "line 100");
        drop(slow);
        hub.publish(vec![rec(101, Severity::Info)]);
        assert_eq!(hub.lock().clients.len(), 1, "closed clients are dropped");
        let critical_only = TailRequest { follow: true, min_severity: Severity::Critical, ..Default::default() };
        drop(hub.tail(&critical_only).follow);
        hub.publish(vec![rec(102, Severity::Info)]);
        assert_eq!(hub.lock().clients.len(), 1, "a closed client is dropped even when no record matches its filter");
    }
}
