//! `/metrics` in the Prometheus text format: what the store holds (records by namespace and
//! state, the oldest uncertain record), read at each scrape; and, when the console is embedded
//! with a Prometheus recorder, the engine's own counters of this process.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::App;
use crate::view::{Overview, STATES};

/// A label value escaped as the text format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub(crate) fn render(o: &Overview) -> String {
    let mut out = String::new();
    out.push_str(
        "# HELP sentinel_records Records in the store by namespace and state, per the store's \
         clock.\n# TYPE sentinel_records gauge\n",
    );
    for (ns, states) in &o.counts {
        for state in STATES {
            let n = states.get(state.as_str()).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "sentinel_records{{namespace=\"{}\",state=\"{}\"}} {n}",
                label(ns),
                state.as_str()
            );
        }
    }
    let age = o.oldest_age().map_or(0.0, |d| d.as_secs_f64());
    let _ = write!(
        out,
        "# HELP sentinel_oldest_uncertain_age_seconds How long the oldest uncertain or \
         reconciling record has waited (0 when none).\n\
         # TYPE sentinel_oldest_uncertain_age_seconds gauge\n\
         sentinel_oldest_uncertain_age_seconds {age:.3}\n"
    );
    out
}

pub(crate) async fn serve(State(app): State<App>) -> Response {
    let overview = match Overview::load(app.sentinel(), 0).await {
        Ok(o) => o,
        Err(p) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("# {}\n", p.message.replace(['\r', '\n'], " ")),
            )
                .into_response();
        }
    };
    #[allow(unused_mut)]
    let mut body = render(&overview);
    #[cfg(feature = "metrics")]
    if let Some(handle) = app.prometheus() {
        body.push_str(&handle.render());
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
