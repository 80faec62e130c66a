//! Health, readiness, metrics and the OpenAPI document.

use command_service::{
    App,
    config::{RelayConfig, ServeConfig},
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::helpers::{database_config, fresh_database, relay_config, spawn_app, spawn_app_with_relay};

#[tokio::test]
async fn health_readiness_and_metrics_report_the_service_and_its_outbox() {
    let app = spawn_app_with_relay().await;
    let (status, body) = app.admin_get("/healthz").await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    let (status, body) = app.admin_get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["database"], "ok");

    let id = app.create_product("Lamp", "Home", "49.99", 1).await;
    app.get(&format!("/api/products/{id}")).await;
    app.wait_until_outbox_drained(std::time::Duration::from_secs(20)).await;

    // The counters move on the relay's own schedule; give them a moment rather than a fixed sleep.
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = app.metrics().await;
        if metrics.contains("outbox_published_total{event_type=\"ProductCreated\"} 1") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for expected in [
        "http_requests_total{method=\"POST\",route=\"/api/products\",status=\"201\"} 1",
        "http_requests_total{method=\"GET\",route=\"/api/products/{id}\",status=\"200\"} 1",
        "http_request_duration_seconds_bucket{method=\"POST\",route=\"/api/products\"",
        "outbox_published_total{event_type=\"ProductCreated\"} 1",
        "outbox_publish_duration_seconds_count",
        "outbox_publish_lag_seconds_count",
        "outbox_pending_events",
        "outbox_oldest_pending_age_seconds",
    ] {
        assert!(metrics.contains(expected), "/metrics lacks {expected}:\n{metrics}");
    }
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_and_its_error_codes() {
    let app = spawn_app().await;
    let (status, doc) = app.get("/api/openapi.json").await;
    assert_eq!(status, 200);
    let paths = &doc["paths"];
    for (path, method, codes) in [
        ("/api/products", "post", &["201", "400", "401", "413", "422"][..]),
        ("/api/products/{id}", "get", &["200", "400", "401", "404"][..]),
        ("/api/products/{id}", "patch", &["200", "400", "401", "404", "422"][..]),
        ("/api/orders", "post", &["201", "400", "401", "409", "413", "422"][..]),
        ("/api/orders/{id}", "get", &["200", "400", "401", "404"][..]),
    ] {
        let responses = &paths[path][method]["responses"];
        for code in codes {
            assert!(responses.get(code).is_some(), "{method} {path} documents {code}: {responses}");
        }
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    assert_eq!(doc["components"]["securitySchemes"]["bearer"], json!({"type": "http", "scheme": "bearer"}));
    assert_eq!(doc["security"], json!([{"bearer": []}]), "every operation needs the token");
}

#[tokio::test]
async fn without_a_relay_in_the_process_no_broker_is_needed_or_reported() {
    analytics_kit::telemetry::init_for_tests();
    let database_url = fresh_database().await;
    let serve = |no_relay| ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        no_relay,
        auth: analytics_testkit::auth_config(),
        database: database_config(&database_url),
        relay: RelayConfig { amqp_url: None, ..relay_config("amqp://unused", "unused.") },
    };
    let refused = App::build(serve(false)).await.err().expect("a relay without a broker URL is refused");
    assert!(format!("{refused:#}").contains("AMQP_URL"), "{refused:#}");

    let app = App::build(serve(true)).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let admin = format!("http://127.0.0.1:{}", app.admin_port());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run(shutdown.clone()));
    let client = analytics_testkit::api_client();
    let created = client
        .post(format!("{base}/api/products"))
        .json(&json!({"name": "Lamp", "category": "Home", "price": 1, "stock": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "writes go to the outbox for a relay elsewhere");
    let ready: serde_json::Value = client.get(format!("{admin}/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready, json!({"status": "ready", "checks": {"database": "ok"}}));
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

/// The service as a process, at debug level: a broker URL with a typo, and two bearer tokens, one of
/// them from a file, that are used (and one wrongly) while it runs. None of the secrets reaches the logs.
#[tokio::test]
async fn neither_a_password_nor_a_token_reaches_the_logs() {
    use std::io::{BufRead, BufReader};
    const PASSWORD: &str = "pw-never-logged";
    const ENV_TOKEN: &str = "env-token-never-logged-0123456789abcdef";
    const FILE_TOKEN: &str = "file-token-never-logged-0123456789abcdef";
    const WRONG_TOKEN: &str = "wrong-token-never-logged-0123456789abcdef";
    let database_url = fresh_database().await;
    let tokens_file = std::env::temp_dir().join(format!("command-tokens-{}", std::process::id()));
    std::fs::write(&tokens_file, format!("{FILE_TOKEN}\n")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_command-service"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--admin-listen", "127.0.0.1:0"])
        .env("WRITE_DATABASE_URL", &database_url)
        // A missing "//" is a typo that the parser answers by quoting the whole URL.
        .env("AMQP_URL", format!("amqp:analytics:{PASSWORD}@broker:5672/%2f"))
        .env("API_TOKEN", ENV_TOKEN)
        .env("API_TOKENS_FILE", &tokens_file)
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || stdout.lines().map_while(Result::ok).try_for_each(|line| lines.send(line)));
    let mut logs = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !logs.iter().any(|line: &String| line.contains("relay cannot reach the broker")) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match received.recv_timeout(left) {
            Ok(line) => logs.push(line),
            Err(_) => break,
        }
    }
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/api/products/1");
    for (token, status) in [(ENV_TOKEN, 404), (FILE_TOKEN, 404), (WRONG_TOKEN, 401)] {
        let response = http.get(&url).bearer_auth(token).send().await.unwrap();
        assert_eq!(response.status(), status);
    }
    child.kill().unwrap();
    let output = child.wait_with_output().unwrap();
    logs.extend(received.try_iter());
    logs.push(String::from_utf8_lossy(&output.stderr).into_owned());
    std::fs::remove_file(&tokens_file).unwrap();
    let logs = logs.join("\n");
    assert!(logs.contains("relay cannot reach the broker") && logs.contains("does not parse"), "{logs}");
    assert!(logs.contains("/api/products/1"), "the requests were traced: {logs}");
    for secret in [PASSWORD, ENV_TOKEN, FILE_TOKEN, WRONG_TOKEN] {
        assert!(!logs.contains(secret), "{secret} is in the logs:\n{logs}");
    }
}
