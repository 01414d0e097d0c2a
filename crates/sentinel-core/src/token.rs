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
        let pid = std::process::id();
        Self {
            host: hostname(),
            pid,
            attempt: random_attempt_id(pid),
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

/// A new attempt id: 32 hex digits, unique within the process and, through a random 128-bit
/// seed, across processes. Cheap on purpose: every `once` call makes one, replays included (the
/// claim carries it in case it inserts). One random draw per process instead of a `getrandom`
/// system call per call, and the digits written into one buffer.
///
/// The seed is drawn again when `pid` (this process's id) is not the one it was drawn for: a
/// forked child inherits its parent's seed and counter, and would otherwise make the same ids
/// as its parent, so that each would take the other's claim for its own.
fn random_attempt_id(pid: u32) -> String {
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
    /// The process the seed was drawn for; 0 before the first draw (no process has id 0).
    static SEEDED_FOR: AtomicU32 = AtomicU32::new(0);
    static HI: AtomicU64 = AtomicU64::new(0);
    static LO: AtomicU64 = AtomicU64::new(0);
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    if SEEDED_FOR.load(Ordering::Acquire) != pid {
        // Threads that race here each draw a seed; whichever halves win are random all the same.
        let [hi, lo] = process_seed();
        HI.store(hi, Ordering::Relaxed);
        LO.store(lo, Ordering::Relaxed);
        SEEDED_FOR.store(pid, Ordering::Release);
    }
    let (hi, lo) = (HI.load(Ordering::Relaxed), LO.load(Ordering::Relaxed));
    // splitmix64's finaliser is a bijection of u64: distinct counters give distinct ids, which
    // do not read as a sequence.
    let mut z = lo.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(32);
    for word in [hi, z] {
        for shift in (0..16).rev() {
            #[allow(clippy::cast_possible_truncation)] // a nibble: below 16
            let nibble = ((word >> (shift * 4)) & 0xf) as usize;
            out.push(char::from(HEX[nibble]));
        }
    }
    out
}

/// 128 random bits from the OS, or (if it has none, practically never on Linux) a hash of the
/// time and pid, still distinct per process.
fn process_seed() -> [u64; 2] {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        h.write_u32(std::process::id());
        let a = h.finish();
        h.write_u64(a);
        bytes[..8].copy_from_slice(&a.to_le_bytes());
        bytes[8..].copy_from_slice(&h.finish().to_le_bytes());
    }
    let (hi, lo) = bytes.split_at(8);
    [
        u64::from_le_bytes(hi.try_into().unwrap_or_default()),
        u64::from_le_bytes(lo.try_into().unwrap_or_default()),
    ]
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

    /// A forked child keeps its parent's memory: the same seed and counter. Seen from another
    /// process id, the seed is drawn again, so the child's ids are not its parent's.
    #[test]
    fn another_process_id_draws_a_new_seed() {
        let me = std::process::id();
        let parent = random_attempt_id(me);
        let child = random_attempt_id(me.wrapping_add(1).max(1));
        assert_ne!(parent[..16], child[..16], "the seed half must differ");
        let back = random_attempt_id(me);
        assert_ne!(back[..16], child[..16]);
    }

    #[test]
    fn tokens_convert_without_wrapping() {
        assert_eq!(FencingToken::from_i64(-1), None);
        assert_eq!(FencingToken::new(u64::MAX).to_i64(), None);
        assert_eq!(FencingToken::from_i64(7).map(FencingToken::get), Some(7));
    }
}
