//! The operator API: read records and their history, settle uncertain keys (reconcile, resolve),
//! forget and prune completed ones, and wait for a running key. Admissibility is decided by the
//! store with the rules of [`crate::transition`]; a refusal is explained with the same rule.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::config::{MAX_HARD_TTL, MAX_RETENTION, at_most};
use crate::engine::timed;
use crate::store::{
    KeyedEvent, ListQuery, OperatorAction, OperatorResponse, PruneQuery, Resolution, StateCount,
    StoreStats,
};
use crate::transition::{self, Refusal};
use crate::{Error, Event, FencingToken, Record, Sentinel, State, StoreError};

impl Sentinel {
    /// Reads one record (state per the store's clock); `None` when the key has none.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a bad key or namespace; [`Error::Store`].
    pub async fn inspect(&self, namespace: &str, key: &str) -> Result<Option<Record>, Error> {
        crate::validate_namespace(namespace)?;
        crate::validate_key(key)?;
        Ok(timed("load", self.inner.store.load(namespace, key)).await?)
    }

    /// Lists records in `query.order` (by namespace and key unless asked otherwise); page with
    /// `query.after` set to [`ListCursor::of`](crate::store::ListCursor::of) the last record.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a zero limit, a bad namespace, or a key prefix longer than a
    /// key may be; [`Error::Store`].
    pub async fn list(&self, query: &ListQuery) -> Result<Vec<Record>, Error> {
        if query.limit == 0 {
            return Err(Error::invalid("list limit must be positive"));
        }
        if let Some(ns) = &query.namespace {
            crate::validate_namespace(ns)?;
        }
        if let Some(p) = query.key_prefix.as_deref().filter(|p| !p.is_empty()) {
            crate::validate_key(p)?;
        }
        Ok(timed("list", self.inner.store.list(query)).await?)
    }

    /// How many records each namespace has in each state, per the store's clock.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn counts(&self) -> Result<Vec<StateCount>, Error> {
        Ok(timed("counts", self.inner.store.counts()).await?)
    }

    /// The last `limit` events of every key, newest first.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn recent_events(&self, limit: usize) -> Result<Vec<KeyedEvent>, Error> {
        Ok(timed("recent_events", self.inner.store.recent_events(limit)).await?)
    }

    /// The store's figures for alerting: how many records are uncertain or reconciling, and the
    /// oldest of them.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn store_stats(&self) -> Result<StoreStats, Error> {
        Ok(timed("stats", self.inner.store.stats()).await?)
    }

    /// The events of one key, oldest first, at most `limit`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a bad key or namespace; [`Error::Store`].
    pub async fn history(
        &self,
        namespace: &str,
        key: &str,
        limit: usize,
    ) -> Result<Vec<Event>, Error> {
        crate::validate_namespace(namespace)?;
        crate::validate_key(key)?;
        Ok(timed("history", self.inner.store.history(namespace, key, limit)).await?)
    }

    /// Takes an uncertain key (or, with `force`, a reconciling one) into reconciliation under a
    /// new token, which is returned: from then on the old owner's writes are fenced out.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`] for a live, completed or (without `force`) reconciling record, saying
    /// why; [`Error::NotFound`]; [`Error::InvalidInput`]; [`Error::Store`].
    pub async fn reconcile(
        &self,
        action: &OperatorAction,
        force: bool,
    ) -> Result<FencingToken, Error> {
        validate_action(action)?;
        let response = timed("reconcile", self.inner.store.reconcile(action, force)).await?;
        match applied(action, response, |r| transition::may_reconcile(r, force))? {
            Some(record) => Ok(record.fencing_token),
            None => Err(Error::Store(StoreError::other(
                "store returned no record after reconcile",
            ))),
        }
    }

    /// Resolves a reconciling key: completed with a result (or none), or reset to absent so the
    /// next caller runs. With `expected_token`, refuses when another operator has taken over
    /// since that token was handed out.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`] for a record that is not reconciling (under the given token);
    /// [`Error::NotFound`]; [`Error::InvalidInput`] for a result that is not JSON or a token
    /// beyond `i64::MAX`;
    /// [`Error::Store`].
    pub async fn resolve(
        &self,
        action: &OperatorAction,
        resolution: &Resolution,
        expected_token: Option<FencingToken>,
    ) -> Result<(), Error> {
        validate_action(action)?;
        if let Some(t) = expected_token.filter(|t| t.to_i64().is_none()) {
            return Err(Error::invalid(format!(
                "token {t} is larger than any token a store hands out"
            )));
        }
        if let Resolution::Complete(Some(result)) = resolution {
            serde_json::from_str::<serde::de::IgnoredAny>(&result.json)
                .map_err(|e| Error::invalid(format!("result is not JSON: {e}")))?;
        }
        let write = self.inner.store.resolve(action, resolution, expected_token);
        let response = timed("resolve", write).await?;
        self.inner.cache.remove(&action.namespace, &action.key);
        applied(action, response, |r| {
            transition::may_resolve(r, expected_token)
        })
        .map(drop)
    }

    /// Removes a completed record so the key may run again.
    ///
    /// # Errors
    ///
    /// [`Error::Refused`] for a record that is not completed; [`Error::NotFound`];
    /// [`Error::InvalidInput`]; [`Error::Store`].
    pub async fn forget(&self, action: &OperatorAction) -> Result<(), Error> {
        validate_action(action)?;
        let response = timed("forget", self.inner.store.forget(action)).await?;
        self.inner.cache.remove(&action.namespace, &action.key);
        applied(action, response, transition::may_forget).map(drop)
    }

    /// Deletes completed records of `query.namespace` (all namespaces when `None`) whose
    /// retention has passed (or older than `query.older_than`). Returns how many.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for an `older_than` beyond [`MAX_RETENTION`]; [`Error::Store`].
    pub async fn prune(&self, query: &PruneQuery) -> Result<u64, Error> {
        if let Some(d) = query.older_than {
            at_most("older_than", d, MAX_RETENTION)?;
        }
        if let Some(ns) = &query.namespace {
            crate::validate_namespace(ns)?;
        }
        let pruned = timed("prune", self.inner.store.prune(query)).await?;
        if pruned > 0 {
            self.inner.cache.clear();
        }
        Ok(pruned)
    }

    /// Waits until `key` is no longer running (completed, uncertain, reconciling or absent) or
    /// `timeout` passes, and returns the record as last read (`None` when absent).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a bad key, namespace or timeout; [`Error::Store`].
    pub async fn wait(
        &self,
        namespace: &str,
        key: &str,
        timeout: Duration,
    ) -> Result<Option<Record>, Error> {
        crate::validate_namespace(namespace)?;
        crate::validate_key(key)?;
        at_most("wait timeout", timeout, MAX_HARD_TTL)?;
        self.wait_until_settled(namespace, key, Instant::now() + timeout)
            .await
    }

    pub(crate) async fn wait_until_settled(
        &self,
        namespace: &str,
        key: &str,
        deadline: Instant,
    ) -> Result<Option<Record>, Error> {
        let store = &self.inner.store;
        let mut poll = Duration::from_millis(50);
        loop {
            let record = timed("load", store.load(namespace, key)).await?;
            let running = record.as_ref().is_some_and(|r| r.state == State::Running);
            let now = Instant::now();
            if !running || now >= deadline {
                return Ok(record);
            }
            // Notified on completion; the poll interval is the fallback (and catches a lease that
            // silently expires, which no statement signals).
            let mut step = poll.min(deadline - now);
            if let Some(lease) = record.as_ref().and_then(|r| r.lease_expires_at) {
                let r = record.as_ref().map_or(SystemTime::now(), |r| r.observed_at);
                if let Ok(left) = lease.duration_since(r) {
                    step = step.min(left + Duration::from_millis(10));
                }
            }
            store.wait_for_change(namespace, key, step).await?;
            poll = (poll * 2).min(Duration::from_secs(1));
        }
    }
}

fn validate_action(action: &OperatorAction) -> Result<(), Error> {
    crate::validate_namespace(&action.namespace)?;
    crate::validate_key(&action.key)?;
    if action.actor.trim().is_empty() {
        return Err(Error::invalid("an operator action needs an actor"));
    }
    Ok(())
}

/// The record after an applied action; a refusal explained by the rule that refused it.
fn applied(
    action: &OperatorAction,
    response: OperatorResponse,
    rule: impl FnOnce(&Record) -> Result<(), Refusal>,
) -> Result<Option<Record>, Error> {
    match response {
        OperatorResponse::Applied(r) => Ok(r),
        OperatorResponse::Refused(r) => {
            // The store decided on the row as it found it; the rule says why in words. Should
            // the row have changed between its read and its update, the rule may now pass.
            let why = rule(&r)
                .err()
                .unwrap_or("the record changed meanwhile; look again");
            Err(Error::refused(&r, why))
        }
        OperatorResponse::NotFound => Err(Error::NotFound {
            namespace: action.namespace.clone(),
            key: action.key.clone(),
        }),
    }
}
