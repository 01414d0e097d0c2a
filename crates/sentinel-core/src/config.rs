//! Settings: the limits every call is checked against, a Sentinel's [`Config`], and the
//! [`SentinelBuilder`] that validates it.

use std::time::Duration;

use crate::store::{Store, shared};
use crate::{Error, Sentinel};

/// Shortest accepted lease.
pub const MIN_TTL: Duration = Duration::from_millis(100);
/// Longest accepted lease.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest accepted hard ceiling, and the longest wait, shutdown timeout or cache age.
pub const MAX_HARD_TTL: Duration = Duration::from_secs(366 * 24 * 3600);
/// Longest accepted retention (and `older_than` for prune): 100 years.
pub const MAX_RETENTION: Duration = Duration::from_secs(100 * 366 * 24 * 3600);

/// Rejects durations that cannot be added to a clock reading.
pub(crate) fn at_most(what: &str, d: Duration, max: Duration) -> Result<(), Error> {
    if d > max {
        return Err(Error::invalid(format!(
            "{what} {d:?} is longer than the limit {max:?}"
        )));
    }
    Ok(())
}

/// The hard ceiling of a call that sets none: the larger of its ttl and 1 hour.
pub(crate) fn default_hard_ttl(ttl: Duration) -> Duration {
    ttl.max(Duration::from_secs(3600))
}

/// Checks a lease and its ceiling: the one place these limits are enforced.
///
/// # Errors
///
/// [`Error::InvalidInput`] when `ttl` is outside [`MIN_TTL`]..=[`MAX_TTL`], `hard_ttl` is shorter
/// than `ttl`, or `hard_ttl` is longer than [`MAX_HARD_TTL`].
pub fn validate_durations(ttl: Duration, hard_ttl: Duration) -> Result<(), Error> {
    if ttl < MIN_TTL || ttl > MAX_TTL {
        return Err(Error::invalid(format!(
            "ttl {ttl:?} is out of range ({MIN_TTL:?} to {MAX_TTL:?})"
        )));
    }
    if hard_ttl < ttl {
        return Err(Error::invalid(format!(
            "hard_ttl {hard_ttl:?} is shorter than ttl {ttl:?}"
        )));
    }
    at_most("hard_ttl", hard_ttl, MAX_HARD_TTL)
}

/// Settings of one Sentinel instance.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Namespace of calls that name none. Default `default`.
    pub namespace: String,
    /// Lease length of calls that set none. Default 10 s.
    pub ttl: Duration,
    /// Hard ceiling of calls that set none; `None`: the larger of the call's ttl and 1 hour.
    pub hard_ttl: Option<Duration>,
    /// How long completed records are kept before `prune` may delete them; `None` keeps them
    /// until forgotten (or pruned with `older_than`).
    pub retention: Option<Duration>,
    /// Largest result stored, in bytes of JSON. Default 1 MiB.
    pub max_result_bytes: usize,
    /// How long `shutdown` waits for in-flight executions. Default 30 s.
    pub shutdown_timeout: Duration,
    /// How often the uncertain-records gauge is refreshed (feature `metrics`). Default 30 s.
    pub stats_interval: Duration,
    /// How many completed results this instance keeps in memory to replay without a round trip.
    /// Default 0 (off).
    pub cache_capacity: usize,
    /// How long a cached result may be replayed from memory (never past its retention). A
    /// record forgotten by an operator can still be replayed from other processes' caches for
    /// this long. Default 60 s.
    pub cache_max_age: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            namespace: crate::DEFAULT_NAMESPACE.to_owned(),
            ttl: Duration::from_secs(10),
            hard_ttl: None,
            retention: None,
            max_result_bytes: 1024 * 1024,
            shutdown_timeout: Duration::from_secs(30),
            stats_interval: Duration::from_secs(30),
            cache_capacity: 0,
            cache_max_age: Duration::from_secs(60),
        }
    }
}

impl Config {
    /// Checks every field against the limits.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] naming the first field out of range.
    pub fn validate(&self) -> Result<(), Error> {
        crate::validate_namespace(&self.namespace)?;
        validate_durations(
            self.ttl,
            self.hard_ttl.unwrap_or_else(|| default_hard_ttl(self.ttl)),
        )?;
        at_most("shutdown_timeout", self.shutdown_timeout, MAX_HARD_TTL)?;
        at_most("cache_max_age", self.cache_max_age, MAX_HARD_TTL)?;
        at_most("stats_interval", self.stats_interval, MAX_HARD_TTL)?;
        if let Some(r) = self.retention {
            at_most("retention", r, MAX_RETENTION)?;
        }
        if self.stats_interval.is_zero() {
            return Err(Error::invalid("stats_interval must be positive"));
        }
        if self.max_result_bytes == 0 {
            return Err(Error::invalid("max_result_bytes must be positive"));
        }
        Ok(())
    }
}

/// Builds a [`Sentinel`] over a store; [`SentinelBuilder::build`] validates the settings.
#[derive(Debug)]
#[must_use = "a SentinelBuilder does nothing until `build` is called"]
pub struct SentinelBuilder {
    store: std::sync::Arc<dyn Store>,
    config: Config,
}

impl SentinelBuilder {
    pub(crate) fn new(store: impl Store) -> Self {
        Self {
            store: shared(store),
            config: Config::default(),
        }
    }

    /// Sets [`Config::namespace`].
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.config.namespace = namespace.into();
        self
    }

    /// Sets [`Config::ttl`].
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.config.ttl = ttl;
        self
    }

    /// Sets [`Config::hard_ttl`].
    pub fn hard_ttl(mut self, hard_ttl: Duration) -> Self {
        self.config.hard_ttl = Some(hard_ttl);
        self
    }

    /// Sets [`Config::retention`].
    pub fn retention(mut self, retention: Duration) -> Self {
        self.config.retention = Some(retention);
        self
    }

    /// Sets [`Config::max_result_bytes`].
    pub fn max_result_bytes(mut self, bytes: usize) -> Self {
        self.config.max_result_bytes = bytes;
        self
    }

    /// Sets [`Config::shutdown_timeout`].
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.config.shutdown_timeout = timeout;
        self
    }

    /// Keeps up to `capacity` completed results in memory, each for at most `max_age`, so that
    /// replays cost no round trip ([`Config::cache_capacity`], [`Config::cache_max_age`]).
    pub fn result_cache(mut self, capacity: usize, max_age: Duration) -> Self {
        self.config.cache_capacity = capacity;
        self.config.cache_max_age = max_age;
        self
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Validates the configuration and starts Sentinel's own thread (heartbeat).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a setting out of range ([`Config::validate`]);
    /// [`Error::Internal`] when Sentinel's thread cannot start.
    pub fn build(self) -> Result<Sentinel, Error> {
        self.config.validate()?;
        Sentinel::start(self.store, self.config)
    }
}
