//! `sentinel serve`: the operator console (crate `sentinel-console`) on its own listener, until
//! SIGINT or SIGTERM.

use sentinel_console::{Auth, Console};

use crate::cli::ServeArgs;
use crate::exit::{Exit, Failure};
use crate::store::{Target, actor};

/// What `serve` checked before the store opens.
pub(crate) struct Prepared {
    listen: std::net::SocketAddr,
    auth: Option<Auth>,
    origins: Vec<String>,
}

/// Reads the auth file and refuses a non-loopback address without one.
pub(crate) fn prepare(args: &ServeArgs) -> Result<Prepared, Failure> {
    let auth = args
        .auth_file
        .as_ref()
        .map(Auth::from_file)
        .transpose()
        .map_err(|e| Failure::usage(e.to_string()))?;
    if auth.is_none() && !args.listen.ip().is_loopback() {
        return Err(Failure::usage(format!(
            "refusing to serve on {} without --auth-file: anyone who can reach it could reset \
             keys; give an auth file (lines `name role secret`) or listen on 127.0.0.1",
            args.listen
        )));
    }
    for origin in &args.allowed_origins {
        let rest = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        if rest.is_none_or(|r| r.is_empty() || r.trim_end_matches('/').contains('/')) {
            return Err(Failure::usage(format!(
                "--allowed-origin {origin}: expected scheme and host, e.g. https://ops.example.com"
            )));
        }
    }
    Ok(Prepared {
        listen: args.listen,
        auth,
        origins: args.allowed_origins.clone(),
    })
}

pub(crate) async fn serve(t: &Target, p: Prepared) -> Result<u8, Failure> {
    let mut console = Console::new(t.sentinel.clone()).anonymous_actor(actor());
    let authenticated = p.auth.is_some();
    if let Some(auth) = p.auth {
        console = console.auth(auth);
    }
    for origin in p.origins {
        console = console.allowed_origin(origin);
    }
    let listener = tokio::net::TcpListener::bind(p.listen).await.map_err(|e| {
        Failure::new(
            Exit::Unavailable,
            format!("cannot listen on {}: {e}", p.listen),
        )
    })?;
    let local = listener.local_addr().map_err(|e| {
        Failure::new(
            Exit::Internal,
            format!("cannot read the listen address: {e}"),
        )
    })?;
    eprintln!(
        "sentinel: console on http://{local}/ ({}; store {})",
        if authenticated {
            "sign-in required"
        } else {
            "no sign-in: loopback only"
        },
        sentinel::redact_url(&t.url)
    );
    axum::serve(listener, console.router())
        .with_graceful_shutdown(stopped())
        .await
        .map_err(|e| Failure::new(Exit::Internal, format!("console server failed: {e}")))?;
    Ok(0)
}

/// Resolves on SIGINT or SIGTERM.
async fn stopped() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
