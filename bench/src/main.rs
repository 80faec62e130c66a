//! The load generator behind `make bench`. It drives the pipeline that `make up` runs over HTTP and
//! prints figures, as JSON, as a table and as an HTML report with plots; it asserts nothing (speed is
//! measured, not tested). Processes and databases are hack/bench.sh's business: it runs the pgbench
//! ceilings, stops and restarts the consumer around `fill` and `drain`, and hands those figures to
//! `measure`. Besides HTTP, `measure` reads /proc (CPU time per process) and, given the server's admin
//! URL, `pg_stat_statements` (PostgreSQL's time per statement).
//!
//! - `fill`: places orders while the consumer is stopped, until the relay has put them all on the queue,
//!   and prints the product and customer id ranges it used;
//! - `drain`: how fast the restarted consumer applies them (events/s, printed alone);
//! - `cpu-seconds`: the CPU time a process tree has used so far (for pgbench's cost per transaction);
//! - `measure`, in order:
//!   1. **burst**: closed-loop clients place orders as fast as they can: accepted/s, latency, and the
//!      rate at which the read side applied them;
//!   2. **sustained**: an open-loop rate the pipeline holds with no growing backlog (it steps down until
//!      the backlog stays flat): accepted/s, applied/s, latency, share of the pgbench ceilings, and
//!      PostgreSQL's CPU time and statements per accepted order;
//!   3. **freshness**: at a fixed rate, the time from an order's 201 to its visibility through the
//!      query API;
//!   4. **lookups**: closed-loop point lookups against the query API;
//!   5. **large tables**: a bulk load of 100 000 products and 1 000 000 orders for as many customers
//!      (see [`large`]) through the outbox, which the real relay and consumer apply; then freshness and
//!      lookups again, the other endpoints' latency and the relay's claim before and after, the hot
//!      tables' state, and `EXPLAIN (ANALYZE, BUFFERS)` of the hot statements on the large tables.
//!
//! Open-loop phases send each request at its due time whatever happened to the earlier ones, and measure
//! its latency from that due time, so a stalled server cannot hide its stall by holding the client back
//! (no coordinated omission; wrk2 does the same).

mod cpu;
mod large;
mod report;
mod stats;

use std::{
    collections::BTreeMap,
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
use stats::{Latency, Sample, round};
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
    /// Concurrent clients in the closed-loop order phases.
    #[arg(long, default_value_t = 32)]
    clients: usize,
}

#[derive(Debug, Subcommand)]
enum Phase {
    /// Place EVENTS orders (with the consumer stopped) and wait until the relay has published them all.
    Fill(Events),
    /// Wait for the restarted consumer to apply EVENTS pre-filled orders; print its rate in events/s.
    Drain(Events),
    /// Print the CPU seconds the process tree under PID has used so far, exited children included.
    CpuSeconds {
        #[arg(long)]
        pid: u32,
    },
    /// Run burst, sustained, freshness and lookups, and print the whole report.
    Measure(Box<Measure>),
}

#[derive(Debug, Args)]
struct Events {
    #[arg(long, default_value_t = 40_000)]
    events: usize,
}

#[derive(Debug, Args)]
struct Measure {
    /// pgbench tps of the bare order transaction (stock, order, lines; no outbox row) on the same server.
    #[arg(long)]
    bare_tps: f64,
    /// PostgreSQL CPU milliseconds per bare order transaction under pgbench.
    #[arg(long)]
    bare_cpu_ms: f64,
    /// pgbench tps of the same transaction with its outbox row.
    #[arg(long)]
    outbox_tps: f64,
    /// pgbench's point lookups per second on the read database, the query service's statements.
    #[arg(long)]
    lookup_ceiling: f64,
    /// The consumer's drain rate, from `drain`, for the report.
    #[arg(long)]
    drain_events_per_s: f64,
    /// Length of each measured phase.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Orders per second offered in the freshness phase.
    #[arg(long, default_value_t = 1000.0)]
    freshness_rate: f64,
    /// Concurrent clients in the lookup phase.
    #[arg(long, default_value_t = 64)]
    lookup_clients: usize,
    /// Processes whose CPU time is accounted for, as NAME=PID; `postgres` is split by database.
    #[arg(long = "process")]
    processes: Vec<cpu::Watched>,
    /// Products and orders (each for a customer of its own) the large-tables phase loads; 0 skips it.
    #[arg(long, default_value_t = 100_000)]
    large_products: i64,
    #[arg(long, default_value_t = 1_000_000)]
    large_orders: i64,
    /// The write and read databases (the large-tables phase loads the one and explains statements on both).
    #[arg(long, env = "WRITE_DATABASE_URL", hide_env_values = true)]
    write_database_url: String,
    #[arg(long, env = "READ_DATABASE_URL", hide_env_values = true)]
    read_database_url: String,
    /// The PostgreSQL server's superuser URL, for pg_stat_statements (optional).
    #[arg(long, env = "POSTGRES_ADMIN_URL", hide_env_values = true)]
    postgres_url: Option<String>,
    /// The consumer binary, whose `verify` and `rebuild` the large-tables phase measures.
    #[arg(long, default_value = "target/release/consumer-service")]
    consumer_binary: PathBuf,
    /// Where to write the JSON report.
    #[arg(long, default_value = ".run/bench/bench.json")]
    json: PathBuf,
    /// Where to write the HTML report (SVG plots inline).
    #[arg(long, default_value = ".run/bench/report.html")]
    html: PathBuf,
}

/// CPU use during a phase, from /proc.
#[derive(Debug, Clone, Serialize)]
pub struct Cpu {
    /// Cores used, by process (PostgreSQL by database), largest first.
    pub cores: Vec<(String, f64)>,
    /// The load generator's share of all the CPU time the box used.
    pub client_share: f64,
    #[serde(skip)]
    seconds: std::collections::HashMap<String, f64>,
}

impl Cpu {
    fn seconds_of(&self, account: &str) -> f64 {
        self.seconds.get(account).copied().unwrap_or(0.0)
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub ceilings: Ceilings,
    pub burst: Burst,
    pub sustained: Sustained,
    pub freshness: Freshness,
    pub drain: Drain,
    pub lookups: Lookups,
    /// Other endpoints, called one at a time on the small tables.
    pub endpoints: Vec<Endpoint>,
    pub large: Option<Large>,
}

#[derive(Debug, Serialize)]
pub struct Endpoint {
    pub path: String,
    pub latency: Latency,
}

/// The large-tables phase: the same measurements as on the small tables, with 1 000 000 orders more.
#[derive(Debug, Serialize)]
pub struct Large {
    pub products: usize,
    /// Each order is for a customer of its own.
    pub orders: i64,
    /// The bulk load's own time, and how fast the read side applied it (from the load's start to the
    /// last event applied).
    pub load_seconds: f64,
    pub applied_events_per_s: f64,
    /// At the small tables' freshness rate.
    pub freshness: Freshness,
    /// The large tables' order and lookup p99 ÷ the small tables' (goal ≤ 1.25).
    pub order_p99_ratio: f64,
    pub lookups: Lookups,
    pub lookup_p99_ratio: f64,
    pub endpoints: Vec<Endpoint>,
    /// The relay's claim statement, mean ms per call and rows per call, small tables then large.
    pub claim: Option<[(f64, f64); 2]>,
    pub tables: Vec<large::Table>,
    pub plans: Vec<large::Plan>,
    /// `consumer-service verify` and `rebuild` over the large tables.
    pub maintenance: large::Maintenance,
}

#[derive(Debug, Serialize)]
pub struct Ceilings {
    /// pgbench, the order transaction without its outbox row: the floor every design pays.
    pub bare_order_tps: f64,
    pub bare_order_postgres_cpu_ms: f64,
    /// pgbench, the same transaction with the outbox row.
    pub outbox_order_tps: f64,
    /// 1 - outbox/bare: what the outbox row alone costs the ceiling.
    pub outbox_row_cost: f64,
    /// pgbench lookups/s on the read database.
    pub lookups_per_s: f64,
}

#[derive(Debug, Serialize)]
pub struct Burst {
    pub clients: usize,
    pub accepted_per_s: f64,
    pub applied_per_s: f64,
    pub rejected: usize,
    pub latency: Latency,
    pub cpu: Cpu,
    #[serde(skip)]
    pub samples: Vec<Sample>,
}

#[derive(Debug, Serialize)]
pub struct Sustained {
    pub offered_per_s: f64,
    pub accepted_per_s: f64,
    pub applied_per_s: f64,
    /// Orders answered with something else than 201, by status.
    pub refused: BTreeMap<u16, usize>,
    pub backlog_at_start: i64,
    pub backlog_at_end: i64,
    /// min(accepted, applied) ÷ the bare transaction's pgbench tps (goal ≥ 0.5).
    pub ratio_of_bare: f64,
    /// Latency from each order's due time.
    pub latency: Latency,
    pub postgres_cpu_ms_per_order: PostgresCpu,
    /// pg_stat_statements over the phase, by total time; absent without an admin URL.
    pub statements: Option<Vec<Statement>>,
    pub cpu: Cpu,
    #[serde(skip)]
    pub samples: Vec<Sample>,
}

#[derive(Debug, Serialize)]
pub struct PostgresCpu {
    pub write_db: f64,
    pub read_db: f64,
    /// Background processes (WAL writer, checkpointer, autovacuum) and exited backends.
    pub background: f64,
    pub total: f64,
    /// total ÷ the bare transaction's, under pgbench.
    pub ratio_of_bare: f64,
}

#[derive(Debug, Serialize)]
pub struct Statement {
    pub database: String,
    pub query: String,
    pub calls_per_order: f64,
    pub ms_per_order: f64,
    pub rows_per_call: f64,
}

#[derive(Debug, Serialize)]
pub struct Freshness {
    pub offered_per_s: f64,
    pub accepted_per_s: f64,
    pub refused: BTreeMap<u16, usize>,
    /// The orders' latency, from their due times.
    pub orders: Latency,
    pub samples: usize,
    pub lag: Latency,
    pub statements: Option<Vec<Statement>>,
    pub cpu: Cpu,
    #[serde(skip)]
    pub order_samples: Vec<Sample>,
    #[serde(skip)]
    pub lags: Vec<Sample>,
}

#[derive(Debug, Serialize)]
pub struct Drain {
    pub events_per_s: f64,
    /// drain ÷ the sustained inflow (goal ≥ 3).
    pub ratio_of_inflow: f64,
}

#[derive(Debug, Serialize)]
pub struct Lookups {
    pub clients: usize,
    pub per_s: f64,
    /// per_s ÷ pgbench's lookups/s (goal ≥ 0.45).
    pub ratio_of_pgbench: f64,
    pub latency: Latency,
    pub cpu: Cpu,
    #[serde(skip)]
    pub samples: Vec<Sample>,
}

/// What an open-loop phase got back: a sample for every 201, and a count of every other status.
struct OpenLoop {
    samples: Vec<Sample>,
    refused: BTreeMap<u16, usize>,
}

struct Pipeline {
    target: Target,
    http: reqwest::Client,
    products: Vec<i64>,
    first_customer: usize,
    customers: AtomicUsize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Phase::CpuSeconds { pid } = cli.phase {
        println!("{:.2}", cpu::tree_seconds(pid));
        return Ok(());
    }
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &cli.target.api_token {
        let mut bearer = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))?;
        bearer.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, bearer);
    }
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(30))
        .build()?;
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() % 100_000;
    let first_customer = nonce as usize * 1_000_000 + 1;
    let mut pipeline = Pipeline {
        target: cli.target,
        http,
        products: Vec::new(),
        first_customer,
        customers: AtomicUsize::new(first_customer),
    };
    match cli.phase {
        Phase::Fill(Events { events }) => {
            pipeline.create_products(500).await?;
            eprintln!("drain: pre-filling {events} orders...");
            pipeline.fill(events).await?;
            // The ids it used, for pgbench's lookups: products, then customers, first and last.
            let (products, last_customer) = (&pipeline.products, pipeline.customers.load(Ordering::Relaxed) - 1);
            let (first, last) =
                (products.iter().min().context("products")?, products.iter().max().context("products")?);
            println!("{first} {last} {} {last_customer}", pipeline.first_customer);
            Ok(())
        }
        Phase::Drain(Events { events }) => {
            let rate = pipeline.drain(events).await?;
            println!("{rate:.1}");
            Ok(())
        }
        Phase::CpuSeconds { .. } => unreachable!("answered above"),
        Phase::Measure(measure) => {
            pipeline.create_products(500).await?;
            let report = pipeline.measure(&measure).await?;
            let json = serde_json::to_string_pretty(&report)?;
            for path in [&measure.json, &measure.html] {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
                }
            }
            std::fs::write(&measure.json, &json).with_context(|| format!("cannot write {}", measure.json.display()))?;
            let html = report::html(&report)?;
            std::fs::write(&measure.html, html).with_context(|| format!("cannot write {}", measure.html.display()))?;
            println!("{json}");
            print_table(&report);
            println!("\nreport: {} (and {})", measure.html.display(), measure.json.display());
            Ok(())
        }
    }
}

/// The figures, one line each, as the table and the HTML report show them.
pub fn table_rows(r: &Report) -> Vec<(&'static str, String)> {
    let c = &r.ceilings;
    let s = &r.sustained;
    let pg = &s.postgres_cpu_ms_per_order;
    let mut rows = vec![
        (
            "ceiling: bare order transaction (pgbench)",
            format!(
                "{:.0} tps, PostgreSQL {:.3} ms CPU per transaction",
                c.bare_order_tps, c.bare_order_postgres_cpu_ms
            ),
        ),
        (
            "ceiling: with the outbox row (pgbench)",
            format!("{:.0} tps (the row costs {:.0} %)", c.outbox_order_tps, c.outbox_row_cost * 100.0),
        ),
        (
            "burst: accepted / applied",
            format!(
                "{:.0} / {:.0} orders/s, {} clients (p50 {} ms, p99 {} ms)",
                r.burst.accepted_per_s,
                r.burst.applied_per_s,
                r.burst.clients,
                r.burst.latency.p50_ms,
                r.burst.latency.p99_ms
            ),
        ),
        (
            "sustained: accepted / applied",
            format!(
                "{:.0} / {:.0} orders/s offered {:.0}, backlog {} -> {}{}",
                s.accepted_per_s,
                s.applied_per_s,
                s.offered_per_s,
                s.backlog_at_start,
                s.backlog_at_end,
                refusals(&s.refused)
            ),
        ),
        ("sustained ÷ bare transaction (goal ≥ 0.50)", format!("{:.2}", s.ratio_of_bare)),
        (
            "sustained: latency from due time",
            format!("p50 {} ms, p99 {} ms, max {} ms", s.latency.p50_ms, s.latency.p99_ms, s.latency.max_ms),
        ),
        (
            "PostgreSQL CPU per accepted order",
            format!(
                "{:.3} ms: write {:.3}, read {:.3}, background {:.3} ({:.2}× the bare transaction)",
                pg.total, pg.write_db, pg.read_db, pg.background, pg.ratio_of_bare
            ),
        ),
        (
            "freshness (201 -> visible), p99 goal ≤ 50 ms",
            format!(
                "p50 {} ms, p99 {} ms, max {} ms at {:.0} orders/s ({} samples){}",
                r.freshness.lag.p50_ms,
                r.freshness.lag.p99_ms,
                r.freshness.lag.max_ms,
                r.freshness.accepted_per_s,
                r.freshness.samples,
                refusals(&r.freshness.refused)
            ),
        ),
        (
            "freshness: orders' latency from due time",
            format!(
                "p50 {} ms, p99 {} ms, max {} ms",
                r.freshness.orders.p50_ms, r.freshness.orders.p99_ms, r.freshness.orders.max_ms
            ),
        ),
        (
            "drain after an outage (goal ≥ 3× inflow)",
            format!("{:.0} events/s, {:.1}× the sustained inflow", r.drain.events_per_s, r.drain.ratio_of_inflow),
        ),
        (
            "lookups (p99 goal ≤ 5 ms, ≥ 0.45 of pgbench)",
            format!("{}, {:.2} of pgbench's {:.0}/s", lookups(&r.lookups), r.lookups.ratio_of_pgbench, c.lookups_per_s),
        ),
        (
            "load generator's share of the CPU",
            format!(
                "burst {:.0} %, sustained {:.0} %, freshness {:.0} %, lookups {:.0} %",
                r.burst.cpu.client_share * 100.0,
                s.cpu.client_share * 100.0,
                r.freshness.cpu.client_share * 100.0,
                r.lookups.cpu.client_share * 100.0
            ),
        ),
    ];
    if let Some(large) = &r.large {
        rows.extend(large_rows(r, large));
    }
    rows
}

fn large_rows<'a>(r: &'a Report, large: &'a Large) -> Vec<(&'static str, String)> {
    let f = &large.freshness;
    let mut rows = vec![
        (
            "large tables: the load",
            format!(
                "{} products, {} orders for as many customers written in {:.0} s; read side applied {:.0} events/s",
                large.products, large.orders, large.load_seconds, large.applied_events_per_s
            ),
        ),
        (
            "large: orders p99 (goal ≤ 1.25× small)",
            format!(
                "p50 {} ms, p99 {} ms at {:.0} orders/s: {:.2}× the small tables' {} ms{}",
                f.orders.p50_ms,
                f.orders.p99_ms,
                f.accepted_per_s,
                large.order_p99_ratio,
                r.freshness.orders.p99_ms,
                refusals(&f.refused)
            ),
        ),
        (
            "large: freshness (201 -> visible)",
            format!(
                "p50 {} ms, p99 {} ms, max {} ms ({} samples)",
                f.lag.p50_ms, f.lag.p99_ms, f.lag.max_ms, f.samples
            ),
        ),
        (
            "large: lookups p99 (goal ≤ 5 ms, ≤ 1.25× small)",
            format!(
                "{}: {:.2}× the small tables' {} ms",
                lookups(&large.lookups),
                large.lookup_p99_ratio,
                r.lookups.latency.p99_ms
            ),
        ),
    ];
    if let Some([(small_ms, small_rows), (large_ms, large_rows)]) = large.claim {
        rows.push((
            "large: the relay's claim, per call",
            format!("{large_ms} ms for {large_rows} rows; small tables {small_ms} ms for {small_rows} rows"),
        ));
    }
    let m = &large.maintenance;
    rows.push((
        "large: verify (consumer-service)",
        format!(
            "{}: {} keys against {} orders in {} s, {:.0} keys/s, {:.0} orders/s",
            m.verify_status, m.verify_keys, m.orders, m.verify_seconds, m.verify_keys_per_s, m.verify_orders_per_s
        ),
    ));
    rows.push((
        "large: rebuild (consumer-service)",
        format!(
            "{} rows built in {} s, {:.0} rows/s; {} s in all, consumers paused {} ms",
            m.rebuild_rows, m.rebuild_build_seconds, m.rebuild_rows_per_s, m.rebuild_seconds, m.rebuild_swap_ms
        ),
    ));
    for (small, large) in r.endpoints.iter().zip(&large.endpoints) {
        rows.push((
            "endpoint p50 / p99, small -> large",
            format!(
                "{}: {} / {} ms -> {} / {} ms",
                small.path, small.latency.p50_ms, small.latency.p99_ms, large.latency.p50_ms, large.latency.p99_ms
            ),
        ));
    }
    rows
}

/// "4306 req/s at c64 (p50 14.17 ms, p99 29.05 ms)".
fn lookups(l: &Lookups) -> String {
    format!("{:.0} req/s at c{} (p50 {} ms, p99 {} ms)", l.per_s, l.clients, l.latency.p50_ms, l.latency.p99_ms)
}

/// ", refused: 503 ×12" when any order got something else than a 201.
fn refusals(refused: &BTreeMap<u16, usize>) -> String {
    if refused.is_empty() {
        return String::new();
    }
    let counts: Vec<String> = refused.iter().map(|(status, n)| format!("{status} ×{n}")).collect();
    format!(", refused: {}", counts.join(", "))
}

fn print_table(r: &Report) {
    println!();
    for (name, value) in table_rows(r) {
        println!("{name:<46} {value}");
    }
    if let Some(statements) = &r.sustained.statements {
        println!("\nPostgreSQL statements per accepted order (sustained phase, by time):");
        println!("{:>8} {:>9} {:>7}  {:<16} query", "calls", "ms", "rows", "database");
        for st in statements {
            println!(
                "{:>8.3} {:>9.4} {:>7.1}  {:<16} {}",
                st.calls_per_order, st.ms_per_order, st.rows_per_call, st.database, st.query
            );
        }
    }
    for (phase, cpu) in cpu_phases(r) {
        let cores: Vec<String> = cpu.cores.iter().map(|(name, cores)| format!("{name} {cores:.2}")).collect();
        println!("cores, {phase}: {}", cores.join(", "));
    }
    if let Some(large) = &r.large {
        println!("\nThe hot tables after the large tables' load:");
        println!("{:<6} {:<20} {:>10} {:>9} {:>9}  last autovacuum (UTC)", "db", "table", "rows", "dead", "MB");
        for t in &large.tables {
            println!(
                "{:<6} {:<20} {:>10} {:>9} {:>9.1}  {}",
                t.database,
                t.table,
                t.live_rows,
                t.dead_rows,
                t.megabytes,
                t.last_autovacuum.as_deref().unwrap_or("-")
            );
        }
        println!("\nEXPLAIN ANALYZE on the large tables (the plans are in the HTML report):");
        for p in &large.plans {
            let time = p.plan.lines().find_map(|line| line.strip_prefix("Execution Time: ")).unwrap_or("?");
            println!("{:>12}  {} ({})", time, p.what, p.database);
        }
    }
}

/// Each phase's CPU split, in the order they ran.
pub fn cpu_phases(r: &Report) -> Vec<(&'static str, &Cpu)> {
    let mut phases = vec![
        ("burst", &r.burst.cpu),
        ("sustained", &r.sustained.cpu),
        ("freshness", &r.freshness.cpu),
        ("lookups", &r.lookups.cpu),
    ];
    if let Some(large) = &r.large {
        phases.extend([("large: freshness", &large.freshness.cpu), ("large: lookups", &large.lookups.cpu)]);
    }
    phases
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

    /// A two-item order (quantities 1 and 2), as in bench/order.sql: a product picked at random by `n`,
    /// and the next one. Orders placed together then rarely share a product, as pgbench's rarely do;
    /// consecutive picks (n, n + 1) made every pair of concurrent orders wait on each other's row lock.
    fn order(products: &[i64], n: usize, customer: usize) -> Value {
        let pick = splitmix64(n as u64) as usize % products.len();
        let a = products[pick];
        let b = products[(pick + 1) % products.len()];
        json!({"customerId": customer, "items": [{"productId": a, "quantity": 1}, {"productId": b, "quantity": 2}]})
    }

    fn next_customer(&self) -> usize {
        self.customers.fetch_add(1, Ordering::Relaxed)
    }

    async fn place(&self, body: &Value) -> anyhow::Result<u16> {
        let response = self.http.post(format!("{}/api/orders", self.target.command_url)).json(body).send().await?;
        let status = response.status().as_u16();
        response.bytes().await?;
        Ok(status)
    }

    async fn applied_orders(&self) -> anyhow::Result<f64> {
        self.applied("OrderCreated").await
    }

    async fn applied(&self, event_type: &str) -> anyhow::Result<f64> {
        let series = format!("consumer_events_applied_total{{event_type=\"{event_type}\"}}");
        self.metric(&self.target.consumer_metrics_url, &series).await
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
        self.wait_applied_of("OrderCreated", target, timeout).await
    }

    /// Waits until the consumer has applied `target` events of `event_type` since it started.
    async fn wait_applied_of(&self, event_type: &str, target: f64, timeout: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + timeout;
        while self.applied(event_type).await.unwrap_or(0.0) < target {
            if Instant::now() > deadline {
                bail!("the read side did not apply {target} {event_type} events within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Instant::now())
    }

    async fn measure(&self, measure: &Measure) -> anyhow::Result<Report> {
        let statements = match &measure.postgres_url {
            Some(url) => Statements::connect(url).await,
            None => None,
        };
        let clients = self.target.clients;
        eprintln!("burst: {clients} closed-loop clients...");
        let burst = self.burst(&measure.processes, measure.duration).await?;
        let mut rate = (burst.accepted_per_s.min(burst.applied_per_s) * 0.9).max(10.0);
        let mut sustained = None;
        for _ in 0..4 {
            eprintln!("sustained: offering {rate:.0} orders/s...");
            let attempt = self.sustained(measure, statements.as_ref(), rate).await?;
            let steady = attempt.backlog_at_end <= (rate * 0.5) as i64 + 100;
            sustained = Some(attempt);
            if steady {
                break;
            }
            rate *= 0.8;
        }
        let sustained = sustained.context("no sustained phase ran")?;
        // Past what the pipeline holds the lag only measures a queue that grows with the phase; and the
        // phase's own polling of the query API takes its share of the box. Half the sustained rate
        // leaves room for both (at the sustained rate itself, a run here shed four orders in five).
        let freshness_rate = measure.freshness_rate.min(sustained.offered_per_s / 2.0);
        if freshness_rate < measure.freshness_rate {
            eprintln!(
                "freshness: {:.0} orders/s, half the sustained rate, instead of {:.0}",
                freshness_rate, measure.freshness_rate
            );
        } else {
            eprintln!("freshness: {freshness_rate:.0} orders/s...");
        }
        let freshness = self.freshness(measure, statements.as_ref(), freshness_rate, &self.products).await?;
        eprintln!("lookups: {} closed-loop clients...", measure.lookup_clients);
        let customers = (self.first_customer, self.customers.load(Ordering::Relaxed));
        let lookups = self.lookups(measure, &self.products, customers).await?;
        let endpoints = self.endpoints().await?;
        let large = match measure.large_orders {
            0 => None,
            _ => Some(self.large(measure, statements.as_ref(), &freshness, &lookups).await?),
        };
        let inflow = sustained.accepted_per_s.max(1.0);
        Ok(Report {
            ceilings: Ceilings {
                bare_order_tps: measure.bare_tps,
                bare_order_postgres_cpu_ms: measure.bare_cpu_ms,
                outbox_order_tps: measure.outbox_tps,
                outbox_row_cost: round(1.0 - measure.outbox_tps / measure.bare_tps),
                lookups_per_s: measure.lookup_ceiling,
            },
            burst,
            sustained,
            freshness,
            drain: Drain {
                events_per_s: measure.drain_events_per_s,
                ratio_of_inflow: round(measure.drain_events_per_s / inflow),
            },
            lookups,
            endpoints,
            large,
        })
    }

    /// Loads the large tables, waits until the read side has applied them, and measures again what the
    /// small tables' phases measured.
    async fn large(
        &self,
        measure: &Measure,
        statements: Option<&Statements>,
        small_freshness: &Freshness,
        small_lookups: &Lookups,
    ) -> anyhow::Result<Large> {
        let (products, orders) = (measure.large_products, measure.large_orders);
        eprintln!("large tables: loading {products} products and {orders} orders through the outbox...");
        let connect = |url: &str| sqlx::postgres::PgPoolOptions::new().max_connections(2).connect_lazy(url);
        let (write, read) = (connect(&measure.write_database_url)?, connect(&measure.read_database_url)?);
        let applied_before = self.applied_orders().await?;
        let products_before = self.applied("ProductCreated").await?;
        // Customers of their own, after those of the small tables' phases; later orders take the next.
        let first_customer = self.customers.fetch_add(orders as usize, Ordering::Relaxed) as i64;
        let started = Instant::now();
        let loaded = large::load(&write, products, orders, first_customer, |done| {
            eprintln!("large tables: {done} orders written, {:.0} s", started.elapsed().as_secs_f64());
        })
        .await?;
        let timeout = Duration::from_secs(3600);
        self.wait_applied(applied_before + orders as f64, timeout).await?;
        self.wait_applied_of("ProductCreated", products_before + products as f64, timeout).await?;
        let applied_in = started.elapsed().as_secs_f64();
        eprintln!(
            "large tables: written in {:.0} s, applied in {applied_in:.0} s; analyzing...",
            loaded.elapsed.as_secs_f64()
        );
        // As after any bulk load: fresh planner statistics, rather than a wait for autovacuum's.
        for pool in [&write, &read] {
            sqlx::query("analyze").execute(pool).await?;
        }
        let rate = small_freshness.offered_per_s;
        eprintln!("large tables: freshness at {rate:.0} orders/s...");
        let freshness = self.freshness(measure, statements, rate, &loaded.products).await?;
        eprintln!("large tables: lookups, {} closed-loop clients...", measure.lookup_clients);
        let customers = (first_customer as usize, (first_customer + orders) as usize);
        let lookups = self.lookups(measure, &loaded.products, customers).await?;
        let endpoints = self.endpoints().await?;
        let claim = |f: &Freshness| {
            let statement = f.statements.as_ref()?.iter().find(|st| st.query.starts_with("delete from outbox"))?;
            Some((round(statement.ms_per_order / statement.calls_per_order), statement.rows_per_call))
        };
        let tables = large::tables(&write, &read).await?;
        let plans = large::plans(&write, &read, &loaded.products, first_customer).await?;
        eprintln!("large tables: consumer-service verify, then rebuild...");
        let maintenance = large::maintenance(&measure.consumer_binary, &write).await?;
        let p99_ratio = |large: Latency, small: Latency| round(large.p99_ms / small.p99_ms.max(0.01));
        Ok(Large {
            products: loaded.products.len(),
            orders,
            load_seconds: round(loaded.elapsed.as_secs_f64()),
            applied_events_per_s: round((orders + products) as f64 / applied_in),
            order_p99_ratio: p99_ratio(freshness.orders, small_freshness.orders),
            lookup_p99_ratio: p99_ratio(lookups.latency, small_lookups.latency),
            claim: claim(small_freshness).zip(claim(&freshness)).map(|(small, large)| [small, large]),
            freshness,
            lookups,
            endpoints,
            tables,
            plans,
            maintenance,
        })
    }

    /// The endpoints besides the point lookups, each called 200 times, one call at a time.
    async fn endpoints(&self) -> anyhow::Result<Vec<Endpoint>> {
        let mut endpoints = Vec::new();
        for path in ["sync-status", "categories", "products/top", "sales/hourly"] {
            let url = format!("{}/api/analytics/{path}", self.target.query_url);
            let mut samples = Vec::new();
            for _ in 0..200 {
                let sent = Instant::now();
                let response = self.http.get(&url).send().await?;
                if !response.status().is_success() {
                    bail!("{path} failed with {}", response.status());
                }
                response.bytes().await?;
                samples.push(Sample { at: 0.0, latency: sent.elapsed() });
            }
            endpoints.push(Endpoint { path: format!("/api/analytics/{path}"), latency: Latency::of(&samples) });
        }
        Ok(endpoints)
    }

    /// Runs `phase`, and accounts for the CPU every watched process used meanwhile.
    async fn with_cpu<T>(
        &self,
        processes: &[cpu::Watched],
        phase: impl Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<(T, Cpu)> {
        let before = cpu::snapshot(processes);
        let started = Instant::now();
        let result = phase.await?;
        let after = cpu::snapshot(processes);
        let elapsed = started.elapsed().as_secs_f64();
        let seconds = cpu::used_between(&before, &after);
        let machine = seconds.get("machine").copied().unwrap_or(0.0);
        let client_share = if machine > 0.0 { seconds.get("loadgen").copied().unwrap_or(0.0) / machine } else { 0.0 };
        let cores = cpu::cores(&seconds, elapsed);
        Ok((result, Cpu { cores, client_share: (client_share * 1000.0).round() / 1000.0, seconds }))
    }

    async fn burst(&self, processes: &[cpu::Watched], duration: Duration) -> anyhow::Result<Burst> {
        let before = self.applied_orders().await?;
        let started = Instant::now();
        let ((samples, rejected), cpu) = self.with_cpu(processes, self.closed_loop_orders(duration)).await?;
        let elapsed = started.elapsed().as_secs_f64();
        let accepted = samples.len();
        let done = self.wait_applied(before + accepted as f64, Duration::from_secs(600)).await?;
        Ok(Burst {
            clients: self.target.clients,
            accepted_per_s: round(accepted as f64 / elapsed),
            applied_per_s: round(accepted as f64 / (done - started).as_secs_f64()),
            rejected,
            latency: Latency::of(&samples),
            cpu,
            samples,
        })
    }

    /// Closed loop: each client sends its next order when the last one is answered. Latency is the
    /// service time; a sample is placed at its completion.
    async fn closed_loop_orders(&self, duration: Duration) -> anyhow::Result<(Vec<Sample>, usize)> {
        let started = Instant::now();
        let deadline = started + duration;
        let counter = AtomicUsize::new(0);
        let workers = (0..self.target.clients).map(|_| async {
            let mut samples = Vec::new();
            let mut rejected = 0;
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let sent = Instant::now();
                let status = self.place(&Self::order(&self.products, n, self.next_customer())).await?;
                if status == 201 {
                    samples.push(Sample { at: started.elapsed().as_secs_f64(), latency: sent.elapsed() });
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

    /// Open loop: order `n` is due at `n / rate` seconds, and is sent then whatever became of the
    /// earlier ones; its latency runs from that due time, waits for a connection included. Calls
    /// `accepted` with the customer and the 201's time for every fourth order. Answers other than 201
    /// (a 503 when the service sheds load, or no answer at all) are counted, not sampled.
    async fn open_loop_orders<F, Fut>(&self, products: &[i64], rate: f64, duration: Duration, accepted: F) -> OpenLoop
    where
        F: Fn(usize, Instant) -> Fut,
        Fut: Future<Output = ()>,
    {
        let in_flight = Arc::new(Semaphore::new(4096));
        let interval = Duration::from_secs_f64(1.0 / rate);
        let started = Instant::now() + Duration::from_millis(10);
        let total = (rate * duration.as_secs_f64()) as usize;
        let tasks = (0..total).map(|n| {
            let in_flight = in_flight.clone();
            let accepted = &accepted;
            async move {
                let due = started + interval.mul_f64(n as f64);
                tokio::time::sleep_until(due.into()).await;
                let _permit = in_flight.acquire().await.expect("never closed");
                let customer = self.next_customer();
                // A connection the service refused or dropped (it sheds load that way past its
                // connection bound) counts as status 0.
                let status = self.place(&Self::order(products, n, customer)).await.unwrap_or(0);
                let answered = Instant::now();
                if status != 201 {
                    return Err(status);
                }
                if n.is_multiple_of(4) {
                    accepted(customer, answered).await;
                }
                Ok(Sample { at: (due - started).as_secs_f64(), latency: answered - due })
            }
        });
        let mut run = OpenLoop { samples: Vec::with_capacity(total), refused: BTreeMap::new() };
        for outcome in futures::future::join_all(tasks).await {
            match outcome {
                Ok(sample) => run.samples.push(sample),
                Err(status) => *run.refused.entry(status).or_default() += 1,
            }
        }
        run
    }

    async fn sustained(
        &self,
        measure: &Measure,
        statements: Option<&Statements>,
        rate: f64,
    ) -> anyhow::Result<Sustained> {
        let backlog = |status: Value| status["pendingEvents"].as_i64().unwrap_or(0);
        let backlog_at_start = backlog(self.sync_status().await?);
        let before = self.applied_orders().await?;
        if let Some(statements) = statements {
            statements.reset().await;
        }
        let started = Instant::now();
        let (OpenLoop { samples, refused }, cpu) = self
            .with_cpu(&measure.processes, async {
                Ok(self.open_loop_orders(&self.products, rate, measure.duration, |_, _| async {}).await)
            })
            .await?;
        let elapsed = started.elapsed().as_secs_f64();
        let applied = self.applied_orders().await? - before;
        let backlog_at_end = backlog(self.sync_status().await?);
        let accepted = samples.len() as f64;
        let statements = match statements {
            Some(statements) => statements.per_order(accepted).await,
            None => None,
        };
        let per_order = |seconds: f64| seconds * 1000.0 / accepted.max(1.0);
        let (write_db, read_db) =
            (cpu.seconds_of("postgres analytics_write"), cpu.seconds_of("postgres analytics_read"));
        let background = cpu.seconds_of("postgres");
        let total = per_order(write_db + read_db + background);
        // Let the read side catch up before the next phase.
        self.wait_applied(before + accepted, Duration::from_secs(600)).await?;
        Ok(Sustained {
            offered_per_s: round(rate),
            accepted_per_s: round(accepted / elapsed),
            applied_per_s: round(applied / elapsed),
            refused,
            backlog_at_start,
            backlog_at_end,
            ratio_of_bare: round((accepted / elapsed).min(applied / elapsed) / measure.bare_tps),
            latency: Latency::of(&samples),
            postgres_cpu_ms_per_order: PostgresCpu {
                write_db: per_order(write_db),
                read_db: per_order(read_db),
                background: per_order(background),
                total,
                ratio_of_bare: if measure.bare_cpu_ms > 0.0 { round(total / measure.bare_cpu_ms) } else { 0.0 },
            },
            statements,
            cpu,
            samples,
        })
    }

    /// Open-loop orders for `products` at `rate`; every fourth one's customer is polled through the
    /// query API until the order shows.
    async fn freshness(
        &self,
        measure: &Measure,
        statements: Option<&Statements>,
        rate: f64,
        products: &[i64],
    ) -> anyhow::Result<Freshness> {
        let lags = std::sync::Mutex::new(Vec::new());
        let duration = measure.duration.min(Duration::from_secs(10));
        if let Some(statements) = statements {
            statements.reset().await;
        }
        let started = Instant::now();
        let (orders, cpu) = self
            .with_cpu(&measure.processes, async {
                Ok(self
                    .open_loop_orders(products, rate, duration, |customer, answered| {
                        let lags = &lags;
                        async move {
                            // Visible when the customer's (only) order shows in their lifetime value.
                            let url =
                                format!("{}/api/analytics/customers/{customer}/lifetime-value", self.target.query_url);
                            while answered.elapsed() < Duration::from_secs(30) {
                                if let Ok(response) = self.http.get(&url).send().await
                                    && let Ok(value) = response.json::<Value>().await
                                    && value["orderCount"].as_i64() == Some(1)
                                {
                                    let at = (answered - started).as_secs_f64();
                                    lags.lock().expect("not poisoned").push(Sample { at, latency: answered.elapsed() });
                                    return;
                                }
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                        }
                    })
                    .await)
            })
            .await?;
        let elapsed = started.elapsed().as_secs_f64();
        let lags = lags.into_inner().expect("not poisoned");
        let accepted = orders.samples.len() as f64;
        let statements = match statements {
            Some(statements) => statements.per_order(accepted).await,
            None => None,
        };
        Ok(Freshness {
            offered_per_s: rate,
            accepted_per_s: round(accepted / elapsed),
            refused: orders.refused,
            orders: Latency::of(&orders.samples),
            samples: lags.len(),
            lag: Latency::of(&lags),
            statements,
            cpu,
            order_samples: orders.samples,
            lags,
        })
    }

    /// Places `events` orders, then waits until the relay's backlog is empty, so that all of them are on
    /// the queue (sync-status cannot say: with the consumer stopped, no watermark is applied, and it
    /// rightly reports itself stale).
    async fn fill(&self, events: usize) -> anyhow::Result<()> {
        let mut placed = 0;
        while placed < events {
            let batch: Vec<_> = (0..self.target.clients.min(events - placed))
                .map(
                    |i| async move { self.place(&Self::order(&self.products, placed + i, self.next_customer())).await },
                )
                .collect();
            for result in futures::future::join_all(batch).await {
                if result? == 201 {
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

    /// Closed-loop point lookups of `products` and of the customers in [first, end), alternating
    /// product sales and customer lifetime value, as bench/lookup.sql does.
    async fn lookups(
        &self,
        measure: &Measure,
        products: &[i64],
        (first_customer, end): (usize, usize),
    ) -> anyhow::Result<Lookups> {
        let clients = measure.lookup_clients;
        let customers = (end - first_customer).max(1);
        let started = Instant::now();
        let deadline = started + measure.duration;
        let counter = AtomicUsize::new(0);
        let workers = (0..clients).map(|_| async {
            let mut samples = Vec::new();
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let url = if n.is_multiple_of(2) {
                    let product = products[splitmix64(n as u64) as usize % products.len()];
                    format!("{}/api/analytics/products/{product}/sales", self.target.query_url)
                } else {
                    let customer = first_customer + splitmix64(n as u64 + 1) as usize % customers;
                    format!("{}/api/analytics/customers/{customer}/lifetime-value", self.target.query_url)
                };
                let sent = Instant::now();
                let response = self.http.get(url).send().await?;
                if !response.status().is_success() {
                    bail!("lookup failed with {}", response.status());
                }
                response.bytes().await?;
                samples.push(Sample { at: started.elapsed().as_secs_f64(), latency: sent.elapsed() });
            }
            anyhow::Ok(samples)
        });
        let (results, cpu) =
            self.with_cpu(&measure.processes, async { Ok(futures::future::join_all(workers).await) }).await?;
        let mut samples = Vec::new();
        for result in results {
            samples.extend(result?);
        }
        let per_s = samples.len() as f64 / started.elapsed().as_secs_f64();
        Ok(Lookups {
            clients,
            per_s: round(per_s),
            ratio_of_pgbench: if measure.lookup_ceiling > 0.0 { round(per_s / measure.lookup_ceiling) } else { 0.0 },
            latency: Latency::of(&samples),
            cpu,
            samples,
        })
    }
}

/// pg_stat_statements on the pipeline's server, through a superuser connection.
struct Statements {
    pool: sqlx::PgPool,
}

impl Statements {
    /// `None`, with the reason on stderr, when the server does not load the module.
    async fn connect(url: &str) -> Option<Self> {
        let attempt = async {
            let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(url).await?;
            sqlx::query("create extension if not exists pg_stat_statements").execute(&pool).await?;
            sqlx::query("select pg_stat_statements_reset()").execute(&pool).await?;
            anyhow::Ok(Self { pool })
        };
        match attempt.await {
            Ok(statements) => Some(statements),
            Err(error) => {
                eprintln!(
                    "bench: no statement breakdown ({error:#}); PostgreSQL needs \
                     shared_preload_libraries=pg_stat_statements, which `make up` sets: `make down && make up`"
                );
                None
            }
        }
    }

    async fn reset(&self) {
        if let Err(error) = sqlx::query("select pg_stat_statements_reset()").execute(&self.pool).await {
            eprintln!("bench: cannot reset pg_stat_statements: {error}");
        }
    }

    /// The statements since the last reset, by total execution time, per `orders` accepted orders.
    async fn per_order(&self, orders: f64) -> Option<Vec<Statement>> {
        let rows: Vec<(String, String, i64, f64, i64)> = sqlx::query_as(
            "select d.datname::text, s.query, s.calls, s.total_exec_time, s.rows
               from pg_stat_statements s join pg_database d on d.oid = s.dbid
              where d.datname <> 'postgres' and s.calls > 0
              order by s.total_exec_time desc limit 12",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|error| eprintln!("bench: cannot read pg_stat_statements: {error}"))
        .ok()?;
        let orders = orders.max(1.0);
        Some(
            rows.into_iter()
                .map(|(database, query, calls, total_ms, rows)| Statement {
                    database,
                    query: shorten(&query),
                    calls_per_order: (calls as f64 / orders * 1000.0).round() / 1000.0,
                    ms_per_order: (total_ms / orders * 10_000.0).round() / 10_000.0,
                    rows_per_call: round(rows as f64 / calls as f64),
                })
                .collect(),
        )
    }
}

/// A statement on one line, whitespace collapsed, at most 110 characters.
fn shorten(query: &str) -> String {
    let line = query.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(110) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

/// A well-mixed 64-bit hash of `n` (SplitMix64's finalizer): a reproducible random pick.
fn splitmix64(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
