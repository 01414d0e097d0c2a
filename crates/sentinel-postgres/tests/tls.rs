//! TLS with rustls (feature `rustls`) against the local server's self-signed certificate.
#![cfg(feature = "rustls")]

mod support;

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sentinel_core::{Error, Outcome, Sentinel, StoreErrorKind};
use sentinel_postgres::PgStore;

/// Accepts any certificate: only to prove, in a test, that the connection is encrypted.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn require_url() -> String {
    format!("{}?sslmode=require", support::database_url())
}

#[tokio::test]
async fn sslmode_require_encrypts_every_connection() {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    let store = PgStore::builder()
        .url(&require_url())
        .schema(support::fresh_schema())
        .tls(config)
        .build()
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let client = store.pool().get().await.unwrap();
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the pooled connection is not encrypted");
    drop(client);
    let s = Sentinel::builder(store).build().unwrap();
    let out: Outcome<u8, String> = s.once("k").run(|_| async { Ok(1) }).await.unwrap();
    assert!(out.ran_here());
}

#[tokio::test]
async fn untrusted_certificate_is_refused() {
    // The local server's certificate is self-signed: the default (Mozilla) roots reject it.
    let r = PgStore::builder().url(&require_url()).build().await;
    match r {
        Err(Error::Store(e)) => assert_eq!(e.kind(), StoreErrorKind::Unavailable, "{e}"),
        other => panic!("a self-signed certificate was accepted: {other:?}"),
    }
}
