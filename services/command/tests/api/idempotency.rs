//! `Idempotency-Key` on `POST /api/orders` and `POST /api/products`: a retry returns the first answer and
//! writes nothing, even when the first answer was lost to a crash between commit and response.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

use analytics_testkit::{API_TOKEN, assert_error, eventually};
use serde_json::{Value, json};

use crate::helpers::{TestApp, fresh_database, spawn_alone, spawn_app};

async fn post_with_key(client: &reqwest::Client, url: &str, key: &str, body: &Value) -> (u16, Option<String>, Value) {
    let response = client.post(url).header("idempotency-key", key).json(body).send().await.unwrap();
    let replayed = response.headers().get("idempotent-replayed").map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), replayed, response.json().await.unwrap_or(Value::Null))
}

impl TestApp {
    async fn keyed(&self, path: &str, key: &str, body: &Value) -> (u16, Option<String>, Value) {
        post_with_key(&self.client, &format!("{}{path}", self.address), key, body).await
    }
}

#[tokio::test]
async fn a_retry_with_the_same_key_returns_the_first_answer_and_writes_nothing() {
    let app = spawn_app().await;
    let lamp = app.create_product("Lamp", "Home", "10.00", 10).await;
    let order = json!({"customerId": 7, "items": [{"productId": lamp, "quantity": 2}]});

    let first = app.keyed("/api/orders", "order-7-a", &order).await;
    assert_eq!((first.0, first.1.as_deref()), (201, None));
    let again = app.keyed("/api/orders", "order-7-a", &order).await;
    assert_eq!((again.0, again.1.as_deref(), &again.2), (201, Some("true"), &first.2), "the first answer, replayed");
    assert_eq!((app.count("orders").await, app.stock(lamp).await), (1, 8), "one order, stock taken once");
    assert_eq!(app.count("outbox").await, 2, "ProductCreated and one OrderCreated");

    // The key with another body, or on another route, is refused and writes nothing.
    let other = json!({"customerId": 7, "items": [{"productId": lamp, "quantity": 3}]});
    let (status, _, body) = app.keyed("/api/orders", "order-7-a", &other).await;
    assert_error(status, &body, 422, "idempotency_key_reused");
    let product = json!({"name": "Mug", "category": "Kitchen", "price": 3, "stock": 1});
    let (status, _, body) = app.keyed("/api/products", "order-7-a", &product).await;
    assert_error(status, &body, 422, "idempotency_key_reused");
    assert_eq!((app.count("orders").await, app.count("products").await, app.stock(lamp).await), (1, 1, 8));

    // Products take keys too.
    let created = app.keyed("/api/products", "mug-1", &product).await;
    let replayed = app.keyed("/api/products", "mug-1", &product).await;
    assert_eq!((created.0, replayed.0, replayed.1.as_deref()), (201, 201, Some("true")));
    assert_eq!((replayed.2.clone(), app.count("products").await), (created.2, 2));

    // A request that failed left no key behind: its retry runs afresh.
    let too_many = json!({"customerId": 8, "items": [{"productId": lamp, "quantity": 9}]});
    let (status, _, body) = app.keyed("/api/orders", "order-8", &too_many).await;
    assert_error(status, &body, 409, "insufficient_stock");
    app.patch(&format!("/api/products/{lamp}"), json!({"addStock": 10})).await;
    assert_eq!(app.keyed("/api/orders", "order-8", &too_many).await.0, 201);
    assert_eq!(app.count("orders").await, 2);

    for bad in ["", &"k".repeat(256), "two words", "ключ"] {
        let response = app
            .client
            .post(format!("{}/api/orders", app.address))
            .header("idempotency-key", bad.as_bytes())
            .json(&order)
            .send()
            .await;
        // reqwest refuses to send some of these itself; the others reach the server.
        let Ok(response) = response else { continue };
        let status = response.status().as_u16();
        assert_error(status, &response.json().await.unwrap(), 400, "invalid_idempotency_key");
    }
    assert_eq!(app.count("orders").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_one_key_make_one_order() {
    let app = spawn_app().await;
    let lamp = app.create_product("Lamp", "Home", "10.00", 100).await;
    let order = json!({"customerId": 9, "items": [{"productId": lamp, "quantity": 1}]});
    let answers = futures::future::join_all((0..12).map(|_| app.keyed("/api/orders", "same-key", &order))).await;
    assert!(answers.iter().all(|(status, ..)| *status == 201), "{answers:?}");
    assert!(answers.iter().all(|(_, _, body)| *body == answers[0].2), "one order id for all: {answers:?}");
    assert_eq!(answers.iter().filter(|(_, replayed, _)| replayed.is_none()).count(), 1, "one did the work");
    assert_eq!((app.count("orders").await, app.stock(lamp).await), (1, 99));
}

#[tokio::test]
async fn keys_belong_to_the_client_that_used_them() {
    const OTHER: &str = "other-client-0123456789abcdef0123456789abcdef";
    let database_url = fresh_database().await;
    let auth = analytics_kit::http::AuthConfig { tokens: vec![API_TOKEN.into(), OTHER.into()], ..Default::default() };
    let (base, _, shutdown, running) = spawn_alone(&database_url, auth).await;
    let url = format!("{base}/api/products");
    let client = |token: &str| {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        reqwest::Client::builder().default_headers(headers).build().unwrap()
    };
    let product = json!({"name": "Lamp", "category": "Home", "price": 1, "stock": 1});
    let mine = post_with_key(&client(API_TOKEN), &url, "k1", &product).await;
    let theirs = post_with_key(&client(OTHER), &url, "k1", &product).await;
    assert_eq!((mine.0, theirs.0, theirs.1), (201, 201, None), "the other client's k1 is its own");
    assert_ne!(mine.2, theirs.2);
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

/// The service as a process, killed with SIGKILL while orders with keys are in flight, round after round
/// until a kill lands between a commit and its answer (an order is in the database that no client heard
/// of; usually within a few rounds). Every client then retries what it did not get an answer to, with the
/// same key, against a new process: each key ends as exactly one order, and an answered order keeps its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_crash_between_commit_and_answer_the_retries_order_each_thing_once() {
    const ORDERS: usize = 200;
    let database_url = fresh_database().await;
    let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
    let client = analytics_testkit::api_client();
    let (mut child, base) = spawn_process(&database_url);
    let product = json!({"name": "Lamp", "category": "Home", "price": 1, "stock": 1_000_000});
    let (status, _, created) = post_with_key(&client, &format!("{base}/api/products"), "lamp", &product).await;
    assert_eq!(status, 201);
    let lamp = created["productId"].as_i64().unwrap();
    let order = move |n: usize| json!({"customerId": n + 1, "items": [{"productId": lamp, "quantity": 1}]});
    let count = async || -> i64 { sqlx::query_scalar("select count(*) from orders").fetch_one(&pool).await.unwrap() };

    // Each round sends the orders not yet answered, and kills the process once some have committed.
    let mut answers: Vec<Option<Value>> = vec![None; ORDERS];
    let mut lost = 0;
    for round in 1..=30 {
        if answers.iter().all(Option::is_some) {
            break;
        }
        let before = count().await;
        let url = format!("{base}/api/orders");
        let in_flight: Vec<_> = (0..ORDERS)
            .filter(|n| answers[*n].is_none())
            .map(|n| {
                let (client, url, body) = (client.clone(), url.clone(), order(n));
                tokio::spawn(async move {
                    let sent = client.post(&url).header("idempotency-key", format!("order-{n}")).json(&body).send();
                    match sent.await {
                        Ok(response) if response.status() == 201 => (n, response.json::<Value>().await.ok()),
                        _ => (n, None),
                    }
                })
            })
            .collect();
        eventually(Duration::from_secs(20), "an order committed", || async { (count().await > before).then_some(()) })
            .await;
        child.kill().unwrap();
        child.wait().unwrap();
        let mut heard = 0;
        for task in in_flight {
            if let (n, Some(answer)) = task.await.unwrap() {
                answers[n] = Some(answer);
                heard += 1;
            }
        }
        let committed = count().await - before;
        lost = committed - heard;
        println!("round {round}: killed with {committed} orders committed, {heard} answered");
        (child, _) = spawn_process_at(&database_url, &base);
        if lost > 0 {
            break;
        }
    }
    // The window between a commit and its answer is short: on a loaded machine 30 kills may all miss it.
    // The retries below must give one order per key either way.
    if lost == 0 {
        println!("no kill landed between a commit and its answer in 30 rounds");
    }

    let url = format!("{base}/api/orders");
    let mut replayed = 0;
    for (n, answer) in answers.iter().enumerate() {
        let (status, was_replayed, body) = post_with_key(&client, &url, &format!("order-{n}"), &order(n)).await;
        assert_eq!(status, 201, "{body}");
        if let Some(answer) = answer {
            assert_eq!(&body, answer, "order-{n} keeps the id it was given");
        }
        replayed += usize::from(was_replayed.is_some());
    }
    let orders = count().await;
    println!(
        "after the retries: {orders} orders for {ORDERS} keys; {replayed} retries replayed, {lost} of them never answered before"
    );
    assert_eq!(orders, ORDERS as i64, "one order per key");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// `command-service serve --no-relay` on a free port, once it answers.
fn spawn_process(database_url: &str) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    spawn_process_at(database_url, &format!("http://127.0.0.1:{port}"))
}

/// The same at `base` (`http://127.0.0.1:PORT`), as a restarted service would be.
fn spawn_process_at(database_url: &str, base: &str) -> (Child, String) {
    let port = base.rsplit(':').next().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_command-service"))
        .args(["serve", "--no-relay", "--listen", &format!("127.0.0.1:{port}"), "--admin-listen", "127.0.0.1:0"])
        .env("WRITE_DATABASE_URL", database_url)
        .env("API_TOKEN", API_TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Read its log to the end (a full pipe would stall it), and note when it listens.
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (listening, started) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if line.contains("command service listening") {
                listening.send(()).ok();
            }
        }
    });
    started.recv_timeout(Duration::from_secs(30)).expect("the service did not start");
    (child, base.to_owned())
}
