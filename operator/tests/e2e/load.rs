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
}

impl Report {
    /// "N accepted (R/s), M failed: K× kind …, between a s and b s".
    pub fn summary(&self) -> String {
        let rate = self.accepted.len() as f64 / self.elapsed.as_secs_f64().max(0.001);
        format!("{} orders accepted ({rate:.0}/s), {}", self.accepted.len(), describe(&self.failures))
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
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(Report::default()));
        let started = Instant::now();
        let workers = (0..workers)
            .map(|worker| {
                let (http, url, products) = (http.clone(), format!("{command_url}/api/orders"), products.to_vec());
                let (stop, report) = (stop.clone(), report.clone());
                tokio::spawn(async move {
                    let mut n = worker;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let order = json!({"customerId": 1000 + (n * 7919) % 500,
                                           "items": [{"productId": products[n % products.len()], "quantity": 1}]});
                        let outcome = place(&http, &url, &order).await;
                        {
                            let mut report = report.lock().unwrap();
                            match outcome {
                                Ok(id) => {
                                    report.accepted.push(id);
                                    report.accepted_at.push(started.elapsed());
                                }
                                Err(kind) => report.failures.push((started.elapsed(), kind)),
                            }
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

/// The new order's id, or what went wrong, in a few words of bounded variety.
async fn place(http: &reqwest::Client, url: &str, order: &Value) -> Result<i64, String> {
    let response = http.post(url).json(order).send().await.map_err(|e| {
        if e.is_timeout() {
            "timeout".to_owned()
        } else if e.is_connect() {
            "connect error".to_owned()
        } else {
            "transport error".to_owned()
        }
    })?;
    let status = response.status().as_u16();
    let body: Value = response.json().await.map_err(|_| format!("{status} without a JSON body"))?;
    match (status, body["orderId"].as_i64()) {
        (201, Some(id)) => Ok(id),
        _ => Err(format!("{status} {}", body["error"].as_str().unwrap_or("?"))),
    }
}
