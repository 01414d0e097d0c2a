//! Model-based testing of a store: random sequences of operations are applied to a small reference
//! model written here (not `MemoryStore`, which is itself under test) and to the store, and every
//! answer, every record's state, the order of fencing tokens and every key's event log must agree.
//! proptest shrinks a divergence to a minimal sequence.
//!
//! Time is real: a short lease is 1 ms and each operation that sets one is followed by a few
//! milliseconds' pause, so the lease has expired (on the store's clock) by the next operation;
//! a long lease (60 s) never expires within a case. Operations stand for what the engine does:
//! several owners claim, heartbeat, complete, fail under each policy (`uncertain` → mark
//! uncertain, `release` → release, `record` → complete with an error), are cancelled (mark
//! uncertain, reason cancelled); operators reconcile (with and without force), resolve complete
//! or reset (with the current token, a stale one, or none), forget and prune.
//!
//! Each store's tests call [`check`] with a factory for a fresh store; `PROPTEST_CASES` raises the
//! number of cases (the default here is small, so the whole suite stays fast).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use sentinel_core::store::{
    ClaimRequest, ClaimResponse, Completion, OperatorAction, OperatorResponse, PruneQuery, Renewal,
    Resolution, Store, Write,
};
use sentinel_core::{
    EventKind, FencingToken, Owner, Record, ResultKind, State, StoredResult, UncertainReason,
};

/// The namespace the operations work in; [`OTHER`] holds a record that prune must never touch.
const NS: &str = "model";
const OTHER: &str = "model-other";
const KEYS: [&str; 2] = ["a", "b"];
const LONG: Duration = Duration::from_secs(60);
const SHORT: Duration = Duration::from_millis(1);
/// Longer than a short lease, on any of the stores' clocks (SQLite counts milliseconds).
const PAUSE: Duration = Duration::from_millis(4);

/// How the failure policy (or a cancellation) ends an execution.
#[derive(Debug, Clone, Copy)]
pub enum Ending {
    /// `uncertain` (the default policy): the key is marked uncertain, reason failed.
    FailUncertain,
    /// `release`: the failure means nothing happened.
    FailRelease,
    /// `record`: the error is stored and replayed; needs a live lease.
    FailRecord,
    /// The call was dropped mid-`f`.
    Cancelled,
    /// `f` panicked.
    Panicked,
    /// Success: the value is stored.
    Complete,
}

/// Which token a token-checked resolve presents.
#[derive(Debug, Clone, Copy)]
pub enum Check {
    /// No check.
    None,
    /// The current operator's token.
    Current,
    /// An older token of the key (another operator has taken over since).
    Stale,
}

/// One step of a sequence.
#[derive(Debug, Clone)]
pub enum Op {
    /// Owner `owner` claims key `key`; `short_ttl` and `short_ceiling` give it a 1 ms lease or
    /// hard ceiling.
    Claim {
        /// Which owner (0..3).
        owner: usize,
        /// Index into the keys.
        key: usize,
        /// A 1 ms lease.
        short_ttl: bool,
        /// A 1 ms hard ceiling.
        short_ceiling: bool,
    },
    /// Several owners claim one key at the same moment: at most one may acquire it.
    ClaimRace {
        /// Index into the keys.
        key: usize,
        /// How many owners (2 or 3).
        owners: usize,
    },
    /// Renews the lease of a handle (an earlier acquisition), short or long.
    Heartbeat {
        /// Index of the handle, modulo their number.
        handle: usize,
        /// Renew for 1 ms.
        short_ttl: bool,
        /// Ask for a lease far beyond the hard ceiling: the store must clamp it.
        beyond_ceiling: bool,
    },
    /// Ends a handle's execution.
    End {
        /// Index of the handle, modulo their number.
        handle: usize,
        /// How it ends.
        ending: Ending,
    },
    /// An operator reconciles a key.
    Reconcile {
        /// Index into the keys.
        key: usize,
        /// Take over from another operator.
        force: bool,
    },
    /// An operator resolves a key: completed (`complete`) or reset.
    Resolve {
        /// Index into the keys.
        key: usize,
        /// Completed rather than reset.
        complete: bool,
        /// Whether completed carries a result.
        with_result: bool,
        /// Which token is presented.
        check: Check,
    },
    /// An operator forgets a completed key.
    Forget {
        /// Index into the keys.
        key: usize,
    },
    /// Prunes the namespace with `older_than = 0`.
    Prune,
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS.len();
    let ending = prop_oneof![
        Just(Ending::FailUncertain),
        Just(Ending::FailRelease),
        Just(Ending::FailRecord),
        Just(Ending::Cancelled),
        Just(Ending::Panicked),
        Just(Ending::Complete),
        Just(Ending::Complete),
    ];
    let check = prop_oneof![Just(Check::None), Just(Check::Current), Just(Check::Stale)];
    prop_oneof![
        4 => (0..3usize, key.clone(), any::<bool>(), prop::bool::weighted(0.15))
            .prop_map(|(owner, key, short_ttl, short_ceiling)| Op::Claim { owner, key, short_ttl, short_ceiling }),
        1 => (key.clone(), 2..=3usize).prop_map(|(key, owners)| Op::ClaimRace { key, owners }),
        2 => (any::<usize>(), prop::bool::weighted(0.3), prop::bool::weighted(0.3))
            .prop_map(|(handle, short_ttl, beyond_ceiling)| Op::Heartbeat { handle, short_ttl, beyond_ceiling }),
        4 => (any::<usize>(), ending).prop_map(|(handle, ending)| Op::End { handle, ending }),
        2 => (key.clone(), prop::bool::weighted(0.3)).prop_map(|(key, force)| Op::Reconcile { key, force }),
        2 => (key.clone(), any::<bool>(), any::<bool>(), check)
            .prop_map(|(key, complete, with_result, check)| Op::Resolve { key, complete, with_result, check }),
        1 => key.prop_map(|key| Op::Forget { key }),
        1 => Just(Op::Prune),
    ]
}

/// The strategy of a whole sequence: up to 40 operations.
pub fn sequences() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..40)
}

/// The reference model's idea of one record.
#[derive(Debug, Clone)]
struct Row {
    state: State,
    /// Index into the tokens handed out, in order.
    token: usize,
    lease_alive: bool,
    /// The hard ceiling is 1 ms: it has passed.
    ceiling: bool,
    /// The attempt id of the owner that claimed it.
    attempt: String,
    reason: Option<UncertainReason>,
    result: Option<StoredResult>,
}

impl Row {
    /// A fresh claim's row.
    fn claimed(token: usize, attempt: String, lease_alive: bool, ceiling: bool) -> Self {
        Self {
            state: State::Running,
            token,
            lease_alive,
            ceiling,
            attempt,
            reason: None,
            result: None,
        }
    }

    /// The state a reader sees: running with an expired lease reads as uncertain.
    fn derived(&self) -> State {
        if self.state == State::Running && !self.lease_alive {
            State::Uncertain
        } else {
            self.state
        }
    }

    /// The reason a reader sees: derived ones say why the lease ended.
    fn derived_reason(&self) -> Option<UncertainReason> {
        match self.state {
            State::Running if !self.lease_alive && self.ceiling => {
                Some(UncertainReason::CeilingPassed)
            }
            State::Running if !self.lease_alive => Some(UncertainReason::OwnerDied),
            State::Reconciling => Some(UncertainReason::Reconciling),
            _ => self.reason,
        }
    }
}

#[derive(Debug, Default)]
struct Model {
    rows: HashMap<&'static str, Row>,
    events: HashMap<&'static str, Vec<EventKind>>,
    /// Tokens handed out so far (model indices); the store's must be strictly increasing.
    issued: usize,
    /// Every key's tokens (claims and reconciles), oldest first, for stale checks.
    key_tokens: HashMap<&'static str, Vec<usize>>,
}

impl Model {
    fn log(&mut self, key: &'static str, kind: EventKind) {
        self.events.entry(key).or_default().push(kind);
    }

    fn issue(&mut self) -> usize {
        self.issued += 1;
        self.issued - 1
    }
}

/// What an operation answered, reduced to what the model predicts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Acquired,
    Existing(State),
    Renewed(bool),
    Applied,
    Fenced,
    Refused,
    NotFound,
    Pruned(u64),
    /// How many claims of a race acquired, and the states the others saw.
    Race(usize, Vec<State>),
    Skipped,
}

/// What an admissible ending leaves: state, reason, result and the event written; `None`
/// removes the record (a release).
type Next = (
    State,
    Option<UncertainReason>,
    Option<StoredResult>,
    EventKind,
);

struct Run {
    store: Arc<dyn Store>,
    model: Model,
    /// Acquisitions so far: key and model token.
    handles: Vec<(&'static str, usize)>,
    /// Real tokens by model index.
    tokens: Vec<FencingToken>,
}

fn owner(n: usize) -> Owner {
    Owner::new(
        "model-host",
        1000 + u32::try_from(n).unwrap_or(0),
        format!("{:032x}", rand_attempt()),
    )
}

fn rand_attempt() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    u128::from(NEXT.fetch_add(1, Ordering::Relaxed)) << 64 | u128::from(std::process::id())
}

fn action(key: &str) -> OperatorAction {
    OperatorAction::new(NS, key, "model-operator", Some("model".into()))
}

fn value(kind: ResultKind, token: usize) -> StoredResult {
    StoredResult::new(kind, format!("{{\"by\":{token}}}"))
}

impl Run {
    /// Applies `op` to the model and the store; returns the two answers.
    async fn step(&mut self, op: &Op) -> Result<(Answer, Answer), String> {
        let store = self.store.clone();
        let e = |e: sentinel_core::StoreError| format!("store error: {e}");
        match *op {
            Op::Claim {
                owner: o,
                key,
                short_ttl,
                short_ceiling,
            } => {
                let key = KEYS[key];
                // A ceiling is never shorter than the ttl (the engine refuses that).
                let ttl = if short_ttl || short_ceiling {
                    SHORT
                } else {
                    LONG
                };
                let hard = if short_ceiling { SHORT } else { LONG * 2 };
                let request = ClaimRequest::new(NS, key, owner(o), ttl, hard, None);
                let attempt = request.owner.attempt.clone();
                let expected = match self.model.rows.get(key) {
                    Some(row) => Answer::Existing(row.derived()),
                    None => {
                        let token = self.model.issue();
                        let alive = !(short_ttl || short_ceiling);
                        let row = Row::claimed(token, attempt, alive, short_ceiling);
                        self.model.rows.insert(key, row);
                        self.model.log(key, EventKind::Acquired);
                        self.model.key_tokens.entry(key).or_default().push(token);
                        self.handles.push((key, token));
                        Answer::Acquired
                    }
                };
                let actual = loop {
                    match store.claim(&request).await.map_err(e)? {
                        ClaimResponse::Acquired(r) => {
                            self.learn(&r)?;
                            break Answer::Acquired;
                        }
                        ClaimResponse::Existing(r) => break Answer::Existing(r.state),
                        ClaimResponse::Raced => {} // a real store may ask to try again
                        other => return Err(format!("unexpected claim answer {other:?}")),
                    }
                };
                if short_ttl || short_ceiling {
                    tokio::time::sleep(PAUSE).await;
                }
                Ok((expected, actual))
            }
            Op::ClaimRace { key, owners } => self.race(KEYS[key], owners).await,
            Op::Heartbeat {
                handle,
                short_ttl,
                beyond_ceiling,
            } => {
                let Some(&(key, token)) = self.handle(handle) else {
                    return Ok((Answer::Skipped, Answer::Skipped));
                };
                let row = self.model.rows.get_mut(key);
                let expected = match row {
                    Some(r) if r.state == State::Running && r.token == token && r.lease_alive => {
                        r.lease_alive = !short_ttl;
                        Answer::Renewed(true)
                    }
                    _ => Answer::Renewed(false),
                };
                let ttl = match (short_ttl, beyond_ceiling) {
                    (true, _) => SHORT,
                    (false, true) => LONG * 20,
                    (false, false) => LONG,
                };
                let renewal = Renewal::new(NS, key, self.tokens[token], ttl);
                let renewed = store.heartbeat(&[renewal]).await.map_err(e)?;
                let actual = Answer::Renewed(renewed.first().is_some_and(Option::is_some));
                if short_ttl {
                    tokio::time::sleep(PAUSE).await;
                }
                Ok((expected, actual))
            }
            Op::End { handle, ending } => {
                let Some(&(key, token)) = self.handle(handle) else {
                    return Ok((Answer::Skipped, Answer::Skipped));
                };
                self.end(key, token, ending).await
            }
            Op::Reconcile { key, force } => {
                let key = KEYS[key];
                let admissible = match self.model.rows.get(key).map(Row::derived) {
                    None => None,
                    Some(State::Uncertain) => Some(true),
                    Some(State::Reconciling) => Some(force),
                    Some(_) => Some(false),
                };
                let expected = match admissible {
                    None => Answer::NotFound,
                    Some(false) => Answer::Refused,
                    Some(true) => {
                        let token = self.model.issue();
                        let row = self.model.rows.get_mut(key).expect("present");
                        row.state = State::Reconciling;
                        row.token = token;
                        row.lease_alive = false;
                        row.reason = None;
                        self.model.key_tokens.entry(key).or_default().push(token);
                        self.model.log(key, EventKind::Reconciling);
                        Answer::Applied
                    }
                };
                let actual = match store.reconcile(&action(key), force).await.map_err(e)? {
                    OperatorResponse::Applied(Some(r)) => {
                        self.learn(&r)?;
                        Answer::Applied
                    }
                    OperatorResponse::Applied(None) => {
                        return Err("reconcile applied without a record".into());
                    }
                    OperatorResponse::Refused(_) => Answer::Refused,
                    OperatorResponse::NotFound => Answer::NotFound,
                    other => return Err(format!("unexpected reconcile answer {other:?}")),
                };
                Ok((expected, actual))
            }
            Op::Resolve {
                key,
                complete,
                with_result,
                check,
            } => {
                let key = KEYS[key];
                let presented = match check {
                    Check::None => None,
                    Check::Current => self.model.rows.get(key).map(|r| r.token),
                    // The key's own previous token, else any other token handed out.
                    Check::Stale => self.model.rows.get(key).and_then(|r| {
                        let own = self.model.key_tokens.get(key);
                        own.and_then(|t| t.iter().rev().find(|&&t| t != r.token).copied())
                            .or_else(|| (0..self.model.issued).find(|&t| t != r.token))
                    }),
                };
                let result =
                    with_result.then(|| StoredResult::new(ResultKind::Value, "\"resolved\""));
                let expected = match self.model.rows.get(key) {
                    None => Answer::NotFound,
                    Some(r)
                        if r.state == State::Reconciling
                            && presented.is_none_or(|t| t == r.token) =>
                    {
                        if complete {
                            let row = self.model.rows.get_mut(key).expect("present");
                            row.state = State::Completed;
                            row.result = result.clone();
                            self.model.log(key, EventKind::Resolved);
                        } else {
                            self.model.rows.remove(key);
                            self.model.log(key, EventKind::Reset);
                        }
                        Answer::Applied
                    }
                    Some(_) => Answer::Refused,
                };
                let resolution = if complete {
                    Resolution::Complete(result)
                } else {
                    Resolution::Reset
                };
                let token = presented.map(|t| self.tokens[t]);
                let actual = match store
                    .resolve(&action(key), &resolution, token)
                    .await
                    .map_err(e)?
                {
                    OperatorResponse::Applied(_) => Answer::Applied,
                    OperatorResponse::Refused(_) => Answer::Refused,
                    OperatorResponse::NotFound => Answer::NotFound,
                    other => return Err(format!("unexpected resolve answer {other:?}")),
                };
                Ok((expected, actual))
            }
            Op::Forget { key } => {
                let key = KEYS[key];
                let expected = match self.model.rows.get(key) {
                    None => Answer::NotFound,
                    Some(r) if r.state == State::Completed => {
                        self.model.rows.remove(key);
                        self.model.log(key, EventKind::Forgotten);
                        Answer::Applied
                    }
                    Some(_) => Answer::Refused,
                };
                let actual = match store.forget(&action(key)).await.map_err(e)? {
                    OperatorResponse::Applied(_) => Answer::Applied,
                    OperatorResponse::Refused(_) => Answer::Refused,
                    OperatorResponse::NotFound => Answer::NotFound,
                    other => return Err(format!("unexpected forget answer {other:?}")),
                };
                Ok((expected, actual))
            }
            Op::Prune => {
                let mut pruned = 0;
                for key in KEYS {
                    if self
                        .model
                        .rows
                        .get(key)
                        .is_some_and(|r| r.state == State::Completed)
                    {
                        self.model.rows.remove(key);
                        self.model.events.insert(key, vec![EventKind::Pruned]);
                        pruned += 1;
                    }
                }
                // Completions of this very millisecond are not yet "older than 0" on SQLite.
                tokio::time::sleep(PAUSE).await;
                let mut query = PruneQuery::in_namespace(NS);
                query.older_than = Some(Duration::ZERO);
                let actual = store.prune(&query).await.map_err(e)?;
                Ok((Answer::Pruned(pruned), Answer::Pruned(actual)))
            }
        }
    }

    /// `owners` claim `key` concurrently: with no record, exactly one acquires it and the others
    /// see it running; with one, every claim sees it as the model does.
    async fn race(&mut self, key: &'static str, owners: usize) -> Result<(Answer, Answer), String> {
        let tasks: Vec<_> = (0..owners)
            .map(|o| {
                let store = self.store.clone();
                let request = ClaimRequest::new(NS, key, owner(o), LONG, LONG * 2, None);
                tokio::spawn(async move {
                    loop {
                        match store.claim(&request).await {
                            Ok(ClaimResponse::Raced) => {}
                            other => return other,
                        }
                    }
                })
            })
            .collect();
        let mut acquired = Vec::new();
        let mut seen = Vec::new();
        for task in tasks {
            match task.await.map_err(|e| format!("claim task: {e}"))? {
                Ok(ClaimResponse::Acquired(r)) => acquired.push(r),
                Ok(ClaimResponse::Existing(r)) => seen.push(r.state),
                Ok(other) => return Err(format!("unexpected claim answer {other:?}")),
                Err(e) => return Err(format!("store error: {e}")),
            }
        }
        let expected = match self.model.rows.get(key) {
            Some(row) => Answer::Race(0, vec![row.derived(); owners]),
            None => {
                let token = self.model.issue();
                let attempt = acquired
                    .first()
                    .and_then(|r| r.owner.as_ref())
                    .map(|o| o.attempt.clone())
                    .unwrap_or_default();
                self.model
                    .rows
                    .insert(key, Row::claimed(token, attempt, true, false));
                self.model.log(key, EventKind::Acquired);
                self.model.key_tokens.entry(key).or_default().push(token);
                self.handles.push((key, token));
                Answer::Race(1, vec![State::Running; owners - 1])
            }
        };
        for r in &acquired {
            self.learn(r)?;
        }
        Ok((expected, Answer::Race(acquired.len(), seen)))
    }

    fn handle(&self, n: usize) -> Option<&(&'static str, usize)> {
        if self.handles.is_empty() {
            None
        } else {
            self.handles.get(n % self.handles.len())
        }
    }

    async fn end(
        &mut self,
        key: &'static str,
        token: usize,
        ending: Ending,
    ) -> Result<(Answer, Answer), String> {
        let store = self.store.clone();
        let e = |e: sentinel_core::StoreError| format!("store error: {e}");
        let real = self.tokens[token];
        let ours = self
            .model
            .rows
            .get(key)
            .filter(|r| r.state == State::Running && r.token == token)
            .cloned();
        let live = ours.as_ref().is_some_and(|r| r.lease_alive);
        let (admissible, next): (bool, Option<Next>) = match ending {
            Ending::Complete => (
                ours.is_some(),
                Some((
                    State::Completed,
                    None,
                    Some(value(ResultKind::Value, token)),
                    EventKind::Completed,
                )),
            ),
            Ending::FailRecord => (
                live,
                Some((
                    State::Completed,
                    None,
                    Some(value(ResultKind::Error, token)),
                    EventKind::Failed,
                )),
            ),
            Ending::FailRelease => (live, None),
            Ending::FailUncertain => (
                ours.is_some(),
                Some((
                    State::Uncertain,
                    Some(UncertainReason::Failed),
                    None,
                    EventKind::Uncertain,
                )),
            ),
            Ending::Cancelled => (
                ours.is_some(),
                Some((
                    State::Uncertain,
                    Some(UncertainReason::Cancelled),
                    None,
                    EventKind::Uncertain,
                )),
            ),
            Ending::Panicked => (
                ours.is_some(),
                Some((
                    State::Uncertain,
                    Some(UncertainReason::Panicked),
                    None,
                    EventKind::Uncertain,
                )),
            ),
        };
        let expected = if admissible {
            match next {
                Some((state, reason, result, event)) => {
                    let row = self.model.rows.get_mut(key).expect("ours");
                    row.state = state;
                    row.reason = reason;
                    row.result = result;
                    row.lease_alive = false;
                    self.model.log(key, event);
                }
                None => {
                    self.model.rows.remove(key);
                    self.model.log(key, EventKind::Released);
                }
            }
            Answer::Applied
        } else {
            Answer::Fenced
        };
        let write = match ending {
            Ending::Complete => {
                let c = Completion::new(NS, key, real, value(ResultKind::Value, token), None);
                store.complete(&c).await
            }
            Ending::FailRecord => {
                let c = Completion::new(NS, key, real, value(ResultKind::Error, token), None);
                store.complete(&c).await
            }
            Ending::FailRelease => store.release(NS, key, real).await,
            Ending::FailUncertain => {
                store
                    .mark_uncertain(NS, key, real, UncertainReason::Failed)
                    .await
            }
            Ending::Cancelled => {
                store
                    .mark_uncertain(NS, key, real, UncertainReason::Cancelled)
                    .await
            }
            Ending::Panicked => {
                store
                    .mark_uncertain(NS, key, real, UncertainReason::Panicked)
                    .await
            }
        };
        let actual = match write.map_err(e)? {
            Write::Applied(_) => Answer::Applied,
            Write::Fenced => Answer::Fenced,
            other => return Err(format!("unexpected write answer {other:?}")),
        };
        Ok((expected, actual))
    }

    /// A record that carries a newly handed-out token: it must be larger than every earlier one.
    fn learn(&mut self, r: &Record) -> Result<(), String> {
        if let Some(last) = self.tokens.last() {
            if r.fencing_token <= *last {
                return Err(format!(
                    "token {} handed out after {last}: tokens must only grow",
                    r.fencing_token
                ));
            }
        }
        self.tokens.push(r.fencing_token);
        Ok(())
    }

    /// Every key's record and event log against the model's.
    async fn compare(&self) -> Result<(), String> {
        for key in KEYS {
            let record = self
                .store
                .load(NS, key)
                .await
                .map_err(|e| format!("load: {e}"))?;
            let row = self.model.rows.get(key);
            match (row, &record) {
                (None, None) => {}
                (Some(row), Some(r)) => {
                    if r.state != row.derived() {
                        return Err(format!(
                            "{key}: state {:?}, the model says {:?}",
                            r.state,
                            row.derived()
                        ));
                    }
                    if r.fencing_token != self.tokens[row.token] {
                        return Err(format!(
                            "{key}: token {}, the model says {}",
                            r.fencing_token, self.tokens[row.token]
                        ));
                    }
                    if row.state == State::Completed && r.result != row.result {
                        return Err(format!(
                            "{key}: result {:?}, the model says {:?}",
                            r.result, row.result
                        ));
                    }
                    if row.state == State::Running
                        && r.owner.as_ref().map(|o| o.attempt.as_str())
                            != Some(row.attempt.as_str())
                    {
                        return Err(format!(
                            "{key}: owner {:?}, the model says attempt {}",
                            r.owner, row.attempt
                        ));
                    }
                    if let (Some(lease), Some(hard)) = (r.lease_expires_at, r.hard_expires_at) {
                        if row.state == State::Running && lease > hard {
                            return Err(format!(
                                "{key}: lease {lease:?} beyond the ceiling {hard:?}"
                            ));
                        }
                    }
                    if r.reason != row.derived_reason() {
                        return Err(format!(
                            "{key}: reason {:?}, the model says {:?}",
                            r.reason,
                            row.derived_reason()
                        ));
                    }
                }
                (row, record) => {
                    return Err(format!("{key}: record {record:?}, the model says {row:?}"));
                }
            }
            let history: Vec<EventKind> = self
                .store
                .history(NS, key, 1000)
                .await
                .map_err(|e| format!("history: {e}"))?
                .into_iter()
                .map(|e| e.kind)
                .collect();
            let expected = self.model.events.get(key).cloned().unwrap_or_default();
            if history != expected {
                return Err(format!(
                    "{key}: events {history:?}, the model says {expected:?}"
                ));
            }
        }
        // Prune never touches another namespace.
        let other = self
            .store
            .load(OTHER, "a")
            .await
            .map_err(|e| format!("load: {e}"))?;
        if other.is_none_or(|r| r.state != State::Completed) {
            return Err("prune touched another namespace".into());
        }
        Ok(())
    }
}

/// Runs one sequence against a fresh store; `Err` describes the first divergence.
pub async fn run_sequence(store: Arc<dyn Store>, ops: &[Op]) -> Result<(), String> {
    // A completed record in another namespace, which no operation here may touch.
    let claim = ClaimRequest::new(OTHER, "a", owner(9), LONG, LONG * 2, None);
    let token = match store.claim(&claim).await.map_err(|e| e.to_string())? {
        ClaimResponse::Acquired(r) => r.fencing_token,
        other => return Err(format!("set-up claim: {other:?}")),
    };
    let done = Completion::new(OTHER, "a", token, value(ResultKind::Value, 0), None);
    store.complete(&done).await.map_err(|e| e.to_string())?;
    let mut run = Run {
        store,
        model: Model::default(),
        handles: Vec::new(),
        tokens: Vec::new(),
    };
    for (i, op) in ops.iter().enumerate() {
        let (expected, actual) = run
            .step(op)
            .await
            .map_err(|e| format!("step {i} {op:?}: {e}"))?;
        if expected != actual {
            return Err(format!(
                "step {i} {op:?}: the store answered {actual:?}, the model {expected:?}"
            ));
        }
        run.compare()
            .await
            .map_err(|e| format!("after step {i} {op:?}: {e}"))?;
    }
    Ok(())
}

/// Checks `cases` random sequences (or `PROPTEST_CASES`) against stores made by `make`, one
/// fresh store per sequence; panics with the shrunk sequence on a divergence.
pub fn check<F, Fut>(cases: u32, make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&sequences(), |ops| {
        let outcome = runtime.block_on(async {
            let store = make().await;
            run_sequence(store, &ops).await
        });
        outcome.map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("the store diverged from the model: {e}");
    }
}
