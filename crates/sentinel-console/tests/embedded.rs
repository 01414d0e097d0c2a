//! The console mounted inside an application: links and assets follow the prefix, and the
//! router's writes are guarded the same as under `sentinel serve`.

mod common;

use sentinel::{MemoryStore, Sentinel};

async fn sentinel_with_one_completed_key() -> Sentinel {
    let sentinel = Sentinel::builder(MemoryStore::new()).build().unwrap();
    let outcome = sentinel
        .once("order-1")
        .run(|_| async { Ok::<_, String>("<b>charged</b>".to_owned()) })
        .await
        .unwrap();
    assert!(outcome.ran_here());
    sentinel
}

#[tokio::test]
async fn links_and_assets_follow_the_mount_prefix() {
    let sentinel = sentinel_with_one_completed_key().await;
    let app = axum::Router::new().nest("/ops/sentinel", sentinel_console::router(sentinel));
    let addr = common::serve(app).await;

    let page = common::get(addr, "/ops/sentinel").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("href=\"/ops/sentinel/records"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("href=\"/ops/sentinel\" aria-current=\"page\">Overview")
    );
    assert!(
        page.body
            .contains("src=\"/ops/sentinel/assets/console.js\"")
    );
    assert!(
        page.body
            .contains("/ops/sentinel/record?namespace=default&amp;key=order-1")
    );

    let css = common::get(addr, "/ops/sentinel/assets/console.css").await;
    assert_eq!(css.status, 200);
    assert!(
        css.headers.contains("content-type: text/css"),
        "{}",
        css.headers
    );

    let record = common::get(addr, "/ops/sentinel/record?key=order-1").await;
    assert_eq!(record.status, 200);
    assert!(
        record.body.contains("&lt;b&gt;charged&lt;/b&gt;"),
        "{}",
        record.body
    );
    assert!(!record.body.contains("<b>charged"));

    let outside = common::get(addr, "/records").await;
    assert_eq!(
        outside.status, 404,
        "the console answers only under its prefix"
    );
}

#[tokio::test]
async fn a_form_post_without_its_csrf_token_changes_nothing() {
    let sentinel = sentinel_with_one_completed_key().await;
    let addr = common::serve(sentinel_console::router(sentinel.clone())).await;
    let form = "action=forget&namespace=default&key=order-1&reason=cleanup";
    let reply = common::request(
        addr,
        "POST",
        "/action",
        "Content-Type: application/x-www-form-urlencoded\r\n",
        form,
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(
        sentinel
            .inspect("default", "order-1")
            .await
            .unwrap()
            .is_some()
    );
}

/// The CSRF token of the confirmation page at `path`.
async fn csrf_token(addr: std::net::SocketAddr, path: &str) -> String {
    let page = common::get(addr, path).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let marker = "name=\"csrf\" value=\"";
    let at = page.body.find(marker).unwrap() + marker.len();
    page.body[at..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn a_confirmed_action_under_a_prefix_lands_back_under_it() {
    let sentinel = sentinel_with_one_completed_key().await;
    let app = axum::Router::new().nest("/ops", sentinel_console::router(sentinel.clone()));
    let addr = common::serve(app).await;
    let token = csrf_token(addr, "/ops/confirm?action=forget&key=order-1").await;
    let form = format!("csrf={token}&action=forget&namespace=default&key=order-1&reason=rerun");
    let reply = common::request(
        addr,
        "POST",
        "/ops/action",
        &format!("Content-Type: application/x-www-form-urlencoded\r\nOrigin: http://{addr}\r\n"),
        &form,
    )
    .await;
    assert_eq!(reply.status, 303, "{}", reply.body);
    assert!(
        reply
            .headers
            .contains("location: /ops/record?namespace=default&key=order-1&done=forget"),
        "{}",
        reply.headers
    );
    assert!(
        sentinel
            .inspect("default", "order-1")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_valid_form_token_from_another_origin_changes_nothing() {
    let sentinel = sentinel_with_one_completed_key().await;
    let addr = common::serve(sentinel_console::router(sentinel.clone())).await;
    let token = csrf_token(addr, "/confirm?action=forget&key=order-1").await;
    let form = format!("csrf={token}&action=forget&namespace=default&key=order-1&reason=x");
    for header in [
        "Origin: http://attacker.example\r\n",
        "Sec-Fetch-Site: cross-site\r\n",
    ] {
        let reply = common::request(
            addr,
            "POST",
            "/action",
            &format!("Content-Type: application/x-www-form-urlencoded\r\n{header}"),
            &form,
        )
        .await;
        assert_eq!(reply.status, 403, "{header}: {}", reply.body);
        assert!(reply.body.contains("another site"), "{}", reply.body);
    }
    let kept = sentinel.inspect("default", "order-1").await.unwrap();
    assert!(kept.is_some());
    // The same token from the console's own origin is accepted: the refusals were the origin's.
    let reply = common::request(
        addr,
        "POST",
        "/action",
        &format!("Content-Type: application/x-www-form-urlencoded\r\nOrigin: http://{addr}\r\n"),
        &form,
    )
    .await;
    assert_eq!(reply.status, 303, "{}", reply.body);
}

#[tokio::test]
async fn without_sign_in_only_loopback_host_names_are_answered() {
    let sentinel = sentinel_with_one_completed_key().await;
    let addr = common::serve(sentinel_console::router(sentinel.clone())).await;
    // A page of attacker.example re-pointed at 127.0.0.1 (DNS rebinding) sends its own name.
    let port = addr.port();
    for (host, status) in [
        (format!("attacker.example:{port}"), 421),
        (format!("localhost:{port}"), 200),
        (format!("127.0.0.1:{port}"), 200),
    ] {
        let reply =
            common::request(addr, "GET", "/api/v1/me", &format!("Host: {host}\r\n"), "").await;
        assert_eq!(reply.status, status, "{host}");
    }
    let open = sentinel_console::Console::new(sentinel).allow_any_host();
    let addr = common::serve(open.router()).await;
    let reply = common::request(addr, "GET", "/", "Host: ops.example\r\n", "").await;
    assert_eq!(
        reply.status, 200,
        "allow_any_host: behind the application's own access control"
    );
}
