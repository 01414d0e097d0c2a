//! Sentinel's own connections (heartbeat, LISTEN, cancellation): TLS choice, connecting with
//! `synchronous_commit = on`, and the background task that drives each connection.

#[cfg(feature = "rustls")]
use std::sync::Arc;

#[cfg(feature = "rustls")]
use sentinel_core::Error;
use sentinel_core::StoreError;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, Client, NoTls, Socket};

/// How connections are encrypted.
#[derive(Clone)]
pub(crate) enum Tls {
    None,
    #[cfg(feature = "rustls")]
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

#[cfg(feature = "rustls")]
pub(crate) fn default_rustls() -> Result<rustls::ClientConfig, Error> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::invalid_input(format!("TLS set-up failed: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// Asks the server to cancel a statement whose reply we stopped waiting for, so that it cannot
/// commit long after we reported it lost. Best effort, in the background.
pub(crate) fn cancel_in_background(token: tokio_postgres::CancelToken, tls: Tls) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    handle.spawn(async move {
        let r = match tls {
            Tls::None => token.cancel_query(NoTls).await,
            #[cfg(feature = "rustls")]
            Tls::Rustls(t) => token.cancel_query(t).await,
        };
        if let Err(e) = r {
            tracing::debug!(error = %e, "could not cancel a timed-out statement");
        }
    });
}

/// Opens Sentinel's own connections (heartbeat, LISTEN), with `synchronous_commit = on`.
#[derive(Clone)]
pub(crate) struct PgConnector {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) tls: Tls,
}

type Messages = tokio::sync::mpsc::UnboundedReceiver<Result<AsyncMessage, tokio_postgres::Error>>;

impl PgConnector {
    pub(crate) async fn connect(&self) -> Result<Client, StoreError> {
        self.open(None).await
    }

    pub(crate) async fn connect_streaming(&self) -> Result<(Client, Messages), StoreError> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        Ok((self.open(Some(tx)).await?, rx))
    }

    async fn open(
        &self,
        forward: Option<
            tokio::sync::mpsc::UnboundedSender<Result<AsyncMessage, tokio_postgres::Error>>,
        >,
    ) -> Result<Client, StoreError> {
        let connected = match &self.tls {
            Tls::None => spawn_connection(&self.config, NoTls, forward).await,
            #[cfg(feature = "rustls")]
            Tls::Rustls(tls) => spawn_connection(&self.config, tls.clone(), forward).await,
        };
        connected.map_err(|e| crate::error::connect(&crate::error::target(&self.config), e))
    }
}

async fn spawn_connection<T>(
    config: &tokio_postgres::Config,
    tls: T,
    forward: Option<
        tokio::sync::mpsc::UnboundedSender<Result<AsyncMessage, tokio_postgres::Error>>,
    >,
) -> Result<Client, tokio_postgres::Error>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let (client, mut connection) = config.connect(tls).await?;
    tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            let failed = message.is_err();
            if let Some(tx) = &forward {
                let _ = tx.send(message);
            }
            if failed {
                return;
            }
        }
    });
    Ok(client)
}
