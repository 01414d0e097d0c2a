//! Sentinel's own thread and runtime: it runs the heartbeat (so a blocked application runtime
//! cannot starve it) and the blocking facade's store calls.

use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::Notify;

use crate::heartbeat::{self, InFlight};
use crate::store::Store;

pub(crate) struct OwnRuntime {
    handle: Handle,
    stop: Arc<Notify>,
}

impl OwnRuntime {
    pub(crate) fn start(
        store: Arc<dyn Store>,
        in_flight: Arc<InFlight>,
        stats_every: Option<Duration>,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(Notify::new());
        let (tx, rx) = std::sync::mpsc::channel();
        let thread_stop = stop.clone();
        std::thread::Builder::new()
            .name("sentinel".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(Ok(rt.handle().clone()));
                if let Some(every) = stats_every {
                    rt.spawn(report_stats(store.clone(), every));
                }
                rt.block_on(heartbeat::run(store, in_flight, thread_stop));
                // Give best-effort writes (cancellations) a moment to finish before the runtime
                // and its connections go away.
                rt.shutdown_timeout(Duration::from_secs(2));
            })?;
        let handle = rx
            .recv()
            .map_err(|_| std::io::Error::other("sentinel runtime thread died at start"))??;
        Ok(Self { handle, stop })
    }

    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        // Not joined: this drop may run inside an async context. The thread drops its runtime
        // itself, outside any async context.
        self.stop.notify_one();
    }
}

async fn report_stats(store: Arc<dyn Store>, every: Duration) {
    loop {
        match store.stats().await {
            Ok(s) => {
                let oldest = s
                    .oldest_uncertain_since
                    .zip(s.now)
                    .and_then(|(o, now)| now.duration_since(o).ok());
                crate::metrics::uncertain_gauge(s.uncertain, oldest);
            }
            Err(e) => tracing::debug!(error = %e, "could not read store stats"),
        }
        tokio::time::sleep(every).await;
    }
}
