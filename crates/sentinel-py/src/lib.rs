//! `sentinel._native`: the Rust engine for the Python package. The pure-Python package
//! (`python/sentinel/`) holds the original Sentinel's names and module paths; this module gives it
//! an engine over any store URL, the two-phase `begin` (the user's function runs in Python, on
//! the caller's thread), and the operator API. Values cross as JSON text, stored byte for byte.
//!
//! Every wait on the store happens with the GIL released; the heartbeat runs on the engine's own
//! Rust thread and never needs the GIL.
#![forbid(unsafe_code)]

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use sentinel::blocking;
use sentinel::store::{ListQuery, OperatorAction, PruneQuery, Resolution};
use sentinel::{
    Disposition, Error, FailurePolicy, LeaseLost, OpenOptions, Outcome, Record, ResultKind, State,
    StoreErrorKind, StoredResult, UncertainReason,
};
use serde_json::value::RawValue;

create_exception!(
    _native,
    SentinelError,
    PyException,
    "Every error Sentinel raises."
);
create_exception!(
    _native,
    StoreUnavailable,
    SentinelError,
    "The store could not be reached, or did not answer in time."
);
create_exception!(
    _native,
    InvalidInput,
    SentinelError,
    "A bad key, option or value."
);
create_exception!(
    _native,
    FingerprintMismatch,
    SentinelError,
    "The key was used with another fingerprint."
);
create_exception!(
    _native,
    NotRecorded,
    SentinelError,
    "The function ran but its outcome could not be recorded; the key is left uncertain."
);
create_exception!(
    _native,
    SchemaMissing,
    SentinelError,
    "The store's schema is missing or from another version: run init_db()."
);
create_exception!(
    _native,
    Refused,
    SentinelError,
    "An operator action the key's state does not allow."
);
create_exception!(_native, NotFound, SentinelError, "No record for the key.");
create_exception!(
    _native,
    ShuttingDown,
    SentinelError,
    "The engine was shut down."
);

/// JSON text, stored and replayed as given.
type Json = Box<RawValue>;

/// The runtime stores are opened on: it lives as long as the process, so connections made
/// while opening stay usable. After `fork()` the child has none of its threads: it gets a new
/// one, and the parent's is left alone (dropping it would wait for threads that are not there).
fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    static RUNTIME: Mutex<Option<(u32, &'static tokio::runtime::Runtime)>> = Mutex::new(None);
    let mut slot = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
    let pid = std::process::id();
    if let Some((owner, rt)) = *slot {
        if owner == pid {
            return Ok(rt);
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sentinel-open")
        .enable_all()
        .build()
        .map_err(|e| SentinelError::new_err(format!("cannot start Sentinel's runtime: {e}")))?;
    let rt: &'static tokio::runtime::Runtime = Box::leak(Box::new(rt));
    *slot = Some((pid, rt));
    Ok(rt)
}

/// The Python exception for an engine error.
fn to_py(e: Error) -> PyErr {
    let message = e.to_string();
    match e {
        Error::InvalidInput(_) | Error::Codec(_) => InvalidInput::new_err(message),
        Error::Store(s) if s.kind() == StoreErrorKind::Schema => SchemaMissing::new_err(message),
        Error::Store(_) => StoreUnavailable::new_err(message),
        Error::FingerprintMismatch { .. } => FingerprintMismatch::new_err(message),
        Error::NotRecorded(nr) => NotRecorded::new_err((message, nr.token.get())),
        Error::Refused { .. } => Refused::new_err(message),
        Error::NotFound { .. } => NotFound::new_err(message),
        Error::ShuttingDown => ShuttingDown::new_err(message),
        _ => SentinelError::new_err(message),
    }
}

fn json(text: String) -> PyResult<Json> {
    RawValue::from_string(text).map_err(|e| InvalidInput::new_err(format!("not JSON: {e}")))
}

fn seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn policy(name: &str) -> PyResult<FailurePolicy> {
    match name {
        "uncertain" => Ok(FailurePolicy::Uncertain),
        "release" => Ok(FailurePolicy::Release),
        "record" => Ok(FailurePolicy::Record),
        other => Err(InvalidInput::new_err(format!(
            "on_failure must be \"uncertain\", \"release\" or \"record\", not {other:?}"
        ))),
    }
}

fn disposition(d: Disposition) -> &'static str {
    match d {
        Disposition::Released => "released",
        Disposition::Recorded => "recorded",
        _ => "uncertain",
    }
}

/// An outcome as a dict: `kind` (`completed`, `completed_without_result`, `failed`, `running`,
/// `uncertain`), `token`, and the fields of that kind.
fn outcome(py: Python<'_>, o: Outcome<Json, Json>) -> PyResult<Py<PyAny>> {
    let d = PyDict::new(py);
    match o {
        Outcome::Completed {
            value,
            replayed,
            token,
            ..
        } => {
            d.set_item("kind", "completed")?;
            d.set_item("value", value.get())?;
            d.set_item("replayed", replayed)?;
            d.set_item("token", token.get())?;
        }
        Outcome::CompletedWithoutResult { token, .. } => {
            d.set_item("kind", "completed_without_result")?;
            d.set_item("replayed", true)?;
            d.set_item("token", token.get())?;
        }
        Outcome::Failed {
            error,
            replayed,
            disposition: disp,
            token,
        } => {
            d.set_item("kind", "failed")?;
            d.set_item("error", error.get())?;
            d.set_item("replayed", replayed)?;
            d.set_item("disposition", disposition(disp))?;
            d.set_item("token", token.get())?;
        }
        Outcome::Running {
            owner,
            token,
            lease_expires_at,
        } => {
            d.set_item("kind", "running")?;
            d.set_item("owner", owner.map(|o| format!("{}:{}", o.host, o.pid)))?;
            d.set_item("lease_expires_at", lease_expires_at.map(seconds))?;
            d.set_item("token", token.get())?;
        }
        Outcome::Uncertain { reason, token, .. } => {
            d.set_item("kind", "uncertain")?;
            d.set_item("reason", reason.as_str())?;
            d.set_item("token", token.get())?;
        }
        other => {
            return Err(SentinelError::new_err(format!(
                "an outcome this build does not know: {other:?}"
            )));
        }
    }
    Ok(d.into_any().unbind())
}

fn state(s: State) -> &'static str {
    match s {
        State::Running => "running",
        State::Uncertain => "uncertain",
        State::Completed => "completed",
        _ => "reconciling",
    }
}

/// A record as a dict of its fields; times are seconds since the epoch.
fn record(py: Python<'_>, r: &Record) -> PyResult<Py<PyAny>> {
    let d = PyDict::new(py);
    d.set_item("namespace", &r.namespace)?;
    d.set_item("key", &r.key)?;
    d.set_item("state", state(r.state))?;
    d.set_item("fencing_token", r.fencing_token.get())?;
    d.set_item(
        "owner",
        r.owner.as_ref().map(|o| format!("{}:{}", o.host, o.pid)),
    )?;
    d.set_item("operator", r.operator.as_deref())?;
    d.set_item("reason", r.reason.map(|x| x.as_str()))?;
    d.set_item("result", r.result.as_ref().map(|x| x.json.as_str()))?;
    d.set_item(
        "result_kind",
        r.result.as_ref().map(|x| match x.kind {
            ResultKind::Error => "error",
            _ => "value",
        }),
    )?;
    d.set_item("lease_expires_at", r.lease_expires_at.map(seconds))?;
    d.set_item("hard_expires_at", r.hard_expires_at.map(seconds))?;
    d.set_item("created_at", seconds(r.created_at))?;
    d.set_item("updated_at", seconds(r.updated_at))?;
    d.set_item("completed_at", r.completed_at.map(seconds))?;
    Ok(d.into_any().unbind())
}

/// An engine over one store: `Engine(url, pg_schema=None, pool_size=None)`.
#[pyclass(frozen, module = "sentinel._native")]
struct Engine {
    inner: blocking::Sentinel,
}

#[pymethods]
impl Engine {
    #[new]
    #[pyo3(signature = (url, *, pg_schema=None, pool_size=None, max_result_bytes=None))]
    fn new(
        py: Python<'_>,
        url: &str,
        pg_schema: Option<String>,
        pool_size: Option<usize>,
        max_result_bytes: Option<usize>,
    ) -> PyResult<Self> {
        let mut options = OpenOptions::new();
        if let Some(schema) = pg_schema {
            options = options.pg_schema(schema);
        }
        if let Some(size) = pool_size {
            options = options.pool_size(size);
        }
        let rt = runtime()?;
        let store = py
            .detach(|| rt.block_on(sentinel::open(url, &options)))
            .map_err(to_py)?;
        let mut builder = sentinel::Sentinel::builder(store);
        if let Some(bytes) = max_result_bytes {
            builder = builder.max_result_bytes(bytes);
        }
        let engine = builder.build().map_err(to_py)?;
        Ok(Self {
            inner: blocking::Sentinel::new(engine),
        })
    }

    /// Creates or upgrades the store's schema (idempotent, safe concurrently).
    fn migrate(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.migrate()).map_err(to_py)
    }

    /// Claims `key`: an outcome dict when it is settled (replayed, running, uncertain), or an
    /// `Execution` the caller must finish.
    #[pyo3(signature = (key, *, namespace, ttl_ms, hard_ttl_ms=None, on_failure="uncertain",
        fingerprint=None, wait_s=None, retain_s=None))]
    #[allow(clippy::too_many_arguments)]
    fn begin(
        &self,
        py: Python<'_>,
        key: String,
        namespace: String,
        ttl_ms: u64,
        hard_ttl_ms: Option<u64>,
        on_failure: &str,
        fingerprint: Option<Vec<u8>>,
        wait_s: Option<f64>,
        retain_s: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        let mut once = self
            .inner
            .once(key)
            .namespace(namespace)
            .ttl(millis(ttl_ms))
            .on_failure(policy(on_failure)?);
        if let Some(h) = hard_ttl_ms {
            once = once.hard_ttl(millis(h));
        }
        if let Some(f) = fingerprint {
            once = once.fingerprint(f);
        }
        if let Some(w) = wait_s {
            once = once.wait(duration("wait", w)?);
        }
        if let Some(r) = retain_s {
            once = once.retain_for(duration("retain_for", r)?);
        }
        match py.detach(|| once.begin::<Json, Json>()).map_err(to_py)? {
            blocking::Begin::Settled(o) => outcome(py, o),
            blocking::Begin::Acquired(e) => Ok(Py::new(py, Execution::new(e))?.into_any()),
            _ => Err(SentinelError::new_err("an answer this build does not know")),
        }
    }

    /// The record of a key, or None.
    fn inspect(&self, py: Python<'_>, namespace: &str, key: &str) -> PyResult<Option<Py<PyAny>>> {
        let r = py
            .detach(|| self.inner.inspect(namespace, key))
            .map_err(to_py)?;
        r.map(|r| record(py, &r)).transpose()
    }

    /// Records of a namespace (every one when None), optionally in one state.
    #[pyo3(signature = (namespace=None, state=None, limit=100))]
    fn list(
        &self,
        py: Python<'_>,
        namespace: Option<String>,
        state: Option<&str>,
        limit: usize,
    ) -> PyResult<Vec<Py<PyAny>>> {
        let mut q = ListQuery::new(limit);
        q.namespace = namespace;
        q.state = match state {
            None => None,
            Some("running") => Some(State::Running),
            Some("uncertain") => Some(State::Uncertain),
            Some("completed") => Some(State::Completed),
            Some("reconciling") => Some(State::Reconciling),
            Some(other) => return Err(InvalidInput::new_err(format!("unknown state {other:?}"))),
        };
        let rows = py.detach(|| self.inner.list(&q)).map_err(to_py)?;
        rows.iter().map(|r| record(py, r)).collect()
    }

    /// A key's events, oldest first, as dicts.
    #[pyo3(signature = (namespace, key, limit=1000))]
    fn history(
        &self,
        py: Python<'_>,
        namespace: &str,
        key: &str,
        limit: usize,
    ) -> PyResult<Vec<Py<PyAny>>> {
        let events = py
            .detach(|| self.inner.history(namespace, key, limit))
            .map_err(to_py)?;
        events
            .iter()
            .map(|e| {
                let d = PyDict::new(py);
                d.set_item("event", e.kind.as_str())?;
                d.set_item("fencing_token", e.fencing_token.get())?;
                d.set_item("actor", e.actor.as_deref())?;
                d.set_item("reason", e.reason.as_deref())?;
                d.set_item("at", seconds(e.at))?;
                Ok(d.into_any().unbind())
            })
            .collect()
    }

    /// Takes an uncertain key into reconciliation; returns the operator's fencing token.
    #[pyo3(signature = (namespace, key, actor, reason=None, force=false))]
    fn reconcile(
        &self,
        py: Python<'_>,
        namespace: &str,
        key: &str,
        actor: &str,
        reason: Option<String>,
        force: bool,
    ) -> PyResult<u64> {
        let action = OperatorAction::new(namespace, key, actor, reason);
        let token = py
            .detach(|| self.inner.reconcile(&action, force))
            .map_err(to_py)?;
        Ok(token.get())
    }

    /// Settles a reconciling key: completed with `result` (JSON text, or None for no result)
    /// when `complete`, else reset so the next caller runs.
    #[pyo3(signature = (namespace, key, actor, complete, result=None, token=None, reason=None))]
    #[allow(clippy::too_many_arguments)]
    fn resolve(
        &self,
        py: Python<'_>,
        namespace: &str,
        key: &str,
        actor: &str,
        complete: bool,
        result: Option<String>,
        token: Option<u64>,
        reason: Option<String>,
    ) -> PyResult<()> {
        let action = OperatorAction::new(namespace, key, actor, reason);
        let resolution = if complete {
            Resolution::Complete(result.map(|j| StoredResult::new(ResultKind::Value, j)))
        } else {
            Resolution::Reset
        };
        let token = token.map(sentinel::FencingToken::new);
        py.detach(|| self.inner.resolve(&action, &resolution, token))
            .map_err(to_py)
    }

    /// Removes a completed record so the key may run again.
    #[pyo3(signature = (namespace, key, actor, reason=None))]
    fn forget(
        &self,
        py: Python<'_>,
        namespace: &str,
        key: &str,
        actor: &str,
        reason: Option<String>,
    ) -> PyResult<()> {
        let action = OperatorAction::new(namespace, key, actor, reason);
        py.detach(|| self.inner.forget(&action)).map_err(to_py)
    }

    /// Deletes completed records of a namespace whose retention passed (or older than
    /// `older_than_s`); returns how many.
    #[pyo3(signature = (namespace, older_than_s=None))]
    fn prune(&self, py: Python<'_>, namespace: &str, older_than_s: Option<f64>) -> PyResult<u64> {
        let mut q = PruneQuery::in_namespace(namespace);
        q.older_than = older_than_s
            .map(|s| duration("older_than", s))
            .transpose()?;
        py.detach(|| self.inner.prune(&q)).map_err(to_py)
    }

    /// Stops the engine: no new work; executions in flight are waited for briefly.
    fn shutdown(&self, py: Python<'_>) {
        py.detach(|| self.inner.shutdown());
    }
}

fn duration(what: &str, s: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| {
        InvalidInput::new_err(format!(
            "{what} must be a non-negative number of seconds, not {s}"
        ))
    })
}

/// An acquired execution: finish it with `complete`, `fail` or `release`; `abandon` (or
/// dropping it unfinished) leaves the key uncertain (reason cancelled).
#[pyclass(frozen, module = "sentinel._native")]
struct Execution {
    inner: Mutex<Option<blocking::Execution<Json, Json>>>,
    key: String,
    namespace: String,
    token: u64,
}

impl Execution {
    fn new(e: blocking::Execution<Json, Json>) -> Self {
        Self {
            key: e.key().to_owned(),
            namespace: e.namespace().to_owned(),
            token: e.fencing_token().get(),
            inner: Mutex::new(Some(e)),
        }
    }

    fn take(&self) -> PyResult<blocking::Execution<Json, Json>> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(|| InvalidInput::new_err("this execution was already finished"))
    }
}

#[pymethods]
impl Execution {
    /// The key.
    #[getter]
    fn key(&self) -> &str {
        &self.key
    }

    /// The namespace.
    #[getter]
    fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The fencing token of this execution.
    #[getter]
    fn fencing_token(&self) -> u64 {
        self.token
    }

    /// True once the lease is lost (fenced, ceiling passed, renewals failing).
    #[getter]
    fn lease_lost(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(blocking::Execution::is_lease_lost)
    }

    /// Why the lease was lost (`"fenced"`, `"ceiling_passed"`, `"renewals_failing"`,
    /// `"stopped"`), or None while it is held.
    #[getter]
    fn lease_lost_reason(&self) -> Option<&'static str> {
        let why = self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()?
            .lease_lost_reason()?;
        Some(match why {
            LeaseLost::Fenced => "fenced",
            LeaseLost::CeilingPassed => "ceiling_passed",
            LeaseLost::RenewalsFailing => "renewals_failing",
            LeaseLost::Stopped => "stopped",
            _ => "lost",
        })
    }

    /// Stores `value` (JSON text) as the key's result; returns the outcome dict.
    fn complete(&self, py: Python<'_>, value: String) -> PyResult<Py<PyAny>> {
        let value = json(value)?;
        let e = self.take()?;
        let o = py.detach(|| e.complete(value)).map_err(to_py)?;
        outcome(py, o)
    }

    /// The function failed with `error` (JSON text): the failure policy applies.
    fn fail(&self, py: Python<'_>, error: String) -> PyResult<Py<PyAny>> {
        let error = json(error)?;
        let e = self.take()?;
        let o = py.detach(|| e.fail(error)).map_err(to_py)?;
        outcome(py, o)
    }

    /// Nothing happened: the key is released (or left uncertain after a lease loss).
    fn release(&self, py: Python<'_>) -> PyResult<&'static str> {
        let e = self.take()?;
        Ok(disposition(py.detach(|| e.release())))
    }

    /// The call was interrupted mid-function (`reason="cancelled"`) or its result cannot be
    /// stored (`reason="not_recorded"`): the key is left uncertain, once this returns.
    #[pyo3(signature = (reason="cancelled"))]
    fn abandon(&self, py: Python<'_>, reason: &str) -> PyResult<()> {
        let reason = match reason {
            "cancelled" => UncertainReason::Cancelled,
            "not_recorded" => UncertainReason::NotRecorded,
            "panicked" => UncertainReason::Panicked,
            other => return Err(InvalidInput::new_err(format!("unknown reason {other:?}"))),
        };
        let e = self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(e) = e {
            py.detach(|| e.abandon(reason));
        }
        Ok(())
    }
}

/// Checks that `url` names a store this build can open, without connecting to it.
#[pyfunction]
fn check_url(url: &str) -> PyResult<()> {
    let scheme = sentinel::Scheme::parse(url).map_err(to_py)?;
    if scheme.is_available() {
        Ok(())
    } else {
        Err(InvalidInput::new_err(format!(
            "this build cannot open {scheme:?} stores"
        )))
    }
}

/// The native module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Engine>()?;
    m.add_class::<Execution>()?;
    m.add_function(wrap_pyfunction!(check_url, m)?)?;
    m.add("SentinelError", py.get_type::<SentinelError>())?;
    m.add("StoreUnavailable", py.get_type::<StoreUnavailable>())?;
    m.add("InvalidInput", py.get_type::<InvalidInput>())?;
    m.add("FingerprintMismatch", py.get_type::<FingerprintMismatch>())?;
    m.add("NotRecorded", py.get_type::<NotRecorded>())?;
    m.add("SchemaMissing", py.get_type::<SchemaMissing>())?;
    m.add("Refused", py.get_type::<Refused>())?;
    m.add("NotFound", py.get_type::<NotFound>())?;
    m.add("ShuttingDown", py.get_type::<ShuttingDown>())?;
    Ok(())
}
