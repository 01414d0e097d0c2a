//! Hands each job to the connection thread that went idle last.
//!
//! With one shared queue, jobs went to whichever thread happened to wait, so consecutive
//! transitions of one caller ran on different connections. Each connection's page cache is
//! reset once another connection has written, so every transaction re-read its pages from the
//! WAL, and each job woke a thread that had slept longest. Last-idle-first keeps a lone caller
//! on one warm connection, while concurrent callers (or a write waiting for another process's
//! lock) still spread over every thread.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, mpsc};

use crate::row::Conn;
use crate::store::Job;

/// A job for one thread, with the way back onto the idle stack.
struct Delivery {
    job: Job,
    back: mpsc::Sender<Delivery>,
}

#[derive(Default)]
struct State {
    /// Idle threads, the one that went idle last on top.
    idle: Vec<mpsc::Sender<Delivery>>,
    /// Jobs that arrived while every thread was busy, oldest first.
    backlog: VecDeque<Job>,
    closed: bool,
}

/// The job queue of a set of connection threads.
#[derive(Default)]
pub(crate) struct Dispatch {
    state: Mutex<State>,
}

impl Dispatch {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Gives `job` to the thread that went idle last, or queues it while all are busy. `false`
    /// when the threads have stopped.
    pub(crate) fn send(&self, job: Job) -> bool {
        let mut state = self.lock();
        if state.closed {
            return false;
        }
        let Some(thread) = state.idle.pop() else {
            state.backlog.push_back(job);
            return true;
        };
        drop(state);
        let back = thread.clone();
        thread.send(Delivery { job, back }).is_ok()
    }

    /// Stops the threads once they finish what they run; queued jobs are dropped (their
    /// callers see the reply dropped).
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.idle.clear();
        state.backlog.clear();
    }

    /// Runs jobs on `conn` until the dispatch closes.
    pub(crate) fn serve(&self, mut conn: Conn) {
        let (tx, rx) = mpsc::channel::<Delivery>();
        let mut own = Some(tx);
        // Jobs may have queued before this thread first went idle.
        let mut next = {
            let mut state = self.lock();
            let job = state.backlog.pop_front();
            if job.is_none() {
                state.idle.extend(own.take());
            }
            job
        };
        loop {
            let job = match next.take() {
                Some(job) => job,
                None => match rx.recv() {
                    Ok(Delivery { job, back }) => {
                        own = Some(back);
                        job
                    }
                    Err(_) => return, // closed: the idle stack dropped our sender
                },
            };
            // A panicking job must not take the thread (and its connection) with it: its
            // caller sees the dropped reply as an error; the open transaction, if any, rolls
            // back when dropped.
            let reply = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut conn)));
            // Back on the idle stack (or onto the backlog) before the caller hears back, so
            // that its next job comes to this connection.
            let closed = {
                let mut state = self.lock();
                next = state.backlog.pop_front();
                if next.is_none() && !state.closed {
                    state.idle.extend(own.take());
                }
                state.closed
            };
            if let Ok(reply) = reply {
                reply();
            }
            if closed {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn start(d: &Arc<Dispatch>) -> std::thread::JoinHandle<()> {
        let d = d.clone();
        std::thread::spawn(move || {
            let conn = rusqlite::Connection::open_in_memory().unwrap();
            d.serve(Conn::new(conn, Arc::default()));
        })
    }

    /// Sends a job that answers with the thread it ran on.
    fn which(d: &Dispatch) -> std::thread::ThreadId {
        let (tx, rx) = mpsc::channel();
        assert!(d.send(Box::new(move |_| {
            let id = std::thread::current().id();
            Box::new(move || tx.send(id).unwrap())
        })));
        rx.recv_timeout(Duration::from_secs(10)).unwrap()
    }

    #[test]
    fn jobs_queued_before_any_thread_is_idle_run_in_order() {
        let d = Arc::new(Dispatch::default());
        let (tx, rx) = mpsc::channel();
        for i in 0..3 {
            let tx = tx.clone();
            assert!(d.send(Box::new(move |_| Box::new(move || tx.send(i).unwrap()))));
        }
        let thread = start(&d);
        let got: Vec<i32> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        assert_eq!(got, [0, 1, 2]);
        d.close();
        thread.join().unwrap();
        assert!(!d.send(Box::new(|_| Box::new(|| {}))), "closed");
    }

    #[test]
    fn a_lone_caller_stays_on_one_connection() {
        let d = Arc::new(Dispatch::default());
        let threads: Vec<_> = (0..4).map(|_| start(&d)).collect();
        // Every thread idle, so the first job's thread is the one that went idle last.
        while d.lock().idle.len() < 4 {
            std::thread::yield_now();
        }
        let first = which(&d);
        for _ in 0..50 {
            assert_eq!(which(&d), first);
        }
        d.close();
        threads.into_iter().for_each(|t| t.join().unwrap());
    }
}
