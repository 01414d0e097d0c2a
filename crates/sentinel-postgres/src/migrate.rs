//! Embedded, versioned, checksummed migrations, run under an advisory lock so that any number of
//! processes may call `migrate` at once.

use sentinel_core::StoreError;

use crate::error::{Phase, map};

/// One embedded migration.
struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "claim and completion functions",
        sql: include_str!("../migrations/0002_functions.sql"),
    },
];

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i32 = 2;

/// FNV-1a 64 of the migration text: detects a migration edited after it was applied.
fn checksum(sql: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sql.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

pub(crate) async fn run(
    client: &mut tokio_postgres::Client,
    schema: &str,
) -> Result<(), StoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| map(Phase::Connect, "migrate", e))?;
    let exec = |e| map(Phase::Execute, "migrate", e);
    // Serialises concurrent migrators of this schema; released at commit.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('sentinel-migrate:' || $1::text, 0))",
        &[&schema],
    )
    .await
    .map_err(exec)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.migrations (
             version    integer     PRIMARY KEY,
             name       text        NOT NULL,
             checksum   text        NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await
    .map_err(exec)?;
    let applied = tx
        .query(
            &format!("SELECT version, checksum FROM {schema}.migrations ORDER BY version"),
            &[],
        )
        .await
        .map_err(exec)?;
    for row in &applied {
        let version: i32 = row.get(0);
        let sum: String = row.get(1);
        match MIGRATIONS.iter().find(|m| m.version == version) {
            None => {
                return Err(StoreError::schema(format!(
                    "schema `{schema}` is at version {version}, newer than this build knows \
                         ({SCHEMA_VERSION}); upgrade Sentinel"
                )));
            }
            Some(m) if checksum(m.sql) != sum => {
                return Err(StoreError::schema(format!(
                    "migration {version} ({}) of schema `{schema}` was applied with another \
                         text (checksum {sum}, expected {})",
                    m.name,
                    checksum(m.sql)
                )));
            }
            Some(_) => {}
        }
    }
    for m in MIGRATIONS {
        if applied.iter().any(|r| r.get::<_, i32>(0) == m.version) {
            continue;
        }
        tx.batch_execute(&m.sql.replace("{schema}", schema))
            .await
            .map_err(exec)?;
        tx.execute(
            &format!(
                "INSERT INTO {schema}.migrations (version, name, checksum) VALUES ($1, $2, $3)"
            ),
            &[&m.version, &m.name, &checksum(m.sql)],
        )
        .await
        .map_err(exec)?;
        tracing::info!(
            schema,
            version = m.version,
            name = m.name,
            "applied migration"
        );
    }
    tx.commit().await.map_err(exec)?;
    Ok(())
}

/// Checks that the schema exists at the version this build knows.
pub(crate) async fn check(client: &tokio_postgres::Client, schema: &str) -> Result<(), StoreError> {
    // Unnamed statements (query_typed): safe behind any pooler.
    let name = format!("{schema}.migrations");
    let rows = client
        .query_typed(
            "SELECT to_regclass($1::text) IS NOT NULL",
            &[(&name, tokio_postgres::types::Type::TEXT)],
        )
        .await
        .map_err(|e| map(Phase::Execute, "schema check", e))?;
    let exists = rows.first().is_some_and(|r| r.get::<_, bool>(0));
    if !exists {
        return Err(StoreError::schema(format!(
            "the Sentinel schema `{schema}` does not exist; run `sentinel init` or `Sentinel::migrate()`"
        )));
    }
    let version: Option<i32> = client
        .query_typed(
            &format!("SELECT max(version) FROM {schema}.migrations"),
            &[],
        )
        .await
        .map_err(|e| map(Phase::Execute, "schema check", e))?
        .first()
        .and_then(|r| r.get(0));
    match version {
        Some(v) if v == SCHEMA_VERSION => Ok(()),
        Some(v) if v > SCHEMA_VERSION => Err(StoreError::schema(format!(
            "schema `{schema}` is at version {v}, newer than this build knows ({SCHEMA_VERSION}); upgrade Sentinel"
        ))),
        _ => Err(StoreError::schema(format!(
            "schema `{schema}` is not up to date; run `sentinel init` or `Sentinel::migrate()`"
        ))),
    }
}
