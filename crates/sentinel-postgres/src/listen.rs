//! The dedicated LISTEN connection. A pooled connection would drop notifications, so waiters
//! share one connection of their own; after it fails, waiters are told to re-read and the next
//! wait connects and listens again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::broadcast;
use tokio_postgres::AsyncMessage;

use crate::PgConnector;
use crate::error::{Phase, map};
use sentinel_core::StoreError;

#[derive(Clone, Debug)]
pub(crate) enum Signal {
    /// A row changed: `length(namespace):namespace||key`.
    Key(Arc<str>),
    /// The connection dropped; notifications may have been missed: re-read.
    Resync,
}

pub(crate) struct Listener {
    tx: broadcast::Sender<Signal>,
    alive: Arc<AtomicBool>,
    // Keeps the connection open.
    _client: tokio_postgres::Client,
}

impl Listener {
    pub(crate) async fn start(connector: &PgConnector, channel: &str) -> Result<Self, StoreError> {
        let (client, mut messages) = connector.connect_streaming().await?;
        let (tx, _) = broadcast::channel(1024);
        let alive = Arc::new(AtomicBool::new(true));
        let (sender, flag) = (tx.clone(), alive.clone());
        tokio::spawn(async move {
            loop {
                match messages.recv().await {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        let _ = sender.send(Signal::Key(n.payload().into()));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        flag.store(false, Ordering::SeqCst);
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

/// The payload a completion sends for `(namespace, key)`; PostgreSQL's `length` counts
/// characters.
pub(crate) fn payload(namespace: &str, key: &str) -> String {
    format!("{}:{namespace}{key}", namespace.chars().count())
}
