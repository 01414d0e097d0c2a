//! HTML building blocks: escaping (every piece of stored or requested text goes through
//! [`esc`] or [`Url`]), the page layout, and the small renderings pages share.

use std::fmt::{self, Write as _};
use std::time::SystemTime;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use sentinel_core::State;

use crate::Ctx;

/// Text escaped for HTML element content and double-quoted attribute values.
pub(crate) struct Esc<'a>(pub(crate) &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = 0;
        for (i, c) in self.0.char_indices() {
            let rep = match c {
                '&' => "&amp;",
                '<' => "&lt;",
                '>' => "&gt;",
                '"' => "&quot;",
                '\'' => "&#39;",
                _ => continue,
            };
            f.write_str(&self.0[last..i])?;
            f.write_str(rep)?;
            last = i + c.len_utf8();
        }
        f.write_str(&self.0[last..])
    }
}

/// Shorthand for [`Esc`].
pub(crate) fn esc(s: &str) -> Esc<'_> {
    Esc(s)
}

/// Text percent-encoded for a query-string value (then safe in an attribute as well).
pub(crate) struct Url<'a>(pub(crate) &'a str);

impl fmt::Display for Url<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                f.write_char(char::from(b))?;
            } else {
                write!(f, "%{b:02X}")?;
            }
        }
        Ok(())
    }
}

/// The link to a record's page.
pub(crate) fn record_href(ctx: &Ctx, namespace: &str, key: &str) -> String {
    format!(
        "{}/record?namespace={}&amp;key={}",
        ctx.base,
        Url(namespace),
        Url(key)
    )
}

pub(crate) use sentinel_core::format::short_duration as short;

/// A `<time>` element: relative to `now` ("3s ago", "in 5m"), the exact UTC time as its title.
pub(crate) fn time(t: SystemTime, now: SystemTime) -> String {
    let exact = sentinel_core::format::rfc3339(t);
    let rel = sentinel_core::format::relative(t, now);
    format!("<time datetime=\"{exact}\" title=\"{exact}\">{rel}</time>")
}

/// A state as a coloured badge (the colour is decoration: the word is always there).
pub(crate) fn badge(state: State) -> String {
    format!("<span class=\"badge state-{0}\">{0}</span>", state.as_str())
}

/// Which navigation entry a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Overview,
    Records,
    Uncertain,
    None,
}

/// A whole page: the layout around `body`.
pub(crate) fn page(ctx: &Ctx, nav: Nav, title: &str, body: &str) -> String {
    let base = &ctx.base;
    let current = |n: Nav| {
        if n == nav {
            " aria-current=\"page\""
        } else {
            ""
        }
    };
    let who = format!(
        "{} <span class=\"role\">{}</span>",
        esc(&ctx.principal.name),
        ctx.principal.role.as_str()
    );
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Sentinel</title>\
         <link rel=\"stylesheet\" href=\"{base}/assets/console.css\">\
         <script src=\"{base}/assets/console.js\" defer></script></head>\
         <body><a class=\"skip\" href=\"#main\">Skip to content</a>\
         <header><nav aria-label=\"Main\"><a class=\"brand\" href=\"{home}\">Sentinel</a>\
         <a href=\"{home}\"{o}>Overview</a>\
         <a href=\"{base}/records?state=uncertain\"{u}>Uncertain</a>\
         <a href=\"{base}/records\"{r}>Records</a></nav>\
         <span class=\"who\">{who}</span></header>\
         <main id=\"main\" tabindex=\"-1\">{body}</main>\
         <footer><span id=\"live-status\" role=\"status\" aria-live=\"polite\"></span>\
         <a href=\"{base}/api/v1/openapi.json\">API</a> <a href=\"{base}/metrics\">Metrics</a>\
         </footer></body></html>\n",
        title = esc(title),
        home = ctx.home(),
        o = current(Nav::Overview),
        u = current(Nav::Uncertain),
        r = current(Nav::Records),
    )
}

/// A page as a response with its status.
pub(crate) fn respond(status: StatusCode, html: String) -> Response {
    (status, Html(html)).into_response()
}

/// An error page: what went wrong, in a page of the console.
pub(crate) fn error_page(ctx: &Ctx, status: StatusCode, message: &str) -> Response {
    let body = format!(
        "<h1>{}</h1><p class=\"error\" role=\"alert\">{}</p><p><a href=\"{}\">Back to the \
         overview</a></p>",
        status.canonical_reason().unwrap_or("Error"),
        esc(message),
        ctx.home()
    );
    respond(status, page(ctx, Nav::None, "Error", &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\"").to_string(),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(esc("plain ünïcode").to_string(), "plain ünïcode");
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(Url("a b/c&d=é").to_string(), "a%20b%2Fc%26d%3D%C3%A9");
        assert_eq!(Url("order-1.x_~").to_string(), "order-1.x_~");
    }
}
