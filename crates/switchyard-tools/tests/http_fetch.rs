//! `http_fetch` against a real HTTP server on an ephemeral port (axum):
//! text extracted from HTML, hosts outside the allow-list refused, also
//! when a redirect leads there, allowed names that resolve to private
//! addresses not reached, bodies cut at the size limit, a slow server
//! stopped at the deadline.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use axum::Router;
use axum::response::{Html, IntoResponse, Redirect};
use axum::routing::get;
use switchyard_config::HttpFetchConfig;
use switchyard_tools::ToolError;
use switchyard_tools::http_fetch::HttpFetch;

async fn server() -> String {
    let app = Router::new()
        .route(
            "/page",
            get(|| async {
                Html("<html><head><title>T</title><style>p{}</style></head><body><h1>Release notes</h1><p>Version <b>4.2</b> fixes the leak.</p></body></html>")
            }),
        )
        .route("/big", get(|| async { "x".repeat(100_000) }))
        .route("/away", get(|| async { Redirect::temporary("http://localhost:1/elsewhere") }))
        .route("/image", get(|| async { ([("content-type", "image/png")], vec![0u8; 16]).into_response() }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

fn fetcher() -> HttpFetch {
    HttpFetch::new(&HttpFetchConfig {
        allow_hosts: vec!["127.0.0.1".into()],
        max_bytes: 10_000,
        timeout_secs: 2,
        max_chars: 20_000,
        allow_private_addresses: false,
    })
    .unwrap()
    .expect("hosts are allowed, so the tool is on")
}

#[tokio::test]
async fn html_comes_back_as_text() {
    let base = server().await;
    let page = fetcher().fetch(&format!("{base}/page")).await.unwrap();
    assert_eq!(page.status, 200);
    assert!(page.text.contains("Release notes"), "{page:?}");
    // Markdown-like text: headings and emphasis survive, tags do not.
    assert!(
        page.text.contains("Version **4.2** fixes the leak."),
        "{page:?}"
    );
    assert!(!page.text.contains("<p>"), "{page:?}");
    assert!(!page.truncated);
}

#[tokio::test]
async fn hosts_outside_the_allow_list_are_refused_also_through_a_redirect() {
    let base = server().await;
    let fetcher = fetcher();
    let refused = fetcher.fetch("http://localhost:1/x").await.unwrap_err();
    assert!(matches!(refused, ToolError::Arguments(_)), "{refused}");
    let redirected = fetcher.fetch(&format!("{base}/away")).await.unwrap_err();
    assert!(
        redirected.to_string().contains("not an allowed host"),
        "{redirected}"
    );
    let bad = fetcher.fetch("not a url").await.unwrap_err();
    assert!(matches!(bad, ToolError::Arguments(_)));
}

#[tokio::test]
async fn a_big_body_is_cut_at_the_limit_and_binary_is_refused() {
    let base = server().await;
    let fetcher = fetcher();
    let page = fetcher.fetch(&format!("{base}/big")).await.unwrap();
    assert!(page.truncated);
    assert_eq!(page.text.len(), 10_000);
    let image = fetcher.fetch(&format!("{base}/image")).await.unwrap_err();
    assert!(image.to_string().contains("image/png"), "{image}");
}

#[tokio::test]
async fn a_slow_server_is_stopped_at_the_deadline() {
    let base = server().await;
    let slow = fetcher().fetch(&format!("{base}/slow")).await.unwrap_err();
    assert!(slow.to_string().contains("timed out"), "{slow}");
}

#[test]
fn no_allowed_hosts_means_no_tool() {
    assert!(
        HttpFetch::new(&HttpFetchConfig::default())
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn an_allowed_name_that_resolves_to_a_private_address_is_not_reached_unless_allowed() {
    let base = server().await;
    let port = base.rsplit(':').next().unwrap();
    let config = HttpFetchConfig {
        allow_hosts: vec!["localhost".into()],
        max_bytes: 10_000,
        timeout_secs: 2,
        max_chars: 20_000,
        allow_private_addresses: false,
    };
    let url = format!("http://localhost:{port}/page");
    let guarded = HttpFetch::new(&config).unwrap().unwrap();
    let refused = guarded.fetch(&url).await.unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("resolves only to private, loopback or link-local addresses"),
        "{refused}"
    );
    let trusting = HttpFetch::new(&HttpFetchConfig {
        allow_private_addresses: true,
        ..config
    })
    .unwrap()
    .unwrap();
    let page = trusting.fetch(&url).await.unwrap();
    assert!(page.text.contains("Release notes"), "{page:?}");
}
