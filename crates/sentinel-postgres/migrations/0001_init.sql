-- Sentinel schema, version 1. `{schema}` is replaced by the validated schema name.

-- Fencing tokens: one monotonic source per store. CACHE 1 so that tokens drawn by different
-- sessions are ordered by the time they were drawn.
CREATE SEQUENCE {schema}.fencing_tokens AS bigint START 1 CACHE 1;

CREATE TABLE {schema}.executions (
    namespace        text        NOT NULL,
    key              text        NOT NULL,
    state            text        NOT NULL
                     CHECK (state IN ('running', 'uncertain', 'completed', 'reconciling')),
    fencing_token    bigint      NOT NULL,
    owner_host       text,
    owner_pid        bigint,
    owner_attempt    text,
    operator         text,
    fingerprint      bytea,
    lease_expires_at timestamptz,
    hard_expires_at  timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz,
    retain_until     timestamptz,
    reason           text,
    result_kind      text        CHECK (result_kind IN ('value', 'error')),
    -- json, not jsonb: jsonb rejects \u0000 and reorders keys.
    result           json,
    -- Callers blocked in `wait` on this key; a transition notifies only when there are some.
    waiters          integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (namespace, key)
);

CREATE INDEX executions_state ON {schema}.executions (state, lease_expires_at);
CREATE INDEX executions_retention ON {schema}.executions (retain_until) WHERE state = 'completed';

-- Append-only: one row per stored transition, written by the transition's own statement.
CREATE TABLE {schema}.events (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace     text        NOT NULL,
    key           text        NOT NULL,
    event         text        NOT NULL,
    fencing_token bigint      NOT NULL,
    owner_host    text,
    owner_pid     bigint,
    owner_attempt text,
    actor         text,
    reason        text,
    at            timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX events_key ON {schema}.events (namespace, key, id);
