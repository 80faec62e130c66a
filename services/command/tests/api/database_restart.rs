//! The database restarts under the service, on a PostgreSQL server of the test's own: a quick restart
//! costs no request anything although every pooled connection broke with it; while it stays down,
//! requests get a 503 with `Retry-After` at once, saying the database cannot be reached (and `/readyz`
//! says so), and once it is back no request fails.

use std::time::{Duration, Instant};

use analytics_testkit::{api_client, hack};
use serde_json::{Value, json};

use crate::helpers::spawn_alone;

struct PrivatePostgres {
    dir: std::path::PathBuf,
    port: String,
}

impl PrivatePostgres {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("restart-{}", uuid::Uuid::new_v4().simple()));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
        let server = Self { dir, port };
        server.start_again();
        server
    }

    fn start_again(&self) {
        hack("postgres.sh", &["start", self.dir.to_str().unwrap(), &self.port]);
    }

    fn stop(&self) {
        hack("postgres.sh", &["stop", self.dir.to_str().unwrap()]);
    }

    fn url(&self) -> String {
        format!("{}/postgres", std::fs::read_to_string(self.dir.join("url")).unwrap())
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop();
        drop(std::fs::remove_dir_all(&self.dir));
    }
}

/// 40 requests in a row, orders and reads by turns: their statuses.
async fn burst<F, Fut>(send: &F, order: &Value) -> Vec<u16>
where
    F: Fn(reqwest::Method, &'static str, Option<Value>) -> Fut,
    Fut: std::future::Future<Output = (u16, Option<String>, Value)>,
{
    let mut answers = Vec::new();
    for n in 0..40 {
        let (method, path, body) = if n % 2 == 0 {
            (reqwest::Method::POST, "/api/orders", Some(order.clone()))
        } else {
            (reqwest::Method::GET, "/api/products/1", None)
        };
        answers.push(send(method, path, body).await.0);
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_costs_no_request_a_500_and_an_outage_is_answered_503_at_once() {
    let postgres = PrivatePostgres::start();
    let url = postgres.url();
    command_service::MIGRATOR.run(&sqlx::PgPool::connect(&url).await.unwrap()).await.unwrap();
    let (base, admin, shutdown, running) = spawn_alone(&url, analytics_testkit::auth_config()).await;
    let http = api_client();
    let send = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let base = if path.starts_with("/api/") { &base } else { &admin };
        let request = http.request(method, format!("{base}{path}"));
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        async move {
            let response = request.send().await.unwrap();
            let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
            (response.status().as_u16(), retry_after, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let order = json!({"customerId": 1, "items": [{"productId": 1, "quantity": 1}]});
    let product = json!({"name": "Lamp", "category": "Home", "price": 1, "stock": 1_000_000});
    assert_eq!(send(reqwest::Method::POST, "/api/products", Some(product)).await.0, 201);
    // Fill the pool: every connection it holds breaks with the restart.
    let warm = (0..16).map(|_| send(reqwest::Method::GET, "/api/products/1", None));
    assert!(futures::future::join_all(warm).await.iter().all(|(status, ..)| *status == 200));

    // A restart between requests: every pooled connection is stale, and the first request to find one
    // retries on a new one.
    postgres.stop();
    postgres.start_again();
    let answers = burst(&send, &order).await;
    assert!(answers.iter().all(|status| *status == 200 || *status == 201), "after a quick restart: {answers:?}");

    // A database that stays down: the first requests find their connections broken and cannot make new
    // ones; a probe finds the database unreachable, and from then on every request is answered at once.
    postgres.stop();
    for (method, path, body) in [
        (reqwest::Method::POST, "/api/orders", Some(order.clone())),
        (reqwest::Method::GET, "/api/products/1", None),
        (reqwest::Method::POST, "/api/orders", Some(order.clone())),
    ] {
        let started = Instant::now();
        let (status, retry_after, body) = send(method, path, body).await;
        println!("{path} while the database is down: {status} in {:?}", started.elapsed());
        assert_eq!(
            (status, retry_after.as_deref(), body["error"].as_str(), body["message"].as_str()),
            (503, Some("1"), Some("unavailable"), Some("the database cannot be reached; retry shortly")),
            "{body}"
        );
    }
    let started = Instant::now();
    let (status, _, body) = send(reqwest::Method::GET, "/readyz", None).await;
    println!("/readyz while the database is down: {status} in {:?}", started.elapsed());
    assert_eq!((status, body["status"].as_str()), (503, Some("unavailable")), "{body}");

    // Back: the next probe finds it, and nothing fails.
    postgres.start_again();
    let deadline = Instant::now() + Duration::from_secs(10);
    while send(reqwest::Method::GET, "/readyz", None).await.0 != 200 {
        assert!(Instant::now() < deadline, "not ready 10 s after the database came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answers = burst(&send, &order).await;
    assert!(answers.iter().all(|status| *status == 200 || *status == 201), "after the outage: {answers:?}");
    let orders: i64 = sqlx::query_scalar("select count(*) from orders")
        .fetch_one(&sqlx::PgPool::connect(&url).await.unwrap())
        .await
        .unwrap();
    assert_eq!(orders, 40, "every order answered 201 is there, once");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), running).await.unwrap().unwrap().unwrap();
}
