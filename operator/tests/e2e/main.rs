//! The user's path on a real node: `make e2e` runs this against `make cluster` (kubelet, containerd,
//! kube-proxy, CoreDNS), with the images built from this tree. Nothing is simulated: pods run, probes
//! probe, Services route, and the operator runs in-cluster from the chart and reads the queue depth and
//! sync-status through Service DNS.
//!
//! Two tests, run one after the other (`--test-threads=1`), each in its own namespaces:
//! - the user's path, in the order a user meets things: install, the README walkthrough, autoscaling,
//!   chaos, a rollout under load, the read model's verify and rebuild, and Retain;
//! - with `make e2e MONITORING=1` only, Prometheus on the pipeline ([`monitoring`]): scrape targets, the
//!   dashboard's queries, and the alerts going pending, firing and resolved;
//! - with `make e2e HA=1` only, the highly available pipeline ([`ha`], CloudNativePG): switchover,
//!   failovers and a killed postmaster under keyed load, standby reads, and Retain.
//!
//! Each step prints its figures (`e2e: …` lines).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod day2;
mod ha;
mod ha_broker;
mod load;
mod monitoring;
mod terminations;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use analytics_operator::crd::AnalyticsPipeline;
use analytics_testkit::{
    assert_read_model_matches_write_side, env, eventually, eventually_explained, run, tool, try_run,
};
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::{Namespace, PersistentVolumeClaim, Pod, Secret, Service},
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};
use sqlx::{PgPool, postgres::PgConnectOptions};

use crate::{load::Load, terminations::Terminations};

const NAMESPACE: &str = "e2e";
const RESTRICTED_NAMESPACE: &str = "e2e-restricted";
const RELEASE: &str = "analytics";
const PIPELINE: &str = "shop";
/// Pods start in seconds here; the margin is for a loaded 2-core machine.
const STARTUP: Duration = Duration::from_secs(300);

fn say(line: &str) {
    println!("e2e: {line}");
}

/// The node `make cluster` runs, through the environment `.run/cluster/env` sets.
struct Node {
    client: Client,
    kubeconfig: PathBuf,
    http: reqwest::Client,
}

impl Node {
    async fn connect() -> Self {
        let kubeconfig = PathBuf::from(env("KUBECONFIG"));
        let client = Client::try_default().await.expect("KUBECONFIG reaches the node's API server");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        Self { client, kubeconfig, http }
    }

    fn command(&self, variable: &str, args: &[&str]) -> Command {
        let mut command = Command::new(tool(variable));
        command.args(args).env("KUBECONFIG", &self.kubeconfig).current_dir(repo());
        command
    }

    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        run(&mut self.command("KUBECTL", args), stdin)
    }

    fn helm(&self, args: &[&str]) -> String {
        run(&mut self.command("HELM", args), None)
    }

    fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Clients for the pipeline's command and query APIs, with the write and read tokens the operator
    /// generated into its API tokens Secret.
    async fn api_clients(&self, namespace: &str) -> (reqwest::Client, reqwest::Client) {
        let secret = self.api::<Secret>(namespace).get(&format!("{PIPELINE}-api-tokens")).await.unwrap();
        let data = secret.data.unwrap();
        let token = |key: &str| {
            let tokens = String::from_utf8(data[key].0.clone()).unwrap();
            tokens.lines().next().unwrap().to_owned()
        };
        (client_with(&token("write")), client_with(&token("read")))
    }

    /// Removes what an earlier test or an interrupted run left: the releases and namespaces of both tests
    /// (and with them the pipelines, whose finalizer an operator must still be there to run). Each release's
    /// operator watches every namespace, so only one may run at a time.
    async fn reset(&self) {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        for namespace in [RESTRICTED_NAMESPACE, NAMESPACE, monitoring::NAMESPACE, ha::NAMESPACE] {
            if namespaces.get_opt(namespace).await.unwrap().is_none() {
                continue;
            }
            // A pipeline whose operator cannot finalize it (an earlier test failed before its operator was
            // up, say) must not hold the run: after the bound, its finalizer goes without the operator.
            let delete = ["delete", "analyticspipelines", "--all", "-n", namespace, "--wait=true", "--timeout=300s"];
            if let Err(failure) = try_run(&mut self.command("KUBECTL", &delete), None) {
                say(&format!(
                    "reset: the pipelines in {namespace} were not finalized ({failure}); removing their finalizers"
                ));
                let pipelines: Api<AnalyticsPipeline> = self.api(namespace);
                let unfinalized = json!({"metadata": {"finalizers": null}});
                for pipeline in pipelines.list(&ListParams::default()).await.unwrap() {
                    let patch = Patch::Merge(&unfinalized);
                    drop(pipelines.patch(&pipeline.name_any(), &PatchParams::default(), &patch).await);
                }
            }
            drop(self.command("HELM", &["uninstall", RELEASE, "-n", namespace, "--wait", "--timeout=120s"]).output());
            namespaces.delete(namespace, &DeleteParams::default()).await.unwrap();
            let deleting = Instant::now();
            // Twice the startup bound: a namespace goes only after every pod's graceful stop, and an
            // orphaned CloudNativePG instance (Retain) stops with CloudNativePG's default smart shutdown.
            eventually(2 * STARTUP, &format!("namespace {namespace} to go"), || async {
                namespaces.get_opt(namespace).await.unwrap().is_none().then_some(())
            })
            .await;
            say(&format!("reset: namespace {namespace} deleted in {:.0} s", deleting.elapsed().as_secs_f64()));
        }
    }

    /// The pipeline in `namespace` once it is Ready with every condition True at its generation, and every
    /// pod of the namespace Running and Ready. On a timeout, the panic says which conditions and pods were
    /// not, and why.
    async fn ready(&self, namespace: &str) -> AnalyticsPipeline {
        let pipelines: Api<AnalyticsPipeline> = self.api(namespace);
        let pods: Api<Pod> = self.api(namespace);
        let what = format!("pipeline {namespace}/{PIPELINE} Ready with every pod Ready");
        eventually_explained(STARTUP, &what, || async {
            let pipeline = pipelines.get(PIPELINE).await.map_err(|e| format!("get pipeline: {e}"))?;
            let mut unmet = Vec::new();
            let status = pipeline.status.clone().unwrap_or_default();
            if status.observed_generation != pipeline.metadata.generation {
                unmet.push(format!(
                    "observed generation {:?} of {:?}",
                    status.observed_generation, pipeline.metadata.generation
                ));
            }
            for type_ in ["DatabasesReady", "BrokerReady", "ServicesReady", "Ready"] {
                match status.conditions.iter().find(|c| c.type_ == type_) {
                    Some(c) if c.status == "True" => {}
                    Some(c) => unmet.push(format!("{type_}={} {}: {}", c.status, c.reason, c.message)),
                    None => unmet.push(format!("{type_} not reported")),
                }
            }
            // The services' and backends' pods; the read model's Jobs leave pods that ran to completion.
            let pods = pods.list(&ListParams::default()).await.map_err(|e| format!("list pods: {e}"))?;
            let serving: Vec<&Pod> = pods.items.iter().filter(|pod| !is_job_pod(pod)).collect();
            if serving.is_empty() {
                unmet.push("no pods".to_owned());
            }
            unmet.extend(serving.into_iter().filter(|pod| !pod_ready(pod)).map(pod_state));
            if unmet.is_empty() { Ok(pipeline) } else { Err(unmet.join("; ")) }
        })
        .await
    }

    /// `http://<cluster IP>:<port>` of a Service: kube-proxy routes it from the host too.
    async fn service_url(&self, namespace: &str, name: &str) -> String {
        let service: Service = self.api(namespace).get(name).await.unwrap();
        let spec = service.spec.unwrap();
        format!("http://{}:{}", spec.cluster_ip.unwrap(), spec.ports.unwrap()[0].port)
    }

    /// The write and read databases, as the administrator: of the managed PostgreSQL at its pod's address,
    /// or of a CloudNativePG cluster's primary at its `-rw` Service.
    async fn databases(&self, namespace: &str) -> (PgPool, PgPool) {
        let ip = match self.api::<Service>(namespace).get_opt(&format!("{PIPELINE}-postgres-rw")).await.unwrap() {
            Some(primary) => primary.spec.unwrap().cluster_ip.unwrap(),
            None => {
                let pod: Pod = self.api(namespace).get(&format!("{PIPELINE}-postgres-0")).await.unwrap();
                pod.status.unwrap().pod_ip.unwrap()
            }
        };
        let secret: Secret = self.api(namespace).get(&format!("{PIPELINE}-credentials")).await.unwrap();
        let password = String::from_utf8(secret.data.unwrap()["postgres-password"].0.clone()).unwrap();
        let options = PgConnectOptions::new().host(&ip).port(5432).username("analytics").password(&password);
        let connect = |database: &str| PgPool::connect_with(options.clone().database(database));
        (connect("analytics_write").await.unwrap(), connect("analytics_read").await.unwrap())
    }

    async fn patch_pipeline(&self, namespace: &str, patch: Value) {
        let pipelines: Api<AnalyticsPipeline> = self.api(namespace);
        pipelines.patch(PIPELINE, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    }

    async fn status(&self, namespace: &str) -> analytics_operator::crd::AnalyticsPipelineStatus {
        let pipelines: Api<AnalyticsPipeline> = self.api(namespace);
        pipelines.get(PIPELINE).await.unwrap().status.unwrap_or_default()
    }

    async fn deployment_replicas(&self, namespace: &str, name: &str) -> (i32, i32) {
        let deployment: Deployment = self.api(namespace).get(name).await.unwrap();
        let status = deployment.status.unwrap_or_default();
        (deployment.spec.unwrap().replicas.unwrap_or(1), status.ready_replicas.unwrap_or(0))
    }
}

/// A pod of a verify or rebuild Job.
fn is_job_pod(pod: &Pod) -> bool {
    pod.labels().contains_key("batch.kubernetes.io/job-name")
}

/// A pod that is not ready, in a line: its phase, and each container's waiting or terminated reason.
fn pod_state(pod: &Pod) -> String {
    let status = pod.status.clone().unwrap_or_default();
    let containers = status.init_container_statuses.iter().flatten().chain(status.container_statuses.iter().flatten());
    let states: Vec<String> = containers
        .filter(|c| !c.ready)
        .map(|c| {
            let state = c.state.clone().unwrap_or_default();
            let why = match (state.waiting, state.terminated) {
                (Some(waiting), _) => waiting.reason.unwrap_or_default(),
                (None, Some(terminated)) => {
                    format!("exited {} {}", terminated.exit_code, terminated.reason.unwrap_or_default())
                }
                (None, None) => "running, not ready".to_owned(),
            };
            format!("{} {why} (restarts {})", c.name, c.restart_count)
        })
        .collect();
    format!("pod {} {} [{}]", pod.name_any(), status.phase.unwrap_or_default(), states.join(", "))
}

fn pod_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|conditions| conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn values() -> String {
    repo().join(".run/cluster/values.yaml").to_string_lossy().into_owned()
}

/// The pipeline's two APIs, through their Services, with clients that carry the tokens the operator
/// generated for them.
struct Shop {
    command: String,
    query: String,
    write: reqwest::Client,
    read: reqwest::Client,
}

impl Shop {
    /// The Services of the pipeline in `namespace` (new ones get new cluster IPs).
    async fn of(node: &Node, namespace: &str) -> Self {
        let (write, read) = node.api_clients(namespace).await;
        Self {
            command: node.service_url(namespace, "shop-command").await,
            query: node.service_url(namespace, "shop-query").await,
            write,
            read,
        }
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self.write.post(format!("{}{path}", self.command)).json(&body).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn get_command(&self, path: &str) -> Value {
        get_ok(&self.write, &format!("{}{path}", self.command)).await
    }

    async fn get_query(&self, path: &str) -> Value {
        get_ok(&self.read, &format!("{}{path}", self.query)).await
    }

    async fn sync_status(&self) -> Value {
        self.get_query("/api/analytics/sync-status").await
    }

    /// Waits until sync-status reads in_sync (both streams watermarked, nothing pending) on a watermark the
    /// relay made after `since`, so after every write before it; returns how long after `since` that was.
    async fn in_sync_after(&self, since: Instant, timeout: Duration) -> Duration {
        eventually(timeout, "sync-status in_sync on a later watermark", || async {
            let response = self.read.get(format!("{}/api/analytics/sync-status", self.query)).send().await.ok()?;
            let status: Value = response.json().await.ok()?;
            let fresh = status["watermarkAgeSeconds"].as_f64()? < since.elapsed().as_secs_f64();
            (status["status"] == "in_sync" && fresh).then_some(())
        })
        .await;
        since.elapsed()
    }
}

async fn get_ok(http: &reqwest::Client, url: &str) -> Value {
    let response = http.get(url).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200, "GET {url}");
    response.json().await.unwrap()
}

/// A client that sends `token` as its bearer token.
fn client_with(token: &str) -> reqwest::Client {
    let mut bearer = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
    bearer.set_sensitive(true);
    let headers = reqwest::header::HeaderMap::from_iter([(reqwest::header::AUTHORIZATION, bearer)]);
    reqwest::Client::builder().default_headers(headers).timeout(Duration::from_secs(10)).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_users_path_from_helm_install_to_a_retained_pipeline() {
    let node = Node::connect().await;
    node.reset().await;
    let shop = install(&node).await;
    restricted(&node).await;
    walkthrough(&node, &shop, async || {}).await;
    let products = stock_up(&shop).await;
    scaling(&node, NAMESPACE, &shop, &products).await;
    chaos(&node, &shop, &products).await;
    rollout(&node, &shop, &products).await;
    read_model(&node, &shop).await;
    day2::disruptions(&node).await;
    day2::pause(&node).await;
    day2::storage(&node).await;
    day2::hibernate(&node, &shop).await;
    day2::operator_upgrade(&node, &shop, &products).await;
    retain(&node, &shop).await;
}

/// Step 1: `helm install` and `kubectl apply -f examples/minimal.yaml`, exactly as the README says.
async fn install(node: &Node) -> Shop {
    let started = Instant::now();
    let values = values();
    let chart = ["install", RELEASE, "charts/analytics-pipeline", "-n", NAMESPACE, "--create-namespace", "-f", &values];
    node.helm(&chart);
    let installed = started.elapsed();
    node.kubectl(&["apply", "-n", NAMESPACE, "-f", "examples/minimal.yaml"], None);
    let pipeline = node.ready(NAMESPACE).await;
    say(&format!(
        "install: helm install {:.1} s, pipeline Ready with every pod Ready {:.1} s after the apply",
        installed.as_secs_f64(),
        (started.elapsed() - installed).as_secs_f64()
    ));

    // The operator runs in-cluster as the chart made it: no --connect-to, so its reads of the queue depth and
    // of sync-status went through Service DNS, and the status shows what they returned.
    let operator: Deployment = node.api(NAMESPACE).get(&format!("{RELEASE}-operator")).await.unwrap();
    let container = &operator.spec.unwrap().template.spec.unwrap().containers[0];
    let args = container.args.clone().unwrap_or_default();
    assert!(!args.iter().any(|a| a.contains("connect-to")), "{args:?}");
    assert!(!container.env.iter().flatten().any(|e| e.name == "OPERATOR_CONNECT_TO"));
    // The first Ready pass may precede the query service's readiness, or its first watermarks (then
    // sync-status says `unknown`, with no lag yet); a later pass (every 15 s) reads the settled figures.
    let status = eventually(Duration::from_secs(60), "the status to show what the observer read", || async {
        let status = node.status(NAMESPACE).await;
        (status.queue_depth.is_some() && status.pending_events.is_some() && status.lag_seconds.is_some())
            .then_some(status)
    })
    .await;
    assert_eq!(status.queue_depth, Some(0), "the depth of order-events, read over AMQP at shop-rabbitmq.e2e.svc");
    assert_eq!(status.pending_events, Some(0), "sync-status, read over HTTP at shop-query.e2e.svc");
    assert_eq!(status.lag_seconds, Some(0.0));
    assert_eq!(status.consumer_replicas, Some(1));
    let endpoints = pipeline.status.unwrap().endpoints.unwrap();
    assert_eq!(endpoints.command, "http://shop-command.e2e.svc:8080");

    // Each service is connected to PostgreSQL as its own role, not as the administrator.
    let (write, read) = node.databases(NAMESPACE).await;
    let sessions = async |pool: &PgPool| {
        let sql = "select distinct application_name, usename::text from pg_stat_activity
                    where datname = current_database() and application_name like '%-service' order by 1";
        sqlx::query_as::<_, (String, String)>(sql).fetch_all(pool).await.unwrap()
    };
    let owned =
        |rows: &[(&str, &str)]| rows.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect::<Vec<_>>();
    eventually(Duration::from_secs(30), "every service's sessions", || async {
        let expected = (
            owned(&[("command-service", "command")]),
            owned(&[("consumer-service", "consumer"), ("query-service", "query")]),
        );
        ((sessions(&write).await, sessions(&read).await) == expected).then_some(())
    })
    .await;
    say("install: command, consumer and query are connected to PostgreSQL as their own roles");

    Shop::of(node, NAMESPACE).await
}

/// Step 1b: The same pipeline in a namespace that enforces the `restricted` Pod Security Standard and
/// whose ResourceQuota demands CPU and memory requests and limits of every pod, as shared clusters do;
/// and the chart's own operator Deployment checked against it.
async fn restricted(node: &Node) {
    let started = Instant::now();
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": RESTRICTED_NAMESPACE,
        "labels": {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/warn": "restricted"},
    }});
    node.kubectl(&["apply", "-f", "-"], Some(&namespace.to_string()));
    let quota = json!({"apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": "compute", "namespace": RESTRICTED_NAMESPACE},
        "spec": {"hard": {"requests.cpu": "4", "requests.memory": "8Gi", "limits.cpu": "24", "limits.memory": "16Gi"}}});
    node.kubectl(&["apply", "-f", "-"], Some(&quota.to_string()));
    node.kubectl(&["apply", "-n", RESTRICTED_NAMESPACE, "-f", "examples/minimal.yaml"], None);
    node.ready(RESTRICTED_NAMESPACE).await;
    let quota: k8s_openapi::api::core::v1::ResourceQuota = node.api(RESTRICTED_NAMESPACE).get("compute").await.unwrap();
    let used = quota.status.unwrap().used.unwrap();
    let figure = |key: &str| used.get(key).map(|q| q.0.clone()).unwrap_or_default();
    assert!(!figure("requests.cpu").is_empty() && figure("requests.cpu") != "0", "the quota counts the pods: {used:?}");
    say(&format!(
        "restricted: pipeline Ready in a restricted namespace under a compute ResourceQuota in {:.1} s \
         (quota used: requests {} CPU, {} memory; limits {} CPU, {} memory)",
        started.elapsed().as_secs_f64(),
        figure("requests.cpu"),
        figure("requests.memory"),
        figure("limits.cpu"),
        figure("limits.memory")
    ));

    // PodSecurity admission warns about a workload whose pods it would refuse.
    let chart =
        node.helm(&["template", RELEASE, "charts/analytics-pipeline", "-n", RESTRICTED_NAMESPACE, "-f", &values()]);
    let output = node
        .command("KUBECTL", &["apply", "-n", RESTRICTED_NAMESPACE, "--dry-run=server", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(chart.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("PodSecurity"), "the chart's operator violates the restricted standard: {stderr}");

    // NodePorts, on the node's address and on the loopback (kube-proxy's route_localnet), for kind-style
    // fixed ports.
    node.patch_pipeline(
        RESTRICTED_NAMESPACE,
        json!({"spec": {"query": {"serviceType": "NodePort", "nodePort": 30081}}}),
    )
    .await;
    let (_, read) = node.api_clients(RESTRICTED_NAMESPACE).await;
    for host in [env("CLUSTER_NODE_IP"), "127.0.0.1".to_owned()] {
        let url = format!("http://{host}:30081/api/analytics/sync-status");
        let answer = eventually(Duration::from_secs(60), &format!("{url} to answer"), || async {
            let response = read.get(&url).send().await.ok()?;
            (response.status().as_u16() == 200).then_some(response.json::<Value>().await.ok()?)
        })
        .await;
        assert!(answer["status"].is_string(), "{answer}");
    }
    say("restricted: the query API answers on NodePort 30081 at the node's address and at 127.0.0.1");

    // Make room on the node for the rest.
    node.kubectl(&["delete", "namespace", RESTRICTED_NAMESPACE, "--wait=false"], None);
}

/// Step 2: The README walkthrough, through the pipeline's Services, with the answers it prints. `settled`
/// runs once sync-status says `in_sync`, before the figures are read back: where the query service reads
/// several standbys, sync-status and the figures may come from two of them, so the HA test waits there
/// until every standby has replayed.
async fn walkthrough(node: &Node, shop: &Shop, settled: impl AsyncFn()) {
    // Without the operator's token, nothing is written: a JSON 401 that asks for a bearer token.
    let anonymous = node.http.post(format!("{}/api/products", shop.command)).json(&json!({})).send().await.unwrap();
    assert_eq!(
        (anonymous.status().as_u16(), anonymous.headers()["www-authenticate"].to_str().unwrap()),
        (401, "Bearer realm=\"command\"")
    );
    let product = json!({"name": "Desk Lamp", "category": "Home", "price": 49.99, "stock": 10});
    assert_eq!(shop.post("/api/products", product).await, (201, json!({"productId": 1})));
    let order = json!({"customerId": 42, "items": [{"productId": 1, "quantity": 2}]});
    assert_eq!(shop.post("/api/orders", order).await, (201, json!({"orderId": 1})));
    let placed = shop.get_command("/api/orders/1").await;
    assert_eq!((placed["customerId"].as_i64(), placed["total"].to_string()), (Some(42), "99.98".to_owned()));
    let ordered = Instant::now();
    let too_many = json!({"customerId": 42, "items": [{"productId": 1, "quantity": 50}]});
    let (status, body) = shop.post("/api/orders", too_many).await;
    assert_eq!(status, 409);
    assert_eq!(
        body,
        json!({"error": "insufficient_stock",
               "message": "not enough stock for \"Desk Lamp\" (product 1): 8 available, 50 requested"})
    );

    let synced = shop.in_sync_after(ordered, Duration::from_secs(30)).await;
    settled().await;
    let sales = shop.get_query("/api/analytics/products/1/sales").await;
    assert_eq!(sales, json!({"productId": 1, "totalQuantitySold": 2, "totalRevenue": 99.98, "orderCount": 1}));
    let category = shop.get_query("/api/analytics/categories/Home/revenue").await;
    assert_eq!(category, json!({"category": "Home", "totalRevenue": 99.98, "totalOrders": 1}));
    let customer = shop.get_query("/api/analytics/customers/42/lifetime-value").await;
    assert_eq!((customer["totalSpent"].to_string(), customer["orderCount"].as_i64()), ("99.98".to_owned(), Some(1)));
    assert_eq!(customer["lastOrderDate"], placed["createdAt"]);
    let sync = shop.sync_status().await;
    assert_eq!((sync["status"].as_str(), sync["pendingEvents"].as_i64()), (Some("in_sync"), Some(0)), "{sync}");
    say(&format!(
        "walkthrough: every answer as printed; sync-status in_sync {:.2} s after the order",
        synced.as_secs_f64()
    ));
}

/// Products with stock enough for every load below, in four categories.
async fn stock_up(shop: &Shop) -> Vec<i64> {
    let mut products = Vec::new();
    for (index, category) in ["Home", "Kitchen", "Garden", "Toys"].iter().cycle().take(8).enumerate() {
        let body =
            json!({"name": format!("Load item {index}"), "category": category, "price": 2.5, "stock": 10_000_000});
        let (status, created) = shop.post("/api/products", body).await;
        assert_eq!(status, 201, "{created}");
        products.push(created["productId"].as_i64().unwrap());
    }
    products
}

/// Step 3: A backlog makes the consumers scale up on the real queue depth; they drain it; the status shows the
/// lag rise and fall; after the stabilization window they scale back down; the read model equals the SQL.
/// The highly available pipeline ([`ha`]) goes through it too, on its RabbitMQ cluster's quorum queue.
async fn scaling(node: &Node, namespace: &str, shop: &Shop, products: &[i64]) {
    // Seconds, not the default five minutes, for the window; 300 messages a consumer. While a fixed count of
    // zero holds the consumers off, a burst becomes a backlog, as when consumers fall behind.
    node.patch_pipeline(
        namespace,
        json!({"spec": {"consumers": {"replicas": 0, "targetQueueDepthPerReplica": 300, "scaleDownStabilizationSeconds": 30}}}),
    )
    .await;
    eventually(STARTUP, "the consumers to stop", || async {
        (node.deployment_replicas(namespace, "shop-consumer").await == (0, 0)).then_some(())
    })
    .await;
    let burst = Load::start(&shop.write, &shop.command, products, 8, Duration::ZERO);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let burst = burst.stop().await;
    assert!(burst.failures.is_empty(), "{}", burst.summary());
    let backlog = eventually(STARTUP, "the status to show the backlog", || async {
        let status = node.status(namespace).await;
        (status.queue_depth.unwrap_or(0) >= 600 && status.lag_seconds.unwrap_or(0.0) > 0.0).then_some(status)
    })
    .await;
    say(&format!(
        "{namespace}: scaling: burst {}; status queueDepth {:?}, pendingEvents {:?}, lagSeconds {:?}",
        burst.summary(),
        backlog.queue_depth,
        backlog.pending_events,
        backlog.lag_seconds
    ));
    // No consumer applies a watermark, so the outbox backlog behind the newest one is not known: null, not
    // the last applied watermark's stale figure.
    assert_eq!(backlog.pending_events, None, "{backlog:?}");

    // Autoscaling again: up at once, on the depth.
    let released = Instant::now();
    node.patch_pipeline(namespace, json!({"spec": {"consumers": {"replicas": null}}})).await;
    let peak = eventually(STARTUP, "the consumers to scale up", || async {
        let (replicas, _) = node.deployment_replicas(namespace, "shop-consumer").await;
        (replicas >= 2).then_some(replicas)
    })
    .await;
    say(&format!(
        "{namespace}: scaling: consumers 0 → {peak} (300 messages a consumer, at most 10) {:.1} s after autoscaling resumed",
        released.elapsed().as_secs_f64()
    ));
    let drained = shop.in_sync_after(released, STARTUP).await;
    let settled = eventually(STARTUP, "the status to show the drained queue", || async {
        let status = node.status(namespace).await;
        (status.queue_depth == Some(0) && status.pending_events == Some(0) && status.lag_seconds == Some(0.0))
            .then_some(status)
    })
    .await;
    say(&format!("{namespace}: scaling: drained, in_sync {:.1} s after autoscaling resumed", drained.as_secs_f64()));
    let down = Instant::now();
    let watch = Terminations::watch(node.api(namespace), "app.kubernetes.io/component=consumer");
    eventually(Duration::from_secs(180), "the consumers to scale back down", || async {
        (node.deployment_replicas(namespace, "shop-consumer").await == (1, 1)).then_some(())
    })
    .await;
    // The scaled-down pods leave the Deployment's count before they have stopped.
    eventually(Duration::from_secs(60), "the scaled-down consumers to stop", || async {
        let pods = node.api::<Pod>(namespace);
        let list = pods.list(&ListParams::default().labels("app.kubernetes.io/component=consumer")).await.ok()?;
        (list.items.len() == 1).then_some(())
    })
    .await;
    let stops = watch.stop().await;
    say(&format!(
        "{namespace}: scaling: back to 1 consumer {:.1} s after the drain (window 30 s, status consumers {:?}); {}",
        down.elapsed().as_secs_f64(),
        settled.consumer_replicas,
        terminations::summary(&stops)
    ));
    assert!(stops.iter().all(|stop| !stop.used_the_whole_grace_period()), "{stops:?}");
    let (write, read) = node.databases(namespace).await;
    let customers = assert_read_model_matches_write_side(&shop.read, &write, &read, &shop.query).await;
    assert!(customers > 100, "{customers} customers compared");
    say(&format!("{namespace}: scaling: read model equals SQL over the write DB ({customers} customers)"));
}

/// Step 4: Under load, a consumer pod, the RabbitMQ pod and the PostgreSQL pod are deleted, one at a time.
/// Nothing acknowledged is lost and everything recovers by itself.
async fn chaos(node: &Node, shop: &Shop, products: &[i64]) {
    let load = Load::start(&shop.write, &shop.command, products, 4, Duration::from_millis(20));
    let pods: Api<Pod> = node.api(NAMESPACE);
    let victims = [
        ("consumer", "app.kubernetes.io/component=consumer"),
        ("rabbitmq", "app.kubernetes.io/component=rabbitmq"),
        ("postgres", "app.kubernetes.io/component=postgres"),
    ];
    for (component, selector) in victims {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let before = load.failures();
        let victim = pods.list(&ListParams::default().labels(selector)).await.unwrap().items.remove(0);
        let deleted = Instant::now();
        let deleted_at = load.now();
        pods.delete(&victim.name_any(), &DeleteParams::default()).await.unwrap();
        eventually(STARTUP, &format!("the {component} to come back"), || async {
            let list = pods.list(&ListParams::default().labels(selector)).await.ok()?;
            let replaced = list.items.iter().all(|p| p.uid() != victim.uid());
            (replaced && !list.items.is_empty() && list.items.iter().all(pod_ready)).then_some(())
        })
        .await;
        let back = deleted.elapsed();
        // The services reconnect by themselves: orders are accepted after the replacement is Ready.
        load.wait_for_accepted(STARTUP).await;
        say(&format!(
            "chaos: {component} pod deleted; its replacement Ready after {:.1} s; longest time without an \
             accepted order {:.1} s; client failures: {}",
            back.as_secs_f64(),
            load.longest_gap_since(deleted_at).as_secs_f64(),
            load.failures_since(before)
        ));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let report = load.stop().await;
    let stopped = Instant::now();
    say(&format!("chaos: whole load {}", report.summary()));
    let synced = shop.in_sync_after(stopped, STARTUP).await;
    let (write, read) = node.databases(NAMESPACE).await;
    report.assert_all_recorded(&write).await;
    let customers = assert_read_model_matches_write_side(&shop.read, &write, &read, &shop.query).await;
    say(&format!(
        "chaos: in_sync {:.1} s after the load; every accepted order is in the write DB and counted once in the \
         read model ({customers} customers)",
        synced.as_secs_f64()
    ));
}

/// Step 5: A new command image tag under continuous load: the rollout completes and no order is lost.
async fn rollout(node: &Node, shop: &Shop, products: &[i64]) {
    let deployments: Api<Deployment> = node.api(NAMESPACE);
    let current = deployments.get("shop-command").await.unwrap();
    let image = current.spec.unwrap().template.spec.unwrap().containers[0].image.clone().unwrap();
    let (repository, tag) = image.rsplit_once(':').unwrap();
    let new_tag = format!("{tag}-rollout");
    let new_image = format!("{repository}:{new_tag}");
    // The same bits under a new tag, as a release pipeline would push them.
    run(Command::new("ctr").args(["-n", "k8s.io", "images", "tag", "--force", &image, &new_image]), None);

    let load = Load::start(&shop.write, &shop.command, products, 4, Duration::from_millis(20));
    let stops = Terminations::watch(node.api(NAMESPACE), "app.kubernetes.io/component=command");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let started = Instant::now();
    node.patch_pipeline(
        NAMESPACE,
        json!({"spec": {"images": {"command": {"repository": repository, "tag": new_tag}}}}),
    )
    .await;
    let pods: Api<Pod> = node.api(NAMESPACE);
    eventually(STARTUP, "the command rollout to complete", || async {
        let deployment = deployments.get("shop-command").await.ok()?;
        let spec = deployment.spec.as_ref()?;
        let status = deployment.status.as_ref()?;
        let replicas = spec.replicas?;
        let on_new = spec.template.spec.as_ref()?.containers[0].image.as_deref() == Some(new_image.as_str());
        let done = status.observed_generation == deployment.metadata.generation
            && status.updated_replicas == Some(replicas)
            && status.ready_replicas == Some(replicas)
            && status.replicas == Some(replicas);
        let list = pods.list(&ListParams::default().labels("app.kubernetes.io/component=command")).await.ok()?;
        let old_gone = list
            .items
            .iter()
            .all(|p| p.spec.as_ref().is_some_and(|s| s.containers[0].image.as_deref() == Some(new_image.as_str())));
        (on_new && done && old_gone).then_some(())
    })
    .await;
    let rolled = started.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let report = load.stop().await;
    let stopped = Instant::now();
    let stops = stops.stop().await;
    say(&format!(
        "rollout: command → {new_tag} completed in {:.1} s under load: {}; {}",
        rolled.as_secs_f64(),
        report.summary(),
        terminations::summary(&stops)
    ));
    assert!(!stops.is_empty(), "the rollout stopped the old pods");
    assert!(stops.iter().all(|stop| !stop.used_the_whole_grace_period()), "{stops:?}");
    shop.in_sync_after(stopped, STARTUP).await;
    let (write, read) = node.databases(NAMESPACE).await;
    report.assert_all_recorded(&write).await;
    assert_read_model_matches_write_side(&shop.read, &write, &read, &shop.query).await;
    assert!(
        report.failures.is_empty(),
        "a rollout must not fail a client: {}",
        report
            .failures
            .iter()
            .take(10)
            .map(|f| format!("{:.1}s {}", f.0.as_secs_f64(), f.1))
            .collect::<Vec<_>>()
            .join("; ")
    );
}

/// Step 6: a view corrupted by hand; the operator's scheduled verify (a real CronJob's pod) finds it, a
/// requested rebuild (a real Job's pod) fixes it online, and the next verify finds the read model clean.
async fn read_model(node: &Node, shop: &Shop) {
    let (write, read) = node.databases(NAMESPACE).await;
    let customer = shop.get_query("/api/analytics/customers/42/lifetime-value").await;
    sqlx::query("update customer_ltv_view set total_spent = total_spent + 1000 where customer_id = 42")
        .execute(&read)
        .await
        .unwrap();
    let started = Instant::now();
    node.patch_pipeline(NAMESPACE, json!({"spec": {"readModel": {"verifySchedule": "* * * * *"}}})).await;
    let consistent = |status: &analytics_operator::crd::AnalyticsPipelineStatus| {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == "ReadModelConsistent")
            .map(|c| (c.status.clone(), c.message.clone()))
    };
    let (_, drift) = eventually(STARTUP, "the scheduled verify to find the drift", || async {
        consistent(&node.status(NAMESPACE).await).filter(|(status, _)| status == "False")
    })
    .await;
    assert!(drift.starts_with("drift: 1 keys differ (customer_ltv_view 1)"), "{drift}");
    let events: Api<k8s_openapi::api::core::v1::Event> = node.api(NAMESPACE);
    let warned = events.list(&ListParams::default()).await.unwrap().items;
    assert!(warned.iter().any(|e| e.reason.as_deref() == Some("ReadModelDrift")), "a ReadModelDrift Event");
    say(&format!(
        "read model: the scheduled verify found the drift {:.0} s after the corruption: {drift}",
        started.elapsed().as_secs_f64()
    ));

    let requested = Instant::now();
    let at = k8s_openapi::jiff::Timestamp::now().round(k8s_openapi::jiff::Unit::Second).unwrap().to_string();
    node.patch_pipeline(NAMESPACE, json!({"spec": {"readModel": {"rebuildRequestedAt": at}}})).await;
    let rebuild = eventually(STARTUP, "the rebuild to finish", || async {
        let rebuild = node.status(NAMESPACE).await.read_model?.rebuild?;
        rebuild.phase.is_finished().then_some(rebuild)
    })
    .await;
    assert_eq!(rebuild.phase, analytics_operator::crd::RebuildPhase::Succeeded, "{rebuild:?}");
    assert!(rebuild.message.starts_with("rebuilt: "), "{rebuild:?}");
    assert_eq!(shop.get_query("/api/analytics/customers/42/lifetime-value").await, customer);
    say(&format!(
        "read model: rebuilt {:.0} s after the request: {}",
        requested.elapsed().as_secs_f64(),
        rebuild.message
    ));

    let (_, clean) = eventually(STARTUP, "a verify to find the read model clean", || async {
        consistent(&node.status(NAMESPACE).await).filter(|(status, _)| status == "True")
    })
    .await;
    assert_read_model_matches_write_side(&shop.read, &write, &read, &shop.query).await;
    node.patch_pipeline(NAMESPACE, json!({"spec": {"readModel": {"verifySchedule": "@hourly"}}})).await;
    say(&format!("read model: consistent again: {clean}"));
}

/// Step 7: Deleting the pipeline keeps its data (Retain); applying it again comes back with the same data.
async fn retain(node: &Node, shop: &Shop) {
    let (write, _) = node.databases(NAMESPACE).await;
    let (orders,): (i64,) = sqlx::query_as("select count(*) from orders").fetch_one(&write).await.unwrap();
    write.close().await;
    let lamp = shop.get_command("/api/products/1").await;
    let customer = shop.get_query("/api/analytics/customers/42/lifetime-value").await;

    let started = Instant::now();
    node.kubectl(&["delete", "-n", NAMESPACE, "-f", "examples/minimal.yaml", "--wait=true", "--timeout=300s"], None);
    let statefulsets: Api<StatefulSet> = node.api(NAMESPACE);
    let pods: Api<Pod> = node.api(NAMESPACE);
    eventually(STARTUP, "the pipeline's workloads to go", || async {
        let sets = statefulsets.list(&ListParams::default()).await.ok()?;
        let pods = pods.list(&ListParams::default().labels("app.kubernetes.io/instance=shop")).await.ok()?;
        (sets.items.is_empty() && pods.items.is_empty()).then_some(())
    })
    .await;
    let claims: Api<PersistentVolumeClaim> = node.api(NAMESPACE);
    let mut left: Vec<String> =
        claims.list(&ListParams::default()).await.unwrap().items.iter().map(ResourceExt::name_any).collect();
    left.sort();
    assert_eq!(left, ["data-shop-postgres-0", "data-shop-rabbitmq-0"]);
    let secrets: Api<Secret> = node.api(NAMESPACE);
    assert!(secrets.get_opt("shop-credentials").await.unwrap().is_some(), "the credentials stay with the data");
    say(&format!(
        "retain: pipeline deleted in {:.1} s; claims {left:?} and shop-credentials remain",
        started.elapsed().as_secs_f64()
    ));

    let again = Instant::now();
    node.kubectl(&["apply", "-n", NAMESPACE, "-f", "examples/minimal.yaml"], None);
    node.ready(NAMESPACE).await;
    let shop = Shop::of(node, NAMESPACE).await;
    shop.in_sync_after(Instant::now(), STARTUP).await;
    assert_eq!(shop.get_command("/api/products/1").await, lamp);
    assert_eq!(shop.get_query("/api/analytics/customers/42/lifetime-value").await, customer);
    let (write, read) = node.databases(NAMESPACE).await;
    let (orders_again,): (i64,) = sqlx::query_as("select count(*) from orders").fetch_one(&write).await.unwrap();
    assert_eq!(orders_again, orders);
    assert_read_model_matches_write_side(&shop.read, &write, &read, &shop.query).await;
    say(&format!(
        "retain: re-applied, Ready in {:.1} s with the same data ({orders} orders, product 1 and customer 42 unchanged)",
        again.elapsed().as_secs_f64()
    ));
}
