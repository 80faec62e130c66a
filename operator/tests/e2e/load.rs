//! A client placing orders continuously, as a shop front would: it records every order the command API
//! accepted (201 and an id) and every failure a client saw, with when it happened, so that a test can say
//! what users saw during a disruption and check that nothing accepted was lost.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use analytics_testkit::eventually;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::task::JoinHandle;

/// What the clients saw.
#[derive(Debug, Default)]
pub struct Report {
    pub accepted: Vec<i64>,
    /// (since the start, what failed): an HTTP status with the error code, or the transport error.
    pub failures: Vec<(Duration, String)>,
    pub elapsed: Duration,
    /// When each order was accepted, since the start.
    accepted_at: Vec<Duration>,
    /// Keyed load: orders whose outcome was unknown at first and that a retry with the same
    /// Idempotency-Key settled, and how many of those the API answered as replays (the first attempt had
    /// committed after all).
    pub retried: usize,
    pub replayed: usize,
}

impl Report {
    /// "N accepted (R/s), M failed: K× kind …, between a s and b s".
    pub fn summary(&self) -> String {
        let rate = self.accepted.len() as f64 / self.elapsed.as_secs_f64().max(0.001);
        let retried = if self.retried > 0 {
            format!(", {} settled by a keyed retry ({} of them replays)", self.retried, self.replayed)
        } else {
            String::new()
        };
        format!("{} orders accepted ({rate:.0}/s){retried}, {}", self.accepted.len(), describe(&self.failures))
    }

    /// Every accepted order is in the write database.
    pub async fn assert_all_recorded(&self, write: &PgPool) {
        let (found,): (i64,) = sqlx::query_as("select count(*) from orders where id = any($1)")
            .bind(&self.accepted)
            .fetch_one(write)
            .await
            .unwrap();
        assert_eq!(found, self.accepted.len() as i64, "every order the API accepted is in the write database");
    }
}

/// "no failures", or "M failed: K× kind, …, from a s to b s".
pub fn describe(failures: &[(Duration, String)]) -> String {
    let (Some(first), Some(last)) = (failures.first(), failures.last()) else { return "no failures".to_owned() };
    let mut kinds = BTreeMap::<&str, usize>::new();
    for (_, kind) in failures {
        *kinds.entry(kind.as_str()).or_default() += 1;
    }
    let kinds: Vec<String> = kinds.iter().map(|(kind, count)| format!("{count}× {kind}")).collect();
    format!(
        "{} failed ({}), from {:.1} s to {:.1} s",
        failures.len(),
        kinds.join(", "),
        first.0.as_secs_f64(),
        last.0.as_secs_f64()
    )
}

pub struct Load {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<Report>>,
    workers: Vec<JoinHandle<()>>,
    started: Instant,
}

impl Load {
    /// `workers` clients, each placing one order after another with `pause` between them, round-robin
    /// over `products`, for 500 customers.
    pub fn start(http: &reqwest::Client, command_url: &str, products: &[i64], workers: usize, pause: Duration) -> Self {
        Self::spawn(http, command_url, products, workers, pause, false)
    }

    /// [`Load::start`], as a careful client does it: every order has its own Idempotency-Key, and an order
    /// whose outcome is unknown (a timeout, a dropped connection, a 5xx) is sent again with the same key
    /// every 200 ms until the API answers it. Each failed attempt is still counted as a failure.
    pub fn start_keyed(
        http: &reqwest::Client,
        command_url: &str,
        products: &[i64],
        workers: usize,
        pause: Duration,
    ) -> Self {
        Self::spawn(http, command_url, products, workers, pause, true)
    }

    fn spawn(
        http: &reqwest::Client,
        command_url: &str,
        products: &[i64],
        workers: usize,
        pause: Duration,
        keyed: bool,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(Report::default()));
        let started = Instant::now();
        let workers = (0..workers)
            .map(|worker| {
                let (http, url, products) = (http.clone(), format!("{command_url}/api/orders"), products.to_vec());
                let (stop, report) = (stop.clone(), report.clone());
                let run = uuid::Uuid::new_v4().simple().to_string();
                tokio::spawn(async move {
                    let mut n = worker;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let order = json!({"customerId": 1000 + (n * 7919) % 500,
                                           "items": [{"productId": products[n % products.len()], "quantity": 1}]});
                        let key = keyed.then(|| format!("e2e-{run}-{n}"));
                        let mut attempts = 0;
                        loop {
                            attempts += 1;
                            let outcome = place(&http, &url, &order, key.as_deref()).await;
                            let settled = {
                                let mut report = report.lock().unwrap();
                                match outcome {
                                    Ok((id, replayed)) => {
                                        report.accepted.push(id);
                                        report.accepted_at.push(started.elapsed());
                                        if attempts > 1 {
                                            report.retried += 1;
                                            report.replayed += usize::from(replayed);
                                        }
                                        true
                                    }
                                    Err(kind) => {
                                        // A 4xx is an answer; anything else leaves the outcome unknown.
                                        let unknown = !kind.starts_with('4');
                                        report.failures.push((started.elapsed(), kind));
                                        !(keyed && unknown) || attempts >= KEYED_ATTEMPTS
                                    }
                                }
                            };
                            if settled {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Self { stop, report, workers, started }
    }

    /// How many failures there have been so far.
    pub fn failures(&self) -> usize {
        self.report.lock().unwrap().failures.len()
    }

    /// The failures after the first `from`, described.
    pub fn failures_since(&self, from: usize) -> String {
        describe(&self.report.lock().unwrap().failures[from..])
    }

    /// Since the start.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits until an order is accepted after now.
    pub async fn wait_for_accepted(&self, timeout: Duration) {
        let now = self.now();
        eventually(timeout, "an order to be accepted", || async {
            self.report.lock().unwrap().accepted_at.last().is_some_and(|at| *at > now).then_some(())
        })
        .await;
    }

    /// The longest time without an accepted order since `from` (up to the last accepted one).
    pub fn longest_gap_since(&self, from: Duration) -> Duration {
        let report = self.report.lock().unwrap();
        let mut previous = from;
        let mut longest = Duration::ZERO;
        for at in report.accepted_at.iter().filter(|at| **at >= from) {
            longest = longest.max(*at - previous);
            previous = *at;
        }
        longest
    }

    pub async fn stop(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.await.unwrap();
        }
        let mut report = std::mem::take(&mut *self.report.lock().unwrap());
        report.elapsed = self.started.elapsed();
        report
    }
}

/// A keyed order is tried this often (about 2 minutes) before its outcome is given up as unknown.
const KEYED_ATTEMPTS: usize = 600;

/// The new order's id and whether the API replayed it, or what went wrong, in a few words of bounded
/// variety.
async fn place(http: &reqwest::Client, url: &str, order: &Value, key: Option<&str>) -> Result<(i64, bool), String> {
    let mut request = http.post(url).json(order);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.map_err(|e| {
        if e.is_timeout() {
            "timeout".to_owned()
        } else if e.is_connect() {
            "connect error".to_owned()
        } else {
            "transport error".to_owned()
        }
    })?;
    let status = response.status().as_u16();
    let replayed = response.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
    let body: Value = response.json().await.map_err(|_| format!("{status} without a JSON body"))?;
    match (status, body["orderId"].as_i64()) {
        (201, Some(id)) => Ok((id, replayed)),
        _ => Err(format!("{status} {}", body["error"].as_str().unwrap_or("?"))),
    }
}
