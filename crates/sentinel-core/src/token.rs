//! Fencing tokens and owners.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A number handed out at every ownership change (claim, reconcile, forced reconcile). It strictly
/// increases per key across the record's whole history, deletions included. Every write is
/// conditional on it; pass it downstream so other systems can reject a stale writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FencingToken(u64);

impl FencingToken {
    /// Wraps a raw token value.
    pub const fn new(value: u64) -> Self {
        Self(value)
    }

    /// The raw value.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The value as a PostgreSQL `bigint`. Tokens come from a sequence that starts at 1, so they
    /// always fit; a value that does not is reported rather than wrapped.
    pub fn to_i64(self) -> Option<i64> {
        i64::try_from(self.0).ok()
    }

    /// Builds a token from a database `bigint`; negative values are rejected.
    pub fn from_i64(value: i64) -> Option<Self> {
        u64::try_from(value).ok().map(Self)
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One attempt at an execution: the host and process that claimed the key, and an id drawn at
/// random for this claim, so that a retried statement can recognise its own row.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Owner {
    /// Host name of the claiming process.
    pub host: String,
    /// Process id of the claiming process.
    pub pid: u32,
    /// Random id of this attempt (32 hex digits).
    pub attempt: String,
}

impl Owner {
    /// An owner for a fresh attempt by this process, with a new random attempt id.
    pub fn current() -> Self {
        Self {
            host: hostname(),
            pid: std::process::id(),
            attempt: random_attempt_id(),
        }
    }

    /// Builds an owner from the three columns SQL stores keep it in; `None` unless all three are
    /// set and the pid fits.
    pub fn from_columns(
        host: Option<String>,
        pid: Option<i64>,
        attempt: Option<String>,
    ) -> Option<Self> {
        match (host, pid.and_then(|p| u32::try_from(p).ok()), attempt) {
            (Some(host), Some(pid), Some(attempt)) => Some(Self { host, pid, attempt }),
            _ => None,
        }
    }

    /// Builds an owner from its stored parts.
    pub fn new(host: impl Into<String>, pid: u32, attempt: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            pid,
            attempt: attempt.into(),
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.pid)
    }
}

fn random_attempt_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // The OS source is unavailable (practically never on Linux): fall back to a hash of
        // time, pid and a counter, still unique per process.
        use std::hash::{BuildHasher, Hasher};
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        h.write_u32(std::process::id());
        bytes[..8].copy_from_slice(&h.finish().to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hostname() -> String {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
                    .filter(|h| !h.is_empty())
            })
            .unwrap_or_else(|| "localhost".to_owned())
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_unique() {
        let a = Owner::current();
        let b = Owner::current();
        assert_ne!(a.attempt, b.attempt);
        assert_eq!(a.attempt.len(), 32);
    }

    #[test]
    fn tokens_convert_without_wrapping() {
        assert_eq!(FencingToken::from_i64(-1), None);
        assert_eq!(FencingToken::new(u64::MAX).to_i64(), None);
        assert_eq!(FencingToken::from_i64(7).map(FencingToken::get), Some(7));
    }
}
