//! The load generator behind `make bench`. It drives the pipeline that `make up` runs over HTTP and
//! prints figures, as JSON and as a table; it asserts nothing (speed is measured, not tested). Processes
//! and databases are hack/bench.sh's business: it runs the pgbench ceiling, stops and restarts the
//! consumer around `fill` and `drain`, and hands both figures to `measure`.
//!
//! - `fill`: places orders while the consumer is stopped, until the relay has put them all on the queue;
//! - `drain`: how fast the restarted consumer applies them (events/s, printed alone);
//! - `measure`, in order:
//!   1. **burst**: closed-loop clients place orders as fast as they can: accepted/s, latency, and the
//!      rate at which the read side applied them;
//!   2. **sustained**: an open-loop rate the pipeline holds with no growing backlog (it steps down until
//!      the backlog stays flat): accepted/s, applied/s, latency, share of the pgbench ceiling;
//!   3. **freshness**: at half the sustained rate, the time from an order's 201 to its visibility
//!      through the query API;
//!   4. **queries**: closed-loop point lookups against the query API.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

#[derive(Debug, Parser)]
#[command(name = "loadgen", about = "Measures the local pipeline (`make up`); run through `make bench`.")]
struct Cli {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    phase: Phase,
}

#[derive(Debug, Args)]
struct Target {
    /// Base URL of the command API.
    #[arg(long, env = "COMMAND_URL")]
    command_url: String,
    /// Base URL of the query API.
    #[arg(long, env = "QUERY_URL")]
    query_url: String,
    /// The consumer's /metrics URL.
    #[arg(long, env = "CONSUMER_METRICS_URL")]
    consumer_metrics_url: String,
    /// The bearer token both APIs accept (`make up` writes it into .run/env).
    #[arg(long, env = "API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Concurrent clients in the closed-loop phases.
    #[arg(long, default_value_t = 32)]
    clients: usize,
}

#[derive(Debug, Subcommand)]
enum Phase {
    /// Place EVENTS orders (with the consumer stopped) and wait until the relay has published them all.
    Fill(Events),
    /// Wait for the restarted consumer to apply EVENTS pre-filled orders; print its rate in events/s.
    Drain(Events),
    /// Run burst, sustained, freshness and queries, and print the whole report.
    Measure(Measure),
}

#[derive(Debug, Args)]
struct Events {
    #[arg(long, default_value_t = 40_000)]
    events: usize,
}

#[derive(Debug, Args)]
struct Measure {
    /// The order transaction's tps in pgbench on the same server (the ceiling the sustained rate is
    /// compared with).
    #[arg(long)]
    ceiling_tps: f64,
    /// The consumer's drain rate, from `drain`, for the report.
    #[arg(long)]
    drain_events_per_s: f64,
    /// Length of each measured phase.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Where to write the JSON report.
    #[arg(long, default_value = ".run/bench.json")]
    json: PathBuf,
}

#[derive(Debug, Default, Serialize)]
struct Latency {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Latency {
    fn of(mut samples: Vec<Duration>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0;
        Self { p50_ms: round(at(0.5)), p99_ms: round(at(0.99)), max_ms: round(at(1.0)) }
    }
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[derive(Debug, Serialize)]
struct Report {
    pgbench_ceiling_tps: f64,
    burst: Burst,
    sustained: Sustained,
    freshness: Freshness,
    drain_events_per_s: f64,
    queries: Queries,
}

#[derive(Debug, Serialize)]
struct Burst {
    accepted_per_s: f64,
    applied_per_s: f64,
    rejected: usize,
    latency: Latency,
}

#[derive(Debug, Serialize)]
struct Sustained {
    offered_per_s: f64,
    accepted_per_s: f64,
    applied_per_s: f64,
    backlog_at_start: i64,
    backlog_at_end: i64,
    ratio_of_ceiling: f64,
    latency: Latency,
}

#[derive(Debug, Serialize)]
struct Freshness {
    offered_per_s: f64,
    samples: usize,
    lag: Latency,
}

#[derive(Debug, Serialize)]
struct Queries {
    per_s: f64,
    latency: Latency,
}

struct Pipeline {
    target: Target,
    http: reqwest::Client,
    products: Vec<i64>,
    customers: AtomicUsize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &cli.target.api_token {
        let mut bearer = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))?;
        bearer.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, bearer);
    }
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(30))
        .build()?;
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() % 100_000;
    let mut pipeline = Pipeline {
        target: cli.target,
        http,
        products: Vec::new(),
        customers: AtomicUsize::new(nonce as usize * 1_000_000),
    };
    match cli.phase {
        Phase::Fill(Events { events }) => {
            pipeline.create_products(500).await?;
            eprintln!("drain: pre-filling {events} orders...");
            pipeline.fill(events).await
        }
        Phase::Drain(Events { events }) => {
            let rate = pipeline.drain(events).await?;
            println!("{rate:.1}");
            Ok(())
        }
        Phase::Measure(measure) => {
            pipeline.create_products(500).await?;
            let report = pipeline.measure(&measure).await?;
            let json = serde_json::to_string_pretty(&report)?;
            std::fs::write(&measure.json, &json).with_context(|| format!("cannot write {}", measure.json.display()))?;
            println!("{json}");
            print_table(&report);
            Ok(())
        }
    }
}

fn print_table(r: &Report) {
    let rows = [
        ("PostgreSQL ceiling, order transaction (pgbench)", format!("{:.0} tps", r.pgbench_ceiling_tps)),
        (
            "burst: accepted",
            format!(
                "{:.0} orders/s (p50 {} ms, p99 {} ms)",
                r.burst.accepted_per_s, r.burst.latency.p50_ms, r.burst.latency.p99_ms
            ),
        ),
        ("burst: applied by the read side", format!("{:.0} orders/s", r.burst.applied_per_s)),
        (
            "sustained: accepted / applied",
            format!(
                "{:.0} / {:.0} orders/s, backlog {} -> {}",
                r.sustained.accepted_per_s,
                r.sustained.applied_per_s,
                r.sustained.backlog_at_start,
                r.sustained.backlog_at_end
            ),
        ),
        ("sustained: share of the ceiling", format!("{:.0} %", r.sustained.ratio_of_ceiling * 100.0)),
        (
            "sustained: command latency",
            format!("p50 {} ms, p99 {} ms", r.sustained.latency.p50_ms, r.sustained.latency.p99_ms),
        ),
        (
            "freshness lag (201 -> visible in query API)",
            format!(
                "p50 {} ms, p99 {} ms, max {} ms at {:.0} orders/s ({} samples)",
                r.freshness.lag.p50_ms,
                r.freshness.lag.p99_ms,
                r.freshness.lag.max_ms,
                r.freshness.offered_per_s,
                r.freshness.samples
            ),
        ),
        ("consumer drain", format!("{:.0} events/s", r.drain_events_per_s)),
        (
            "point lookups",
            format!(
                "{:.0} req/s (p50 {} ms, p99 {} ms)",
                r.queries.per_s, r.queries.latency.p50_ms, r.queries.latency.p99_ms
            ),
        ),
    ];
    println!();
    for (name, value) in rows {
        println!("{name:<48} {value}");
    }
}

impl Pipeline {
    async fn create_products(&mut self, count: usize) -> anyhow::Result<()> {
        for i in 0..count {
            let body = json!({"name": format!("Bench product {i}"), "category": format!("Category {}", i % 20), "price": 10.00, "stock": 1_000_000_000});
            let response =
                self.http.post(format!("{}/api/products", self.target.command_url)).json(&body).send().await?;
            if response.status().as_u16() != 201 {
                bail!("cannot create bench products: {}", response.text().await?);
            }
            let created: Value = response.json().await?;
            self.products.push(created["productId"].as_i64().context("productId")?);
        }
        Ok(())
    }

    /// A two-item order (quantities 1 and 2), as in bench/order.sql; `customer` picks who orders.
    fn order(&self, n: usize, customer: usize) -> Value {
        let a = self.products[n % self.products.len()];
        let b = self.products[(n + 1) % self.products.len()];
        json!({"customerId": customer, "items": [{"productId": a, "quantity": 1}, {"productId": b, "quantity": 2}]})
    }

    fn next_customer(&self) -> usize {
        self.customers.fetch_add(1, Ordering::Relaxed) % 900_000_000 + 1
    }

    async fn place(&self, body: &Value) -> anyhow::Result<(u16, Duration)> {
        let started = Instant::now();
        let response = self.http.post(format!("{}/api/orders", self.target.command_url)).json(body).send().await?;
        let status = response.status().as_u16();
        response.bytes().await?;
        Ok((status, started.elapsed()))
    }

    async fn applied_orders(&self) -> anyhow::Result<f64> {
        self.metric(&self.target.consumer_metrics_url, "consumer_events_applied_total{event_type=\"OrderCreated\"}")
            .await
    }

    /// One sample from a Prometheus text endpoint; 0 if the series is absent.
    async fn metric(&self, url: &str, series: &str) -> anyhow::Result<f64> {
        let text = self.http.get(url).send().await?.text().await?;
        Ok(text
            .lines()
            .find(|line| line.strip_prefix(series).is_some_and(|rest| rest.starts_with(' ')))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0.0))
    }

    async fn sync_status(&self) -> anyhow::Result<Value> {
        Ok(self.http.get(format!("{}/api/analytics/sync-status", self.target.query_url)).send().await?.json().await?)
    }

    async fn wait_applied(&self, target: f64, timeout: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + timeout;
        while self.applied_orders().await.unwrap_or(0.0) < target {
            if Instant::now() > deadline {
                bail!("the read side did not apply {target} orders within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Instant::now())
    }

    async fn measure(&self, measure: &Measure) -> anyhow::Result<Report> {
        let clients = self.target.clients;
        eprintln!("burst: {clients} closed-loop clients...");
        let burst = self.burst(measure.duration).await?;
        let mut rate = (burst.accepted_per_s.min(burst.applied_per_s) * 0.9).max(10.0);
        let mut sustained = None;
        for _ in 0..4 {
            eprintln!("sustained: offering {rate:.0} orders/s...");
            let attempt = self.sustained(rate, measure.duration, measure.ceiling_tps).await?;
            let steady = attempt.backlog_at_end <= (rate * 0.5) as i64 + 100;
            sustained = Some(attempt);
            if steady {
                break;
            }
            rate *= 0.8;
        }
        let sustained = sustained.context("no sustained phase ran")?;
        eprintln!("freshness: {:.0} orders/s...", sustained.offered_per_s / 2.0);
        let freshness = self.freshness(sustained.offered_per_s / 2.0, measure.duration).await?;
        eprintln!("queries: {clients} closed-loop clients...");
        let queries = self.queries(measure.duration).await?;
        Ok(Report {
            pgbench_ceiling_tps: measure.ceiling_tps,
            burst,
            sustained,
            freshness,
            drain_events_per_s: measure.drain_events_per_s,
            queries,
        })
    }

    async fn burst(&self, duration: Duration) -> anyhow::Result<Burst> {
        let before = self.applied_orders().await?;
        let started = Instant::now();
        let (samples, rejected) = self.closed_loop_orders(duration).await?;
        let elapsed = started.elapsed().as_secs_f64();
        let accepted = samples.len();
        let done = self.wait_applied(before + accepted as f64, Duration::from_secs(600)).await?;
        Ok(Burst {
            accepted_per_s: accepted as f64 / elapsed,
            applied_per_s: accepted as f64 / (done - started).as_secs_f64(),
            rejected,
            latency: Latency::of(samples),
        })
    }

    async fn closed_loop_orders(&self, duration: Duration) -> anyhow::Result<(Vec<Duration>, usize)> {
        let deadline = Instant::now() + duration;
        let counter = AtomicUsize::new(0);
        let workers = (0..self.target.clients).map(|_| async {
            let mut samples = Vec::new();
            let mut rejected = 0;
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let (status, latency) = self.place(&self.order(n, self.next_customer())).await?;
                if status == 201 {
                    samples.push(latency);
                } else {
                    rejected += 1;
                }
            }
            anyhow::Ok((samples, rejected))
        });
        let mut samples = Vec::new();
        let mut rejected = 0;
        for result in futures::future::join_all(workers).await {
            let (s, r) = result?;
            samples.extend(s);
            rejected += r;
        }
        Ok((samples, rejected))
    }

    /// Offers `rate` orders/s for the phase's duration, open loop; returns per-order latencies and
    /// calls `sampled` for every fourth accepted order.
    async fn open_loop_orders<F, Fut>(&self, rate: f64, duration: Duration, sampled: F) -> anyhow::Result<Vec<Duration>>
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let in_flight = Arc::new(Semaphore::new(1024));
        let interval = Duration::from_secs_f64(1.0 / rate);
        let started = Instant::now();
        let total = (rate * duration.as_secs_f64()) as usize;
        let tasks = (0..total).map(|n| {
            let in_flight = in_flight.clone();
            let sampled = &sampled;
            async move {
                tokio::time::sleep_until((started + interval.mul_f64(n as f64)).into()).await;
                let _permit = in_flight.acquire().await.expect("never closed");
                let customer = self.next_customer();
                let (status, latency) = self.place(&self.order(n, customer)).await?;
                if status != 201 {
                    bail!("order refused with {status}");
                }
                if n.is_multiple_of(4) {
                    sampled(customer).await;
                }
                anyhow::Ok(latency)
            }
        });
        futures::future::join_all(tasks).await.into_iter().collect()
    }

    async fn sustained(&self, rate: f64, duration: Duration, ceiling: f64) -> anyhow::Result<Sustained> {
        let backlog = |status: Value| status["pendingEvents"].as_i64().unwrap_or(0);
        let backlog_at_start = backlog(self.sync_status().await?);
        let before = self.applied_orders().await?;
        let started = Instant::now();
        let samples = self.open_loop_orders(rate, duration, |_| async {}).await?;
        let elapsed = started.elapsed().as_secs_f64();
        let applied = self.applied_orders().await? - before;
        let backlog_at_end = backlog(self.sync_status().await?);
        let accepted_per_s = samples.len() as f64 / elapsed;
        // Let the read side catch up before the next phase.
        self.wait_applied(before + samples.len() as f64, Duration::from_secs(600)).await?;
        Ok(Sustained {
            offered_per_s: rate,
            accepted_per_s,
            applied_per_s: applied / elapsed,
            backlog_at_start,
            backlog_at_end,
            ratio_of_ceiling: (accepted_per_s.min(applied / elapsed) / ceiling * 1000.0).round() / 1000.0,
            latency: Latency::of(samples),
        })
    }

    async fn freshness(&self, rate: f64, duration: Duration) -> anyhow::Result<Freshness> {
        let lags = std::sync::Mutex::new(Vec::new());
        let duration = duration.min(Duration::from_secs(10));
        self.open_loop_orders(rate, duration, |customer| {
            let lags = &lags;
            async move {
                // Visible when the customer's (only) order shows in their lifetime value.
                let accepted = Instant::now();
                let url = format!("{}/api/analytics/customers/{customer}/lifetime-value", self.target.query_url);
                while accepted.elapsed() < Duration::from_secs(30) {
                    if let Ok(response) = self.http.get(&url).send().await
                        && let Ok(value) = response.json::<Value>().await
                        && value["orderCount"].as_i64() == Some(1)
                    {
                        lags.lock().expect("not poisoned").push(accepted.elapsed());
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
        .await?;
        let lags = lags.into_inner().expect("not poisoned");
        Ok(Freshness { offered_per_s: rate, samples: lags.len(), lag: Latency::of(lags) })
    }

    /// Places `events` orders, then waits until the relay's backlog is empty, so that all of them are on
    /// the queue (sync-status cannot say: with the consumer stopped, no watermark is applied, and it
    /// rightly reports itself stale).
    async fn fill(&self, events: usize) -> anyhow::Result<()> {
        let mut placed = 0;
        while placed < events {
            let batch: Vec<_> = (0..self.target.clients.min(events - placed))
                .map(|i| async move { self.place(&self.order(placed + i, self.next_customer())).await })
                .collect();
            for result in futures::future::join_all(batch).await {
                if result?.0 == 201 {
                    placed += 1;
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        let command_metrics = format!("{}/metrics", self.target.command_url);
        while self.metric(&command_metrics, "outbox_pending_events").await? != 0.0 {
            if Instant::now() > deadline {
                bail!("the relay did not publish the pre-filled orders in time");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// The rate between the first and the last movement of the (restarted, so zero-based) applied
    /// counter, so that process start-up and connection time do not count.
    async fn drain(&self, events: usize) -> anyhow::Result<f64> {
        let (mut first, deadline) = (None, Instant::now() + Duration::from_secs(600));
        loop {
            let applied = self.applied_orders().await.unwrap_or(0.0);
            let now = Instant::now();
            match first {
                None if applied >= events as f64 => {
                    bail!("the consumer drained the queue before it could be measured; raise BENCH_DRAIN_EVENTS")
                }
                None if applied > 0.0 => first = Some((now, applied)),
                Some((at, from)) if applied >= events as f64 => return Ok((applied - from) / (now - at).as_secs_f64()),
                _ if now > deadline => bail!("the consumer did not drain {events} events within 10 minutes"),
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    async fn queries(&self, duration: Duration) -> anyhow::Result<Queries> {
        let deadline = Instant::now() + duration;
        let counter = AtomicUsize::new(0);
        let started = Instant::now();
        let workers = (0..self.target.clients).map(|_| async {
            let mut samples = Vec::new();
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let url = if n.is_multiple_of(2) {
                    format!(
                        "{}/api/analytics/products/{}/sales",
                        self.target.query_url,
                        self.products[n % self.products.len()]
                    )
                } else {
                    format!("{}/api/analytics/customers/{}/lifetime-value", self.target.query_url, n % 100_000 + 1)
                };
                let begun = Instant::now();
                let response = self.http.get(url).send().await?;
                if !response.status().is_success() {
                    bail!("lookup failed with {}", response.status());
                }
                response.bytes().await?;
                samples.push(begun.elapsed());
            }
            anyhow::Ok(samples)
        });
        let mut samples = Vec::new();
        for result in futures::future::join_all(workers).await {
            samples.extend(result?);
        }
        Ok(Queries { per_s: samples.len() as f64 / started.elapsed().as_secs_f64(), latency: Latency::of(samples) })
    }
}
