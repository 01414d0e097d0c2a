//! Counters and histograms reach the `metrics` facade (feature `metrics`).
#![cfg(feature = "metrics")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use sentinel_core::store::{ClaimRequest, Store};
use sentinel_core::{MemoryStore, Outcome, Owner, Sentinel};

#[derive(Default)]
struct Counting {
    counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
    histograms: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

struct Records(Arc<AtomicU64>);

impl metrics::HistogramFn for Records {
    fn record(&self, _value: f64) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Counting {
    fn counter(&self, name: &str) -> u64 {
        self.counters
            .lock()
            .unwrap()
            .get(name)
            .map_or(0, |c| c.load(Ordering::SeqCst))
    }

    fn histogram(&self, key: &str) -> u64 {
        self.histograms
            .lock()
            .unwrap()
            .get(key)
            .map_or(0, |c| c.load(Ordering::SeqCst))
    }
}

impl Recorder for &'static Counting {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let c = self
            .counters
            .lock()
            .unwrap()
            .entry(key.name().to_owned())
            .or_default()
            .clone();
        Counter::from_arc(c)
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let op = key
            .labels()
            .find(|l| l.key() == "op")
            .map(|l| l.value().to_owned());
        let name = format!("{}:{}", key.name(), op.unwrap_or_default());
        let c = self
            .histograms
            .lock()
            .unwrap()
            .entry(name)
            .or_default()
            .clone();
        Histogram::from_arc(Arc::new(Records(c)))
    }
}

#[tokio::test]
async fn outcomes_are_counted() {
    let recorder: &'static Counting = Box::leak(Box::default());
    metrics::set_global_recorder(recorder).unwrap();
    let store = MemoryStore::new();
    let s = Sentinel::builder(store.clone()).build().unwrap();

    let _: Outcome<u8, String> = s.once("a").run(|_| async { Ok(1) }).await.unwrap();
    let _: Outcome<u8, String> = s.once("a").run(|_| async { Ok(1) }).await.unwrap();
    let request = ClaimRequest::new(
        "default",
        "busy",
        Owner::current(),
        Duration::from_secs(60),
        Duration::from_secs(60),
        None,
    );
    store.claim(&request).await.unwrap();
    let _: Outcome<u8, String> = s.once("busy").run(|_| async { Ok(1) }).await.unwrap();
    let _: Outcome<u8, String> = s
        .once("bad")
        .run(|_| async { Err("x".into()) })
        .await
        .unwrap();

    assert_eq!(recorder.counter("sentinel_executions_total"), 2);
    assert_eq!(recorder.counter("sentinel_replays_total"), 1);
    assert_eq!(recorder.counter("sentinel_busy_total"), 1);
    assert_eq!(recorder.counter("sentinel_uncertain_total"), 1);
    assert_eq!(recorder.histogram("sentinel_store_seconds:claim"), 4);
    assert_eq!(recorder.histogram("sentinel_store_seconds:complete"), 1);
}
