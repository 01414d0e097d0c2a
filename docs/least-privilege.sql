-- The privileges of a role that runs Sentinel (once, heartbeats, waits, every operator command)
-- but cannot create or change its schema. Run as the schema's owner, after `sentinel init`.
-- Replace {schema} (default: sentinel) and {role}. docs/postgres.md explains each line; the test
-- `a_role_without_create_runs_everything_but_init` applies this very file.
GRANT USAGE ON SCHEMA {schema} TO {role};
GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.executions, {schema}.events TO {role};
GRANT SELECT ON {schema}.migrations TO {role};
GRANT USAGE ON SEQUENCE {schema}.fencing_tokens TO {role};
