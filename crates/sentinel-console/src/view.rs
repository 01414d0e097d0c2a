//! What the pages and the API read, in one place: the overview, a page of the list with its
//! filters and cursor, a record with its history; and the operator actions. Both front ends
//! render these, so a page and its API endpoint never disagree.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use base64::Engine as _;
use sentinel_core::store::{
    KeyedEvent, ListCursor, ListOrder, ListQuery, OperatorAction, Resolution, StoreStats,
};
use sentinel_core::{
    Error, Event, FencingToken, Record, ResultKind, Sentinel, State, StoredResult,
};
use serde::Deserialize;

use crate::Ctx;

/// The states in the order the console shows them: what needs a person first.
pub(crate) const STATES: [State; 4] = [
    State::Uncertain,
    State::Reconciling,
    State::Running,
    State::Completed,
];

/// How many recent transitions the overview shows.
pub(crate) const RECENT: usize = 20;
/// Default and largest page of the list.
pub(crate) const PAGE: usize = 50;
pub(crate) const MAX_PAGE: usize = 500;
/// How many events a record's history shows.
pub(crate) const HISTORY: usize = 200;
/// Longest reason an operator may give.
pub(crate) const MAX_REASON: usize = 1000;

/// A failure to show to the user: its HTTP status, a code for the API, and a message.
#[derive(Debug)]
pub(crate) struct Problem {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl Problem {
    pub(crate) fn bad(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid",
            message: message.into(),
        }
    }
}

impl From<Error> for Problem {
    fn from(e: Error) -> Self {
        let (status, code) = match &e {
            Error::InvalidInput(_) => (StatusCode::BAD_REQUEST, "invalid"),
            Error::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            Error::Refused { .. } => (StatusCode::CONFLICT, "refused"),
            Error::Store(s) if s.is_transient() => (StatusCode::SERVICE_UNAVAILABLE, "store"),
            Error::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let message = match e {
            Error::InvalidInput(m) => m,
            other => other.to_string(),
        };
        Self {
            status,
            code,
            message,
        }
    }
}

/// The overview: counts, the oldest uncertain key, recent transitions.
#[derive(Debug)]
pub(crate) struct Overview {
    /// namespace → state → count, namespaces sorted.
    pub(crate) counts: BTreeMap<String, BTreeMap<&'static str, u64>>,
    pub(crate) stats: StoreStats,
    pub(crate) recent: Vec<KeyedEvent>,
    pub(crate) now: SystemTime,
}

impl Overview {
    /// Reads the counts and stats, and the last `recent` transitions (none when 0).
    pub(crate) async fn load(sentinel: &Sentinel, recent: usize) -> Result<Self, Problem> {
        let events = async {
            if recent == 0 {
                Ok(Vec::new())
            } else {
                sentinel.recent_events(recent).await
            }
        };
        let (counts, stats, recent) =
            tokio::join!(sentinel.counts(), sentinel.store_stats(), events);
        let stats = stats?;
        let mut by_ns: BTreeMap<String, BTreeMap<&'static str, u64>> = BTreeMap::new();
        for c in counts? {
            *by_ns
                .entry(c.namespace)
                .or_default()
                .entry(c.state.as_str())
                .or_default() += c.count;
        }
        Ok(Self {
            counts: by_ns,
            now: stats.now.unwrap_or_else(SystemTime::now),
            stats,
            recent: recent?,
        })
    }

    /// How long the oldest uncertain key has waited.
    pub(crate) fn oldest_age(&self) -> Option<Duration> {
        let since = self.stats.oldest_uncertain_since?;
        Some(self.now.duration_since(since).unwrap_or_default())
    }
}

/// The list's filters, as the query string carries them (pages and API alike).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListParams {
    pub(crate) state: Option<String>,
    pub(crate) namespace: Option<String>,
    pub(crate) prefix: Option<String>,
    pub(crate) sort: Option<String>,
    pub(crate) after: Option<String>,
    pub(crate) limit: Option<String>,
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl ListParams {
    pub(crate) fn state(&self) -> Result<Option<State>, Problem> {
        non_empty(&self.state)
            .map(|s| s.parse::<State>().map_err(Problem::from))
            .transpose()
    }

    pub(crate) fn order(&self) -> Result<ListOrder, Problem> {
        Ok(match non_empty(&self.sort) {
            None | Some("key") => ListOrder::Key,
            Some("oldest") => ListOrder::Oldest,
            Some("newest") => ListOrder::Newest,
            Some(other) => {
                return Err(Problem::bad(format!(
                    "unknown sort `{other}` (expected key, oldest or newest)"
                )));
            }
        })
    }

    pub(crate) fn sort_name(&self) -> &str {
        non_empty(&self.sort).unwrap_or("key")
    }

    pub(crate) fn namespace(&self) -> Option<&str> {
        non_empty(&self.namespace)
    }

    /// The prefix as typed: not trimmed, since a key may start with a space.
    pub(crate) fn prefix(&self) -> Option<&str> {
        self.prefix.as_deref().filter(|s| !s.is_empty())
    }

    fn limit(&self) -> Result<usize, Problem> {
        match non_empty(&self.limit) {
            None => Ok(PAGE),
            Some(s) => match s.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
                _ => Err(Problem::bad(format!(
                    "limit must be a whole number from 1 to {MAX_PAGE}"
                ))),
            },
        }
    }

    pub(crate) fn query(&self) -> Result<ListQuery, Problem> {
        let mut q = ListQuery::new(self.limit()?);
        q.state = self.state()?;
        q.namespace = self.namespace().map(str::to_owned);
        q.key_prefix = self.prefix().map(str::to_owned);
        q.order = self.order()?;
        q.after = non_empty(&self.after).map(decode_cursor).transpose()?;
        Ok(q)
    }

    /// The query string of these filters (without the cursor), for links.
    pub(crate) fn query_string(&self) -> String {
        use crate::html::Url;
        let mut parts = Vec::new();
        for (name, value) in [
            ("state", non_empty(&self.state)),
            ("namespace", self.namespace()),
            ("prefix", self.prefix()),
            ("sort", non_empty(&self.sort)),
            ("limit", non_empty(&self.limit)),
        ] {
            if let Some(v) = value {
                parts.push(format!("{name}={}", Url(v)));
            }
        }
        parts.join("&amp;")
    }
}

/// One page of the list, and the cursor of the next when there may be one.
#[derive(Debug)]
pub(crate) struct ListPage {
    pub(crate) records: Vec<Record>,
    pub(crate) next: Option<String>,
}

impl ListPage {
    pub(crate) async fn load(sentinel: &Sentinel, params: &ListParams) -> Result<Self, Problem> {
        let query = params.query()?;
        let records = sentinel.list(&query).await?;
        let next = (records.len() == query.limit)
            .then(|| records.last().map(|r| encode_cursor(&ListCursor::of(r))))
            .flatten();
        Ok(Self { records, next })
    }
}

/// A cursor as an opaque URL-safe string: base64 of `[nanoseconds, namespace, key]` (whole
/// nanoseconds: the memory store's clock is that fine, and a coarser cursor would repeat or
/// skip records created within one unit).
pub(crate) fn encode_cursor(c: &ListCursor) -> String {
    let nanos = c
        .created_at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let json = serde_json::json!([nanos.to_string(), c.namespace, c.key]).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode_cursor(s: &str) -> Result<ListCursor, Problem> {
    let bad = || Problem::bad("`after` is not a cursor this console handed out");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| bad())?;
    let (nanos, ns, key): (String, String, String) =
        serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let nanos: u128 = nanos.parse().map_err(|_| bad())?;
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| bad())?;
    let sub = u32::try_from(nanos % 1_000_000_000).map_err(|_| bad())?;
    let at = UNIX_EPOCH
        .checked_add(Duration::new(secs, sub))
        .ok_or_else(bad)?;
    Ok(ListCursor::new(at, &ns, &key))
}

/// Which record a request names.
#[derive(Debug, Deserialize)]
pub(crate) struct KeyParams {
    pub(crate) namespace: Option<String>,
    pub(crate) key: Option<String>,
}

impl KeyParams {
    pub(crate) fn parts(&self) -> Result<(&str, &str), Problem> {
        let namespace = self
            .namespace
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or(sentinel_core::DEFAULT_NAMESPACE);
        let key = self
            .key
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Problem::bad("`key` is required"))?;
        Ok((namespace, key))
    }
}

/// A record (absent when reset or forgotten) and its history.
#[derive(Debug)]
pub(crate) struct RecordView {
    pub(crate) record: Option<Record>,
    pub(crate) history: Vec<Event>,
}

impl RecordView {
    pub(crate) async fn load(
        sentinel: &Sentinel,
        namespace: &str,
        key: &str,
    ) -> Result<Self, Problem> {
        let (record, history) = tokio::join!(
            sentinel.inspect(namespace, key),
            sentinel.history(namespace, key, HISTORY)
        );
        Ok(Self {
            record: record?,
            history: history?,
        })
    }
}

/// An operator action, as a form or a JSON body asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    Reconcile,
    Complete,
    Reset,
    Forget,
}

impl Verb {
    pub(crate) fn parse(s: &str) -> Result<Self, Problem> {
        Ok(match s {
            "reconcile" => Verb::Reconcile,
            "complete" => Verb::Complete,
            "reset" => Verb::Reset,
            "forget" => Verb::Forget,
            other => {
                return Err(Problem::bad(format!(
                    "unknown action `{other}` (expected reconcile, complete, reset or forget)"
                )));
            }
        })
    }

    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Verb::Reconcile => "reconcile",
            Verb::Complete => "complete",
            Verb::Reset => "reset",
            Verb::Forget => "forget",
        }
    }
}

/// Everything an action needs, validated.
#[derive(Debug)]
pub(crate) struct ActionRequest {
    pub(crate) verb: Verb,
    pub(crate) namespace: String,
    pub(crate) key: String,
    pub(crate) reason: String,
    pub(crate) force: bool,
    /// The result to store (complete), as JSON text.
    pub(crate) result: Option<String>,
    pub(crate) expected_token: Option<FencingToken>,
}

/// A reason is required: the history records why, and "why" is what the next operator reads.
pub(crate) fn reason(raw: Option<&str>) -> Result<String, Problem> {
    let r = raw.map(str::trim).unwrap_or("");
    if r.is_empty() {
        return Err(Problem::bad(
            "a reason is required: it is recorded in the key's history",
        ));
    }
    if r.len() > MAX_REASON || r.chars().any(|c| c.is_control() && c != '\n') {
        return Err(Problem::bad(format!(
            "the reason must be at most {MAX_REASON} bytes of text without control characters"
        )));
    }
    Ok(r.to_owned())
}

impl ActionRequest {
    /// Applies the action as the signed-in user; a reconcile returns the operator's new token.
    pub(crate) async fn apply(
        &self,
        sentinel: &Sentinel,
        ctx: &Ctx,
    ) -> Result<Option<FencingToken>, Problem> {
        let action = OperatorAction::new(
            self.namespace.clone(),
            self.key.clone(),
            ctx.principal.name.clone(),
            Some(self.reason.clone()),
        );
        Ok(match self.verb {
            Verb::Reconcile => Some(sentinel.reconcile(&action, self.force).await?),
            Verb::Complete => {
                let result = self
                    .result
                    .clone()
                    .map(|json| StoredResult::new(ResultKind::Value, json));
                let resolution = Resolution::Complete(result);
                sentinel
                    .resolve(&action, &resolution, self.expected_token)
                    .await?;
                None
            }
            Verb::Reset => {
                sentinel
                    .resolve(&action, &Resolution::Reset, self.expected_token)
                    .await?;
                None
            }
            Verb::Forget => {
                sentinel.forget(&action).await?;
                None
            }
        })
    }
}

/// A token as typed in a form or sent as JSON text.
pub(crate) fn parse_token(s: &str) -> Result<FencingToken, Problem> {
    s.trim()
        .parse::<u64>()
        .map(FencingToken::new)
        .map_err(|_| Problem::bad(format!("`{s}` is not a fencing token (a whole number)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let at = UNIX_EPOCH + Duration::from_nanos(1_795_845_781_123_456_789);
        let c = ListCursor::new(at, "payments", "order/1 \"x\"");
        let back = decode_cursor(&encode_cursor(&c)).unwrap();
        assert_eq!(back, c);
        for bad in ["", "!!!", "W10", "WyJ4IiwiYSIsImIiXQ"] {
            let p = decode_cursor(bad).unwrap_err();
            assert_eq!(p.status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn list_parameters_are_validated() {
        let p = ListParams {
            sort: Some("sideways".into()),
            ..ListParams::default()
        };
        assert!(p.query().unwrap_err().message.contains("unknown sort"));
        let p = ListParams {
            state: Some("happy".into()),
            ..ListParams::default()
        };
        assert!(p.query().unwrap_err().message.contains("unknown state"));
        let p = ListParams {
            limit: Some("0".into()),
            ..ListParams::default()
        };
        assert!(p.query().is_err());
        let p = ListParams {
            state: Some("uncertain".into()),
            sort: Some("oldest".into()),
            prefix: Some(" a".into()),
            ..ListParams::default()
        };
        let q = p.query().unwrap();
        assert_eq!(q.state, Some(State::Uncertain));
        assert_eq!(q.order, ListOrder::Oldest);
        assert_eq!(q.key_prefix.as_deref(), Some(" a"));
        assert_eq!(q.limit, PAGE);
    }

    #[test]
    fn a_reason_is_required_and_bounded() {
        assert!(reason(None).is_err());
        assert!(reason(Some("   ")).is_err());
        assert!(reason(Some("a\u{7}b")).is_err());
        assert!(reason(Some(&"x".repeat(MAX_REASON + 1))).is_err());
        assert_eq!(
            reason(Some(" checked the PSP ")).unwrap(),
            "checked the PSP"
        );
    }
}
