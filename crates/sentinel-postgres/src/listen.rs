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
    /// Changed on every join (from a registry-wide counter), so a lingering removal knows
    /// whether somebody came back.
    generation: u64,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// Counts invalidations and drains.
    epoch: u64,
    /// The epoch of the last drain: registrations begun before it are not trusted.
    drained_at: u64,
    /// The epoch of each key's last invalidation while registrations were in flight.
    invalidated: HashMap<String, u64>,
    /// Registrations in flight; when none are, `invalidated` is forgotten.
    registering: usize,
    generations: u64,
}

impl State {
    fn generation(&mut self) -> u64 {
        self.generations += 1;
        self.generations
    }
}

/// This process's registrations, by notification payload.
#[derive(Default)]
pub(crate) struct Registry {
    state: Mutex<State>,
}

/// A registration in flight: it remembers when it began, so that a row change signalled while
/// its statement ran (which found nothing to invalidate yet) keeps it out of the registry.
pub(crate) struct Ticket<'a> {
    registry: &'a Registry,
    epoch: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut state = self.registry.state();
        state.registering = state.registering.saturating_sub(1);
        if state.registering == 0 {
            state.invalidated.clear();
        }
    }
}

/// What became of a registration offered to the registry.
pub(crate) enum Inserted {
    /// Recorded, held by nobody yet; its lingering removal must find `generation`.
    Idle {
        generation: u64,
        /// An older registration of the key it replaced, to take off its row.
        replaced: Option<Removal>,
    },
    /// Not recorded: another waiter of this process registered the same execution meanwhile.
    /// Take this one off its row and join that one.
    Duplicate(Removal),
    /// Not recorded: the key changed while it was made, or a newer registration is there.
    /// Take it off its row; the caller re-reads.
    Refused(Removal),
}

impl Registry {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Joins the live registration of the key, if there is one; returns its token.
    pub(crate) fn join(&self, payload: &str) -> Option<i64> {
        let mut state = self.state();
        let generation = state.generation();
        let e = state.entries.get_mut(payload)?;
        e.holders += 1;
        e.generation = generation;
        Some(e.removal.token)
    }

    /// Starts a registration (before its statement is sent).
    pub(crate) fn begin(&self) -> Ticket<'_> {
        let mut state = self.state();
        state.registering += 1;
        Ticket {
            registry: self,
            epoch: state.epoch,
        }
    }

    /// Offers a registration just made, held by nobody yet (the waiter joins it, or it
    /// lingers for the next step).
    pub(crate) fn insert_idle(
        &self,
        ticket: &Ticket<'_>,
        payload: &str,
        removal: Removal,
    ) -> Inserted {
        let mut state = self.state();
        let changed = state.drained_at > ticket.epoch
            || state
                .invalidated
                .get(payload)
                .is_some_and(|&e| e > ticket.epoch);
        if changed {
            return Inserted::Refused(removal);
        }
        let replaced = match state.entries.get(payload) {
            Some(e) if e.removal.token == removal.token => return Inserted::Duplicate(removal),
            Some(e) if e.removal.token > removal.token => return Inserted::Refused(removal),
            Some(_) => state.entries.remove(payload).map(|e| e.removal),
            None => None,
        };
        let generation = state.generation();
        state.entries.insert(
            payload.to_owned(),
            Entry {
                removal,
                holders: 0,
                generation,
            },
        );
        Inserted::Idle {
            generation,
            replaced,
        }
    }

    /// A waiter's step ended. When it was the last holder, returns the generation a lingering
    /// removal must still find.
    pub(crate) fn leave(&self, payload: &str, token: i64) -> Option<u64> {
        let mut state = self.state();
        let e = state.entries.get_mut(payload)?;
        if e.removal.token != token {
            return None;
        }
        e.holders = e.holders.saturating_sub(1);
        (e.holders == 0).then_some(e.generation)
    }

    /// The linger passed: removes the registration unless somebody joined it since.
    pub(crate) fn expire(&self, payload: &str, generation: u64) -> Option<Removal> {
        let mut state = self.state();
        match state.entries.get(payload) {
            Some(e) if e.holders == 0 && e.generation == generation => {
                state.entries.remove(payload).map(|e| e.removal)
            }
            _ => None,
        }
    }

    /// The row changed: later waiters must register again (and learn the new state).
    pub(crate) fn invalidate(&self, payload: &str) -> Option<Removal> {
        let mut state = self.state();
        state.epoch += 1;
        if state.registering > 0 {
            let epoch = state.epoch;
            state.invalidated.insert(payload.to_owned(), epoch);
        }
        state.entries.remove(payload).map(|e| e.removal)
    }

    /// Notifications may have been missed: every registration is dropped, and those in flight
    /// will not be trusted.
    pub(crate) fn drain(&self) -> Vec<Removal> {
        let mut state = self.state();
        state.epoch += 1;
        state.drained_at = state.epoch;
        state.entries.drain().map(|(_, e)| e.removal).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn removal(token: i64) -> Removal {
        Removal {
            namespace: "default".into(),
            key: "k".into(),
            token,
        }
    }

    const P: &str = "7:defaultk";

    /// A row released while its registration's statement ran (so the notification found nothing
    /// to invalidate) must not leave that registration behind for later waiters to join.
    #[test]
    fn a_registration_made_while_its_key_changed_is_refused() {
        let registry = Registry::default();
        let ticket = registry.begin();
        assert!(registry.invalidate(P).is_none()); // the release's notification
        assert!(matches!(
            registry.insert_idle(&ticket, P, removal(1)),
            Inserted::Refused(r) if r.token == 1
        ));
        assert!(registry.join(P).is_none());
    }

    #[test]
    fn registrations_in_flight_are_not_trusted_after_a_drain() {
        let registry = Registry::default();
        let ticket = registry.begin();
        assert!(registry.drain().is_empty()); // the LISTEN connection died
        assert!(matches!(
            registry.insert_idle(&ticket, P, removal(1)),
            Inserted::Refused(_)
        ));
    }

    #[test]
    fn a_newer_execution_replaces_an_older_registration() {
        let registry = Registry::default();
        let first = registry.begin();
        assert!(matches!(
            registry.insert_idle(&first, P, removal(1)),
            Inserted::Idle { replaced: None, .. }
        ));
        drop(first);
        let second = registry.begin();
        assert!(matches!(
            registry.insert_idle(&second, P, removal(2)),
            Inserted::Idle { replaced: Some(r), .. } if r.token == 1
        ));
        assert_eq!(registry.join(P), Some(2));
        // An older one arriving late is refused; the same execution twice is a duplicate.
        let late = registry.begin();
        assert!(matches!(
            registry.insert_idle(&late, P, removal(1)),
            Inserted::Refused(_)
        ));
        assert!(matches!(
            registry.insert_idle(&late, P, removal(2)),
            Inserted::Duplicate(_)
        ));
    }

    #[test]
    fn a_lingering_removal_spares_a_registration_joined_since() {
        let registry = Registry::default();
        let ticket = registry.begin();
        let Inserted::Idle { generation, .. } = registry.insert_idle(&ticket, P, removal(1)) else {
            panic!("refused");
        };
        assert_eq!(registry.join(P), Some(1));
        assert!(registry.expire(P, generation).is_none());
        let left = registry.leave(P, 1).expect("last holder");
        assert_eq!(registry.expire(P, left).map(|r| r.token), Some(1));
    }
}
