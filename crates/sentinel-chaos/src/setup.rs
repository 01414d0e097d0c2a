//! The isolated store of one run: a fresh SQLite file, or a fresh schema on the PostgreSQL test
//! server with a cutting proxy in front of it; and restarting that server.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result, bail};
use sentinel::{OpenOptions, SchemaSetup, Sentinel, StoreErrorKind};
use sentinel_testkit::proxy::Proxy;

/// Which store a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum StoreKind {
    /// A SQLite file shared by the workers (WAL, one host).
    Sqlite,
    /// The PostgreSQL test server (`SENTINEL_TEST_DATABASE_URL`), behind a proxy that cuts
    /// connections after commit.
    Postgres,
}

impl StoreKind {
    /// The lowercase name used in the summary.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
        }
    }
}

/// The store could not be reached at set-up: nothing ran (exit status 69).
#[derive(Debug)]
pub(crate) struct Unreachable(pub(crate) String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unreachable {}

/// A store ready for a run.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// Which store.
    pub(crate) kind: StoreKind,
    /// The URL the workers open (through the proxy for PostgreSQL).
    pub(crate) worker_url: String,
    /// The URL the harness reads the records through afterwards (never through the proxy).
    pub(crate) direct_url: String,
    /// The run's PostgreSQL schema.
    pub(crate) pg_schema: Option<String>,
    /// The proxy in front of PostgreSQL; it runs on the harness's runtime until dropped.
    pub(crate) proxy: Option<Proxy>,
}

impl Prepared {
    /// Creates the run's store in `dir` (SQLite) or a fresh schema (PostgreSQL), migrated.
    pub(crate) async fn create(kind: StoreKind, dir: &Path) -> Result<Self> {
        match kind {
            StoreKind::Sqlite => {
                let path = dir.join("sentinel.db");
                let path = path
                    .to_str()
                    .context("the temporary directory is not UTF-8")?;
                let url = format!("sqlite://{path}");
                migrate(&url, None).await?;
                Ok(Self {
                    kind,
                    worker_url: url.clone(),
                    direct_url: url,
                    pg_schema: None,
                    proxy: None,
                })
            }
            StoreKind::Postgres => {
                let url = sentinel_testkit::test_database_url();
                let schema = sentinel_testkit::unique_name("sentinel_chaos").to_lowercase();
                migrate(&url, Some(&schema)).await?;
                let upstream = server_addr(&url).await?;
                let proxy = Proxy::start(upstream).await.context("starting the proxy")?;
                Ok(Self {
                    kind,
                    worker_url: url_via(&url, proxy.addr())?,
                    direct_url: url,
                    pg_schema: Some(schema),
                    proxy: Some(proxy),
                })
            }
        }
    }

    /// Opens a Sentinel over the store directly (for the final reading of the records).
    pub(crate) async fn open_direct(&self) -> Result<Sentinel> {
        let mut options = OpenOptions::new();
        if let Some(schema) = &self.pg_schema {
            options = options.pg_schema(schema);
        }
        let store = sentinel::open(&self.direct_url, &options)
            .await
            .context("opening the store to check it")?;
        Sentinel::builder(store)
            .build()
            .context("starting Sentinel to check the store")
    }

    /// Drops the run's PostgreSQL schema, best effort (the SQLite file goes with its directory).
    pub(crate) async fn drop_schema(&self) {
        let Some(schema) = &self.pg_schema else {
            return;
        };
        match tokio_postgres::connect(&self.direct_url, tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                let driver = tokio::spawn(connection);
                // The name is ours, made of lowercase letters, digits and `_`.
                let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
                if let Err(e) = client.batch_execute(&sql).await {
                    eprintln!("sentinel-chaos: could not drop schema {schema}: {e}");
                }
                drop(client);
                let _ = driver.await;
            }
            Err(e) => eprintln!("sentinel-chaos: could not drop schema {schema}: {e}"),
        }
    }
}

/// Opens the store once to create its schema; an unreachable store is [`Unreachable`].
async fn migrate(url: &str, schema: Option<&str>) -> Result<()> {
    let mut options = OpenOptions::new().schema(SchemaSetup::Migrate);
    if let Some(schema) = schema {
        options = options.pg_schema(schema);
    }
    match sentinel::open(url, &options).await {
        Ok(_) => Ok(()),
        Err(sentinel::Error::Store(e)) if e.kind() == StoreErrorKind::Unavailable => {
            Err(Unreachable(format!("{}: {e}", sentinel::redact_url(url))).into())
        }
        Err(e) => Err(e).with_context(|| format!("setting up {}", sentinel::redact_url(url))),
    }
}

/// The server's address, for the proxy (`localhost` read as 127.0.0.1, where the test server
/// listens).
async fn server_addr(url: &str) -> Result<SocketAddr> {
    use tokio_postgres::config::Host;
    let config: tokio_postgres::Config = url.parse().context("parsing the PostgreSQL URL")?;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) if h != "localhost" => h.clone(),
        Some(Host::Tcp(_)) | None => "127.0.0.1".to_owned(),
        Some(_) => bail!("the chaos proxy needs a TCP host, not a Unix socket"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    tokio::net::lookup_host((host.as_str(), port))
        .await
        .with_context(|| format!("resolving {host}"))?
        .next()
        .with_context(|| format!("{host} resolves to no address"))
}

/// `url` with its host and port replaced by `addr`; user, password, database and parameters
/// are kept as written.
pub(crate) fn url_via(url: &str, addr: SocketAddr) -> Result<String> {
    let (scheme, rest) = url
        .split_once("://")
        .context("a PostgreSQL URL starts with postgres://")?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.contains(',') {
        bail!("the chaos proxy needs a single-host URL");
    }
    let userinfo = authority
        .rsplit_once('@')
        .map_or(String::new(), |(u, _)| format!("{u}@"));
    Ok(format!("{scheme}://{userinfo}{addr}{tail}"))
}

/// Restarts the local PostgreSQL cluster (`pg_ctlcluster <version> main restart -m fast`, the
/// version read from `/etc/postgresql`). Blocking; run it off the runtime.
pub(crate) fn restart_postgres() -> Result<()> {
    let mut versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .context("reading /etc/postgresql")?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    versions.sort_by_key(|v| {
        v.split('.')
            .map(|p| p.parse::<u64>().unwrap_or(0))
            .collect::<Vec<_>>()
    });
    let version = versions.last().context("no cluster in /etc/postgresql")?;
    let output = std::process::Command::new("pg_ctlcluster")
        .args([
            "--skip-systemctl-redirect",
            version,
            "main",
            "restart",
            "-m",
            "fast",
        ])
        .output()
        .context("running pg_ctlcluster")?;
    if !output.status.success() {
        bail!(
            "pg_ctlcluster {version} main restart failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_via_replaces_only_host_and_port() {
        let addr: SocketAddr = "127.0.0.1:6000".parse().unwrap();
        assert_eq!(
            url_via("postgres://postgres@127.0.0.1:5432/test", addr).unwrap(),
            "postgres://postgres@127.0.0.1:6000/test"
        );
        assert_eq!(
            url_via(
                "postgresql://u:p%40ss@db.example:5433/app?sslmode=disable",
                addr
            )
            .unwrap(),
            "postgresql://u:p%40ss@127.0.0.1:6000/app?sslmode=disable"
        );
        assert_eq!(
            url_via("postgres://localhost", addr).unwrap(),
            "postgres://127.0.0.1:6000"
        );
        assert!(url_via("postgres://a:1,b:2/db", addr).is_err());
    }
}
