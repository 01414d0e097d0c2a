//! The JSON API under `/api/v1`: what the pages show and do, for scripts and other tools.
//! Errors are `{"error": {"code": …, "message": …}}` with a matching status.

use axum::Extension;
use axum::Json;
use axum::extract::{Query, State, rejection::JsonRejection};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use sentinel_core::format as sj;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::view::{
    self, ActionRequest, KeyParams, ListPage, ListParams, Overview, Problem, RecordView, Verb,
};
use crate::{App, Ctx};

pub(crate) fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"error": {"code": code, "message": message}});
    (status, Json(body)).into_response()
}

fn rejected(status: StatusCode, message: String) -> Problem {
    Problem {
        status,
        code: "invalid",
        message,
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        error_response(self.status, self.code, &self.message)
    }
}

type ApiResult = Result<Json<Value>, Problem>;

pub(crate) async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::assets::OPENAPI,
    )
        .into_response()
}

pub(crate) async fn me(Extension(ctx): Extension<Ctx>) -> Json<Value> {
    Json(json!({"name": ctx.principal.name, "role": ctx.principal.role.as_str()}))
}

pub(crate) fn overview_json(o: &Overview) -> Value {
    let counts: Vec<Value> = o
        .counts
        .iter()
        .flat_map(|(ns, states)| {
            states
                .iter()
                .map(move |(state, n)| json!({"namespace": ns, "state": state, "count": n}))
        })
        .collect();
    let oldest = o.stats.oldest_uncertain.as_ref().map(|(ns, key)| {
        json!({
            "namespace": ns,
            "key": key,
            "since": sj::time_json(o.stats.oldest_uncertain_since),
            "age_seconds": o.oldest_age().map(|d| d.as_secs_f64()),
        })
    });
    let recent: Vec<Value> = o
        .recent
        .iter()
        .map(|e| {
            let mut v = sj::event_json(&e.event);
            v["namespace"] = json!(e.namespace);
            v["key"] = json!(e.key);
            v
        })
        .collect();
    json!({
        "now": sj::rfc3339(o.now),
        "counts": counts,
        "uncertain": o.stats.uncertain,
        "oldest_uncertain": oldest,
        "recent_events": recent,
    })
}

pub(crate) async fn overview(State(app): State<App>) -> ApiResult {
    let o = Overview::load(app.sentinel(), view::RECENT).await?;
    Ok(Json(overview_json(&o)))
}

pub(crate) async fn records(
    State(app): State<App>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(params) = params.map_err(|e| rejected(e.status(), e.body_text()))?;
    let page = ListPage::load(app.sentinel(), &params).await?;
    let records: Vec<Value> = page.records.iter().map(sj::record_json).collect();
    Ok(Json(json!({"records": records, "next": page.next})))
}

pub(crate) async fn record(
    State(app): State<App>,
    params: Result<Query<KeyParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(params) = params.map_err(|e| rejected(e.status(), e.body_text()))?;
    let (namespace, key) = params.parts()?;
    let v = RecordView::load(app.sentinel(), namespace, key).await?;
    if v.record.is_none() && v.history.is_empty() {
        return Err(Problem {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: format!("no record and no history for {namespace}/{key}"),
        });
    }
    let history: Vec<Value> = v.history.iter().map(sj::event_json).collect();
    Ok(Json(json!({
        "namespace": namespace,
        "key": key,
        "record": v.record.as_ref().map(sj::record_json),
        "history": history,
    })))
}

/// The body of every action: which key, why, and the action's own fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActionBody {
    namespace: Option<String>,
    key: String,
    reason: Option<String>,
    #[serde(default)]
    force: bool,
    /// resolve: `complete` or `reset`.
    outcome: Option<String>,
    /// resolve complete: the result to store, any JSON value.
    result: Option<Value>,
    /// resolve: refuse unless the record is still under this token.
    expected_token: Option<u64>,
}

fn action(
    body: Result<Json<ActionBody>, JsonRejection>,
    verb: impl FnOnce(&ActionBody) -> Result<Verb, Problem>,
) -> Result<ActionRequest, Problem> {
    let Json(b) = body.map_err(|e| rejected(e.status(), e.body_text()))?;
    let verb = verb(&b)?;
    if b.result.is_some() && verb != Verb::Complete {
        return Err(Problem::bad("`result` is only for outcome `complete`"));
    }
    Ok(ActionRequest {
        verb,
        namespace: b
            .namespace
            .clone()
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| sentinel_core::DEFAULT_NAMESPACE.to_owned()),
        key: b.key.clone(),
        reason: view::reason(b.reason.as_deref())?,
        force: b.force,
        result: b.result.as_ref().map(Value::to_string),
        expected_token: b.expected_token.map(sentinel_core::FencingToken::new),
    })
}

async fn apply(app: &App, ctx: &Ctx, req: ActionRequest) -> ApiResult {
    let token = req.apply(app.sentinel(), ctx).await?;
    let record = app
        .sentinel()
        .inspect(&req.namespace, &req.key)
        .await
        .map_err(Problem::from)?;
    let mut out = json!({
        "namespace": req.namespace,
        "key": req.key,
        "record": record.as_ref().map(sj::record_json),
    });
    if let Some(token) = token {
        out["fencing_token"] = json!(token.get());
    }
    Ok(Json(out))
}

pub(crate) async fn reconcile(
    State(app): State<App>,
    Extension(ctx): Extension<Ctx>,
    body: Result<Json<ActionBody>, JsonRejection>,
) -> ApiResult {
    let req = action(body, |b| {
        if b.outcome.is_some() || b.expected_token.is_some() {
            return Err(Problem::bad(
                "reconcile takes namespace, key, reason and force",
            ));
        }
        Ok(Verb::Reconcile)
    })?;
    apply(&app, &ctx, req).await
}

pub(crate) async fn resolve(
    State(app): State<App>,
    Extension(ctx): Extension<Ctx>,
    body: Result<Json<ActionBody>, JsonRejection>,
) -> ApiResult {
    let req = action(body, |b| {
        if b.force {
            return Err(Problem::bad("resolve takes no `force`"));
        }
        match b.outcome.as_deref() {
            Some("complete") => Ok(Verb::Complete),
            Some("reset") => Ok(Verb::Reset),
            _ => Err(Problem::bad(
                "`outcome` must be `complete` (the work happened) or `reset` (it did not)",
            )),
        }
    })?;
    apply(&app, &ctx, req).await
}

pub(crate) async fn forget(
    State(app): State<App>,
    Extension(ctx): Extension<Ctx>,
    body: Result<Json<ActionBody>, JsonRejection>,
) -> ApiResult {
    let req = action(body, |b| {
        if b.outcome.is_some() || b.expected_token.is_some() || b.force {
            return Err(Problem::bad("forget takes namespace, key and reason"));
        }
        Ok(Verb::Forget)
    })?;
    apply(&app, &ctx, req).await
}
