//! `MemoryStore`: the reference store for tests. One mutex, the host's clock.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::store::{
    ClaimRequest, ClaimResponse, Completion, KeyedEvent, ListOrder, ListQuery, OperatorAction,
    OperatorResponse, PruneQuery, Renewal, Resolution, StateCount, Store, StoreStats, Waiters,
    Write,
};
use crate::transition;
use crate::{
    Event, EventKind, FencingToken, Record, ResultKind, State, StoreError, StoredRow,
    UncertainReason,
};

/// An in-memory store. Cheap to clone (clones share the data); nothing survives the process.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("records", &self.data().rows.len())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Inner {
    data: Mutex<Data>,
    waiters: Waiters,
}

#[derive(Default)]
struct Data {
    last_token: u64,
    rows: BTreeMap<(String, String), Row>,
    /// Each key's events with their place in the whole log (for `recent_events`).
    events: HashMap<(String, String), Vec<(u64, Event)>>,
    last_event: u64,
}

/// Rows are kept as stored; the state is derived at read time with the host's clock.
type Row = StoredRow;

trait RowExt {
    fn record(&self, now: SystemTime) -> Record;
    fn running_with(&self, token: FencingToken) -> bool;
}

impl RowExt for Row {
    fn record(&self, now: SystemTime) -> Record {
        self.clone().into_record(now)
    }

    /// A running row whose token matches (lease alive or not).
    fn running_with(&self, token: FencingToken) -> bool {
        self.state == State::Running && self.fencing_token == token
    }
}

impl Data {
    fn next_token(&mut self) -> FencingToken {
        self.last_token += 1;
        FencingToken::new(self.last_token)
    }

    fn log(&mut self, id: &(String, String), event: Event) {
        self.last_event += 1;
        let seq = self.last_event;
        self.events
            .entry(id.clone())
            .or_default()
            .push((seq, event));
    }
}

fn id(namespace: &str, key: &str) -> (String, String) {
    (namespace.to_owned(), key.to_owned())
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn data(&self) -> MutexGuard<'_, Data> {
        // A panic while holding the lock cannot leave a half-applied transition (each one is a
        // few assignments), so a poisoned lock is still consistent.
        self.inner
            .data
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn signal(&self, id: &(String, String)) {
        self.inner.waiters.notify(&id.0, &id.1);
    }
}

fn now() -> SystemTime {
    SystemTime::now()
}

#[async_trait]
impl Store for MemoryStore {
    async fn claim(&self, req: &ClaimRequest) -> Result<ClaimResponse, StoreError> {
        let now = now();
        let mut data = self.data();
        let id = id(&req.namespace, &req.key);
        if let Some(row) = data.rows.get(&id) {
            return Ok(ClaimResponse::Existing(row.record(now)));
        }
        let token = data.next_token();
        let row = Row::claimed(req, token, now);
        let record = row.record(now);
        data.rows.insert(id.clone(), row);
        data.log(
            &id,
            Event::new(
                EventKind::Acquired,
                token,
                Some(req.owner.clone()),
                None,
                None,
                now,
            ),
        );
        Ok(ClaimResponse::Acquired(record))
    }

    async fn heartbeat(&self, renewals: &[Renewal]) -> Result<Vec<Option<SystemTime>>, StoreError> {
        let now = now();
        let mut data = self.data();
        Ok(renewals
            .iter()
            .map(|r| {
                let row = data.rows.get_mut(&id(&r.namespace, &r.key))?;
                let alive = row.lease_expires_at.is_some_and(|l| l > now);
                if !row.running_with(r.token) || !alive {
                    return None;
                }
                let mut lease = now + r.ttl;
                if let Some(hard) = row.hard_expires_at {
                    lease = lease.min(hard);
                }
                row.lease_expires_at = Some(lease);
                row.updated_at = now;
                Some(lease)
            })
            .collect())
    }

    async fn complete(&self, c: &Completion) -> Result<Write, StoreError> {
        let now = now();
        let id = id(&c.namespace, &c.key);
        let write = {
            let mut data = self.data();
            // A recorded error needs a live lease (design.md §2).
            let admissible = |r: &Row| {
                r.running_with(c.token)
                    && (c.result.kind != ResultKind::Error
                        || r.lease_expires_at.is_some_and(|l| l > now))
            };
            let Some(row) = data.rows.get_mut(&id).filter(|r| admissible(r)) else {
                return Ok(Write::Fenced);
            };
            row.state = State::Completed;
            row.result = Some(c.result.clone());
            row.completed_at = Some(now);
            row.updated_at = now;
            row.retain_until = c.retain_for.map(|d| now + d);
            row.reason = None;
            let owner = row.owner.clone();
            let record = row.record(now);
            let kind = match c.result.kind {
                ResultKind::Value => EventKind::Completed,
                ResultKind::Error => EventKind::Failed,
            };
            data.log(&id, Event::new(kind, c.token, owner, None, None, now));
            Write::Applied(Some(record))
        };
        self.signal(&id);
        Ok(write)
    }

    async fn release(
        &self,
        namespace: &str,
        key: &str,
        token: FencingToken,
    ) -> Result<Write, StoreError> {
        let now = now();
        let id = id(namespace, key);
        {
            let mut data = self.data();
            // Only a live lease may be released: an expired one is (derived) uncertain.
            let alive = |r: &Row| r.lease_expires_at.is_some_and(|l| l > now);
            if !data
                .rows
                .get(&id)
                .is_some_and(|r| r.running_with(token) && alive(r))
            {
                return Ok(Write::Fenced);
            }
            let row = data.rows.remove(&id);
            let owner = row.and_then(|r| r.owner);
            data.log(
                &id,
                Event::new(EventKind::Released, token, owner, None, None, now),
            );
        }
        self.signal(&id);
        Ok(Write::Applied(None))
    }

    async fn mark_uncertain(
        &self,
        namespace: &str,
        key: &str,
        token: FencingToken,
        reason: UncertainReason,
    ) -> Result<Write, StoreError> {
        let now = now();
        let id = id(namespace, key);
        let write = {
            let mut data = self.data();
            let Some(row) = data.rows.get_mut(&id).filter(|r| r.running_with(token)) else {
                return Ok(Write::Fenced);
            };
            row.state = State::Uncertain;
            row.reason = Some(reason);
            row.lease_expires_at = Some(now);
            row.updated_at = now;
            let owner = row.owner.clone();
            let record = row.record(now);
            data.log(
                &id,
                Event::new(
                    EventKind::Uncertain,
                    token,
                    owner,
                    None,
                    Some(reason.as_str().to_owned()),
                    now,
                ),
            );
            Write::Applied(Some(record))
        };
        self.signal(&id);
        Ok(write)
    }

    async fn load(&self, namespace: &str, key: &str) -> Result<Option<Record>, StoreError> {
        let now = now();
        let id = id(namespace, key);
        Ok(self.data().rows.get(&id).map(|r| r.record(now)))
    }

    async fn list(&self, q: &ListQuery) -> Result<Vec<Record>, StoreError> {
        let now = now();
        let data = self.data();
        let mut records: Vec<Record> = data
            .rows
            .iter()
            .filter(|(id, _)| q.namespace.as_ref().is_none_or(|ns| *ns == id.0))
            .filter(|(id, _)| q.key_prefix.as_ref().is_none_or(|p| id.1.starts_with(p)))
            .map(|(_, row)| row.record(now))
            .filter(|r| q.state.is_none_or(|s| s == r.state))
            .filter(|r| q.after.as_ref().is_none_or(|c| c.precedes(r, q.order)))
            .collect();
        let by_age = |a: &Record, b: &Record| {
            (a.created_at, &a.namespace, &a.key).cmp(&(b.created_at, &b.namespace, &b.key))
        };
        match q.order {
            ListOrder::Oldest => records.sort_by(by_age),
            ListOrder::Newest => records.sort_by(|a, b| by_age(b, a)),
            _ => {}
        }
        records.truncate(q.limit);
        Ok(records)
    }

    async fn counts(&self) -> Result<Vec<StateCount>, StoreError> {
        let now = now();
        let data = self.data();
        let mut counts: BTreeMap<(String, &'static str), (State, u64)> = BTreeMap::new();
        for (id, row) in &data.rows {
            let state = row.record(now).state;
            counts
                .entry((id.0.clone(), state.as_str()))
                .or_insert((state, 0))
                .1 += 1;
        }
        Ok(counts
            .into_iter()
            .map(|((ns, _), (state, n))| StateCount::new(ns, state, n))
            .collect())
    }

    async fn recent_events(&self, limit: usize) -> Result<Vec<KeyedEvent>, StoreError> {
        let data = self.data();
        let mut all: Vec<(u64, KeyedEvent)> = data
            .events
            .iter()
            .flat_map(|(id, events)| {
                events
                    .iter()
                    .map(|(seq, e)| (*seq, KeyedEvent::new(&id.0, &id.1, e.clone())))
            })
            .collect();
        all.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
        Ok(all.into_iter().take(limit).map(|(_, e)| e).collect())
    }

    async fn history(
        &self,
        namespace: &str,
        key: &str,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let data = self.data();
        Ok(data
            .events
            .get(&id(namespace, key))
            .map(|e| e.iter().take(limit).map(|(_, e)| e.clone()).collect())
            .unwrap_or_default())
    }

    async fn reconcile(
        &self,
        a: &OperatorAction,
        force: bool,
    ) -> Result<OperatorResponse, StoreError> {
        let now = now();
        let id = id(&a.namespace, &a.key);
        let mut data = self.data();
        let Some(current) = data.rows.get(&id).map(|r| r.record(now)) else {
            return Ok(OperatorResponse::NotFound);
        };
        if transition::may_reconcile(&current, force).is_err() {
            return Ok(OperatorResponse::Refused(current));
        }
        let token = data.next_token();
        let record = {
            let Some(row) = data.rows.get_mut(&id) else {
                return Ok(OperatorResponse::NotFound);
            };
            row.state = State::Reconciling;
            row.fencing_token = token;
            row.operator = Some(a.actor.clone());
            row.reason = Some(UncertainReason::Reconciling);
            row.lease_expires_at = Some(row.lease_expires_at.map_or(now, |l| l.min(now)));
            row.updated_at = now;
            row.record(now)
        };
        data.log(
            &id,
            Event::new(
                EventKind::Reconciling,
                token,
                None,
                Some(a.actor.clone()),
                a.reason.clone(),
                now,
            ),
        );
        Ok(OperatorResponse::Applied(Some(record)))
    }

    async fn resolve(
        &self,
        a: &OperatorAction,
        resolution: &Resolution,
        expected_token: Option<FencingToken>,
    ) -> Result<OperatorResponse, StoreError> {
        let now = now();
        let id = id(&a.namespace, &a.key);
        let response = {
            let mut data = self.data();
            let Some(current) = data.rows.get(&id).map(|r| r.record(now)) else {
                return Ok(OperatorResponse::NotFound);
            };
            if transition::may_resolve(&current, expected_token).is_err() {
                return Ok(OperatorResponse::Refused(current));
            }
            let token = current.fencing_token;
            let (kind, after) = match resolution {
                Resolution::Reset => {
                    data.rows.remove(&id);
                    (EventKind::Reset, None)
                }
                Resolution::Complete(result) => {
                    let Some(row) = data.rows.get_mut(&id) else {
                        return Ok(OperatorResponse::NotFound);
                    };
                    row.state = State::Completed;
                    row.result = result.clone();
                    row.reason = None;
                    row.operator = Some(a.actor.clone());
                    row.completed_at = Some(now);
                    row.updated_at = now;
                    (EventKind::Resolved, Some(row.record(now)))
                }
            };
            data.log(
                &id,
                Event::new(
                    kind,
                    token,
                    None,
                    Some(a.actor.clone()),
                    a.reason.clone(),
                    now,
                ),
            );
            OperatorResponse::Applied(after)
        };
        self.signal(&id);
        Ok(response)
    }

    async fn forget(&self, a: &OperatorAction) -> Result<OperatorResponse, StoreError> {
        let now = now();
        let id = id(&a.namespace, &a.key);
        let mut data = self.data();
        let Some(current) = data.rows.get(&id).map(|r| r.record(now)) else {
            return Ok(OperatorResponse::NotFound);
        };
        if transition::may_forget(&current).is_err() {
            return Ok(OperatorResponse::Refused(current));
        }
        data.rows.remove(&id);
        data.log(
            &id,
            Event::new(
                EventKind::Forgotten,
                current.fencing_token,
                None,
                Some(a.actor.clone()),
                a.reason.clone(),
                now,
            ),
        );
        Ok(OperatorResponse::Applied(None))
    }

    async fn prune(&self, q: &PruneQuery) -> Result<u64, StoreError> {
        let now = now();
        let mut data = self.data();
        let doomed: Vec<((String, String), FencingToken)> = data
            .rows
            .iter()
            .filter(|(id, _)| q.namespace.as_ref().is_none_or(|ns| *ns == id.0))
            .filter(|(_, r)| transition::may_prune(&r.record(now), q.older_than))
            .map(|(id, r)| (id.clone(), r.fencing_token))
            .collect();
        for (id, token) in &doomed {
            data.rows.remove(id);
            data.events.remove(id);
            data.log(
                id,
                Event::new(EventKind::Pruned, *token, None, None, None, now),
            );
        }
        Ok(doomed.len() as u64)
    }

    async fn wait_for_change(
        &self,
        namespace: &str,
        key: &str,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        let id = id(namespace, key);
        let still_running = async {
            Ok(self
                .data()
                .rows
                .get(&id)
                .is_some_and(|r| r.record(now()).state == State::Running))
        };
        self.inner
            .waiters
            .wait(namespace, key, timeout, still_running)
            .await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let now = now();
        let data = self.data();
        let mut stats = StoreStats {
            now: Some(now),
            ..StoreStats::default()
        };
        for row in data.rows.values() {
            let r = row.record(now);
            if matches!(r.state, State::Uncertain | State::Reconciling) {
                stats.uncertain += 1;
                let since = r.uncertain_since();
                if stats.oldest_uncertain_since.is_none_or(|o| since < o) {
                    stats.oldest_uncertain_since = Some(since);
                    stats.oldest_uncertain = Some((r.namespace, r.key));
                }
            }
        }
        Ok(stats)
    }
}
