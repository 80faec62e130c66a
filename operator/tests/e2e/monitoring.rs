//! Prometheus on the pipeline, with `make e2e MONITORING=1` (`make cluster MONITORING=1` runs the
//! Prometheus operator and a `Prometheus` whose `{}` selectors pick up every monitor and rule, as
//! kube-prometheus-stack does). The chart is installed as such a user installs it; the values only make
//! the figures come sooner: a 5 s scrape interval, and a lower lag threshold and shorter `for:` for the
//! alerts, whose expressions stay the shipped ones.
//!
//! The checks, each with its figures:
//! 1. the command, consumer, query and operator pods are targets, found through the chart's PodMonitor and
//!    ServiceMonitor, all `up`;
//! 2. after a burst of orders, every PromQL expression of the Grafana dashboard returns a series;
//! 3. a poison message fires `AnalyticsPipelineDeadLetters` (the broker's dead-letter queue, counted);
//! 4. consumers pinned to 0 while orders arrive: `pipeline_lag_seconds` rises and `AnalyticsPipelineLagHigh`
//!    goes pending, then firing (and `AnalyticsConsumersAtMax` does not: nothing is at a ceiling);
//! 5. one consumer at most, held up by a slow read database (a table lock), under the same load:
//!    `AnalyticsConsumersAtMax` fires;
//! 6. the consumers back at full strength: the backlog drains and both alerts resolve.

use std::time::{Duration, Instant};

use analytics_events::Topology;
use analytics_operator::children::broker;
use analytics_testkit::{assert_read_model_matches_write_side, env, eventually};
use k8s_openapi::api::core::v1::{Pod, Secret};
use lapin::{BasicProperties, options::BasicPublishOptions};
use serde_json::{Value, json};

use crate::{Node, PIPELINE, RELEASE, STARTUP, Shop, load::Load, say, stock_up, values};

pub const NAMESPACE: &str = "e2e-monitoring";
/// The lag threshold and the `for:` of the lag and ceiling alerts, for this test (the chart's defaults are
/// 60 s, 5 min and 15 min).
const LAG_THRESHOLD_SECONDS: u32 = 5;
const FOR: &str = "30s";
const LAG: &str = "AnalyticsPipelineLagHigh";
const CEILING: &str = "AnalyticsConsumersAtMax";
/// Alerts take a `for:`, a scrape and an evaluation to move; the operator reads lag every 15 s.
const ALERT_TIMEOUT: Duration = Duration::from_secs(240);

/// Prometheus's HTTP API, at `PROMETHEUS_URL`.
struct Prometheus {
    url: String,
    http: reqwest::Client,
}

impl Prometheus {
    fn connect() -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        Self { url: env("PROMETHEUS_URL"), http }
    }

    /// The `data` of an API answer.
    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let url = format!("{}{path}", self.url);
        let response = self.http.get(&url).query(query).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "success", "GET {url} {query:?}: {body}");
        body["data"].clone()
    }

    /// The series an instant query returns.
    async fn query(&self, expr: &str) -> Vec<Value> {
        self.get("/api/v1/query", &[("query", expr)]).await["result"].as_array().cloned().unwrap_or_default()
    }

    /// Records in each `(name, transitions)` the state of that alert for the test's namespace (`pending`,
    /// `firing`, or none), from one read of the active alerts, at `since.elapsed()`.
    async fn record(&self, since: Instant, alerts: &mut [(&str, &mut Transitions)]) {
        let data = self.get("/api/v1/alerts", &[]).await;
        let active = data["alerts"].as_array().cloned().unwrap_or_default();
        for (name, transitions) in alerts {
            let state = active
                .iter()
                .find(|a| a["labels"]["alertname"] == *name && a["labels"]["namespace"] == NAMESPACE)
                .and_then(|a| a["state"].as_str());
            transitions.record(state, since.elapsed());
        }
    }

    /// The rule `name` as Prometheus loaded it.
    async fn rule(&self, name: &str) -> Value {
        let data = self.get("/api/v1/rules", &[("type", "alert")]).await;
        let rules = data["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap().clone());
        rules.into_iter().find(|r| r["name"] == name).unwrap_or_else(|| panic!("Prometheus has no rule {name}"))
    }
}

/// The first value of a query's first series.
fn value(series: &[Value]) -> Option<f64> {
    series.first()?["value"][1].as_str()?.parse().ok()
}

/// When an alert was first seen pending and firing, and since when it is inactive again, on one clock.
#[derive(Default)]
struct Transitions {
    pending: Option<Duration>,
    firing: Option<Duration>,
    resolved: Option<Duration>,
}

impl Transitions {
    fn record(&mut self, state: Option<&str>, at: Duration) {
        match state {
            Some("pending") => self.pending = self.pending.or(Some(at)),
            // An alert with no `for:`, or one that moved between two polls, may be seen firing at once.
            Some("firing") => {
                self.pending = self.pending.or(Some(at));
                self.firing = self.firing.or(Some(at));
                self.resolved = None;
            }
            _ if self.firing.is_some() => self.resolved = self.resolved.or(Some(at)),
            _ => {}
        }
    }

    fn describe(&self) -> String {
        let at = |t: Option<Duration>| t.map_or_else(|| "never".to_owned(), |t| format!("{:.0} s", t.as_secs_f64()));
        let resolved = self.resolved.map(|t| format!(", resolved at {}", at(Some(t)))).unwrap_or_default();
        format!("pending at {}, firing at {}{resolved}", at(self.pending), at(self.firing))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_scrapes_the_pipeline_and_its_alerts_fire_and_resolve() {
    let node = Node::connect().await;
    node.reset().await;
    let prometheus = Prometheus::connect();
    let shop = install(&node).await;
    targets(&node, &prometheus).await;
    let products = stock_up(&shop).await;
    dashboard(&shop, &prometheus, &products).await;
    dead_letters(&node, &prometheus).await;
    lag_and_ceiling(&node, &shop, &prometheus, &products).await;
    // The user's path installs an operator that watches every namespace: this one must be gone first.
    node.reset().await;
}

/// The chart with monitoring on, as with kube-prometheus-stack, and the example pipeline.
async fn install(node: &Node) -> Shop {
    let started = Instant::now();
    let values = values();
    let threshold = format!("monitoring.prometheusRule.lagSecondsThreshold={LAG_THRESHOLD_SECONDS}");
    let lag_for = format!("monitoring.prometheusRule.for.AnalyticsPipelineLagHigh={FOR}");
    let ceiling_for = format!("monitoring.prometheusRule.for.AnalyticsConsumersAtMax={FOR}");
    node.helm(&[
        "install",
        RELEASE,
        "charts/analytics-pipeline",
        "-n",
        NAMESPACE,
        "--create-namespace",
        "-f",
        &values,
        "--set",
        "monitoring.serviceMonitor.interval=5s",
        "--set",
        &threshold,
        "--set",
        &lag_for,
        "--set",
        &ceiling_for,
    ]);
    // The chart rendered its monitoring objects because the cluster serves monitoring.coreos.com/v1.
    let objects = node.kubectl(
        &["get", "-n", NAMESPACE, "servicemonitors,podmonitors,prometheusrules,configmaps", "-o", "name"],
        None,
    );
    for object in [
        format!("servicemonitor.monitoring.coreos.com/{RELEASE}-operator"),
        format!("podmonitor.monitoring.coreos.com/{RELEASE}-pipelines"),
        format!("prometheusrule.monitoring.coreos.com/{RELEASE}-operator"),
    ] {
        assert!(objects.lines().any(|line| line == object), "helm installed no {object}: {objects}");
    }
    node.kubectl(&["apply", "-n", NAMESPACE, "-f", "examples/minimal.yaml"], None);
    node.ready(NAMESPACE).await;
    say(&format!(
        "monitoring: chart installed with its ServiceMonitor, PodMonitor and PrometheusRule; pipeline Ready in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Shop::of(node, NAMESPACE).await
}

/// Check 1: every pod of the pipeline and of the operator is a target through the chart's monitors, `up`.
async fn targets(node: &Node, prometheus: &Prometheus) {
    let started = Instant::now();
    let pods: kube::Api<Pod> = node.api(NAMESPACE);
    let pod_monitor = format!("podMonitor/{NAMESPACE}/{RELEASE}-pipelines/0");
    let service_monitor = format!("serviceMonitor/{NAMESPACE}/{RELEASE}-operator/0");
    let expected: Vec<(String, String)> = pods
        .list(&kube::api::ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|pod| {
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            let pool = match (labels.get("app.kubernetes.io/name")?.as_str(), labels.get("app.kubernetes.io/component"))
            {
                ("analytics-operator", _) => service_monitor.clone(),
                ("analytics-pipeline", Some(c)) if ["command", "consumer", "query"].contains(&c.as_str()) => {
                    pod_monitor.clone()
                }
                _ => return None,
            };
            Some((pool, pod.metadata.name?))
        })
        .collect();
    // Both operators (leader and standby), and every command, consumer and query replica.
    for component in ["analytics-operator-", "shop-command-", "shop-consumer-", "shop-query-"] {
        assert!(expected.iter().any(|(_, pod)| pod.starts_with(component)), "no {component}* pod: {expected:?}");
    }
    let targets = eventually(STARTUP, "every pod to be an up target", || async {
        let data = prometheus.get("/api/v1/targets", &[("state", "active")]).await;
        let targets: Vec<(String, String, String)> = data["activeTargets"]
            .as_array()?
            .iter()
            .filter(|t| t["labels"]["namespace"] == NAMESPACE)
            .map(|t| {
                let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                (text(&t["scrapePool"]), text(&t["labels"]["pod"]), text(&t["health"]))
            })
            .collect();
        let all =
            expected.iter().all(|(pool, pod)| targets.iter().any(|t| (&t.0, &t.1, t.2.as_str()) == (pool, pod, "up")));
        all.then_some(targets)
    })
    .await;
    // Nothing else scrapes them: every target of the namespace comes from the chart's two monitors.
    assert!(targets.iter().all(|t| t.0 == pod_monitor || t.0 == service_monitor), "{targets:?}");
    let up = prometheus.query(&format!("up{{namespace=\"{NAMESPACE}\"}}")).await;
    assert!(up.len() >= expected.len() && up.iter().all(|s| s["value"][1] == "1"), "{up:?}");
    let mut listed: Vec<String> =
        targets.iter().map(|t| format!("{} ({})", t.1, t.0.split('/').next().unwrap())).collect();
    listed.sort();
    say(&format!(
        "monitoring: {} targets up after {:.1} s: {}",
        targets.len(),
        started.elapsed().as_secs_f64(),
        listed.join(", ")
    ));
}

/// Check 2: after a burst of orders, every expression of every dashboard panel returns a series, with
/// `$namespace` the pipeline's namespace, as Grafana's variable gives it.
async fn dashboard(shop: &Shop, prometheus: &Prometheus, products: &[i64]) {
    let burst = Load::start(&shop.write, &shop.command, products, 4, Duration::from_millis(10));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let burst = burst.stop().await;
    assert!(burst.failures.is_empty(), "{}", burst.summary());
    shop.in_sync_after(Instant::now(), STARTUP).await;
    let stopped = Instant::now();

    let path = crate::repo().join("charts/analytics-pipeline/dashboards/analytics-pipeline.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queries = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = panels.pop() {
        panels.extend(panel["panels"].as_array().into_iter().flatten());
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap().replace("$namespace", NAMESPACE);
            queries.push((panel["title"].as_str().unwrap().to_owned(), expr));
        }
    }
    queries.sort();
    assert!(queries.len() >= 15, "{queries:?}");
    // Rates need two scrapes of the burst; give them a minute before naming what stays empty.
    let deadline = Instant::now() + Duration::from_secs(90);
    let answers = loop {
        let mut answers = Vec::new();
        for (title, expr) in &queries {
            answers.push((title, expr, prometheus.query(expr).await));
        }
        if answers.iter().all(|(_, _, series)| !series.is_empty()) || Instant::now() > deadline {
            break answers;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let empty: Vec<String> =
        answers.iter().filter(|a| a.2.is_empty()).map(|(title, expr, _)| format!("{title:?}: {expr}")).collect();
    assert!(empty.is_empty(), "dashboard panels without data:\n{}", empty.join("\n"));
    for (title, expr, series) in &answers {
        say(&format!(
            "monitoring: panel {title:?}: {} series, first {:.3} ({expr})",
            series.len(),
            value(series).unwrap_or(f64::NAN)
        ));
    }
    // The dashboard's namespace variable, label_values(pipeline_lag_seconds, namespace), lists it.
    let namespaces = prometheus.get("/api/v1/label/namespace/values", &[("match[]", "pipeline_lag_seconds")]).await;
    assert!(namespaces.as_array().unwrap().iter().any(|n| n == NAMESPACE), "{namespaces}");
    say(&format!(
        "monitoring: all {} dashboard queries returned data {:.1} s after the burst ({})",
        queries.len(),
        stopped.elapsed().as_secs_f64(),
        burst.summary()
    ));
}

/// Check 3: a message no consumer can apply goes to the broker's dead-letter queue, and the alert fires;
/// once a human has emptied that queue, it resolves.
async fn dead_letters(node: &Node, prometheus: &Prometheus) {
    let pod: Pod = node.api(NAMESPACE).get(&format!("{PIPELINE}-rabbitmq-0")).await.unwrap();
    let ip = pod.status.unwrap().pod_ip.unwrap();
    let secret: Secret = node.api(NAMESPACE).get(&format!("{PIPELINE}-credentials")).await.unwrap();
    let password = String::from_utf8(secret.data.unwrap()["rabbitmq-password"].0.clone()).unwrap();
    let url = format!("amqp://{}:{password}@{ip}:{}/%2f", broker::USER, broker::PORT);
    let connection = analytics_kit::amqp::connect(&url.into(), "e2e poisoner").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let topology = Topology::default();

    let published = Instant::now();
    channel
        .basic_publish(
            topology.exchange.as_str().into(),
            "order.created".into(),
            BasicPublishOptions::default(),
            b"{not json",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let mut alert = Transitions::default();
    let gauge = format!("max by (namespace) (consumer_dead_letter_queue_messages{{namespace=\"{NAMESPACE}\"}})");
    watch(&mut alert, prometheus, "AnalyticsPipelineDeadLetters", published, |a| a.firing.is_some()).await;
    let counted = value(&prometheus.query(&gauge).await);
    assert_eq!(counted, Some(1.0), "{gauge}");

    let purged = Instant::now();
    channel
        .queue_purge(topology.dead_letter_queue.as_str().into(), lapin::options::QueuePurgeOptions::default())
        .await
        .unwrap();
    watch(&mut alert, prometheus, "AnalyticsPipelineDeadLetters", published, |a| a.resolved.is_some()).await;
    say(&format!(
        "monitoring: AnalyticsPipelineDeadLetters after one poison message: {} (after the publish; the gauge read \
         {counted:?}); resolved {:.0} s after the dead-letter queue was purged",
        alert.describe(),
        purged.elapsed().as_secs_f64()
    ));
    connection.close(200, "done".into()).await.unwrap();
}

/// Polls the alert `name` every second, recording its transitions on `since`'s clock, until `done`.
async fn watch(
    alert: &mut Transitions,
    prometheus: &Prometheus,
    name: &str,
    since: Instant,
    done: impl Fn(&Transitions) -> bool,
) {
    let deadline = Instant::now() + ALERT_TIMEOUT;
    while !done(alert) {
        assert!(Instant::now() < deadline, "{name}: {} after {ALERT_TIMEOUT:?}", alert.describe());
        prometheus.record(since, &mut [(name, alert)]).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Checks 4 to 6: the read side falls behind (consumers pinned to 0), then stays behind at a ceiling of one
/// consumer on a slow read database, then catches up; the lag and ceiling alerts follow.
async fn lag_and_ceiling(node: &Node, shop: &Shop, prometheus: &Prometheus, products: &[i64]) {
    // The rules as Prometheus loaded them: the shipped expressions, with this test's threshold and `for:`.
    let lag_rule = prometheus.rule(LAG).await;
    assert_eq!(lag_rule["query"], format!("max by (namespace, name) (pipeline_lag_seconds) > {LAG_THRESHOLD_SECONDS}"));
    assert_eq!(lag_rule["duration"], 30, "{lag_rule}");
    assert_eq!(prometheus.rule(CEILING).await["duration"], 30);

    node.patch_pipeline(NAMESPACE, json!({"spec": {"consumers": {"replicas": 0}}})).await;
    eventually(STARTUP, "the consumers to stop", || async {
        (node.deployment_replicas(NAMESPACE, "shop-consumer").await == (0, 0)).then_some(())
    })
    .await;
    let load = Load::start(&shop.write, &shop.command, products, 4, Duration::from_millis(20));
    let started = Instant::now();
    let lag_series = format!("max(pipeline_lag_seconds{{namespace=\"{NAMESPACE}\"}})");
    let depth_series = format!("max(pipeline_queue_depth{{namespace=\"{NAMESPACE}\"}})");
    let (mut lag, mut ceiling) = (Transitions::default(), Transitions::default());
    let mut highest_lag = 0.0_f64;
    // Lag, with no consumer at all.
    while lag.firing.is_none() {
        assert!(started.elapsed() < ALERT_TIMEOUT, "AnalyticsPipelineLagHigh: {}", lag.describe());
        prometheus.record(started, &mut [(LAG, &mut lag), (CEILING, &mut ceiling)]).await;
        highest_lag = highest_lag.max(value(&prometheus.query(&lag_series).await).unwrap_or(0.0));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(highest_lag > f64::from(LAG_THRESHOLD_SECONDS), "pipeline_lag_seconds rose to {highest_lag}");
    assert!(ceiling.pending.is_none(), "consumers stopped on purpose are not at a ceiling: {}", ceiling.describe());
    say(&format!(
        "monitoring: consumers at 0 under load: pipeline_lag_seconds rose to {highest_lag:.0} s; \
         AnalyticsPipelineLagHigh {} (threshold {LAG_THRESHOLD_SECONDS} s, for {FOR}); AnalyticsConsumersAtMax silent",
        lag.describe()
    ));

    // A ceiling: autoscaling again, but at most one consumer, on a read database that is slow: a lock
    // holds its writes (not its reads) until released. The consumer's statements time out and retry the
    // batch (57014 is transient), so nothing is dead-lettered; the queue only grows.
    let (write, read) = node.databases(NAMESPACE).await;
    let mut slow = read.begin().await.unwrap();
    sqlx::query("lock table product_sales_view in exclusive mode").execute(&mut *slow).await.unwrap();
    let capped = Instant::now();
    node.patch_pipeline(NAMESPACE, json!({"spec": {"consumers": {"replicas": null, "maxReplicas": 1}}})).await;
    let mut lowest_depth = f64::INFINITY;
    while ceiling.firing.is_none() {
        assert!(capped.elapsed() < ALERT_TIMEOUT, "AnalyticsConsumersAtMax: {}", ceiling.describe());
        prometheus.record(started, &mut [(LAG, &mut lag), (CEILING, &mut ceiling)]).await;
        if let Some(depth) = value(&prometheus.query(&depth_series).await) {
            lowest_depth = lowest_depth.min(depth);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (replicas, _) = node.deployment_replicas(NAMESPACE, "shop-consumer").await;
    assert_eq!(replicas, 1);
    say(&format!(
        "monitoring: one consumer (maxReplicas 1) on a locked read table under load: AnalyticsConsumersAtMax {} \
         (set at {:.0} s, for {FOR}); queue depth stayed at or above {lowest_depth:.0}",
        ceiling.describe(),
        (capped - started).as_secs_f64()
    ));

    // Full strength again, and no more orders: the backlog drains and both alerts resolve.
    let report = load.stop().await;
    assert!(report.failures.is_empty(), "{}", report.summary());
    let released = Instant::now();
    slow.rollback().await.unwrap();
    node.patch_pipeline(NAMESPACE, json!({"spec": {"consumers": {"maxReplicas": null}}})).await;
    let drained = shop.in_sync_after(released, STARTUP).await;
    while lag.resolved.is_none() || ceiling.resolved.is_none() {
        assert!(released.elapsed() < ALERT_TIMEOUT, "lag {}; ceiling {}", lag.describe(), ceiling.describe());
        prometheus.record(started, &mut [(LAG, &mut lag), (CEILING, &mut ceiling)]).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    report.assert_all_recorded(&write).await;
    let customers = assert_read_model_matches_write_side(&shop.read, &write, &read, &shop.query).await;
    say(&format!(
        "monitoring: consumers released at {:.0} s; in_sync {:.1} s later; AnalyticsPipelineLagHigh {}; \
         AnalyticsConsumersAtMax {}; the load {}; read model equals SQL ({customers} customers)",
        (released - started).as_secs_f64(),
        drained.as_secs_f64(),
        lag.describe(),
        ceiling.describe(),
        report.summary()
    ));
}
