//! The in-process cache of completed results: a replay served from it costs no round trip.
//! Entries never outlive the record's retention nor the configured maximum age, so a record
//! forgotten by an operator is replayed from the cache for at most that long.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::{FencingToken, Record, StoredResult};

/// A completed record, as much of it as a replay needs.
#[derive(Debug, Clone)]
pub(crate) struct Completed {
    pub(crate) result: Option<StoredResult>,
    pub(crate) token: FencingToken,
    pub(crate) completed_at: SystemTime,
    pub(crate) fingerprint: Option<Vec<u8>>,
}

impl Completed {
    pub(crate) fn from_record(record: &Record) -> Self {
        Self {
            result: record.result.clone(),
            token: record.fencing_token,
            completed_at: record.completed_at.unwrap_or(record.updated_at),
            fingerprint: record.fingerprint.clone(),
        }
    }
}

type Id = (String, String);

/// Entries with their local expiry and generation, and insertion order (id, generation) for
/// eviction: a stale order slot never evicts a newer entry of the same id.
#[derive(Default)]
struct Entries {
    map: HashMap<Id, (Completed, Instant, u64)>,
    order: VecDeque<(Id, u64)>,
    generation: u64,
    /// Bumped by every removal (an operator changed records through this instance): a row read
    /// before it is not cached after it (L5).
    invalidations: u64,
}

pub(crate) struct ResultCache {
    capacity: usize,
    max_age: Duration,
    entries: Mutex<Entries>,
}

impl ResultCache {
    pub(crate) fn new(capacity: usize, max_age: Duration) -> Self {
        Self {
            capacity,
            max_age,
            entries: Mutex::default(),
        }
    }

    fn enabled(&self) -> bool {
        self.capacity > 0 && !self.max_age.is_zero()
    }

    pub(crate) fn get(&self, namespace: &str, key: &str) -> Option<Completed> {
        if !self.enabled() {
            return None;
        }
        let mut guard = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let id = (namespace.to_owned(), key.to_owned());
        match guard.map.get(&id) {
            Some((c, expires, _)) if Instant::now() < *expires => Some(c.clone()),
            Some(_) => {
                guard.map.remove(&id);
                None
            }
            None => None,
        }
    }

    /// The invalidation count, to pass to [`ResultCache::insert`] for a row read after now.
    pub(crate) fn epoch(&self) -> u64 {
        if !self.enabled() {
            return 0;
        }
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .invalidations
    }

    /// Caches a completed record for at most `max_age` and at most `retention_left` — unless an
    /// operator action through this instance invalidated entries since `epoch` was taken (the
    /// row may be gone by now).
    pub(crate) fn insert(
        &self,
        namespace: &str,
        key: &str,
        completed: Completed,
        retention_left: Option<Duration>,
        epoch: u64,
    ) {
        if !self.enabled() {
            return;
        }
        let age = retention_left.map_or(self.max_age, |r| r.min(self.max_age));
        if age.is_zero() {
            return;
        }
        let mut guard = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let e = &mut *guard;
        if e.invalidations != epoch {
            return;
        }
        e.generation += 1;
        let id = (namespace.to_owned(), key.to_owned());
        e.map
            .insert(id.clone(), (completed, Instant::now() + age, e.generation));
        e.order.push_back((id, e.generation));
        while e.map.len() > self.capacity || e.order.len() > 2 * self.capacity.max(1) {
            let Some((old, generation)) = e.order.pop_front() else {
                break;
            };
            if e.map.get(&old).is_some_and(|(_, _, g)| *g == generation) {
                e.map.remove(&old);
            }
        }
    }

    /// Forgets one key (an operator changed its record through this instance).
    pub(crate) fn remove(&self, namespace: &str, key: &str) {
        if self.enabled() {
            let mut guard = self
                .entries
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            guard.invalidations += 1;
            guard.map.remove(&(namespace.to_owned(), key.to_owned()));
        }
    }

    /// Forgets everything (records were pruned through this instance).
    pub(crate) fn clear(&self) {
        if self.enabled() {
            let mut guard = self
                .entries
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            guard.invalidations += 1;
            guard.map.clear();
            guard.order.clear();
        }
    }
}
