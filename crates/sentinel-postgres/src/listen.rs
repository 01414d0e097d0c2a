//! Waiting for a row to change: the dedicated `LISTEN` connection and the waiter registrations.
//!
//! A pooled connection would drop notifications, so waiters share one connection of their own.
//! It is opened in the background, bounded by the statement timeout; a waiter waits for it no
//! longer than its own deadline and polls meanwhile, so a server that accepts connections but
//! never answers cannot hold a wait beyond its timeout. After the connection fails, waiters are
//! told to re-read and the next wait connects again.
//!
//! A waiter is counted on the owner's row (`waiters`), so only rows somebody waits for pay for a
//! `NOTIFY`. One registration serves every waiter of this process for the key, and it outlives a
//! wait step by [`LINGER`]: a long wait costs one registration and one removal, not two row
//! updates per poll step.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};
use tokio_postgres::AsyncMessage;

use crate::PgConnector;
use crate::error::{Phase, map};
use sentinel_core::StoreError;

/// How long a registration is kept after its last waiter's step ended, for the next step.
/// Longer than the engine's longest poll step (1 s) plus a re-read.
pub(crate) const LINGER: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub(crate) enum Signal {
    /// A row changed: `length(namespace):namespace||key`.
    Key(Arc<str>),
    /// The connection dropped; notifications may have been missed: re-read.
    Resync,
}

/// A registration to take off its row (`waiters - 1`, only while the token still matches).
#[derive(Debug)]
pub(crate) struct Removal {
    pub(crate) namespace: String,
    pub(crate) key: String,
    pub(crate) token: i64,
}

/// Runs a removal's statement in the background.
pub(crate) type Remover = Arc<dyn Fn(Removal) + Send + Sync>;

struct Entry {
    removal: Removal,
    holders: usize,
    /// Bumped on every join, so a lingering removal knows whether somebody came back.
    generation: u64,
}

/// This process's registrations, by notification payload.
#[derive(Default)]
pub(crate) struct Registry {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Registry {
    fn entries(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Joins the live registration of the key, if there is one; returns its token.
    pub(crate) fn join(&self, payload: &str) -> Option<i64> {
        let mut entries = self.entries();
        let e = entries.get_mut(payload)?;
        e.holders += 1;
        e.generation += 1;
        Some(e.removal.token)
    }

    /// Records a registration just made, held by nobody yet (the waiter joins it, or it
    /// lingers for the next step). Should another waiter of this process have registered the
    /// key meanwhile, hands back ours to remove.
    pub(crate) fn insert_idle(&self, payload: &str, removal: Removal) -> Result<u64, Removal> {
        let mut entries = self.entries();
        if entries.contains_key(payload) {
            return Err(removal);
        }
        entries.insert(
            payload.to_owned(),
            Entry {
                removal,
                holders: 0,
                generation: 0,
            },
        );
        Ok(0)
    }

    /// A waiter's step ended. When it was the last holder, returns the generation a lingering
    /// removal must still find.
    pub(crate) fn leave(&self, payload: &str, token: i64) -> Option<u64> {
        let mut entries = self.entries();
        let e = entries.get_mut(payload)?;
        if e.removal.token != token {
            return None;
        }
        e.holders = e.holders.saturating_sub(1);
        (e.holders == 0).then_some(e.generation)
    }

    /// The linger passed: removes the registration unless somebody joined it since.
    pub(crate) fn expire(&self, payload: &str, generation: u64) -> Option<Removal> {
        let mut entries = self.entries();
        match entries.get(payload) {
            Some(e) if e.holders == 0 && e.generation == generation => {
                entries.remove(payload).map(|e| e.removal)
            }
            _ => None,
        }
    }

    /// The row changed: later waiters must register again (and learn the new state).
    pub(crate) fn invalidate(&self, payload: &str) -> Option<Removal> {
        self.entries().remove(payload).map(|e| e.removal)
    }

    /// Notifications may have been missed: every registration is dropped.
    pub(crate) fn drain(&self) -> Vec<Removal> {
        self.entries().drain().map(|(_, e)| e.removal).collect()
    }
}

pub(crate) struct Listener {
    tx: broadcast::Sender<Signal>,
    alive: Arc<AtomicBool>,
    // Keeps the connection open.
    _client: tokio_postgres::Client,
}

impl Listener {
    /// Connects and listens. A registration is invalidated before its waiters are signalled, so
    /// a waiter that subscribed too late finds it gone and registers (and re-reads) itself.
    pub(crate) async fn start(
        connector: &PgConnector,
        channel: &str,
        registry: Arc<Registry>,
        remover: Remover,
    ) -> Result<Self, StoreError> {
        let (client, mut messages) = connector.connect_streaming().await?;
        let (tx, _) = broadcast::channel(1024);
        let alive = Arc::new(AtomicBool::new(true));
        let (sender, flag) = (tx.clone(), alive.clone());
        tokio::spawn(async move {
            loop {
                match messages.recv().await {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        if let Some(r) = registry.invalidate(n.payload()) {
                            remover(r);
                        }
                        let _ = sender.send(Signal::Key(n.payload().into()));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        flag.store(false, Ordering::SeqCst);
                        registry.drain().into_iter().for_each(|r| remover(r));
                        let _ = sender.send(Signal::Resync);
                        return;
                    }
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {channel}"))
            .await
            .map_err(|e| map(Phase::Execute, "listen", e))?;
        Ok(Self {
            tx,
            alive,
            _client: client,
        })
    }

    pub(crate) fn is_alive(&self) -> bool {
        // The connection task may also have died with the runtime that spawned it.
        self.alive.load(Ordering::SeqCst) && !self._client.is_closed()
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Signal> {
        self.tx.subscribe()
    }
}

/// The listener connection: the live one, or the attempt in progress that waiters may await.
#[derive(Default)]
pub(crate) struct Slot {
    pub(crate) ready: Option<Arc<Listener>>,
    pub(crate) connecting: Option<Arc<Notify>>,
}

/// The payload a completion sends for `(namespace, key)`; PostgreSQL's `length` counts
/// characters.
pub(crate) fn payload(namespace: &str, key: &str) -> String {
    format!("{}:{namespace}{key}", namespace.chars().count())
}
