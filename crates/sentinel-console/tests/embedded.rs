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
