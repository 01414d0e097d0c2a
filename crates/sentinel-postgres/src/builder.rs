//! [`PgStoreBuilder`]: from a URL, a driver config or the application's own pool, validated
//! in `build()`.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use sentinel_core::Error;
use tokio_postgres::NoTls;

use crate::PgStore;
#[cfg(feature = "rustls")]
use crate::connect::default_rustls;
use crate::connect::{PgConnector, Tls};
use crate::error::{Phase, map};
use sentinel_core::redact_url;

/// Builds a [`PgStore`]: from a URL, a `tokio_postgres::Config`, or the application's own
/// deadpool pool.
#[must_use]
pub struct PgStoreBuilder {
    config: Option<tokio_postgres::Config>,
    url_error: Option<String>,
    pool: Option<Pool>,
    schema: String,
    pool_size: usize,
    statement_timeout: Duration,
    allow_async_commit: bool,
    unnamed: bool,
    #[cfg(feature = "rustls")]
    tls: Option<rustls::ClientConfig>,
}

impl Default for PgStoreBuilder {
    fn default() -> Self {
        Self {
            config: None,
            url_error: None,
            pool: None,
            schema: "sentinel".into(),
            pool_size: 16,
            statement_timeout: Duration::from_secs(30),
            allow_async_commit: false,
            unnamed: false,
            #[cfg(feature = "rustls")]
            tls: None,
        }
    }
}

impl std::fmt::Debug for PgStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStoreBuilder")
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

impl PgStoreBuilder {
    /// Connects with a `postgres://` URL (or a key=value connection string).
    pub fn url(mut self, url: &str) -> Self {
        use tokio_postgres::config::Host;
        match tokio_postgres::Config::from_str(url) {
            // The driver splits the userinfo at its first '@': a password holding one would be
            // taken for part of the host, and shown wherever the host is.
            Ok(c)
                if c.get_hosts()
                    .iter()
                    .any(|h| matches!(h, Host::Tcp(name) if name.contains('@'))) =>
            {
                self.url_error = Some(format!(
                    "invalid database URL {}: a host name cannot hold '@'; write an '@' in the \
                     password as %40",
                    redact_url(url)
                ));
            }
            Ok(c) => self.config = Some(c),
            Err(e) => {
                self.url_error = Some(format!("invalid database URL {}: {e}", redact_url(url)));
            }
        }
        self
    }

    /// Connects with a driver config.
    pub fn config(mut self, config: tokio_postgres::Config) -> Self {
        self.config = Some(config);
        self
    }

    /// Uses the application's pool for claims and completions. Give a config too so Sentinel can
    /// open its own heartbeat and `LISTEN` connections; without one, the heartbeat keeps one
    /// pooled connection for itself and waiters poll. That pooled connection is driven by the
    /// runtime that opened it, possibly the application's: a blocked application runtime then
    /// stalls renewals. `synchronous_commit` is checked on one connection, at build time.
    pub fn pool(mut self, pool: Pool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// The schema holding Sentinel's tables (default `sentinel`).
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Size of the pool Sentinel builds (default 16); ignored with [`PgStoreBuilder::pool`].
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// How long to wait for a statement's reply before treating it as lost (default 30 s).
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// Accepts a pool whose sessions run with `synchronous_commit = off` (a crash can then lose
    /// a claim that was reported committed).
    pub fn allow_async_commit(mut self, allow: bool) -> Self {
        self.allow_async_commit = allow;
        self
    }

    /// The rustls configuration for TLS connections (default: the Mozilla roots). TLS is used
    /// unless the URL says `sslmode=disable`.
    #[cfg(feature = "rustls")]
    pub fn tls(mut self, config: rustls::ClientConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// Runs every statement unnamed (parse, bind and execute in one round trip) instead of
    /// caching prepared statements per connection: for PgBouncer in transaction mode before
    /// 1.21, which cannot keep prepared statements. Costs the server a parse per statement.
    pub fn unnamed_statements(mut self, unnamed: bool) -> Self {
        self.unnamed = unnamed;
        self
    }

    /// Validates the settings, connects once and checks `synchronous_commit`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a bad URL, schema name, pool size or timeout, a missing
    /// connection source, TLS required without the `rustls` feature, or a pool that runs with
    /// `synchronous_commit = off` unless allowed; [`Error::Store`] when the server cannot be
    /// reached.
    pub async fn build(self) -> Result<PgStore, Error> {
        if let Some(e) = self.url_error {
            return Err(Error::invalid_input(e));
        }
        sentinel_core::validate_identifier(&self.schema)?;
        // The NOTIFY channel is `sentinel_<schema>` and channel names are limited to 63 bytes.
        if self.schema.len() > 48 {
            return Err(Error::invalid_input(format!(
                "schema name `{}` is longer than 48 bytes",
                self.schema
            )));
        }
        if self.pool_size == 0 {
            return Err(Error::invalid_input("pool size must be positive"));
        }
        if self.statement_timeout.is_zero() {
            return Err(Error::invalid_input("statement timeout must be positive"));
        }
        // TLS when the URL requires it (the certificate is verified, unlike libpq's `require`),
        // or when a TLS config was given and the URL does not disable it.
        let ssl_mode = self
            .config
            .as_ref()
            .map(tokio_postgres::Config::get_ssl_mode);
        let required = ssl_mode == Some(tokio_postgres::config::SslMode::Require);
        #[cfg(feature = "rustls")]
        let tls = {
            let preferred = ssl_mode == Some(tokio_postgres::config::SslMode::Prefer);
            match self.tls {
                Some(config) if required || preferred => {
                    Tls::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new(config))
                }
                None if required => Tls::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new(
                    default_rustls()?,
                )),
                _ => Tls::None,
            }
        };
        #[cfg(not(feature = "rustls"))]
        let tls = if required {
            return Err(Error::invalid_input(
                "sslmode=require needs TLS support: build with the `rustls` feature",
            ));
        } else {
            Tls::None
        };
        let connector = self.config.map(|mut config| {
            let options = match config.get_options() {
                Some(o) if !o.is_empty() => format!("{o} -c synchronous_commit=on"),
                _ => "-c synchronous_commit=on".to_owned(),
            };
            config.options(&options);
            if config.get_connect_timeout().is_none() {
                config.connect_timeout(Duration::from_secs(10));
            }
            config.keepalives(true);
            config.keepalives_idle(Duration::from_secs(30));
            PgConnector { config, tls }
        });
        let (pool, own_pool) = match (self.pool, &connector) {
            (Some(pool), _) => (pool, false),
            (None, Some(c)) => {
                let manager_config = ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                };
                let manager = match &c.tls {
                    Tls::None => Manager::from_config(c.config.clone(), NoTls, manager_config),
                    #[cfg(feature = "rustls")]
                    Tls::Rustls(tls) => {
                        Manager::from_config(c.config.clone(), tls.clone(), manager_config)
                    }
                };
                // Bounds the whole connection set-up (TLS, start-up, authentication), which the
                // driver's connect timeout does not: a server that accepts and never answers.
                let pool = Pool::builder(manager)
                    .max_size(self.pool_size)
                    .runtime(deadpool_postgres::Runtime::Tokio1)
                    .create_timeout(c.config.get_connect_timeout().copied())
                    .build()
                    .map_err(|e| Error::invalid_input(format!("cannot build pool: {e}")))?;
                (pool, true)
            }
            (None, None) => {
                return Err(Error::invalid_input(
                    "PgStore needs a URL, a config or a pool",
                ));
            }
        };
        let store = PgStore::new(
            self.schema,
            pool,
            connector,
            self.statement_timeout,
            self.unnamed,
        );
        let checked = store.within("connect", async |client| {
            if own_pool {
                return Ok(None);
            }
            // The simple protocol: no prepared statement, whatever the pooler.
            let messages = client
                .simple_query("SHOW synchronous_commit")
                .await
                .map_err(|e| map(Phase::Execute, "check synchronous_commit", e))?;
            Ok(Some(messages))
        });
        if let Some(messages) = checked.await? {
            let setting = messages
                .iter()
                .find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                    _ => None,
                })
                .unwrap_or_default();
            if setting == "off" && !self.allow_async_commit {
                return Err(Error::invalid_input(
                    "the pool's sessions run with synchronous_commit = off: a crash could lose a \
                     claim that was reported committed; set it on, or allow it explicitly",
                ));
            }
        }
        Ok(store)
    }
}
