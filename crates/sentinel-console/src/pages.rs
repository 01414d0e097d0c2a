//! The server-rendered pages: overview, list, record, the confirmation of an action and its
//! submission. Sections marked `data-live` are refreshed in place by `console.js`.

use std::fmt::Write as _;
use std::time::SystemTime;

use axum::Extension;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use sentinel_core::{Event, Record, State as KeyState};
use serde::Deserialize;
use serde_json::Value;

use crate::html::{Nav, Url, badge, error_page, esc, page, record_href, respond, short, time};
use crate::view::{
    self, ActionRequest, KeyParams, ListPage, ListParams, Overview, Problem, RecordView, STATES,
    Verb,
};
use crate::{App, Ctx};

fn problem_page(ctx: &Ctx, p: &Problem) -> Response {
    error_page(ctx, p.status, &p.message)
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, Problem> {
    q.map(|Query(t)| t).map_err(|e| Problem::bad(e.body_text()))
}

pub(crate) async fn overview(State(app): State<App>, Extension(ctx): Extension<Ctx>) -> Response {
    let o = match Overview::load(app.sentinel(), view::RECENT).await {
        Ok(o) => o,
        Err(p) => return problem_page(&ctx, &p),
    };
    let base = &ctx.base;
    let mut body = String::from("<h1>Overview</h1>");

    body.push_str("<section id=\"attention\" data-live aria-labelledby=\"attention-h\">");
    body.push_str("<h2 id=\"attention-h\">Waiting for an operator</h2>");
    match (&o.stats.oldest_uncertain, o.oldest_age()) {
        (Some((ns, key)), Some(age)) => {
            let _ = write!(
                body,
                "<p class=\"callout\"><strong>{n}</strong> key{s} uncertain or reconciling. \
                 The oldest, <a href=\"{href}\">{ns}/{key}</a>, has waited <strong>{age}\
                 </strong>. <a href=\"{base}/records?state=uncertain&amp;sort=oldest\">See \
                 every uncertain key</a></p>",
                n = o.stats.uncertain,
                s = if o.stats.uncertain == 1 { "" } else { "s" },
                href = record_href(&ctx, ns, key),
                ns = esc(ns),
                key = esc(key),
                age = short(age),
            );
        }
        _ => body.push_str(
            "<p class=\"callout ok\">No key is waiting: nothing is uncertain or being \
             reconciled.</p>",
        ),
    }
    body.push_str("</section>");

    body.push_str("<section id=\"counts\" data-live aria-labelledby=\"counts-h\">");
    body.push_str("<h2 id=\"counts-h\">Records by namespace and state</h2>");
    if o.counts.is_empty() {
        body.push_str("<p class=\"muted\">The store holds no records yet.</p>");
    } else {
        body.push_str("<div class=\"scroll\"><table><thead><tr><th scope=\"col\">Namespace</th>");
        for s in STATES {
            let _ = write!(body, "<th scope=\"col\" class=\"num\">{}</th>", s.as_str());
        }
        body.push_str("<th scope=\"col\" class=\"num\">total</th></tr></thead><tbody>");
        let mut totals = [0u64; 4];
        for (ns, states) in &o.counts {
            let _ = write!(
                body,
                "<tr><th scope=\"row\"><a href=\"{base}/records?namespace={}\">{}</a></th>",
                Url(ns),
                esc(ns)
            );
            let mut total = 0;
            for (i, s) in STATES.iter().enumerate() {
                let n = states.get(s.as_str()).copied().unwrap_or(0);
                totals[i] += n;
                total += n;
                if n == 0 {
                    body.push_str("<td class=\"num muted\">0</td>");
                } else {
                    let _ = write!(
                        body,
                        "<td class=\"num\"><a href=\"{base}/records?namespace={}&amp;state={}\" \
                         aria-label=\"{n} {} in {}\">{n}</a></td>",
                        Url(ns),
                        s.as_str(),
                        s.as_str(),
                        esc(ns)
                    );
                }
            }
            let _ = write!(body, "<td class=\"num\">{total}</td></tr>");
        }
        if o.counts.len() > 1 {
            body.push_str("<tr><th scope=\"row\">all</th>");
            for n in totals {
                let _ = write!(body, "<td class=\"num\">{n}</td>");
            }
            let _ = write!(
                body,
                "<td class=\"num\">{}</td></tr>",
                totals.iter().sum::<u64>()
            );
        }
        body.push_str("</tbody></table></div>");
    }
    body.push_str("</section>");

    body.push_str("<section id=\"recent\" data-live aria-labelledby=\"recent-h\">");
    body.push_str("<h2 id=\"recent-h\">Recent transitions</h2>");
    if o.recent.is_empty() {
        body.push_str("<p class=\"muted\">No transitions yet.</p>");
    } else {
        body.push_str(
            "<div class=\"scroll\"><table><thead><tr><th scope=\"col\">When</th>\
             <th scope=\"col\">Key</th><th scope=\"col\">Event</th>\
             <th scope=\"col\" class=\"num wide\">Token</th><th scope=\"col\">By</th>\
             <th scope=\"col\" class=\"wide\">Why</th></tr></thead><tbody>",
        );
        for e in &o.recent {
            let _ = write!(
                body,
                "<tr><td>{}</td><td class=\"key\"><a href=\"{}\">{}/{}</a></td><td>{}</td>\
                 <td class=\"num wide\">{}</td><td>{}</td><td class=\"wide\">{}</td></tr>",
                time(e.event.at, o.now),
                record_href(&ctx, &e.namespace, &e.key),
                esc(&e.namespace),
                esc(&e.key),
                e.event.kind.as_str(),
                e.event.fencing_token,
                esc(&who(&e.event)),
                esc(e.event.reason.as_deref().unwrap_or("")),
            );
        }
        body.push_str("</tbody></table></div>");
    }
    body.push_str("</section>");
    respond(StatusCode::OK, page(&ctx, Nav::Overview, "Overview", &body))
}

fn who(e: &Event) -> String {
    match (&e.actor, &e.owner) {
        (Some(a), _) => a.clone(),
        (None, Some(o)) => o.to_string(),
        (None, None) => String::new(),
    }
}

fn option(value: &str, label: &str, selected: bool) -> String {
    format!(
        "<option value=\"{}\"{}>{}</option>",
        esc(value),
        if selected { " selected" } else { "" },
        esc(label)
    )
}

pub(crate) async fn records(
    State(app): State<App>,
    Extension(ctx): Extension<Ctx>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Response {
    let params = match query(params) {
        Ok(p) => p,
        Err(p) => return problem_page(&ctx, &p),
    };
    let (list, namespaces) =
        tokio::join!(ListPage::load(app.sentinel(), &params), app.namespaces());
    let list = match list {
        Ok(l) => l,
        Err(p) => return problem_page(&ctx, &p),
    };
    let state = params.state().ok().flatten();
    let nav = if state == Some(KeyState::Uncertain) {
        Nav::Uncertain
    } else {
        Nav::Records
    };
    let title = state.map_or_else(
        || "Records".to_owned(),
        |s| {
            let mut t = s.as_str().to_owned();
            t[..1].make_ascii_uppercase();
            format!("{t} records")
        },
    );
    let base = &ctx.base;
    let mut body = format!("<h1>{}</h1>", esc(&title));

    let _ = write!(
        body,
        "<form class=\"filters\" method=\"get\" action=\"{base}/records\" role=\"search\">\
         <label>State<select name=\"state\">{}",
        option("", "any", state.is_none())
    );
    for s in STATES {
        body.push_str(&option(s.as_str(), s.as_str(), state == Some(s)));
    }
    body.push_str("</select></label><label>Namespace<select name=\"namespace\">");
    body.push_str(&option("", "any", params.namespace().is_none()));
    let chosen = params.namespace();
    if let Some(ns) = chosen.filter(|ns| !namespaces.iter().any(|n| n == ns)) {
        body.push_str(&option(ns, ns, true));
    }
    for ns in &namespaces {
        body.push_str(&option(ns, ns, chosen == Some(ns.as_str())));
    }
    let _ = write!(
        body,
        "</select></label><label>Key starts with<input name=\"prefix\" value=\"{}\" \
         autocomplete=\"off\" spellcheck=\"false\"></label><label>Sort<select name=\"sort\">{}{}{}\
         </select></label><button type=\"submit\">Show</button></form>",
        esc(params.prefix().unwrap_or("")),
        option("key", "by key", params.sort_name() == "key"),
        option("oldest", "oldest first", params.sort_name() == "oldest"),
        option("newest", "newest first", params.sort_name() == "newest"),
    );

    let now = list
        .records
        .first()
        .map_or_else(SystemTime::now, |r| r.observed_at);
    body.push_str("<section id=\"list\" data-live aria-label=\"Records\">");
    if list.records.is_empty() {
        body.push_str("<p class=\"muted\">No record matches.</p>");
    } else {
        body.push_str(
            "<div class=\"scroll\"><table><thead><tr><th scope=\"col\">Key</th>\
             <th scope=\"col\">Namespace</th><th scope=\"col\">State</th>\
             <th scope=\"col\" class=\"num wide\">Token</th><th scope=\"col\" class=\"wide\">\
             Owner or operator</th><th scope=\"col\">Created</th><th scope=\"col\" \
             class=\"wide\">Updated</th><th scope=\"col\" class=\"wide\">Reason</th></tr>\
             </thead><tbody>",
        );
        for r in &list.records {
            let holder = r
                .operator
                .clone()
                .or_else(|| r.owner.as_ref().map(ToString::to_string))
                .unwrap_or_default();
            let _ = write!(
                body,
                "<tr><td class=\"key\"><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td>\
                 <td class=\"num wide\">{}</td><td class=\"wide\">{}</td><td>{}</td>\
                 <td class=\"wide\">{}</td><td class=\"wide\">{}</td></tr>",
                record_href(&ctx, &r.namespace, &r.key),
                esc(&r.key),
                esc(&r.namespace),
                badge(r.state),
                r.fencing_token,
                esc(&holder),
                time(r.created_at, now),
                time(r.updated_at, now),
                r.reason.map_or("", |x| x.as_str()),
            );
        }
        body.push_str("</tbody></table></div>");
    }
    let filters = params.query_string();
    let sep = if filters.is_empty() { "" } else { "&amp;" };
    body.push_str("<nav class=\"pager\" aria-label=\"Pages\">");
    if params.after.as_deref().is_some_and(|a| !a.is_empty()) {
        let _ = write!(
            body,
            "<a href=\"{base}/records?{filters}\">← First page</a>"
        );
    }
    if let Some(next) = &list.next {
        let _ = write!(
            body,
            "<a href=\"{base}/records?{filters}{sep}after={}\" rel=\"next\">Next page →</a>",
            Url(next)
        );
    }
    body.push_str("</nav></section>");
    respond(StatusCode::OK, page(&ctx, nav, &title, &body))
}

/// What the record page says after an action (from the redirect's query string).
#[derive(Debug, Deserialize)]
pub(crate) struct RecordParams {
    namespace: Option<String>,
    key: Option<String>,
    done: Option<String>,
}

pub(crate) async fn record(
    State(app): State<App>,
    Extension(ctx): Extension<Ctx>,
    params: Result<Query<RecordParams>, QueryRejection>,
) -> Response {
    let params = match query(params) {
        Ok(p) => p,
        Err(p) => return problem_page(&ctx, &p),
    };
    let kp = KeyParams {
        namespace: params.namespace.clone(),
        key: params.key.clone(),
    };
    let (namespace, key) = match kp.parts() {
        Ok(p) => p,
        Err(p) => return problem_page(&ctx, &p),
    };
    let v = match RecordView::load(app.sentinel(), namespace, key).await {
        Ok(v) => v,
        Err(p) => return problem_page(&ctx, &p),
    };
    let mut body = format!(
        "<p class=\"muted\">Namespace {}</p><h1>{}</h1>",
        esc(namespace),
        esc(key)
    );
    if let Some(notice) = notice(params.done.as_deref(), v.record.as_ref(), &ctx) {
        let _ = write!(body, "<p class=\"notice\" role=\"status\">{notice}</p>");
    }
    body.push_str("<section id=\"record\" data-live aria-label=\"Record\">");
    match &v.record {
        Some(r) => record_fields(&mut body, &ctx, r),
        None => body.push_str(
            "<p class=\"callout ok\">This key has no record: it is absent, and the next \
             caller runs the work.</p>",
        ),
    }
    body.push_str("</section>");

    body.push_str("<section id=\"history\" data-live aria-labelledby=\"history-h\">");
    body.push_str("<h2 id=\"history-h\">History</h2>");
    if v.history.is_empty() {
        body.push_str("<p class=\"muted\">No events.</p>");
    } else {
        let now = v
            .record
            .as_ref()
            .map_or_else(SystemTime::now, |r| r.observed_at);
        body.push_str("<ol class=\"timeline\">");
        for e in &v.history {
            let by = who(e);
            let _ = write!(
                body,
                "<li><span class=\"what\">{}</span> <span class=\"meta\">token {} · {}</span>",
                e.kind.as_str(),
                e.fencing_token,
                time(e.at, now)
            );
            if !by.is_empty() {
                let _ = write!(body, "<div>by {}</div>", esc(&by));
            }
            if let Some(reason) = &e.reason {
                let _ = write!(body, "<div>why: {}</div>", esc(reason));
            }
            body.push_str("</li>");
        }
        body.push_str("</ol>");
    }
    body.push_str("</section>");
    let title = format!("{namespace}/{key}");
    respond(StatusCode::OK, page(&ctx, Nav::None, &title, &body))
}

/// What the record page says after an action. Told by the record as it is now, not by the
/// redirect's query string, so that a crafted link cannot claim what did not happen.
fn notice(done: Option<&str>, record: Option<&Record>, ctx: &Ctx) -> Option<String> {
    let state = record.map(|r| r.state);
    Some(match (done?, record) {
        ("reconcile", Some(r))
            if r.state == KeyState::Reconciling
                && r.operator.as_deref() == Some(ctx.principal.name.as_str()) =>
        {
            format!(
                "You are reconciling this key under fencing token <strong>{}</strong>: the old \
                 owner's late writes are fenced out. Find out whether the work happened, then \
                 resolve the key as completed or reset it.",
                r.fencing_token
            )
        }
        ("complete", _) if state == Some(KeyState::Completed) => {
            "Resolved as completed: every later caller gets the stored result.".to_owned()
        }
        ("reset", None) => {
            "Reset: the record is gone and the next caller runs the work again.".to_owned()
        }
        ("forget", None) => {
            "Forgotten: the stored result is gone and the next caller runs the work again."
                .to_owned()
        }
        _ => return None,
    })
}

fn record_fields(body: &mut String, ctx: &Ctx, r: &Record) {
    let now = r.observed_at;
    let mut out = std::mem::take(body);
    out.push_str("<dl class=\"fields\">");
    let mut add = |name: &str, value: String| {
        let _ = write!(out, "<dt>{name}</dt><dd>{value}</dd>");
    };
    add("State", badge(r.state));
    if let Some(reason) = r.reason {
        add("Reason", reason.as_str().to_owned());
    }
    add("Fencing token", r.fencing_token.to_string());
    if let Some(o) = &r.owner {
        add(
            "Owner",
            format!(
                "{} <span class=\"muted\">(attempt {})</span>",
                esc(&o.to_string()),
                esc(&o.attempt)
            ),
        );
    }
    if let Some(op) = &r.operator {
        add("Operator", esc(op).to_string());
    }
    if let Some(l) = r.lease_expires_at {
        let label = match r.state {
            KeyState::Running if l > now => "Lease expires",
            KeyState::Running | KeyState::Uncertain => "Lease expired",
            _ => "Last lease ended",
        };
        add(label, time(l, now));
    }
    if let Some(h) = r.hard_expires_at {
        add("Hard ceiling", time(h, now));
    }
    add("Created", time(r.created_at, now));
    add("Updated", time(r.updated_at, now));
    if let Some(c) = r.completed_at {
        add("Completed", time(c, now));
    }
    if let Some(t) = r.retain_until {
        add("Retained until", time(t, now));
    }
    if let Some(f) = &r.fingerprint {
        let hex: String = f.iter().map(|b| format!("{b:02x}")).collect();
        add("Fingerprint", format!("<code>{hex}</code>"));
    }
    out.push_str("</dl>");
    if let Some(res) = &r.result {
        let _ = write!(
            out,
            "<h2>Result <span class=\"muted\">({})</span></h2>",
            res.kind.as_str()
        );
        result_html(&mut out, &res.json);
    }
    actions_html(&mut out, ctx, r);
    *body = out;
}

/// A stored result: a `sentinel run` result as its exit status and output streams, anything
/// else as indented JSON. Every piece is escaped.
fn result_html(out: &mut String, json: &str) {
    let value: Option<Value> = serde_json::from_str(json).ok();
    let pretty = value
        .as_ref()
        .and_then(|v| serde_json::to_string_pretty(v).ok())
        .unwrap_or_else(|| json.to_owned());
    if let Some(run) = value.as_ref().and_then(RunView::of) {
        let _ = write!(
            out,
            "<p>Command exit code <strong>{}</strong>",
            run.exit_code
        );
        if let Some(sig) = run.signal {
            let _ = write!(out, " (signal {sig})");
        }
        if run.truncated {
            out.push_str(" · output truncated");
        }
        out.push_str("</p>");
        for (name, text) in [("stdout", run.stdout), ("stderr", run.stderr)] {
            if run.base64 {
                let _ = write!(
                    out,
                    "<h3>{name}</h3><p class=\"muted\">Not UTF-8: stored as base64 \
                     ({} characters); <code>sentinel run</code> replays the bytes.</p>",
                    text.len()
                );
            } else if text.is_empty() {
                let _ = write!(out, "<h3>{name}</h3><p class=\"muted\">(empty)</p>");
            } else {
                let _ = write!(out, "<h3>{name}</h3><pre>{}</pre>", esc(text));
            }
        }
        let _ = write!(
            out,
            "<details><summary>Stored JSON</summary><pre>{}</pre></details>",
            esc(&pretty)
        );
    } else {
        let _ = write!(out, "<pre class=\"result\">{}</pre>", esc(&pretty));
    }
}

/// The fields of a `sentinel run` result (docs/design.md §6).
struct RunView<'a> {
    exit_code: i64,
    signal: Option<i64>,
    stdout: &'a str,
    stderr: &'a str,
    base64: bool,
    truncated: bool,
}

impl<'a> RunView<'a> {
    fn of(v: &'a Value) -> Option<Self> {
        Some(Self {
            exit_code: v.get("exit_code")?.as_i64()?,
            signal: v.get("signal").and_then(Value::as_i64),
            stdout: v.get("stdout")?.as_str()?,
            stderr: v.get("stderr")?.as_str()?,
            base64: v.get("encoding")?.as_str()? == "base64",
            truncated: v.get("truncated").and_then(Value::as_bool).unwrap_or(false),
        })
    }
}

fn action_link(ctx: &Ctx, r: &Record, verb: Verb, label: &str, danger: bool) -> String {
    format!(
        "<a class=\"button{}\" href=\"{}/confirm?action={}&amp;namespace={}&amp;key={}\">{}</a>",
        if danger { " danger" } else { "" },
        ctx.base,
        verb.as_str(),
        Url(&r.namespace),
        Url(&r.key),
        label
    )
}

fn actions_html(out: &mut String, ctx: &Ctx, r: &Record) {
    let links: Vec<String> = match r.state {
        KeyState::Uncertain => vec![action_link(ctx, r, Verb::Reconcile, "Reconcile…", false)],
        KeyState::Reconciling => vec![
            action_link(ctx, r, Verb::Complete, "Resolve as completed…", false),
            action_link(ctx, r, Verb::Reset, "Reset: run again…", true),
            action_link(ctx, r, Verb::Reconcile, "Take over…", false),
        ],
        KeyState::Completed => vec![action_link(ctx, r, Verb::Forget, "Forget…", true)],
        _ => Vec::new(),
    };
    if links.is_empty() {
        out.push_str(
            "<p class=\"muted\">A live owner holds this key; there is nothing to do until it \
             finishes or its lease runs out.</p>",
        );
    } else if ctx.principal.role < crate::Role::Operator {
        out.push_str("<p class=\"muted\">Viewers cannot act on keys; ask an operator.</p>");
    } else {
        let _ = write!(
            out,
            "<h2>Actions</h2><div class=\"actions\">{}</div>",
            links.join("")
        );
    }
}

/// What the confirmation page asks for.
#[derive(Debug, Deserialize)]
pub(crate) struct ConfirmParams {
    action: Option<String>,
    namespace: Option<String>,
    key: Option<String>,
}

pub(crate) async fn confirm(
    State(app): State<App>,
    Extension(ctx): Extension<Ctx>,
    params: Result<Query<ConfirmParams>, QueryRejection>,
) -> Response {
    let params = match query(params) {
        Ok(p) => p,
        Err(p) => return problem_page(&ctx, &p),
    };
    let verb = match Verb::parse(params.action.as_deref().unwrap_or("")) {
        Ok(v) => v,
        Err(p) => return problem_page(&ctx, &p),
    };
    let kp = KeyParams {
        namespace: params.namespace,
        key: params.key,
    };
    let (namespace, key) = match kp.parts() {
        Ok(p) => p,
        Err(p) => return problem_page(&ctx, &p),
    };
    let record = match app.sentinel().inspect(namespace, key).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return error_page(
                &ctx,
                StatusCode::NOT_FOUND,
                &format!("No record for {namespace}/{key}: there is nothing to act on."),
            );
        }
        Err(e) => return problem_page(&ctx, &Problem::from(e)),
    };
    confirm_page(&app, &ctx, verb, &record, None, &FormValues::default())
}

/// What the operator typed, to show again when an action is refused.
#[derive(Debug, Default)]
struct FormValues {
    reason: String,
    result: String,
}

fn consequence(verb: Verb, r: &Record) -> String {
    let next = r.fencing_token.get().saturating_add(1);
    match verb {
        Verb::Reconcile if r.state == KeyState::Reconciling => format!(
            "<strong>{}</strong> is reconciling this key. Taking over hands you fencing token \
             {next}: their resolution will then be refused. Do this only when they are no \
             longer working on it.",
            esc(r.operator.as_deref().unwrap_or("another operator"))
        ),
        Verb::Reconcile => format!(
            "You take this key over from its last owner under a new fencing token ({next}): \
             any late write of the old worker is refused from then on. The key stays blocked \
             for callers until you resolve it as completed or reset it. Nothing runs."
        ),
        Verb::Complete => "The work <strong>did happen</strong>. The key becomes completed and \
             every later caller gets the result below replayed: the work will not run again."
            .to_owned(),
        Verb::Reset => "The work <strong>did not happen</strong>. The record is removed and \
             <strong class=\"warn\">the next caller will run this work again</strong> — for a \
             payment, the card is charged again. Reset only when you are sure it did not take \
             effect."
            .to_owned(),
        Verb::Forget => "The stored result is deleted and <strong class=\"warn\">the next \
             caller will run this work again</strong> instead of getting the replay."
            .to_owned(),
    }
}

fn confirm_page(
    app: &App,
    ctx: &Ctx,
    verb: Verb,
    r: &Record,
    error: Option<&Problem>,
    values: &FormValues,
) -> Response {
    let (title, button, danger) = match verb {
        Verb::Reconcile if r.state == KeyState::Reconciling => {
            ("Take over reconciliation", "Take over", false)
        }
        Verb::Reconcile => ("Reconcile", "Reconcile", false),
        Verb::Complete => ("Resolve as completed", "Resolve as completed", false),
        Verb::Reset => ("Reset", "Reset: run it again", true),
        Verb::Forget => ("Forget", "Forget: run it again", true),
    };
    let mut body = format!(
        "<p class=\"muted\"><a href=\"{}\">{}/{}</a> · {} · token {}</p><h1>{title}</h1>",
        record_href(ctx, &r.namespace, &r.key),
        esc(&r.namespace),
        esc(&r.key),
        badge(r.state),
        r.fencing_token
    );
    if let Some(p) = error {
        let _ = write!(
            body,
            "<p class=\"error\" role=\"alert\">Not done: {}</p>",
            esc(&p.message)
        );
    }
    let _ = write!(
        body,
        "<p class=\"callout\">{}</p><form class=\"action\" method=\"post\" \
         action=\"{}/action\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <input type=\"hidden\" name=\"action\" value=\"{}\">\
         <input type=\"hidden\" name=\"namespace\" value=\"{}\">\
         <input type=\"hidden\" name=\"key\" value=\"{}\">",
        consequence(verb, r),
        ctx.base,
        app.csrf().token(&ctx.principal.name),
        verb.as_str(),
        esc(&r.namespace),
        esc(&r.key),
    );
    if verb == Verb::Reconcile && r.state == KeyState::Reconciling {
        body.push_str("<input type=\"hidden\" name=\"force\" value=\"on\">");
    }
    if matches!(verb, Verb::Complete | Verb::Reset) {
        let _ = write!(
            body,
            "<input type=\"hidden\" name=\"token\" value=\"{t}\"><p class=\"muted\">Checked \
             against fencing token {t}: refused if another operator has taken over since.</p>",
            t = r.fencing_token
        );
    }
    if verb == Verb::Complete {
        let _ = write!(
            body,
            "<label>Result to store (JSON, optional)<textarea name=\"result\" \
             spellcheck=\"false\" aria-describedby=\"result-help\">{}</textarea></label>\
             <span id=\"result-help\" class=\"muted\">What later callers get replayed, e.g. \
             <code>{{\"charge_id\": \"ch_123\"}}</code>. Leave empty to store none.</span>",
            esc(&values.result)
        );
    }
    let _ = write!(
        body,
        "<label>Reason (recorded in the history, with your name: {})<input name=\"reason\" \
         required maxlength=\"{}\" value=\"{}\" autocomplete=\"off\"></label>\
         <div class=\"actions\"><button type=\"submit\"{}>{button}</button>\
         <a class=\"button\" href=\"{}\">Cancel</a></div></form>",
        esc(&ctx.principal.name),
        view::MAX_REASON,
        esc(&values.reason),
        if danger { " class=\"danger\"" } else { "" },
        record_href(ctx, &r.namespace, &r.key),
    );
    let status = error.map_or(StatusCode::OK, |p| p.status);
    respond(status, page(ctx, Nav::None, title, &body))
}

/// The form the confirmation page posts.
#[derive(Debug, Deserialize)]
pub(crate) struct ActionForm {
    csrf: Option<String>,
    action: Option<String>,
    namespace: Option<String>,
    key: Option<String>,
    reason: Option<String>,
    force: Option<String>,
    result: Option<String>,
    token: Option<String>,
}

pub(crate) async fn action(
    State(app): State<App>,
    Extension(ctx): Extension<Ctx>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(f)) => f,
        Err(e) => return error_page(&ctx, e.status(), &e.body_text()),
    };
    let csrf_ok = form
        .csrf
        .as_deref()
        .is_some_and(|t| app.csrf().verify(&ctx.principal.name, t));
    if !csrf_ok {
        return error_page(
            &ctx,
            StatusCode::FORBIDDEN,
            "This form has expired or did not come from this console (its CSRF token does not \
             match). Go back, reload the page and try again.",
        );
    }
    let verb = match Verb::parse(form.action.as_deref().unwrap_or("")) {
        Ok(v) => v,
        Err(p) => return problem_page(&ctx, &p),
    };
    let kp = KeyParams {
        namespace: form.namespace.clone(),
        key: form.key.clone(),
    };
    let (namespace, key) = match kp.parts() {
        Ok((n, k)) => (n.to_owned(), k.to_owned()),
        Err(p) => return problem_page(&ctx, &p),
    };
    let values = FormValues {
        reason: form.reason.clone().unwrap_or_default(),
        result: form.result.clone().unwrap_or_default(),
    };
    let request = build_request(verb, &namespace, &key, &form);
    let outcome = match request {
        Ok(req) => req.apply(app.sentinel(), &ctx).await,
        Err(p) => Err(p),
    };
    match outcome {
        Ok(_) => {
            let to = format!(
                "{}/record?namespace={}&key={}&done={}",
                ctx.raw_base,
                Url(&namespace),
                Url(&key),
                verb.as_str()
            );
            Redirect::to(&to).into_response()
        }
        Err(p) => match app.sentinel().inspect(&namespace, &key).await {
            Ok(Some(r)) => confirm_page(&app, &ctx, verb, &r, Some(&p), &values),
            _ => problem_page(&ctx, &p),
        },
    }
}

fn build_request(
    verb: Verb,
    namespace: &str,
    key: &str,
    form: &ActionForm,
) -> Result<ActionRequest, Problem> {
    // The engine refuses a result that is not JSON (400, shown on the form).
    let result = form
        .result
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty() && verb == Verb::Complete)
        .map(str::to_owned);
    let expected_token = form
        .token
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .map(view::parse_token)
        .transpose()?;
    Ok(ActionRequest {
        verb,
        namespace: namespace.to_owned(),
        key: key.to_owned(),
        reason: view::reason(form.reason.as_deref())?,
        force: form.force.is_some(),
        result,
        expected_token,
    })
}
