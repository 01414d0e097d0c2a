-- Sentinel schema, version 2: the claim as a function that reads first and writes only on a
-- miss. A single statement with data-modifying CTEs plans and initialises its INSERT nodes on
-- every call, so replaying a completed key cost the server 4.4 times a keyed SELECT; this
-- function's replay runs one index scan (BENCHMARKS.md, per-operation breakdown).
--
-- The claimed row carries the caller's attempt id, which is how the caller tells "acquired"
-- from "existing". No row back means the key was taken and removed again between the
-- reads: the caller claims again.
CREATE FUNCTION {schema}.claim(p_namespace text, p_key text, p_host text, p_pid bigint,
    p_attempt text, p_fingerprint bytea, p_ttl_ms bigint, p_hard_ms bigint)
RETURNS SETOF {schema}.executions
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY SELECT * FROM {schema}.executions e
        WHERE e.namespace = p_namespace AND e.key = p_key;
    IF FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY WITH ins AS (
        INSERT INTO {schema}.executions AS e (namespace, key, state, fencing_token, owner_host,
            owner_pid, owner_attempt, fingerprint, lease_expires_at, hard_expires_at)
        VALUES (p_namespace, p_key, 'running', nextval('{schema}.fencing_tokens'), p_host,
            p_pid, p_attempt, p_fingerprint, now() + p_ttl_ms * interval '1 millisecond',
            now() + p_hard_ms * interval '1 millisecond')
        ON CONFLICT DO NOTHING
        RETURNING e.*
    ), ev AS (
        INSERT INTO {schema}.events (namespace, key, event, fencing_token, owner_host,
            owner_pid, owner_attempt)
        SELECT i.namespace, i.key, 'acquired', i.fencing_token, i.owner_host, i.owner_pid,
            i.owner_attempt FROM ins i
    )
    SELECT * FROM ins;
    IF FOUND THEN
        RETURN;
    END IF;
    -- A concurrent insert won the conflict check and has committed (ON CONFLICT waited for
    -- it): this statement's fresh snapshot sees its row.
    RETURN QUERY SELECT * FROM {schema}.executions e
        WHERE e.namespace = p_namespace AND e.key = p_key;
END
$$;
