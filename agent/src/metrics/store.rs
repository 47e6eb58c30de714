//! Bounded in-memory history, one ring per owner (the node, each instance).
//!
//! Samples are stored compactly: each owner interns its series keys once (metric + labels -> u16 id),
//! and a sample is a run of varints in a chunk of `CHUNK_SAMPLES` samples: the time since the previous
//! sample in ms, the list of series ids (or a single 0 when it is the previous sample's list), then
//! per value the zig-zag difference to that series' previous value in the chunk (for counters, the
//! difference of differences). Counters grow at a steady-ish rate and gauges mostly stand still, so
//! a value costs one to three bytes instead of a 16-byte (id, f64) pair or a label string.
//! Whole chunks fall off the back once they are older than the retention, so the history holds at
//! most one chunk more than asked for.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::model::{Kind, Owner, Point, Reading, SeriesKey, Snapshot};

/// One hour at the default 10 s interval.
pub const CHUNK_SAMPLES: u32 = 360;

struct Chunk {
    first_ms: u64,
    last_ms: u64,
    count: u32,
    bytes: Vec<u8>,
    /// Encoder state while the chunk is open; dropped when it is sealed.
    prev: Option<EncoderState>,
}

/// What the next sample is encoded against: per series id the last value and, for counters, the
/// last delta (counters are stored as delta-of-delta: a steady rate costs one byte).
#[derive(Default)]
struct EncoderState {
    values: Vec<u64>,
    deltas: Vec<u64>,
    ids: Vec<u16>,
}

impl EncoderState {
    fn with_len(n: usize) -> Self {
        Self { values: vec![0; n], deltas: vec![0; n], ids: Vec::new() }
    }

    fn grow(&mut self, n: usize) {
        self.values.resize(n, 0);
        self.deltas.resize(n, 0);
    }

    /// The encoded difference for `raw` of series `id`, updating the state. Decoding runs the same
    /// steps backwards in `decode_value`.
    fn encode_value(&mut self, id: usize, raw: u64, counter: bool) -> u64 {
        let delta = raw.wrapping_sub(self.values[id]);
        self.values[id] = raw;
        let residual = if counter {
            let r = delta.wrapping_sub(self.deltas[id]);
            self.deltas[id] = delta;
            r
        } else {
            delta
        };
        zigzag(residual as i64)
    }

    fn decode_value(&mut self, id: usize, encoded: u64, counter: bool) -> u64 {
        let residual = unzigzag(encoded) as u64;
        let delta = if counter {
            let d = self.deltas[id].wrapping_add(residual);
            self.deltas[id] = d;
            d
        } else {
            residual
        };
        self.values[id] = self.values[id].wrapping_add(delta);
        self.values[id]
    }
}

/// The history of one owner.
#[derive(Default)]
pub struct OwnerHistory {
    keys: Vec<Arc<SeriesKey>>,
    ids: HashMap<Arc<SeriesKey>, u16>,
    chunks: VecDeque<Chunk>,
    latest: Option<Arc<Snapshot>>,
}

fn millis(t: SystemTime) -> u64 {
    u64::try_from(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(u64::MAX)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn zigzag(d: i64) -> u64 {
    ((d << 1) ^ (d >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

impl OwnerHistory {
    fn intern(&mut self, key: SeriesKey) -> Option<(u16, Arc<SeriesKey>)> {
        if let Some((k, id)) = self.ids.get_key_value(&key) {
            return Some((*id, k.clone()));
        }
        // 65536 distinct series of one owner would mean a runaway label (a device per second):
        // drop new ones rather than grow without bound.
        let id = u16::try_from(self.keys.len()).ok()?;
        let key = Arc::new(key);
        self.keys.push(key.clone());
        self.ids.insert(key.clone(), id);
        Some((id, key))
    }

    /// Stores one reading taken at `time` and makes it the latest snapshot.
    pub fn push(&mut self, owner: &Owner, time: SystemTime, reading: Reading) {
        let mut entries: Vec<(u16, Arc<SeriesKey>, u64)> = reading
            .values
            .into_iter()
            .filter_map(|(key, raw)| self.intern(key).map(|(id, key)| (id, key, raw)))
            .collect();
        entries.sort_by_key(|e| e.0);
        entries.dedup_by_key(|e| e.0);
        let ms = millis(time);
        let open = self.chunks.back().is_some_and(|c| c.prev.is_some() && c.count < CHUNK_SAMPLES && ms >= c.last_ms);
        if !open {
            if let Some(c) = self.chunks.back_mut() {
                seal(c);
            }
            self.chunks.push_back(Chunk {
                first_ms: ms,
                last_ms: ms,
                count: 0,
                bytes: Vec::new(),
                prev: Some(EncoderState::default()),
            });
        }
        let n_keys = self.keys.len();
        let Some(chunk) = self.chunks.back_mut() else { return };
        let state = chunk.prev.get_or_insert_with(EncoderState::default);
        state.grow(n_keys);
        put_varint(&mut chunk.bytes, ms - chunk.last_ms);
        // The set of series rarely changes between samples: then a single 0 replaces the id list.
        let ids: Vec<u16> = entries.iter().map(|e| e.0).collect();
        if ids == state.ids {
            put_varint(&mut chunk.bytes, 0);
        } else {
            put_varint(&mut chunk.bytes, ids.len() as u64 + 1);
            let mut last_id = 0u16;
            for id in &ids {
                put_varint(&mut chunk.bytes, u64::from(id - last_id));
                last_id = *id;
            }
            state.ids = ids;
        }
        for (id, key, raw) in &entries {
            let v = state.encode_value(usize::from(*id), *raw, key.metric.info().kind == Kind::Counter);
            put_varint(&mut chunk.bytes, v);
        }
        chunk.last_ms = ms;
        chunk.count += 1;
        let points = entries.into_iter().map(|(_, key, raw)| Point { key, raw }).collect();
        self.latest = Some(Arc::new(Snapshot { time, owner: owner.clone(), points }));
    }

    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        self.latest.clone()
    }

    /// Samples with `start <= time <= end`, oldest first.
    pub fn range(&self, owner: &Owner, start: SystemTime, end: SystemTime) -> Vec<Snapshot> {
        let (start, end) = (millis(start), millis(end));
        let mut out = Vec::new();
        for chunk in self.chunks.iter().filter(|c| c.last_ms >= start && c.first_ms <= end) {
            self.decode(chunk, owner, |s| millis(s.time) >= start && millis(s.time) <= end, &mut out);
        }
        out
    }

    fn decode(&self, chunk: &Chunk, owner: &Owner, keep: impl Fn(&Snapshot) -> bool, out: &mut Vec<Snapshot>) {
        let b = &chunk.bytes;
        let mut state = EncoderState::with_len(self.keys.len());
        let (mut at, mut ms) = (0usize, chunk.first_ms);
        for _ in 0..chunk.count {
            let (Some(dt), Some(n)) = (get_varint(b, &mut at), get_varint(b, &mut at)) else { return };
            ms += dt;
            if n > 0 {
                let mut ids = Vec::with_capacity(usize::try_from(n - 1).unwrap_or(0).min(65_536));
                let mut id = 0u64;
                for _ in 1..n {
                    let Some(did) = get_varint(b, &mut at) else { return };
                    id += did;
                    let Ok(id) = u16::try_from(id) else { return };
                    ids.push(id);
                }
                state.ids = ids;
            }
            let mut points = Vec::with_capacity(state.ids.len());
            for i in 0..state.ids.len() {
                let id = usize::from(state.ids[i]);
                let (Some(v), Some(key)) = (get_varint(b, &mut at), self.keys.get(id)) else { return };
                let raw = state.decode_value(id, v, key.metric.info().kind == Kind::Counter);
                points.push(Point { key: key.clone(), raw });
            }
            let s = Snapshot { time: UNIX_EPOCH + Duration::from_millis(ms), owner: owner.clone(), points };
            if keep(&s) {
                out.push(s);
            }
        }
    }

    fn prune(&mut self, before_ms: u64) {
        while self.chunks.len() > 1 && self.chunks.front().is_some_and(|c| c.last_ms < before_ms) {
            self.chunks.pop_front();
        }
    }

    /// Heap bytes held, for the memory figures in docs/metrics.md.
    pub fn heap_bytes(&self) -> usize {
        let chunks: usize = self
            .chunks
            .iter()
            .map(|c| {
                size_of::<Chunk>()
                    + c.bytes.capacity()
                    + c.prev.as_ref().map_or(0, |p| p.values.capacity() * 16 + p.ids.capacity() * 2)
            })
            .sum();
        let keys: usize =
            self.keys.iter().map(|k| 64 + k.labels.iter().map(|(_, v)| 24 + 16 + v.capacity()).sum::<usize>()).sum();
        chunks + keys + self.latest.as_ref().map_or(0, |s| s.points.capacity() * size_of::<Point>())
    }
}

fn seal(c: &mut Chunk) {
    c.prev = None;
    c.bytes.shrink_to_fit();
}

/// The history of every owner. Each owner has its own lock, so a long range query of one instance
/// does not hold up the sampler's writes to the others.
pub struct History {
    retention: Duration,
    owners: RwLock<BTreeMap<Owner, Arc<Mutex<OwnerHistory>>>>,
}

impl History {
    pub fn new(retention: Duration) -> Self {
        Self { retention, owners: RwLock::default() }
    }

    fn owner(&self, owner: &Owner) -> Option<Arc<Mutex<OwnerHistory>>> {
        self.owners.read().unwrap_or_else(|e| e.into_inner()).get(owner).cloned()
    }

    pub fn push(&self, owner: Owner, time: SystemTime, reading: Reading) {
        let entry = match self.owner(&owner) {
            Some(e) => e,
            None => self.owners.write().unwrap_or_else(|e| e.into_inner()).entry(owner.clone()).or_default().clone(),
        };
        let mut h = entry.lock().unwrap_or_else(|e| e.into_inner());
        h.push(&owner, time, reading);
        h.prune(millis(time).saturating_sub(u64::try_from(self.retention.as_millis()).unwrap_or(u64::MAX)));
    }

    /// Forgets owners not in `keep` (removed instances). The node is always kept.
    pub fn retain_instances(&self, keep: &dyn Fn(&str) -> bool) {
        self.owners.write().unwrap_or_else(|e| e.into_inner()).retain(|o, _| match o {
            Owner::Node => true,
            Owner::Instance(id) => keep(id),
        });
    }

    pub fn latest(&self, owner: &Owner) -> Option<Arc<Snapshot>> {
        self.owner(owner).and_then(|h| h.lock().unwrap_or_else(|e| e.into_inner()).latest())
    }

    /// The latest snapshot of every owner, node first.
    pub fn latest_all(&self) -> Vec<Arc<Snapshot>> {
        let owners: Vec<_> = self.owners.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        owners.iter().filter_map(|h| h.lock().unwrap_or_else(|e| e.into_inner()).latest()).collect()
    }

    pub fn range(&self, owner: &Owner, start: SystemTime, end: SystemTime) -> Vec<Snapshot> {
        self.owner(owner)
            .map(|h| h.lock().unwrap_or_else(|e| e.into_inner()).range(owner, start, end))
            .unwrap_or_default()
    }

    pub fn heap_bytes(&self) -> usize {
        let owners: Vec<_> = self.owners.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        owners.iter().map(|h| h.lock().unwrap_or_else(|e| e.into_inner()).heap_bytes()).sum()
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
