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
    pending: Arc<Pending>,
    /// Set just before the runtime goes away; work handed over afterwards runs on a thread of
    /// its own instead of being dropped.
    gone: Arc<std::sync::atomic::AtomicBool>,
}

/// Runs `fut` to completion on a short-lived thread with a runtime of its own.
pub(crate) fn run_on_own_thread<R: Send + 'static>(
    fut: impl std::future::Future<Output = R> + Send + 'static,
) -> Option<R> {
    std::thread::Builder::new()
        .name("sentinel-late".into())
        .spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()
                .map(|rt| rt.block_on(fut))
        })
        .ok()?
        .join()
        .ok()
        .flatten()
}

/// Best-effort writes still running (cancellation marks): the thread lets them finish, within
/// a bound, before its runtime goes away.
#[derive(Default)]
struct Pending {
    count: std::sync::atomic::AtomicUsize,
    done: Notify,
}

impl OwnRuntime {
    pub(crate) fn start(
        store: Arc<dyn Store>,
        in_flight: Arc<InFlight>,
        stats_every: Option<Duration>,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(Notify::new());
        let pending = Arc::new(Pending::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let thread_stop = stop.clone();
        let thread_pending = pending.clone();
        let gone = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread_gone = gone.clone();
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
                // Let best-effort writes (cancellations) finish, within a bound, before the
                // runtime and its connections go away.
                rt.block_on(async {
                    let drained = async {
                        loop {
                            let done = thread_pending.done.notified();
                            if thread_pending
                                .count
                                .load(std::sync::atomic::Ordering::SeqCst)
                                == 0
                            {
                                return;
                            }
                            done.await;
                        }
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(5), drained).await;
                });
                thread_gone.store(true, std::sync::atomic::Ordering::SeqCst);
                rt.shutdown_timeout(Duration::from_millis(100));
            })?;
        let handle = rx
            .recv()
            .map_err(|_| std::io::Error::other("sentinel runtime thread died at start"))??;
        Ok(Self {
            handle,
            stop,
            pending,
            gone,
        })
    }

    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Runs a best-effort write that the thread waits for (bounded) before it ends.
    pub(crate) fn spawn_tracked(
        &self,
        fut: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        use std::sync::atomic::Ordering;
        if self.gone.load(Ordering::SeqCst) {
            // After shutdown: still try, on a thread of its own (in the background).
            std::thread::spawn(move || run_on_own_thread(fut));
            return;
        }
        let pending = self.pending.clone();
        pending.count.fetch_add(1, Ordering::SeqCst);
        self.handle.spawn(async move {
            fut.await;
            if pending.count.fetch_sub(1, Ordering::SeqCst) == 1 {
                pending.done.notify_waiters();
            }
        });
    }

    /// Stops the heartbeat; the thread ends once tracked writes are done.
    pub(crate) fn stop(&self) {
        self.stop.notify_one();
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
