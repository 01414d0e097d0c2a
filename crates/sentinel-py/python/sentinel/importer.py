"""``import_original``: carries the original Sentinel's records (its table ``sentinel_leases``)
over into this engine's, so that nothing the original completed runs again after the swap.

Run it once, with the original's workers stopped::

    import psycopg, sentinel
    with psycopg.connect(DATABASE_URL) as conn:
        report = sentinel.import_original(conn, namespaces=["payments"])
    print(report)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Tuple

from . import _engine, _native


@dataclass
class ImportReport:
    """What ``import_original`` did, per record of the original."""

    #: Completed there; completed here with the same result, replayed from now on.
    completed: int = 0
    #: Executing or reconciling there (nobody can say whether the work happened): uncertain here,
    #: for an operator to reconcile.
    uncertain: int = 0
    #: Claimed but never started there: nothing to carry over; the next caller runs the work.
    not_started: int = 0
    #: Keys this engine already had a record for: left as they were.
    already_present: List[Tuple[str, str]] = field(default_factory=list)
    #: Keys this engine refuses (too long, not UTF-8 …), with why: while there are any, the
    #: table is not renamed, so the database stays refused until someone has looked.
    refused: List[Tuple[str, str]] = field(default_factory=list)
    #: What the original's table was renamed to (None when nothing was renamed).
    renamed_to: Optional[str] = None


def _split(key: str, namespaces: Sequence[str]) -> Tuple[str, str]:
    """The original wrote ``f"{namespace}:{key}"``; the longest listed namespace that prefixes
    the key wins (the original's own keys could not tell ``a`` + ``b:c`` from ``a:b`` + ``c``)."""
    for ns in sorted(namespaces, key=len, reverse=True):
        if key.startswith(ns + ":") and len(key) > len(ns) + 1:
            return ns, key[len(ns) + 1 :]
    return "default", key


def import_original(
    conn: Any,
    namespaces: Sequence[str] = (),
    *,
    url: Optional[str] = None,
    schema: Optional[str] = None,
    rename: bool = True,
) -> ImportReport:
    """Imports every record of the original's ``sentinel_leases`` (on ``conn``'s search path)
    into this engine's store — the same database unless ``url=`` names another.

    ``namespaces`` lists the ``namespace=`` values the original's Sentinels were made with: a
    key ``"payments:order-1"`` then lands in namespace ``payments`` as ``order-1``; other keys
    land in ``default`` as they are. Completed records keep their result; executing and
    reconciling ones become uncertain; claimed-but-not-started ones are not carried over.

    Then, with ``rename`` (the default), the table is renamed to
    ``sentinel_leases_imported_<unix time>`` (nothing is deleted), so that ``Sentinel``,
    ``init_db`` and the Django migration no longer refuse the database. Running it again finds
    nothing to import.
    """
    target = url if url is not None else _engine.url_from_connection(conn)
    engine = _engine.engine(target, schema)
    engine.migrate()
    report = ImportReport()
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('sentinel_leases') IS NOT NULL")
        row = cur.fetchone()
        if not row or not row[0]:
            conn.rollback()
            return report
        cur.execute("SELECT key, status, execution_result::text FROM sentinel_leases ORDER BY key")
        rows = cur.fetchall()
    conn.rollback()
    for key, status, result in rows:
        if status == "claimed":
            report.not_started += 1
            continue
        namespace, name = _split(key, namespaces)
        try:
            begun = engine.begin(name, namespace=namespace, ttl_ms=60_000)
        except _native.InvalidInput as e:
            report.refused.append((key, str(e)))
            continue
        if isinstance(begun, dict):
            report.already_present.append((namespace, name))
            continue
        if status == "completed":
            try:
                begun.complete(result if result is not None else json.dumps(None))
            except (_native.NotRecorded, _native.InvalidInput) as e:
                # Too large to store here: left uncertain, and reported, so the table stays.
                begun.abandon("not_recorded")
                report.refused.append((key, str(e)))
                continue
            report.completed += 1
        else:  # executing, reconciling: the work may or may not have happened
            begun.abandon("cancelled")
            report.uncertain += 1
    if rename and not report.refused:
        report.renamed_to = f"sentinel_leases_imported_{int(time.time())}"
        with conn.cursor() as cur:
            cur.execute(f"ALTER TABLE sentinel_leases RENAME TO {report.renamed_to}")
        conn.commit()
    return report
