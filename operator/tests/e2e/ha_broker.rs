//! The broker half of `make e2e HA=1`: the RabbitMQ cluster of `examples/ha.yaml` (three nodes, run by the
//! RabbitMQ cluster operator) under keyed order load, in the order an operator of a production broker meets
//! them: every queue with a member on each node; the node that leads `order-events` deleted, then a
//! follower, then both with `--grace-period=0 --force`; a rolling restart of every node by a spec change.
//!
//! Orders are accepted by the command service whatever the broker does (the outbox holds the events), so
//! after each disruption: no accepted order is lost, each is applied once (the read model equals SQL over
//! the write database), every queue has its members back, and the figures are printed: the relay's
//! publish failures, the consumers' lost sessions, how long until events flowed again (the relay's
//! watermark, which goes through the broker every second, fresh in sync-status), and what clients saw.

use std::time::{Duration, Instant};

use analytics_operator::children::rabbitmq_cluster::{READY_CONDITIONS, RabbitmqCluster};
use analytics_testkit::{assert_read_model_matches_write_side, eventually, try_run};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use serde_json::{Value, json};

use super::{Node, STARTUP, Shop, ha::NAMESPACE, load::Load, say};

const CLUSTER: &str = "shop-rabbitmq";
/// The queues the services declare, each a quorum queue.
const QUEUES: [&str; 3] = ["order-events", "product-events", "analytics-dead-letter"];

/// `rabbitmqctl` inside a node's pod; `None` (said) if the pod cannot run it now: a node made again after a
/// deletion is listed before its container exists.
fn rabbitmqctl(node: &Node, pod: &str, args: &[&str]) -> Option<String> {
    let mut command = vec!["exec", "-n", NAMESPACE, pod, "-c", "rabbitmq", "--", "rabbitmqctl", "-q"];
    command.extend(args);
    try_run(&mut node.command("KUBECTL", &command), None)
        .inspect_err(|failure| say(&format!("rabbitmqctl in {pod} failed, asking again: {}", failure.trim())))
        .ok()
}

/// The broker's pods, sorted.
async fn nodes(node: &Node) -> Vec<String> {
    let pods = node.api::<Pod>(NAMESPACE);
    let list = pods.list(&ListParams::default().labels(&format!("app.kubernetes.io/name={CLUSTER}"))).await.unwrap();
    let mut names: Vec<String> = list.items.into_iter().filter_map(|pod| pod.metadata.name).collect();
    names.sort();
    names
}

/// Each queue's members and online members, and its leader's pod, as a node reports them.
fn queues(node: &Node, pod: &str) -> Option<Vec<(String, usize, usize, String)>> {
    let json =
        rabbitmqctl(node, pod, &["list_queues", "name", "type", "members", "online", "leader", "--formatter", "json"])?;
    let listed: Vec<Value> = serde_json::from_str(&json).unwrap_or_default();
    let pod_of = |member: &str| member.split(['@', '.']).nth(1).unwrap_or_default().to_owned();
    let mut queues: Vec<_> = listed
        .iter()
        .filter(|queue| QUEUES.contains(&queue["name"].as_str().unwrap_or_default()))
        .map(|queue| {
            assert_eq!(queue["type"], "quorum", "{queue}");
            let count = |key: &str| queue[key].as_array().map_or(0, Vec::len);
            (
                queue["name"].as_str().unwrap().to_owned(),
                count("members"),
                count("online"),
                pod_of(queue["leader"].as_str().unwrap_or_default()),
            )
        })
        .collect();
    queues.sort();
    Some(queues)
}

/// Waits until the cluster operator reports the cluster ready at its generation, and every queue has a
/// member on each node, all online; returns the queues.
async fn whole(node: &Node, what: &str) -> Vec<(String, usize, usize, String)> {
    eventually(STARTUP, what, || async {
        let cluster = node.api::<RabbitmqCluster>(NAMESPACE).get(CLUSTER).await.ok()?;
        let status = cluster.status.as_ref()?;
        let ready = READY_CONDITIONS
            .iter()
            .all(|wanted| status.conditions.iter().any(|c| c.type_ == *wanted && c.status == "True"))
            && status.observed_generation == cluster.metadata.generation;
        let replicas = usize::try_from(cluster.spec.replicas).unwrap();
        let pods = nodes(node).await;
        if !ready || pods.len() != replicas {
            return None;
        }
        let queues = queues(node, &pods[0])?;
        let complete = queues.len() == QUEUES.len()
            && queues.iter().all(|(_, members, online, _)| *members == replicas && *online == replicas);
        complete.then_some(queues)
    })
    .await
}

/// Step 1 (after the install of ha.rs): each queue is a quorum queue with a member on every node.
pub async fn members(node: &Node) {
    let queues = whole(node, "every queue with a member on each of the 3 nodes").await;
    say(&format!("ha broker: 3 nodes; queues (name, members, online, leader): {queues:?}"));
}

/// A figure summed over the pods of a component: a counter from each pod's /metrics.
async fn counter(node: &Node, component: &str, port: u16, name: &str) -> f64 {
    let pods = node.api::<Pod>(NAMESPACE);
    let selector = format!("app.kubernetes.io/instance=shop,app.kubernetes.io/component={component}");
    let mut total = 0.0;
    for pod in pods.list(&ListParams::default().labels(&selector)).await.unwrap() {
        let Some(ip) = pod.status.and_then(|s| s.pod_ip) else { continue };
        let Ok(response) = node.http.get(format!("http://{ip}:{port}/metrics")).send().await else { continue };
        let text = response.text().await.unwrap_or_default();
        total += text
            .lines()
            .filter(|line| line.starts_with(name))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    total
}

/// How many times the consumers lost the broker since `since` (their log says so each time).
fn consumer_sessions_lost(node: &Node, since: &str) -> usize {
    let logs = node.kubectl(
        &[
            "logs",
            "-n",
            NAMESPACE,
            "-l",
            "app.kubernetes.io/instance=shop,app.kubernetes.io/component=consumer",
            "--since-time",
            since,
            "--tail=-1",
            "--prefix",
        ],
        None,
    );
    logs.lines().filter(|line| line.contains("consumer lost the broker")).count()
}

/// Under keyed load: `disrupt` (given the pods and the leader of `order-events`; it returns what it did),
/// then wait for the cluster to be whole again; then check that no accepted order was lost and that the
/// read model equals SQL, and print the figures.
async fn under_load<F, Fut>(node: &Node, shop: &Shop, products: &[i64], name: &str, disrupt: F)
where
    F: FnOnce(Vec<String>, String) -> Fut,
    Fut: Future<Output = String>,
{
    let load = Load::start_keyed(&shop.write, &shop.command, products, 4, Duration::from_millis(20));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pods = nodes(node).await;
    let leader = eventually(STARTUP, "the leader of order-events", || async {
        queues(node, &pods[0])?.into_iter().find(|q| q.0 == "order-events").map(|q| q.3)
    })
    .await;
    let publish_failures = counter(node, "command", 8090, "outbox_publish_failures_total").await;
    let since = k8s_openapi::jiff::Timestamp::now().to_string();
    let failures = load.failures();
    let at = load.now();
    let started = Instant::now();
    let did = disrupt(pods, leader.clone()).await;
    // Events flow again when a watermark that went through the broker after the disruption is applied:
    // sync-status's watermark is younger than the time since.
    let flowing = eventually(STARTUP, &format!("{name}: events to flow again"), || async {
        let sync = shop.sync_status().await;
        let age = sync["watermarkAgeSeconds"].as_f64()?;
        let elapsed = started.elapsed().as_secs_f64();
        (elapsed > 2.0 && age + 1.0 < elapsed).then_some(elapsed - age)
    })
    .await;
    let queues = whole(node, &format!("{name}: the cluster whole again")).await;
    let recovered = started.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let gap = load.longest_gap_since(at);
    let during = load.failures_since(failures);
    let report = load.stop().await;
    let synced = shop.in_sync_after(Instant::now(), STARTUP).await;
    let (write, read) = node.databases(NAMESPACE).await;
    report.assert_all_recorded(&write).await;
    let customers = assert_read_model_matches_write_side(&shop.read, &write, &read, &shop.query).await;
    let publish_failures = counter(node, "command", 8090, "outbox_publish_failures_total").await - publish_failures;
    let lost = consumer_sessions_lost(node, &since);
    let leader_after = queues.iter().find(|q| q.0 == "order-events").unwrap().3.clone();
    say(&format!(
        "ha broker {name}: {did}; order-events led by {leader} → {leader_after}; a fresh watermark applied {flowing:.1} s after it began, \
         every queue whole (3 members online) after {:.1} s; relay publish failures {publish_failures}, consumer \
         sessions lost {lost}; longest time without an accepted order {:.1} s; client failures meanwhile: {during}",
        recovered.as_secs_f64(),
        gap.as_secs_f64(),
    ));
    say(&format!(
        "ha broker {name}: whole load {}; no accepted order lost, each applied once (read model equals SQL, \
         {customers} customers); in_sync {:.1} s after the load",
        report.summary(),
        synced.as_secs_f64()
    ));
}

/// The UID of the pod `name`, or "" while there is none.
fn uid(node: &Node, name: &str) -> String {
    let args = ["get", "pod", name, "-n", NAMESPACE, "-o", "jsonpath={.metadata.uid}"];
    analytics_testkit::try_run(&mut node.command("KUBECTL", &args), None).unwrap_or_default()
}

/// Step 2: the node that leads `order-events` deleted, then a follower; then both with
/// `--grace-period=0 --force`.
pub async fn nodes_deleted(node: &Node, shop: &Shop, products: &[i64]) {
    for force in [false, true] {
        for leader in [true, false] {
            let name = match (leader, force) {
                (true, false) => "leader deleted",
                (false, false) => "follower deleted",
                (true, true) => "leader force-deleted",
                (false, true) => "follower force-deleted",
            };
            under_load(node, shop, products, name, |pods, order_leader| async move {
                let pod = if leader { order_leader } else { pods.into_iter().find(|p| *p != order_leader).unwrap() };
                let deleted = uid(node, &pod);
                let mut args = vec!["delete", "pod", pod.as_str(), "-n", NAMESPACE, "--wait=false"];
                if force {
                    args.extend(["--grace-period=0", "--force"]);
                }
                node.kubectl(&args, None);
                // Gone (after its preStop hook, unless forced) and made again by its StatefulSet.
                eventually(Duration::from_secs(600), &format!("{pod} replaced"), || async {
                    let now = uid(node, &pod);
                    (!now.is_empty() && now != deleted).then_some(())
                })
                .await;
                format!("kubectl {}", args.join(" "))
            })
            .await;
        }
    }
}

/// Step 3: a spec change that restarts every node, one at a time (the cluster operator's rolling update,
/// each node waiting in its preStop hook until its queues are in quorum without it, then draining).
pub async fn rolling_restart(node: &Node, shop: &Shop, products: &[i64]) {
    under_load(node, shop, products, "rolling restart", |pods, _| async move {
        let before: Vec<String> = pods.iter().map(|pod| uid(node, pod)).collect();
        let patch = json!({"spec": {"rabbitmq": {"clusterOperator": {"resources": {
            "requests": {"cpu": "100m", "memory": "1100Mi"}, "limits": {"memory": "1100Mi"}}}}}});
        node.kubectl(
            &["patch", "analyticspipeline", "shop", "-n", NAMESPACE, "--type=merge", "-p", &patch.to_string()],
            None,
        );
        // Every pod replaced: new UIDs under the same names.
        eventually(Duration::from_secs(900), "every broker pod replaced", || async {
            let now: Vec<String> = pods.iter().map(|pod| uid(node, pod)).collect();
            now.iter().zip(&before).all(|(now, before)| !now.is_empty() && now != before).then_some(())
        })
        .await;
        "resources changed (memory 1Gi → 1100Mi): every node restarted, one at a time".to_owned()
    })
    .await;
}
