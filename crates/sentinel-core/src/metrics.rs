//! Metrics through the `metrics` facade (feature `metrics`); no-ops without it.
//!
//! Counters: `sentinel_executions_total`, `sentinel_replays_total`, `sentinel_busy_total`,
//! `sentinel_uncertain_total`, `sentinel_lease_lost_total`, `sentinel_claim_retries_total`,
//! `sentinel_abandoned_claims_total` (claims released because their caller went away).
//! Histogram: `sentinel_store_seconds{op}`. Gauges: `sentinel_uncertain_records`,
//! `sentinel_oldest_uncertain_seconds`.

use std::time::Duration;

#[cfg(feature = "metrics")]
mod imp {
    use std::time::Duration;

    pub(crate) fn count(name: &'static str) {
        metrics::counter!(name).increment(1);
    }

    pub(crate) fn store_latency(op: &'static str, elapsed: Duration) {
        metrics::histogram!("sentinel_store_seconds", "op" => op).record(elapsed.as_secs_f64());
    }

    #[allow(clippy::cast_precision_loss)]
    pub(crate) fn uncertain(count: u64, oldest: Option<Duration>) {
        metrics::gauge!("sentinel_uncertain_records").set(count as f64);
        metrics::gauge!("sentinel_oldest_uncertain_seconds")
            .set(oldest.map_or(0.0, |d| d.as_secs_f64()));
    }
}

#[cfg(not(feature = "metrics"))]
mod imp {
    use std::time::Duration;

    pub(crate) fn count(_name: &'static str) {}
    pub(crate) fn store_latency(_op: &'static str, _elapsed: Duration) {}
    pub(crate) fn uncertain(_count: u64, _oldest: Option<Duration>) {}
}

pub(crate) fn execution() {
    imp::count("sentinel_executions_total");
}
pub(crate) fn replay() {
    imp::count("sentinel_replays_total");
}
pub(crate) fn busy() {
    imp::count("sentinel_busy_total");
}
pub(crate) fn uncertain() {
    imp::count("sentinel_uncertain_total");
}
pub(crate) fn lease_lost() {
    imp::count("sentinel_lease_lost_total");
}
pub(crate) fn execution_abandoned() {
    imp::count("sentinel_abandoned_claims_total");
}
pub(crate) fn claim_retry() {
    imp::count("sentinel_claim_retries_total");
}
pub(crate) fn store_latency(op: &'static str, elapsed: Duration) {
    imp::store_latency(op, elapsed);
}
pub(crate) fn uncertain_gauge(count: u64, oldest: Option<Duration>) {
    imp::uncertain(count, oldest);
}
