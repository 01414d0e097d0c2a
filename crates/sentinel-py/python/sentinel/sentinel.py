"""``Sentinel``: run a function at most once per key, across processes, and replay its result."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import numbers
import threading
from collections.abc import Mapping
from typing import Any, Callable, Dict, List, Optional, Union

from . import _engine, _native
from .errors import NotRecorded, RecordedFailure
from .execution import CurrentExecution, _current
from .reconciliation import Reconcile, _actor, result_text
from .records import Event, Record, convert
from .result import OnceResult

logger = logging.getLogger("sentinel")


class Sentinel:
    """The original Sentinel's entry point, on the Rust engine.

    ``get_conn`` is a callable returning a psycopg 3 connection (the URL is derived from it
    once, and the connection closed when ``owns_connection``); or pass ``url=`` — ``postgres://``,
    ``sqlite://path`` or ``memory:``. ``schema=`` names the PostgreSQL schema (default
    ``sentinel``). A database reached through ``get_conn`` that still holds the original
    package's records (``sentinel_leases``) is refused with ``OriginalRecordsFound``: their keys
    would run again here. ``ignore_original_records=True`` once they have been reviewed.
    """

    def __init__(
        self,
        get_conn: Optional[Callable[[], Any]] = None,
        default_ttl_ms: int = 3000,
        namespace: Optional[str] = None,
        owns_connection: bool = True,
        *,
        url: Optional[str] = None,
        schema: Optional[str] = None,
        ignore_original_records: bool = False,
    ) -> None:
        if get_conn is None and url is None:
            raise ValueError("No database connection provider found: pass get_conn= or url=.")
        if url is not None:
            _native.check_url(url)  # a URL no store answers to fails here; nothing connects yet
        self.get_conn = get_conn
        self.owns_connection = owns_connection
        self.ignore_original_records = ignore_original_records
        self._url = url
        self._setup(default_ttl_ms, namespace, schema)

    def _setup(self, default_ttl_ms: int, namespace: Optional[str], schema: Optional[str]) -> None:
        self.default_ttl_ms = _millis("default_ttl_ms", default_ttl_ms)
        self.namespace = namespace or "default"
        self.schema = schema
        self._url_lock = threading.Lock()
        self.reconcile = Reconcile(self._engine, self.namespace)

    def _derive_url(self) -> str:
        return _engine.resolve_url(self.get_conn, None, self.owns_connection, self.ignore_original_records)

    @property
    def url(self) -> str:
        """The store's URL; derived from ``get_conn`` on first use (as the original, the
        constructor never connects, so a module-level Sentinel imports with the database down)."""
        if self._url is None:
            with self._url_lock:
                if self._url is None:
                    self._url = self._derive_url()
        return self._url

    def _engine(self) -> "_native.Engine":
        return _engine.engine(self.url, self.schema)

    def once(
        self,
        key: str,
        fn: Callable[..., Any],
        ttl_ms: Optional[int] = None,
        hard_ttl_ms: Optional[int] = None,
        kwargs: Optional[Dict[str, Any]] = None,
        *,
        on_failure: str = "uncertain",
        fingerprint: Union[bytes, str, None] = None,
        wait: Optional[float] = None,
        retain_for: Optional[float] = None,
        result_type: Any = None,
    ) -> OnceResult:
        """Calls ``fn(**kwargs)`` at most once for ``key`` and returns what happened.

        A replay returns the stored result (``cached=True``); another worker's live execution
        gives ``execution_alive=True``; a key whose owner died or whose function failed gives
        ``uncertain=True`` and a ``reconcile`` helper. An exception raised by ``fn`` under the
        default policy is in ``exception``; under ``on_failure="release"`` or ``"record"`` it is
        raised again after the key was settled.
        """
        options = begin_options(
            self, key, fn, kwargs, ttl_ms, hard_ttl_ms, on_failure, fingerprint, wait, retain_for
        )
        if inspect.iscoroutinefunction(fn):
            raise _native.InvalidInput("fn is a coroutine function: use AsyncSentinel to await it")
        begun = self._engine().begin(key, **options)
        if isinstance(begun, dict):
            result = settled(begun, self.reconcile)
        else:
            result = self._run(begun, fn, kwargs or {})
        return typed(result, result_type)

    def once_fn(self, key: Callable[..., str], **options: Any) -> Callable[[Callable[..., Any]], Callable[..., OnceResult]]:
        """A decorator: ``@sentinel.once_fn(key=lambda order_id: f"charge-{order_id}")``. The
        decorated function is called through ``once``; ``key`` gets the same arguments."""

        def decorate(fn: Callable[..., Any]) -> Callable[..., OnceResult]:
            signature = inspect.signature(fn)

            key_params = inspect.signature(key).parameters
            takes_all = any(p.kind is p.VAR_KEYWORD for p in key_params.values())

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> OnceResult:
                bound = signature.bind(*args, **kwargs)
                bound.apply_defaults()
                arguments = dict(bound.arguments)
                named = arguments if takes_all else {k: v for k, v in arguments.items() if k in key_params}
                return self.once(key(**named), fn, kwargs=arguments, **options)

            return wrapper

        return decorate

    # The operator API.

    def inspect(self, key: str) -> Optional[Record]:
        """The key's record, or None."""
        found = self._engine().inspect(self.namespace, key)
        return None if found is None else Record._from(found)

    def list(self, state: Optional[str] = None, limit: int = 100) -> List[Record]:
        """Records of this namespace, optionally in one state."""
        return [Record._from(d) for d in self._engine().list(self.namespace, state, limit)]

    def history(self, key: str, limit: int = 1000) -> List[Event]:
        """The key's events, oldest first."""
        return [Event._from(d) for d in self._engine().history(self.namespace, key, limit)]

    def resolve(
        self,
        key: str,
        *,
        complete: bool,
        result: Any = None,
        token: Optional[int] = None,
        reason: Optional[str] = None,
    ) -> None:
        """Settles a reconciling key: completed (with ``result``, any JSON-serialisable value)
        or, with ``complete=False``, reset so that the next caller runs. With ``token``, refused
        when another operator has taken the key over since."""
        text = result_text(result)
        self._engine().resolve(self.namespace, key, _actor(), complete, result=text, token=token, reason=reason)

    def forget(self, key: str, reason: Optional[str] = None) -> None:
        """Removes a completed record so the key may run again."""
        self._engine().forget(self.namespace, key, _actor(), reason=reason)

    def prune(self, older_than: Optional[float] = None) -> int:
        """Deletes this namespace's completed records whose retention passed (or older than
        ``older_than`` seconds); returns how many."""
        return self._engine().prune(self.namespace, older_than)

    def _run(self, execution: "_native.Execution", fn: Callable[..., Any], kwargs: Dict[str, Any]) -> OnceResult:
        marker = _current.set(
            CurrentExecution(execution.key, execution.namespace, execution.fencing_token, execution)
        )
        try:
            try:
                value = fn(**kwargs)
            finally:
                _current.reset(marker)
        except Exception as exc:  # noqa: BLE001 - the user's function may raise anything
            result = failed(execution, fail(execution, exc), exc, self.reconcile)
            if result is None:
                raise
            return result
        except BaseException:
            # Interrupted mid-function (KeyboardInterrupt, SystemExit, a gevent timeout):
            # nobody knows how far it got.
            execution.abandon("cancelled")
            raise
        try:
            warn_if_lease_lost(execution)
            text = encode(execution, value)
            outcome = execution.complete(text)
        except _native.NotRecorded as exc:
            raise not_recorded(execution, value, exc) from exc
        except BaseException:
            # Interrupted after the function returned, before its result was stored.
            execution.abandon("not_recorded")
            raise
        return completed(text, outcome)


def settled(outcome: Dict[str, Any], reconcile: Any) -> OnceResult:
    """The result of a call that found the key settled (replayed, running, uncertain)."""
    kind = outcome["kind"]
    token = outcome.get("token")
    if kind == "completed":
        return OnceResult(
            success=True,
            status="completed",
            response=json.loads(outcome["value"]),
            cached=True,
            fencing_token=token,
        )
    if kind == "completed_without_result":
        return OnceResult(success=True, status="completed", response=None, cached=True, fencing_token=token)
    if kind == "running":
        return OnceResult(status="executing", execution_alive=True, fencing_token=token)
    if kind == "uncertain":
        reason = outcome.get("reason")
        return OnceResult(
            status="reconciling" if reason == "reconciling" else "executing",
            uncertain=True,
            execution_alive=False,
            reconcile=reconcile,
            fencing_token=token,
            reason=reason,
        )
    if kind == "failed":
        raise RecordedFailure(json.loads(outcome["error"]))
    raise _native.SentinelError(f"an outcome this version does not know: {kind}")


def error_json(exc: BaseException) -> str:
    """What is stored for a failure: the exception's type and message (cut to
    ``MAX_ERROR_MESSAGE`` characters)."""
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - a __str__ that raises
        message = repr(type(exc))
    return json.dumps({"type": type(exc).__qualname__, "message": message[:MAX_ERROR_MESSAGE]})


def failed(
    execution: "_native.Execution", outcome: Dict[str, Any], exc: BaseException, reconcile: Any
) -> Optional[OnceResult]:
    """The result of a function that raised: uncertain under the default policy; None when the
    key was released or the failure recorded (the caller raises the exception again)."""
    if outcome.get("disposition") != "uncertain":
        return None
    logger.warning(
        "%s/%s: the function raised after it started; the key is uncertain until an operator "
        "reconciles it",
        execution.namespace,
        execution.key,
    )
    return OnceResult(
        success=False,
        status="executing",
        uncertain=True,
        execution_alive=False,
        exception=exc,
        reconcile=reconcile,
        fencing_token=outcome["token"],
        reason="failed",
    )


def encode(execution: "_native.Execution", value: Any) -> str:
    """The function's value as JSON; a value that is not JSON leaves the key uncertain and
    raises ``NotRecorded``."""
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        execution.abandon("not_recorded")
        logger.warning("%s: the result could not be stored (%s); the key is uncertain", execution.key, exc)
        raise NotRecorded(
            f"the function ran (fencing token {execution.fencing_token}) but its result is not "
            f"JSON ({exc}); the key is left uncertain",
            value,
            execution.fencing_token,
        ) from exc


def not_recorded(execution: "_native.Execution", value: Any, exc: BaseException) -> NotRecorded:
    """The store could not record the outcome: the key is uncertain; the caller gets the value."""
    message = str(exc.args[0]) if exc.args else str(exc)
    logger.warning("%s: the outcome could not be recorded: %s", execution.key, message)
    return NotRecorded(message, value, execution.fencing_token)


#: The longest failure message stored; longer ones are cut (the result limit is 1 MiB).
MAX_ERROR_MESSAGE = 16 * 1024


def fail(execution: "_native.Execution", exc: BaseException) -> Dict[str, Any]:
    """Records ``fn``'s failure under the call's policy; an outcome that cannot be recorded
    leaves the key uncertain, which is what the caller is told."""
    try:
        return execution.fail(error_json(exc))
    except _native.NotRecorded as e:
        logger.warning("%s: the failure could not be recorded: %s", execution.key, e.args[0] if e.args else e)
        return {"kind": "failed", "disposition": "uncertain", "token": execution.fencing_token}


def completed(text: str, outcome: Dict[str, Any]) -> OnceResult:
    """The result of a fresh run: the stored JSON, decoded, as every replay will see it."""
    return OnceResult(
        success=True,
        status="completed",
        response=json.loads(text),
        cached=False,
        fencing_token=outcome["token"],
    )


def warn_if_lease_lost(execution: "_native.Execution") -> None:
    """Says so when the function finished after its lease was lost (the completion may be
    fenced: an operator may have taken the key over)."""
    if execution.lease_lost:
        logger.warning(
            "%s/%s: the lease was lost while the function ran (fencing token %s); its result "
            "is stored only if no one took the key over",
            execution.namespace,
            execution.key,
            execution.fencing_token,
        )


def _millis(name: str, value: Any) -> int:
    """A number of milliseconds (an int, or a float as the original accepted), else
    ``InvalidInput``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value or value < 0:
        raise _native.InvalidInput(f"{name} must be a non-negative number of milliseconds, not {value!r}")
    if value > 2**63:
        raise _native.InvalidInput(f"{name} is too large: {value!r}")
    return int(value)


def _seconds(name: str, value: Any) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _native.InvalidInput(f"{name} must be a number of seconds, not {value!r}")
    return float(value)


def begin_options(
    owner: Any,
    key: Any,
    fn: Any,
    kwargs: Any,
    ttl_ms: Any,
    hard_ttl_ms: Any,
    on_failure: Any,
    fingerprint: Any,
    wait: Any,
    retain_for: Any,
) -> Dict[str, Any]:
    """Checks one call of a (sync or async) Sentinel ``owner`` — every bad argument is an
    ``InvalidInput`` before anything is claimed — and gives the engine's ``begin`` options.

    As in the original, a ``hard_ttl_ms`` shorter than the ttl is raised to it.
    """
    if not isinstance(key, str):
        raise _native.InvalidInput(f"key must be a str, not {type(key).__name__}")
    if not callable(fn):
        raise _native.InvalidInput(f"fn must be callable, not {type(fn).__name__}")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise _native.InvalidInput(f"kwargs must be a dict of keyword arguments, not {type(kwargs).__name__}")
    if not isinstance(on_failure, str):
        raise _native.InvalidInput(f"on_failure must be a str, not {type(on_failure).__name__}")
    if fingerprint is not None and not isinstance(fingerprint, (bytes, str)):
        raise _native.InvalidInput(f"fingerprint must be bytes or str, not {type(fingerprint).__name__}")
    ttl = owner.default_ttl_ms if ttl_ms is None else _millis("ttl_ms", ttl_ms)
    hard = None if hard_ttl_ms is None else max(_millis("hard_ttl_ms", hard_ttl_ms), ttl)
    return {
        "namespace": owner.namespace,
        "ttl_ms": ttl,
        "hard_ttl_ms": hard,
        "on_failure": on_failure,
        "fingerprint": fingerprint.encode() if isinstance(fingerprint, str) else fingerprint,
        "wait_s": _seconds("wait", wait),
        "retain_s": _seconds("retain_for", retain_for),
    }


def typed(result: OnceResult, result_type: Any) -> OnceResult:
    """Decodes a successful result's response into ``result_type``."""
    if result_type is not None and result.success and result.response is not None:
        result.response = convert(result.response, result_type)
    return result
