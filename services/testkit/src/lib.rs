//! Support for the integration tests, which run against the real PostgreSQL and RabbitMQ that
//! `make test` starts (`TEST_DATABASE_URL`, `TEST_AMQP_URL`). Every test gets a fresh database and
//! broker names of its own; a test that stops the broker gets a [`PrivateBroker`].

#![allow(clippy::unwrap_used)]

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use analytics_events::Topology;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool, migrate::Migrator};
use uuid::Uuid;

/// A variable `make test` sets; its absence fails the test loudly rather than skipping it.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with `make test`, which starts PostgreSQL, RabbitMQ and a Kubernetes control plane for them")
    })
}

/// The bearer token the test services accept, on both APIs.
pub const API_TOKEN: &str = "test-token-0123456789abcdef0123456789abcdef";

/// The authentication of a service under test: [`API_TOKEN`] only.
pub fn auth_config() -> analytics_kit::http::AuthConfig {
    analytics_kit::http::AuthConfig { tokens: vec![API_TOKEN.into()], ..Default::default() }
}

/// A client that sends [`API_TOKEN`] with every request.
pub fn api_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let mut bearer = reqwest::header::HeaderValue::from_str(&format!("Bearer {API_TOKEN}")).unwrap();
    bearer.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, bearer);
    reqwest::Client::builder().default_headers(headers).build().unwrap()
}

/// A program `make test` provides (helm, kubectl, promtool, hadolint), at the path in `variable`.
pub fn tool(variable: &str) -> PathBuf {
    let path = PathBuf::from(env(variable));
    assert!(path.exists(), "{variable}={} does not exist", path.display());
    path
}

/// Runs `command`, with `stdin` as its input if given: its stdout if it succeeds, otherwise its exit
/// status, stdout and stderr. Panics only if the program cannot be started.
pub fn try_run(command: &mut Command, stdin: Option<&str>) -> Result<String, String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{}\n{stdout}{}", output.status, String::from_utf8_lossy(&output.stderr)))
    }
}

/// [`try_run`] that must succeed: its stdout, or a panic naming the command and what it printed.
pub fn run(command: &mut Command, stdin: Option<&str>) -> String {
    try_run(command, stdin).unwrap_or_else(|failure| {
        let args: Vec<_> = command.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        panic!("{} {args:?} failed: {failure}", command.get_program().to_string_lossy())
    })
}

/// The shared test broker.
pub fn amqp_url() -> String {
    env("TEST_AMQP_URL")
}

/// A new database, migrated by `migrator`; returns its URL.
pub async fn fresh_database(migrator: &Migrator) -> String {
    let admin = env("TEST_DATABASE_URL");
    let name = format!("test_{}", Uuid::new_v4().simple());
    let mut connection = PgConnection::connect(&format!("{admin}/postgres")).await.expect("admin connection");
    sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}"))).execute(&mut connection).await.unwrap();
    let url = format!("{admin}/{name}");
    let pool = PgPool::connect(&url).await.unwrap();
    migrator.run(&pool).await.unwrap();
    pool.close().await;
    url
}

/// Broker names no other test uses.
pub fn unique_prefix() -> String {
    format!("test-{}.", Uuid::new_v4().simple())
}

/// Declares the topology, so queues exist (and collect messages) before any service starts.
pub async fn declare(amqp_url: &str, topology: &Topology) {
    let connection = analytics_kit::amqp::connect(&amqp_url.into(), "test").await.expect("broker connection");
    let channel = connection.create_channel().await.unwrap();
    analytics_kit::amqp::declare_topology(&channel, topology).await.unwrap();
    connection.close(200, "done".into()).await.unwrap();
}

/// Reads `count` domain events from `queue`, then checks that no other follows within `quiet`.
pub async fn read_exactly(amqp_url: &str, queue: &str, count: usize, timeout: Duration, quiet: Duration) -> Vec<Value> {
    let messages = read_at_least(amqp_url, queue, count, timeout, quiet).await;
    assert_eq!(messages.len(), count, "expected exactly {count} messages on {queue}, got {}", messages.len());
    messages
}

/// Reads at least `count` domain events (acking them, skipping the relay's watermarks), plus any
/// that arrive within `quiet` after the last one. Panics if fewer than `count` arrive within `timeout`.
pub async fn read_at_least(
    amqp_url: &str,
    queue: &str,
    count: usize,
    timeout: Duration,
    quiet: Duration,
) -> Vec<Value> {
    let connection = analytics_kit::amqp::connect(&amqp_url.into(), "test reader").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut consumer = channel
        .basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), Default::default())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut messages = Vec::new();
    // The quiet window runs from the last domain event: watermarks keep coming and must not extend it.
    let mut quiet_until = deadline;
    loop {
        let until = if messages.len() < count { deadline } else { quiet_until };
        match tokio::time::timeout_at(until, consumer.next()).await {
            Ok(Some(delivery)) => {
                let delivery = delivery.unwrap();
                let message: Value = serde_json::from_slice(&delivery.data).unwrap_or(Value::Null);
                if message["eventType"] != "Watermark" {
                    messages.push(message);
                    quiet_until = tokio::time::Instant::now() + quiet;
                }
                delivery.ack(BasicAckOptions::default()).await.unwrap();
            }
            Ok(None) => panic!("the consumer on {queue} was cancelled"),
            Err(_) if messages.len() < count => {
                panic!("only {} of {count} messages arrived on {queue} within {timeout:?}", messages.len())
            }
            Err(_) => break,
        }
    }
    connection.close(200, "done".into()).await.unwrap();
    messages
}

/// A RabbitMQ node of a test's own, which the test may stop and start: `hack/rabbitmq.sh` on free ports.
pub struct PrivateBroker {
    dir: PathBuf,
    ports: [u16; 3],
}

impl PrivateBroker {
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("analytics-broker-{}", Uuid::new_v4().simple()));
        let listeners: Vec<_> = (0..3).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        let ports: Vec<u16> = listeners.iter().map(|l| l.local_addr().unwrap().port()).collect();
        drop(listeners);
        let broker = Self { dir, ports: [ports[0], ports[1], ports[2]] };
        broker.start_again();
        broker
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.ports[0])
    }

    /// Its AMQP, Erlang distribution and epmd ports.
    pub fn ports(&self) -> [u16; 3] {
        self.ports
    }

    pub fn start_again(&self) {
        let [amqp, dist, epmd] = self.ports.map(|port| port.to_string());
        hack("rabbitmq.sh", &["start", self.dir.to_str().unwrap(), &amqp, &dist, &epmd]);
    }

    pub fn stop(&self) {
        hack("rabbitmq.sh", &["stop", self.dir.to_str().unwrap()]);
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.stop();
        drop(std::fs::remove_dir_all(&self.dir));
    }
}

/// Runs one of the repository's hack/ scripts and insists that it succeeds.
pub fn hack(script: &str, args: &[&str]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hack").join(script);
    let status =
        Command::new(&path).args(args).status().unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    assert!(status.success(), "{} {args:?} failed", path.display());
}

/// Asserts the common error shape and code, and returns the message.
pub fn assert_error(status: u16, body: &Value, expected_status: u16, expected_code: &str) -> String {
    assert_eq!(status, expected_status, "{body}");
    let object = body.as_object().unwrap_or_else(|| panic!("error body is not a JSON object: {body}"));
    assert_eq!(object.len(), 2, "error body has exactly error and message: {body}");
    assert_eq!(body["error"], expected_code, "{body}");
    let message = body["message"].as_str().unwrap_or_else(|| panic!("message is not a string: {body}"));
    assert!(!message.is_empty());
    message.to_owned()
}

/// Polls `check` every 50 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_explained(timeout, what, || {
        let checked = check();
        async move { checked.await.ok_or_else(String::new) }
    })
    .await
}

/// [`eventually`] for a `check` that says what it is still waiting for: after `timeout`, the panic names
/// `what` and the last of those explanations (for a wait on a whole system, the only clue a log keeps).
pub async fn eventually_explained<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let unmet = match check().await {
            Ok(value) => return value,
            Err(unmet) => unmet,
        };
        if tokio::time::Instant::now() >= deadline {
            let last = if unmet.is_empty() { String::new() } else { format!("; last seen: {unmet}") };
            panic!("timed out after {timeout:?} waiting for {what}{last}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every product, category, customer, customer's category and hour of the read model, through the query API at `query_url`
/// (called with `http`, which carries a read token) and the hourly view in `read`, against SQL over the
/// write database. Returns how many customers it compared, so that a caller can insist the comparison
/// was not vacuous.
pub async fn assert_read_model_matches_write_side(
    http: &reqwest::Client,
    write: &PgPool,
    read: &PgPool,
    query_url: &str,
) -> usize {
    let query = |path: String| {
        let http = http.clone();
        async move {
            let response = http.get(format!("{query_url}{path}")).send().await.unwrap();
            assert_eq!(response.status().as_u16(), 200, "GET {path}");
            response.json::<Value>().await.unwrap()
        }
    };
    let products: Vec<(i64, i64, Decimal, i64)> = sqlx::query_as(
        "select p.id, coalesce(sum(i.quantity), 0)::bigint, coalesce(sum(i.quantity * i.unit_price), 0), count(distinct i.order_id)
           from products p left join order_items i on i.product_id = p.id group by p.id order by p.id",
    )
    .fetch_all(write)
    .await
    .unwrap();
    for (id, quantity, revenue, orders) in products {
        let sales = query(format!("/api/analytics/products/{id}/sales")).await;
        assert_eq!(
            (sales["totalQuantitySold"].as_i64(), money(&sales["totalRevenue"]), sales["orderCount"].as_i64()),
            (Some(quantity), revenue.normalize(), Some(orders)),
            "product {id}"
        );
    }

    let categories: Vec<(String, Decimal, i64)> = sqlx::query_as(
        "select p.category, coalesce(sum(i.quantity * i.unit_price), 0), count(distinct i.order_id)
           from products p left join order_items i on i.product_id = p.id group by p.category order by 1",
    )
    .fetch_all(write)
    .await
    .unwrap();
    for (category, revenue, orders) in categories {
        let metrics = query(format!("/api/analytics/categories/{category}/revenue")).await;
        assert_eq!(
            (money(&metrics["totalRevenue"]), metrics["totalOrders"].as_i64()),
            (revenue.normalize(), Some(orders)),
            "category {category}"
        );
    }

    let customers: Vec<(i64, Decimal, i64, String)> = sqlx::query_as(
        "select customer_id, sum(total), count(*), to_char(max(created_at) at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')
           from orders group by customer_id order by 1",
    )
    .fetch_all(write)
    .await
    .unwrap();
    let bought: Vec<(i64, String, Decimal, i64, i64)> = sqlx::query_as(
        "select o.customer_id, p.category, sum(i.quantity * i.unit_price), sum(i.quantity)::bigint, count(distinct o.id)
           from orders o join order_items i on i.order_id = o.id join products p on p.id = i.product_id
          group by 1, 2",
    )
    .fetch_all(write)
    .await
    .unwrap();
    let mut per_customer = std::collections::BTreeMap::<i64, Vec<(String, Decimal, i64, i64)>>::new();
    for (customer, category, revenue, quantity, orders) in bought {
        per_customer.entry(customer).or_default().push((category, revenue.normalize(), quantity, orders));
    }
    let compared = customers.len();
    for (customer, spent, orders, last) in customers {
        let value = query(format!("/api/analytics/customers/{customer}/lifetime-value")).await;
        assert_eq!(
            (money(&value["totalSpent"]), value["orderCount"].as_i64(), value["lastOrderDate"].as_str()),
            (spent.normalize(), Some(orders), Some(last.as_str())),
            "customer {customer}"
        );
        let listed = query(format!("/api/analytics/customers/{customer}/categories")).await;
        let mut categories: Vec<(String, Decimal, i64, i64)> = listed["categories"]
            .as_array()
            .unwrap_or_else(|| panic!("customer {customer}: no categories in {listed}"))
            .iter()
            .map(|c| {
                let text = |field: &str| c[field].as_str().unwrap_or_default().to_owned();
                let int = |field: &str| c[field].as_i64().unwrap_or(-1);
                (text("category"), money(&c["totalRevenue"]), int("totalQuantity"), int("orderCount"))
            })
            .collect();
        categories.sort_by(|a, b| a.0.cmp(&b.0));
        let mut expected = per_customer.remove(&customer).unwrap_or_default();
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(categories, expected, "customer {customer}'s categories");
    }

    let expected_hours: Vec<(DateTime<Utc>, i64, i64, Decimal)> = sqlx::query_as(
        "with per_order as (
             select date_trunc('hour', o.created_at, 'UTC') as hour, o.total,
                    (select sum(quantity) from order_items i where i.order_id = o.id) as items
               from orders o)
         select hour, count(*), sum(items)::bigint, sum(total) from per_order group by hour order by hour",
    )
    .fetch_all(write)
    .await
    .unwrap();
    let hours: Vec<(DateTime<Utc>, i64, i64, Decimal)> =
        sqlx::query_as("select hour, order_count, items_sold, revenue from hourly_sales_view order by hour")
            .fetch_all(read)
            .await
            .unwrap();
    assert_eq!(hours, expected_hours);
    compared
}

/// A JSON money amount as an exact, normalized decimal.
pub fn money(value: &Value) -> Decimal {
    value.to_string().parse::<Decimal>().unwrap_or_else(|_| panic!("not a decimal: {value}")).normalize()
}

/// How many examples schemathesis generates per operation and phase: enough to reach every rule of
/// the document, few enough to keep the check under a minute per service.
const CONTRACT_EXAMPLES: &str = "50";

/// The API contract check of the service at `base`: the OpenAPI document it serves at
/// `/api/openapi.json` is valid (openapi-spec-validator), and schemathesis, with every check and the
/// project's settings (`hack/schemathesis.toml`), finds nothing wrong in what the service answers:
/// no 5xx, no status, header or body the document does not describe, no invalid request accepted, no
/// valid one refused for a reason the document could have stated. The tools come from
/// `API_CONTRACT_TOOLS` (`hack/tools.sh api-contract`); the seed is fixed, so a failure reproduces.
pub async fn check_api_contract(base: &str) {
    let tools = tool("API_CONTRACT_TOOLS");
    let dir = std::env::temp_dir().join(format!("api-contract-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let document = reqwest::get(format!("{base}/api/openapi.json")).await.unwrap().text().await.unwrap();
    let spec = dir.join("openapi.json");
    std::fs::write(&spec, document).unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hack/schemathesis.toml");
    let document_url = format!("{base}/api/openapi.json");
    // The service answers on this runtime while the tools run, so they run off it.
    let outcome = tokio::task::spawn_blocking(move || {
        run(Command::new(tools.join("openapi-spec-validator")).args(["--validation-errors", "all"]).arg(&spec), None);
        let checked = try_run(
            Command::new(tools.join("schemathesis"))
                .arg("--config-file")
                .arg(&config)
                .arg("--no-color")
                .args(["run", &document_url, "--checks", "all"])
                .args(["--header", &format!("Authorization: Bearer {API_TOKEN}")])
                .args(["--max-examples", CONTRACT_EXAMPLES, "--seed", "1", "--generation-database", "none"])
                .current_dir(&dir),
            None,
        );
        drop(std::fs::remove_dir_all(&dir));
        checked
    })
    .await
    .unwrap();
    match outcome {
        Ok(report) => println!(
            "{}",
            report.lines().rev().take(12).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
        ),
        Err(failure) => panic!("schemathesis found failures in {base}:\n{failure}"),
    }
}

/// What an API service at `api` (base URL) with its admin port at `admin` answers without a token: on
/// the admin port `/healthz`, `/readyz` (ready) and `/metrics` (Prometheus text); on the API's port its
/// OpenAPI document and `/health` (`{"status":"ok"}`), and none of the admin port's endpoints.
pub async fn assert_open_endpoints(api: &str, admin: &str) {
    let anonymous = reqwest::Client::new();
    let get = |url: String| {
        let anonymous = anonymous.clone();
        async move {
            let response = anonymous.get(&url).send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let json = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
    let (status, body) = get(format!("{api}/health")).await;
    assert_eq!((status, json(&body)), (200, serde_json::json!({"status": "ok"})));
    let (status, body) = get(format!("{api}/api/openapi.json")).await;
    assert!(status == 200 && json(&body)["openapi"].is_string(), "{status} {body}");
    let (status, body) = get(format!("{admin}/healthz")).await;
    assert_eq!((status, json(&body)), (200, serde_json::json!({"status": "ok"})));
    let (status, body) = get(format!("{admin}/readyz")).await;
    assert_eq!((status, json(&body)["status"].clone()), (200, Value::from("ready")), "{body}");
    let (status, body) = get(format!("{admin}/metrics")).await;
    // The OpenAPI document's request above is counted by now.
    assert!(status == 200 && body.contains("# TYPE http_requests_total counter"), "{status} {body}");
    // The API's port tells nothing of the business to anyone without a token.
    for path in ["/metrics", "/readyz", "/healthz"] {
        let (status, body) = get(format!("{api}{path}")).await;
        assert_error(status, &json(&body), 404, "not_found");
    }
}

/// A TCP proxy on loopback to `upstream` that can hang: after [`HangingProxy::hang`] it forwards nothing
/// more and closes nothing, in either direction, as a peer behind a dead network path does (no reset, no
/// answer). Dropped, it stops.
pub struct HangingProxy {
    pub port: u16,
    hung: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl HangingProxy {
    pub async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (hung, watching) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else { continue };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(Self::forward(client_read, server_write, watching.clone()));
                tokio::spawn(Self::forward(server_read, client_write, watching.clone()));
            }
        });
        Self { port, hung, task }
    }

    /// A proxy in front of the broker at `amqp_url` (`amqp://user:password@host:port/vhost`), and the URL
    /// that reaches the broker through it.
    pub async fn in_front_of(amqp_url: &str) -> (Self, String) {
        let (user, rest) = amqp_url.rsplit_once('@').expect("amqp://user:password@host:port/vhost");
        let (address, vhost) = rest.split_once('/').unwrap_or((rest, ""));
        let upstream = tokio::net::lookup_host(address).await.unwrap().next().unwrap();
        let proxy = Self::start(upstream).await;
        let url = format!("{user}@127.0.0.1:{}/{vhost}", proxy.port);
        (proxy, url)
    }

    /// From now on nothing goes through, and every connection stays open.
    pub fn hang(&self) {
        self.hung.send_replace(true);
    }

    async fn forward(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        mut hung: tokio::sync::watch::Receiver<bool>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buffer = vec![0; 16 * 1024];
        loop {
            let count = tokio::select! {
                read = from.read(&mut buffer) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(count) => count,
                },
                _ = hung.wait_for(|hung| *hung) => 0,
            };
            if *hung.borrow() || count == 0 {
                // Both halves stay open, forwarding nothing, until the proxy is dropped.
                drop(hung.wait_for(|_| false).await);
                return;
            }
            if to.write_all(&buffer[..count]).await.is_err() {
                return;
            }
        }
    }
}

impl Drop for HangingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
