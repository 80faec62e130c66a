//! Bearer-token authentication: who may call the API, what a refusal looks like, and rotation.

use std::time::Duration;

use analytics_testkit::{API_TOKEN, assert_error, eventually};
use reqwest::{StatusCode, header::WWW_AUTHENTICATE};
use serde_json::{Value, json};

use crate::helpers::{fresh_database, spawn_alone, spawn_app};

#[tokio::test]
async fn a_request_without_a_valid_token_gets_a_json_401_and_writes_nothing() {
    let app = spawn_app().await;
    let anonymous = reqwest::Client::new();
    let product = json!({"name": "Lamp", "category": "Home", "price": 49.99, "stock": 5});
    let cases = [
        (None, "Bearer realm=\"command\""),
        (Some("Bearer not-the-token-0123456789abcdef0123456789"), "Bearer realm=\"command\", error=\"invalid_token\""),
        // The right token under another scheme is no bearer token.
        (Some(&*format!("Basic {API_TOKEN}")), "Bearer realm=\"command\""),
        // A prefix of the right token.
        (
            Some(&*format!("Bearer {}", &API_TOKEN[..API_TOKEN.len() - 1])),
            "Bearer realm=\"command\", error=\"invalid_token\"",
        ),
    ];
    for (authorization, challenge) in cases {
        for request in [
            anonymous.post(format!("{}/api/products", app.address)).json(&product),
            anonymous.patch(format!("{}/api/products/1", app.address)).json(&json!({"price": "1.00"})),
            anonymous.post(format!("{}/api/orders", app.address)).json(&json!({"customerId": 1, "items": []})),
            anonymous.get(format!("{}/api/orders/1", app.address)),
        ] {
            let request = match authorization {
                Some(value) => request.header("authorization", value),
                None => request,
            };
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{authorization:?}");
            assert_eq!(response.headers()[WWW_AUTHENTICATE], challenge, "{authorization:?}");
            let body: Value = response.json().await.unwrap();
            assert_error(401, &body, 401, "unauthorized");
        }
    }
    let written: i64 = sqlx::query_scalar("select (select count(*) from products) + (select count(*) from outbox)")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(written, 0, "a refused request writes nothing");

    // The scheme name is case-insensitive (RFC 7235).
    let response = anonymous
        .post(format!("{}/api/products", app.address))
        .header("authorization", format!("bearer {API_TOKEN}"))
        .json(&product)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn probes_metrics_and_the_openapi_document_need_no_token_and_only_the_admin_port_serves_metrics() {
    let app = spawn_app().await;
    analytics_testkit::assert_open_endpoints(&app.address, &app.admin).await;
    let anonymous = reqwest::Client::new();
    anonymous.get(format!("{}/api/orders/1", app.address)).send().await.unwrap();
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("http_requests_total{method=\"GET\",route=\"/api/orders/{id}\",status=\"401\"} 1"),
        "refusals are counted per route:\n{metrics}"
    );
}

/// The Kubernetes way: the tokens live in a mounted file that is replaced in place. A new token works,
/// both work during the overlap, and the old one stops working once it is removed; no restart.
#[tokio::test]
async fn replacing_the_tokens_file_rotates_the_tokens_without_a_restart() {
    const OLD: &str = "old-token-0123456789abcdef0123456789abcdef";
    const NEW: &str = "new-token-0123456789abcdef0123456789abcdef";
    let dir = std::env::temp_dir().join(format!("rotate-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tokens");
    std::fs::write(&file, format!("{OLD}\n")).unwrap();
    let database_url = fresh_database().await;
    let auth = analytics_kit::http::AuthConfig { tokens_file: Some(file.clone()), ..Default::default() };
    let (base, _, shutdown, running) = spawn_alone(&database_url, auth).await;
    let url = format!("{base}/api/products/1");
    let http = reqwest::Client::new();
    let status = |token: &'static str| {
        let (http, url) = (http.clone(), url.clone());
        async move { http.get(url).bearer_auth(token).send().await.unwrap().status().as_u16() }
    };
    assert_eq!((status(OLD).await, status(NEW).await), (404, 401));

    // Written to a temporary file and renamed over the old one, as the kubelet swaps a Secret volume.
    let replace = |content: String| {
        let staged = dir.join("tokens.new");
        std::fs::write(&staged, content).unwrap();
        std::fs::rename(&staged, &file).unwrap();
    };
    replace(format!("{OLD}\n{NEW}\n"));
    eventually(Duration::from_secs(20), "the new token accepted", || async {
        (status(NEW).await == 404).then_some(())
    })
    .await;
    assert_eq!(status(OLD).await, 404, "during the overlap both are valid");
    replace(format!("{NEW}\n"));
    eventually(Duration::from_secs(20), "the old token refused", || async { (status(OLD).await == 401).then_some(()) })
        .await;
    assert_eq!(status(NEW).await, 404);
    shutdown.cancel();
    running.await.unwrap().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
