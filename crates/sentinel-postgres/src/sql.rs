//! The statements, built once per schema. Every statement is one round trip; events are written
//! by data-modifying CTEs of the transition's own statement (the claim's and the completion's
//! inside their functions).

use tokio_postgres::types::Type;

const TEXT: Type = Type::TEXT;
const INT8: Type = Type::INT8;
const BYTEA: Type = Type::BYTEA;
const BOOL: Type = Type::BOOL;
const TIMESTAMPTZ: Type = Type::TIMESTAMPTZ;
const TEXT_ARRAY: Type = Type::TEXT_ARRAY;
const INT8_ARRAY: Type = Type::INT8_ARRAY;
const BYTEA_ARRAY: Type = Type::BYTEA_ARRAY;

/// Columns of a record, in the order `row::record` reads them (after a leading `now()`).
const COLS: &str = "namespace, key, state, fencing_token, owner_host, owner_pid, owner_attempt, \
    operator, fingerprint, lease_expires_at, hard_expires_at, created_at, updated_at, \
    completed_at, retain_until, reason, result_kind, result::text AS result_text";

/// The same columns by output name, for selecting from a CTE.
const NAMES: &str = "namespace, key, state, fencing_token, owner_host, owner_pid, owner_attempt, \
    operator, fingerprint, lease_expires_at, hard_expires_at, created_at, updated_at, \
    completed_at, retain_until, reason, result_kind, result_text";

/// The record columns of `executions e`, for joins.
const E_COLS: &str = "e.namespace, e.key, e.state, e.fencing_token, e.owner_host, e.owner_pid, \
    e.owner_attempt, e.operator, e.fingerprint, e.lease_expires_at, e.hard_expires_at, \
    e.created_at, e.updated_at, e.completed_at, e.retain_until, e.reason, e.result_kind, \
    e.result::text AS result_text";

/// The output names of an `ins` CTE's record columns, qualified for joins.
const INS_NAMES: &str = "ins.namespace, ins.key, ins.state, ins.fencing_token, ins.owner_host, \
    ins.owner_pid, ins.owner_attempt, ins.operator, ins.fingerprint, ins.lease_expires_at, \
    ins.hard_expires_at, ins.created_at, ins.updated_at, ins.completed_at, ins.retain_until, \
    ins.reason, ins.result_kind, ins.result_text";

/// The state as seen with the server's clock: an expired running lease reads as uncertain.
/// Mirrors `Record::derive_state`; used only for filtering.
const DERIVED_STATE: &str = "CASE WHEN state = 'running' AND (lease_expires_at IS NULL \
    OR lease_expires_at <= now()) THEN 'uncertain' ELSE state END";

/// A statement and the types of its parameters (needed to run it unnamed, in one round trip).
pub(crate) struct Stmt {
    pub(crate) sql: String,
    pub(crate) types: &'static [Type],
}

impl Stmt {
    fn new(types: &'static [Type], sql: String) -> Self {
        Self { sql, types }
    }
}

/// Who an event row names.
#[derive(Clone, Copy)]
enum By {
    /// The worker of the row (its owner columns).
    Owner,
    /// The worker, and why (`$4`).
    OwnerBecause,
    /// The operator (`$3`) and why (`$4`).
    Operator,
    /// Nobody (retention).
    Nobody,
}

/// The `ev` CTE: one event row per row of `from`, written by the transition's own statement
/// (events cost no statement of their own). `kind` is an SQL expression.
fn event(s: &str, kind: &str, from: &str, by: By) -> String {
    let owner = ", owner_host, owner_pid, owner_attempt";
    let (cols, values) = match by {
        By::Owner => (owner.to_owned(), owner.to_owned()),
        By::OwnerBecause => (format!("{owner}, reason"), format!("{owner}, $4")),
        By::Operator => (", actor, reason".to_owned(), ", $3, $4".to_owned()),
        By::Nobody => (String::new(), String::new()),
    };
    format!(
        "ev AS (
            INSERT INTO {s}.events (namespace, key, event, fencing_token{cols})
            SELECT namespace, key, {kind}, fencing_token{values} FROM {from}
        )"
    )
}

pub(crate) struct Sql {
    pub(crate) channel: String,
    pub(crate) claim: Stmt,
    pub(crate) claim_many: Stmt,
    pub(crate) heartbeat: Stmt,
    pub(crate) complete: Stmt,
    pub(crate) complete_many: Stmt,
    pub(crate) release: Stmt,
    pub(crate) mark_uncertain: Stmt,
    pub(crate) load: Stmt,
    /// By [`ListOrder`](sentinel_core::store::ListOrder): key, oldest, newest.
    pub(crate) list: [Stmt; 3],
    pub(crate) counts: Stmt,
    pub(crate) recent_events: Stmt,
    pub(crate) history: Stmt,
    pub(crate) reconcile: Stmt,
    pub(crate) resolve_complete: Stmt,
    pub(crate) resolve_reset: Stmt,
    pub(crate) forget: Stmt,
    pub(crate) prune: Stmt,
    pub(crate) add_waiter: Stmt,
    pub(crate) remove_waiter: Stmt,
    pub(crate) stats: Stmt,
}

impl Sql {
    pub(crate) fn new(s: &str) -> Self {
        let channel = format!("sentinel_{s}");
        // Notifies waiters of the changed row, only when some are registered (migration 2).
        let notify = |from: &str| {
            format!("notified AS (SELECT {s}.notify(namespace, key) FROM {from} WHERE waiters > 0)")
        };
        Self {
            // Reads the row and calls `claim_new` (migration 2) only when there is none; the
            // caller tells its own claim by the attempt id on the row. The row comes back as one
            // binary composite (`row::composite`): cheaper on the server than 18 columns.
            claim: Stmt::new(
                &[TEXT, TEXT, TEXT, INT8, TEXT, BYTEA, INT8, INT8],
                format!(
                    "SELECT now(), record_send(COALESCE(
                        (SELECT e FROM {s}.executions e WHERE namespace = $1 AND key = $2),
                        {s}.claim_new($1, $2, $3, $4, $5, $6, $7, $8)))"
                ),
            ),
            claim_many: Stmt::new(
                &[
                    TEXT_ARRAY, TEXT_ARRAY, TEXT_ARRAY, INT8_ARRAY, TEXT_ARRAY, BYTEA_ARRAY,
                    INT8_ARRAY, INT8_ARRAY,
                ],
                format!(
                    "WITH input AS (
                    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[],
                        $5::text[], $6::bytea[], $7::int8[], $8::int8[])
                        WITH ORDINALITY AS t(namespace, key, host, pid, attempt, fingerprint,
                            ttl_ms, hard_ms, ord)
                ), cur AS (
                    SELECT i.ord, {E_COLS} FROM {s}.executions e
                    JOIN input i ON e.namespace = i.namespace AND e.key = i.key
                ), ins AS (
                    INSERT INTO {s}.executions (namespace, key, state, fencing_token, owner_host,
                        owner_pid, owner_attempt, fingerprint, lease_expires_at, hard_expires_at)
                    SELECT i.namespace, i.key, 'running', nextval('{s}.fencing_tokens'), i.host,
                        i.pid, i.attempt, i.fingerprint,
                        now() + i.ttl_ms * interval '1 millisecond',
                        now() + i.hard_ms * interval '1 millisecond'
                    FROM input i
                    WHERE NOT EXISTS (SELECT 1 FROM cur c WHERE c.ord = i.ord)
                    ORDER BY i.namespace, i.key
                    ON CONFLICT DO NOTHING
                    RETURNING {COLS}
                ), {ev}
                SELECT now(), true, i.ord, {INS_NAMES} FROM ins
                JOIN input i ON ins.namespace = i.namespace AND ins.key = i.key
                UNION ALL
                SELECT now(), false, ord, {NAMES} FROM cur",
                ev = event(s, "'acquired'", "ins", By::Owner)
                ),
            ),
            heartbeat: Stmt::new(
                &[TEXT_ARRAY, TEXT_ARRAY, INT8_ARRAY, INT8_ARRAY],
                format!(
                "WITH t AS (
                    SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[])
                        WITH ORDINALITY AS t(namespace, key, token, ttl_ms, ord)
                 ), locked AS (
                    -- Rows are locked in key order, whatever join order the planner picks, so
                    -- heartbeats and batched completions of several instances never deadlock.
                    SELECT e.namespace, e.key FROM {s}.executions e
                    JOIN t ON e.namespace = t.namespace AND e.key = t.key
                    WHERE e.fencing_token = t.token AND e.state = 'running'
                    ORDER BY e.namespace, e.key
                    FOR UPDATE OF e
                 )
                 UPDATE {s}.executions e
                 SET lease_expires_at = LEAST(clock_timestamp() + t.ttl_ms * interval '1 millisecond',
                                              e.hard_expires_at),
                     updated_at = now()
                 FROM t JOIN locked l ON l.namespace = t.namespace AND l.key = t.key
                 WHERE e.namespace = l.namespace AND e.key = l.key AND e.fencing_token = t.token
                   -- clock_timestamp(), not now(): after a lock wait, a lease that expired
                   -- meanwhile must not be renewed.
                   AND e.state = 'running' AND e.lease_expires_at > clock_timestamp()
                 RETURNING t.ord, e.lease_expires_at"
                ),
            ),
            // The row after it as one binary composite, or NULL when fenced (migration 2).
            complete: Stmt::new(
                &[TEXT, TEXT, INT8, TEXT, TEXT, INT8],
                format!("SELECT now(), record_send({s}.complete($1, $2, $3, $4, $5, $6))"),
            ),
            // One `complete` per input row, in key order as the heartbeat locks rows, so the two
            // never deadlock; a fenced row's composite is NULL.
            complete_many: Stmt::new(
                &[TEXT_ARRAY, TEXT_ARRAY, INT8_ARRAY, TEXT_ARRAY, TEXT_ARRAY, INT8_ARRAY],
                format!(
                    "SELECT now(), ord, record_send({s}.complete(namespace, key, token, kind, json,
                        retain_ms))
                    FROM (
                        SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[],
                            $5::text[], $6::int8[])
                            WITH ORDINALITY AS t(namespace, key, token, kind, json, retain_ms, ord)
                        ORDER BY namespace, key
                        OFFSET 0
                    ) i"
                ),
            ),
            release: Stmt::new(
                &[TEXT, TEXT, INT8],
                format!(
                "WITH del AS (
                    DELETE FROM {s}.executions
                    -- clock_timestamp(), not now(): a release that waited on a row lock must
                    -- not apply to a lease that expired meanwhile (L1).
                    WHERE namespace = $1 AND key = $2 AND fencing_token = $3 AND state = 'running'
                      AND lease_expires_at > clock_timestamp()
                    RETURNING namespace, key, fencing_token, owner_host, owner_pid, owner_attempt,
                        waiters
                ), {ev}, {notify_del}
                SELECT (SELECT count(*) FROM notified) FROM del",
                ev = event(s, "'released'", "del", By::Owner),
                notify_del = notify("del")
                ),
            ),
            mark_uncertain: Stmt::new(
                &[TEXT, TEXT, INT8, TEXT],
                format!(
                "WITH upd AS (
                    UPDATE {s}.executions
                    SET state = 'uncertain', reason = $4, updated_at = now(),
                        lease_expires_at = LEAST(lease_expires_at, now())
                    WHERE namespace = $1 AND key = $2 AND fencing_token = $3
                      AND state = 'running'
                    RETURNING {COLS}, waiters
                ), {ev}, {notify_upd}
                SELECT now(), {NAMES}, (SELECT count(*) FROM notified) FROM upd",
                ev = event(s, "'uncertain'", "upd", By::OwnerBecause),
                notify_upd = notify("upd")
                ),
            ),
            load: Stmt::new(
                &[TEXT, TEXT],
                format!(
                "SELECT now(), {COLS} FROM {s}.executions WHERE namespace = $1 AND key = $2"
                ),
            ),
            // The age orders take the cursor's created_at as a seventh parameter (a statement
            // is prepared untyped, so each parameter it has must appear in it).
            list: [
                ("namespace, key", "(namespace, key) > ($2, $3)"),
                ("created_at, namespace, key", "(created_at, namespace, key) > ($7, $2, $3)"),
                (
                    "created_at DESC, namespace DESC, key DESC",
                    "(created_at, namespace, key) < ($7, $2, $3)",
                ),
            ]
            .map(|(order, after)| {
                let types: &'static [Type] = if after.contains("$7") {
                    &[TEXT, TEXT, TEXT, TEXT, TEXT, INT8, TIMESTAMPTZ]
                } else {
                    &[TEXT, TEXT, TEXT, TEXT, TEXT, INT8]
                };
                Stmt::new(
                    types,
                    format!(
                        "SELECT now(), {COLS} FROM {s}.executions
                         WHERE ($1::text IS NULL OR namespace = $1)
                           AND ($2::text IS NULL OR {after})
                           AND ($4::text IS NULL OR {DERIVED_STATE} = $4::text)
                           AND ($5::text IS NULL OR left(key, length($5)) = $5)
                         ORDER BY {order}
                         LIMIT $6"
                    ),
                )
            }),
            counts: Stmt::new(
                &[],
                format!(
                    "SELECT namespace, {DERIVED_STATE} AS s, count(*) FROM {s}.executions
                     GROUP BY namespace, s ORDER BY namespace, s"
                ),
            ),
            recent_events: Stmt::new(
                &[INT8],
                format!(
                    "SELECT event, fencing_token, owner_host, owner_pid, owner_attempt, actor,
                        reason, at, namespace, key
                     FROM {s}.events ORDER BY id DESC LIMIT $1"
                ),
            ),
            history: Stmt::new(
                &[TEXT, TEXT, INT8],
                format!(
                "SELECT event, fencing_token, owner_host, owner_pid, owner_attempt, actor, reason, at
                 FROM {s}.events WHERE namespace = $1 AND key = $2 ORDER BY id LIMIT $3"
                ),
            ),
            reconcile: Stmt::new(
                &[TEXT, TEXT, TEXT, TEXT, BOOL],
                format!(
                "WITH cur AS (
                    SELECT {COLS} FROM {s}.executions WHERE namespace = $1 AND key = $2
                ), upd AS (
                    UPDATE {s}.executions
                    SET state = 'reconciling', fencing_token = nextval('{s}.fencing_tokens'),
                        operator = $3, reason = 'reconciling', updated_at = now(),
                        lease_expires_at = LEAST(lease_expires_at, now())
                    -- mirrors transition::may_reconcile
                    WHERE namespace = $1 AND key = $2
                      AND (state = 'uncertain'
                           OR (state = 'running' AND lease_expires_at <= now())
                           OR ($5::bool AND state = 'reconciling'))
                    RETURNING {COLS}
                ), {ev}
                SELECT now(), true, {NAMES} FROM upd
                UNION ALL
                SELECT now(), false, {NAMES} FROM cur WHERE NOT EXISTS (SELECT 1 FROM upd)",
                ev = event(s, "'reconciling'", "upd", By::Operator)
                ),
            ),
            resolve_complete: Stmt::new(
                &[TEXT, TEXT, TEXT, TEXT, TEXT, TEXT, INT8],
                format!(
                "WITH cur AS (
                    SELECT {COLS} FROM {s}.executions WHERE namespace = $1 AND key = $2
                ), upd AS (
                    UPDATE {s}.executions
                    SET state = 'completed', result_kind = $5, result = $6::text::json,
                        reason = NULL, operator = $3, completed_at = now(), updated_at = now()
                    -- mirrors transition::may_resolve
                    WHERE namespace = $1 AND key = $2 AND state = 'reconciling'
                      AND ($7::int8 IS NULL OR fencing_token = $7::int8)
                    RETURNING {COLS}, waiters
                ), {ev}, {notify_upd}
                SELECT now(), true, {NAMES}, (SELECT count(*) FROM notified) FROM upd
                UNION ALL
                SELECT now(), false, {NAMES}, 0 FROM cur WHERE NOT EXISTS (SELECT 1 FROM upd)",
                ev = event(s, "'resolved'", "upd", By::Operator),
                notify_upd = notify("upd")
                ),
            ),
            resolve_reset: Stmt::new(
                &[TEXT, TEXT, TEXT, TEXT, INT8],
                format!(
                "WITH cur AS (
                    SELECT {COLS} FROM {s}.executions WHERE namespace = $1 AND key = $2
                ), del AS (
                    DELETE FROM {s}.executions
                    -- mirrors transition::may_resolve
                    WHERE namespace = $1 AND key = $2 AND state = 'reconciling'
                      AND ($5::int8 IS NULL OR fencing_token = $5::int8)
                    RETURNING namespace, key, fencing_token, waiters
                ), {ev}, {notify_del}
                SELECT now(), true, {NAMES}, (SELECT count(*) FROM notified) FROM cur
                WHERE EXISTS (SELECT 1 FROM del)
                UNION ALL
                SELECT now(), false, {NAMES}, 0 FROM cur WHERE NOT EXISTS (SELECT 1 FROM del)",
                ev = event(s, "'reset'", "del", By::Operator),
                notify_del = notify("del")
                ),
            ),
            forget: Stmt::new(
                &[TEXT, TEXT, TEXT, TEXT],
                format!(
                "WITH cur AS (
                    SELECT {COLS} FROM {s}.executions WHERE namespace = $1 AND key = $2
                ), del AS (
                    DELETE FROM {s}.executions
                    -- mirrors transition::may_forget
                    WHERE namespace = $1 AND key = $2 AND state = 'completed'
                    RETURNING namespace, key, fencing_token
                ), {ev}
                SELECT now(), EXISTS (SELECT 1 FROM del), {NAMES} FROM cur",
                ev = event(s, "'forgotten'", "del", By::Operator)
                ),
            ),
            prune: Stmt::new(
                &[INT8, INT8, TEXT],
                format!(
                "WITH doomed AS (
                    -- mirrors transition::may_prune
                    SELECT namespace, key FROM {s}.executions
                    WHERE state = 'completed'
                      AND ($3::text IS NULL OR namespace = $3::text)
                      AND (retain_until <= now()
                           OR ($1::int8 IS NOT NULL
                               AND completed_at <= now() - $1::int8 * interval '1 millisecond'))
                    LIMIT $2
                    FOR UPDATE SKIP LOCKED
                ), del AS (
                    DELETE FROM {s}.executions e USING doomed d
                    WHERE e.namespace = d.namespace AND e.key = d.key AND e.state = 'completed'
                    RETURNING e.namespace, e.key, e.fencing_token
                ), gone AS (
                    DELETE FROM {s}.events ev USING del
                    WHERE ev.namespace = del.namespace AND ev.key = del.key
                ), {ev}
                SELECT count(*) FROM del",
                ev = event(s, "'pruned'", "del", By::Nobody)
                ),
            ),
            add_waiter: Stmt::new(
                &[TEXT, TEXT],
                format!(
                "UPDATE {s}.executions SET waiters = waiters + 1
                 WHERE namespace = $1 AND key = $2 AND state = 'running'
                   AND lease_expires_at > now()
                 RETURNING fencing_token"
                ),
            ),
            remove_waiter: Stmt::new(
                &[TEXT, TEXT, INT8],
                format!(
                "UPDATE {s}.executions SET waiters = greatest(waiters - 1, 0)
                 WHERE namespace = $1 AND key = $2 AND fencing_token = $3 AND waiters > 0"
                ),
            ),
            stats: Stmt::new(
                &[],
                format!(
                "WITH u AS (
                    SELECT namespace, key,
                        CASE WHEN state = 'running' THEN lease_expires_at ELSE updated_at END
                            AS since
                    FROM {s}.executions
                    WHERE {DERIVED_STATE} IN ('uncertain', 'reconciling')
                 )
                 SELECT now(), (SELECT count(*) FROM u), o.since, o.namespace, o.key
                 FROM (SELECT 1) one
                 LEFT JOIN (SELECT * FROM u ORDER BY since, namespace, key LIMIT 1) o ON true"
                ),
            ),
            channel,
        }
    }
}
