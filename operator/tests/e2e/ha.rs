//! `make e2e HA=1`: the highly available pipeline of `examples/ha.yaml` (its PostgreSQL a CloudNativePG
//! cluster of three instances, one synchronous standby, queries on the standbys; its broker a RabbitMQ
//! cluster of three nodes, [`super::ha_broker`]) on the node with CloudNativePG and the RabbitMQ cluster
//! operator installed (`make cluster HA=1`). Under keyed order load (every order with its own
//! Idempotency-Key, an unknown outcome sent again with it), in the order an operator of a production
//! database meets them:
//! 1. install: Ready, the cluster healthy, the README walkthrough's answers, each service on its own
//!    role, the query service on the standbys;
//! 2. a switchover to a standby, as `kubectl cnpg promote` asks for it;
//! 3. the primary's pod deleted, then deleted with `--grace-period=0 --force`;
//! 4. the primary's postmaster killed (SIGKILL) inside its pod;
//! 5. every standby held behind (WAL replay paused): sync-status on the query service says so;
//! 6. the consumers scaled on the depth of the clustered `order-events` ([`super::scaling`]);
//! 7. the broker's nodes deleted and restarted ([`super::ha_broker`]);
//! 8. Retain: the pipeline deleted and applied again, with the same orders, on the same claims.
//!
//! After each disruption: no accepted order is lost (each is in the write database), the read model equals
//! SQL over the write database, and the figures are printed: the time without an accepted order, when
//! CloudNativePG had a new primary, and what the clients saw.

use std::time::{Duration, Instant};

use analytics_operator::children::{
    cloudnative_pg::{self, Cluster},
    rabbitmq_cluster::RabbitmqCluster,
};
use analytics_testkit::{assert_read_model_matches_write_side, eventually, eventually_explained};
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{PersistentVolumeClaim, Pod},
};
use kube::{Api, ResourceExt, api::ListParams};
use serde_json::json;

use super::{
    Node, PIPELINE, RELEASE, STARTUP, Shop, ha_broker, load::Load, say, scaling, stock_up, values, walkthrough,
};

pub const NAMESPACE: &str = "e2e-ha";
const CLUSTER: &str = "shop-postgres";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cloudnative_pg_pipeline_loses_no_order_through_switchover_failover_and_a_killed_postmaster() {
    let node = Node::connect().await;
    node.reset().await;
    let shop = install(&node).await;
    walkthrough(&node, &shop, async || {
        standbys_caught_up(&node).await;
    })
    .await;
    ha_broker::members(&node).await;
    let products = stock_up(&shop).await;
    switchover(&node, &shop, &products).await;
    primary_deleted(&node, &shop, &products, false).await;
    primary_deleted(&node, &shop, &products, true).await;
    postmaster_killed(&node, &shop, &products).await;
    standby_reads(&node, &shop).await;
    scaling(&node, NAMESPACE, &shop, &products).await;
    ha_broker::nodes_deleted(&node, &shop, &products).await;
    ha_broker::rolling_restart(&node, &shop, &products).await;
    retain(&node, &shop).await;
}

async fn cluster(node: &Node) -> Cluster {
    node.api::<Cluster>(NAMESPACE).get(CLUSTER).await.unwrap()
}

/// The cluster once CloudNativePG reports it healthy, with every instance ready, on a primary that
/// `accept` accepts.
async fn healthy(node: &Node, what: &str, accept: impl Fn(&str) -> bool) -> cloudnative_pg::ClusterStatus {
    eventually_explained(STARTUP, what, || async {
        let cluster = node.api::<Cluster>(NAMESPACE).get(CLUSTER).await.map_err(|e| e.to_string())?;
        let status = cluster.status.ok_or("no status")?;
        let settled = status.phase == cloudnative_pg::HEALTHY
            && status.ready_instances == cluster.spec.instances
            && status.current_primary == status.target_primary
            && accept(&status.current_primary);
        if settled {
            return Ok(status);
        }
        Err(format!(
            "phase {:?} ({}), {} of {} instances ready, primary {:?}, target {:?}",
            status.phase,
            status.phase_reason,
            status.ready_instances,
            cluster.spec.instances,
            status.current_primary,
            status.target_primary
        ))
    })
    .await
}

/// `psql` as the local superuser inside an instance's pod (peer authentication on its socket).
fn psql(node: &Node, pod: &str, sql: &str) -> String {
    let args = ["exec", "-n", NAMESPACE, pod, "-c", "postgres", "--", "psql", "-U", "postgres", "-XAtc", sql];
    node.kubectl(&args, None).trim().to_owned()
}

/// [`psql`], or `None` when the pod cannot be reached (it is restarting, say).
fn try_psql(node: &Node, pod: &str, sql: &str) -> Option<String> {
    let args = ["exec", "-n", NAMESPACE, pod, "-c", "postgres", "--", "psql", "-U", "postgres", "-XAtc", sql];
    analytics_testkit::try_run(&mut node.command("KUBECTL", &args), None).ok().map(|out| out.trim().to_owned())
}

/// Waits until every standby has replayed all the WAL the primary had written when it was called, so that
/// any of them answers with every order accepted before; returns how long that took.
async fn standbys_caught_up(node: &Node) -> Duration {
    let started = Instant::now();
    let primary = cluster_primary(node).await;
    let lsn = psql(node, &primary, "select pg_current_wal_lsn()");
    let standbys: Vec<String> = instances(node).await.into_iter().filter(|pod| *pod != primary).collect();
    let check = format!("select pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn");
    eventually(STARTUP, "every standby to replay the primary's WAL", || async {
        standbys.iter().all(|standby| try_psql(node, standby, &check).as_deref() == Some("t")).then_some(())
    })
    .await;
    started.elapsed()
}

/// The names of the objects `api` lists with `selector`, sorted.
async fn names<K>(api: &Api<K>, selector: &str) -> Vec<String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut names: Vec<String> = api
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    names.sort();
    names
}

/// The cluster's instance pods.
async fn instances(node: &Node) -> Vec<String> {
    let selector = format!("{}={CLUSTER},cnpg.io/podRole=instance", cloudnative_pg::CLUSTER_LABEL);
    names(&node.api::<Pod>(NAMESPACE), &selector).await
}

/// Step 1: the chart, then `kubectl apply -f examples/ha.yaml`, exactly as for the minimal pipeline.
async fn install(node: &Node) -> Shop {
    let started = Instant::now();
    let values = values();
    node.helm(&["install", RELEASE, "charts/analytics-pipeline", "-n", NAMESPACE, "--create-namespace", "-f", &values]);
    node.kubectl(&["apply", "-n", NAMESPACE, "-f", "examples/ha.yaml"], None);
    let pipeline = node.ready(NAMESPACE).await;
    let status = healthy(node, "the CloudNativePG cluster to be healthy", |_| true).await;
    let shown = pipeline.status.unwrap().postgres.unwrap();
    assert_eq!((shown.instances, shown.ready_instances), (3, 3), "{shown:?}");
    assert_eq!(shown.primary.as_deref(), Some(status.current_primary.as_str()));
    say(&format!(
        "ha install: pipeline Ready {:.1} s after the apply; CloudNativePG: {}, primary {}, timeline {}",
        started.elapsed().as_secs_f64(),
        status.phase,
        status.current_primary,
        status.timeline_id
    ));
    let wide = node.kubectl(&["get", "ap", PIPELINE, "-n", NAMESPACE, "-o", "wide"], None);
    assert!(wide.contains(&status.current_primary), "kubectl get ap -o wide shows the primary: {wide}");

    // Each service on its own role: the writers on the primary, the query service on the standbys only.
    let sessions = |pod: &str| {
        psql(
            node,
            pod,
            "select coalesce(string_agg(distinct application_name || '=' || usename, ',' order by application_name || '=' || usename), '')
               from pg_stat_activity where application_name like '%-service'",
        )
    };
    eventually(Duration::from_secs(60), "every service's sessions where they belong", || async {
        let primary = sessions(&status.current_primary);
        let standbys: Vec<String> = instances(node)
            .await
            .into_iter()
            .filter(|pod| *pod != status.current_primary)
            .map(|pod| sessions(&pod))
            .collect();
        let on_standbys = standbys.iter().any(|s| s.contains("query-service=query"));
        let writers = primary == "command-service=command,consumer-service=consumer";
        let query_off_primary = standbys.iter().all(|s| !s.contains("command") && !s.contains("consumer"));
        (writers && on_standbys && query_off_primary).then_some(())
    })
    .await;
    say("ha install: command and consumer are connected to the primary as their own roles, query to the standbys");
    Shop::of(node, NAMESPACE).await
}

/// Under keyed load: `disrupt` (which returns what it did), then wait for a healthy cluster whose primary
/// `settled` accepts and for an accepted order; then check that no accepted order was lost and that the
/// read model equals SQL, and print the figures.
async fn under_load<F, Fut>(
    node: &Node,
    shop: &Shop,
    products: &[i64],
    name: &str,
    settled: impl Fn(&str, &str) -> bool,
    disrupt: F,
) where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = String>,
{
    let load = Load::start_keyed(&shop.write, &shop.command, products, 4, Duration::from_millis(20));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = cluster(node).await.status.unwrap_or_default();
    let failures = load.failures();
    let at = load.now();
    let started = Instant::now();
    let did = disrupt(before.current_primary.clone()).await;
    let after = healthy(node, &format!("{name}: the cluster to be healthy again"), |primary| {
        settled(&before.current_primary, primary)
    })
    .await;
    let recovered = started.elapsed();
    load.wait_for_accepted(STARTUP).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let gap = load.longest_gap_since(at);
    let during = load.failures_since(failures);
    let report = load.stop().await;
    let stopped = Instant::now();
    let synced = shop.in_sync_after(stopped, STARTUP).await;
    let replayed = standbys_caught_up(node).await;
    let (write, read) = node.databases(NAMESPACE).await;
    report.assert_all_recorded(&write).await;
    let customers = assert_read_model_matches_write_side(&shop.read, &write, &read, &shop.query).await;
    say(&format!(
        "ha {name}: {did}; primary {} → {} (timeline {} → {}), healthy again after {:.1} s; longest time without an \
         accepted order {:.1} s; client failures meanwhile: {during}",
        before.current_primary,
        after.current_primary,
        before.timeline_id,
        after.timeline_id,
        recovered.as_secs_f64(),
        gap.as_secs_f64(),
    ));
    say(&format!(
        "ha {name}: whole load {}; no accepted order lost; in_sync {:.1} s after the load, every standby replayed \
         {:.1} s later; read model equals SQL over the write DB ({customers} customers)",
        report.summary(),
        synced.as_secs_f64(),
        replayed.as_secs_f64()
    ));
    if after.current_primary != before.current_primary {
        let events: Api<k8s_openapi::api::core::v1::Event> = node.api(NAMESPACE);
        // This failover's Event (the same two instances may have swapped before): it names the timeline
        // the old primary was on.
        let moved = format!("the primary moved from {} to {} (", before.current_primary, after.current_primary);
        let timeline = format!("timeline {}", before.timeline_id);
        let failover = eventually(Duration::from_secs(60), "a Failover Event", || async {
            let events = events.list(&ListParams::default()).await.ok()?.items;
            events.into_iter().find(|e| {
                e.reason.as_deref() == Some("Failover")
                    && e.message.as_deref().is_some_and(|m| m.starts_with(&moved) && m.contains(&timeline))
            })
        })
        .await;
        say(&format!("ha {name}: Event Failover: {}", failover.message.unwrap_or_default()));
    }
}

/// Step 2: a switchover to a standby, by CloudNativePG's status-driven protocol (what `kubectl cnpg
/// promote` sends).
async fn switchover(node: &Node, shop: &Shop, products: &[i64]) {
    let primary = cluster_primary(node).await;
    let target = instances(node).await.into_iter().find(|pod| *pod != primary).unwrap();
    let wanted = target.clone();
    under_load(node, shop, products, "switchover", move |_, primary| primary == wanted, |old| async move {
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let patch = json!({"status": {"targetPrimary": target, "targetPrimaryTimestamp": now,
                                      "phase": "Switchover in progress", "phaseReason": format!("Switching over to {target}")}});
        node.kubectl(
            &["patch", "cluster", CLUSTER, "-n", NAMESPACE, "--subresource=status", "--type=merge", "-p", &patch.to_string()],
            None,
        );
        format!("switchover from {old} to {target} requested")
    })
    .await;
}

async fn cluster_primary(node: &Node) -> String {
    cluster(node).await.status.unwrap_or_default().current_primary
}

/// Step 3: the primary's pod deleted, gracefully or with `--grace-period=0 --force`.
async fn primary_deleted(node: &Node, shop: &Shop, products: &[i64], force: bool) {
    let name = if force { "primary pod force-deleted" } else { "primary pod deleted" };
    under_load(
        node,
        shop,
        products,
        name,
        |old, primary| primary != old,
        |old| async move {
            let mut args = vec!["delete", "pod", old.as_str(), "-n", NAMESPACE, "--wait=false"];
            if force {
                args.extend(["--grace-period=0", "--force"]);
            }
            node.kubectl(&args, None);
            format!("kubectl {}", args.join(" "))
        },
    )
    .await;
}

/// Step 4: SIGKILL of the primary's postmaster inside its pod (the pod and its instance manager stay).
async fn postmaster_killed(node: &Node, shop: &Shop, products: &[i64]) {
    under_load(
        node,
        shop,
        products,
        "postmaster killed",
        |_, _| true,
        |old| async move {
            // `kill` is the shell's; the first line of postmaster.pid is the postmaster's pid.
            let kill = r#"pid=$(head -n 1 /var/lib/postgresql/data/pgdata/postmaster.pid) && kill -KILL "$pid" && echo "$pid""#;
            let pid = node.kubectl(&["exec", "-n", NAMESPACE, &old, "-c", "postgres", "--", "sh", "-c", kill], None);
            let pid = pid.trim().to_owned();
            // The instance manager notices and starts PostgreSQL again, or CloudNativePG fails over.
            tokio::time::sleep(Duration::from_secs(3)).await;
            format!("postmaster (pid {pid}) of {old} killed")
        },
    )
    .await;
}

/// Step 5: while every standby's replay is paused, the query service (which reads the standbys) says in
/// sync-status that it is behind, and its figures stay as they were; once replay resumes, it is in sync.
async fn standby_reads(node: &Node, shop: &Shop) {
    let primary = cluster_primary(node).await;
    let standbys: Vec<String> = instances(node).await.into_iter().filter(|pod| *pod != primary).collect();
    shop.in_sync_after(Instant::now(), STARTUP).await;
    let customer = shop.get_query("/api/analytics/customers/42/lifetime-value").await;
    for standby in &standbys {
        psql(node, standby, "select pg_wal_replay_pause()");
    }
    let paused = Instant::now();
    let order = json!({"customerId": 42, "items": [{"productId": 1, "quantity": 1}]});
    assert_eq!(shop.post("/api/orders", order).await.0, 201);
    // The relay writes a watermark every second; the paused standbys apply none of them.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let sync = shop.sync_status().await;
    let age = sync["watermarkAgeSeconds"].as_f64().unwrap_or(f64::MAX);
    assert_ne!(sync["status"], "in_sync", "a standby held behind is not in sync: {sync}");
    assert!(age >= 8.0, "the watermark the standbys have is as old as the pause: {sync}");
    assert_eq!(shop.get_query("/api/analytics/customers/42/lifetime-value").await, customer, "the standbys' figures");
    say(&format!(
        "ha standby reads: replay paused on {standbys:?} for {:.0} s: sync-status {}",
        paused.elapsed().as_secs_f64(),
        sync
    ));
    for standby in &standbys {
        psql(node, standby, "select pg_wal_replay_resume()");
    }
    let resumed = Instant::now();
    let synced = shop.in_sync_after(resumed, STARTUP).await;
    let after = shop.get_query("/api/analytics/customers/42/lifetime-value").await;
    assert_eq!(after["orderCount"].as_i64(), customer["orderCount"].as_i64().map(|n| n + 1), "{after}");
    say(&format!("ha standby reads: replay resumed; in_sync {:.1} s later, with the order", synced.as_secs_f64()));
}

/// Step 6: deleting the pipeline keeps the cluster's volumes (and the credentials); applying it again
/// makes CloudNativePG start its instances on them, with the same orders.
async fn retain(node: &Node, shop: &Shop) {
    let (write, _) = node.databases(NAMESPACE).await;
    let (orders,): (i64,) = sqlx::query_as("select count(*) from orders").fetch_one(&write).await.unwrap();
    write.close().await;
    let customer = shop.get_query("/api/analytics/customers/42/lifetime-value").await;
    let claims: Api<PersistentVolumeClaim> = node.api(NAMESPACE);
    let selector = format!("{}={CLUSTER}", cloudnative_pg::CLUSTER_LABEL);
    let claim_names = || names(&claims, &selector);
    let before = claim_names().await;
    assert_eq!(before.len(), 3, "{before:?}");
    let broker_selector = "app.kubernetes.io/name=shop-rabbitmq";
    let broker_claims = || names(&claims, broker_selector);
    let broker_before = broker_claims().await;
    assert_eq!(broker_before.len(), 3, "{broker_before:?}");

    let started = Instant::now();
    node.kubectl(&["delete", "-n", NAMESPACE, "-f", "examples/ha.yaml", "--wait=true", "--timeout=300s"], None);
    let pods: Api<Pod> = node.api(NAMESPACE);
    eventually(STARTUP, "the pipeline's pods to go", || async {
        let left = pods.list(&ListParams::default().labels("app.kubernetes.io/instance=shop")).await.ok()?;
        let clusters = node.api::<Cluster>(NAMESPACE).list(&ListParams::default()).await.ok()?;
        let brokers = node.api::<RabbitmqCluster>(NAMESPACE).list(&ListParams::default()).await.ok()?;
        (left.items.is_empty() && clusters.items.is_empty() && brokers.items.is_empty()).then_some(())
    })
    .await;
    // The cluster operator 2.22, left to run its finalizer, could make the cluster again, empty, seconds
    // after it went (the operator takes it out of its hands first): it stays gone.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let brokers = node.api::<RabbitmqCluster>(NAMESPACE).list(&ListParams::default()).await.unwrap();
    assert!(brokers.items.is_empty(), "a RabbitmqCluster came back: {:?}", brokers.items);
    let sets = node.api::<StatefulSet>(NAMESPACE).list(&ListParams::default()).await.unwrap();
    assert!(
        sets.items.is_empty(),
        "a StatefulSet came back: {:?}",
        sets.items.iter().map(ResourceExt::name_any).collect::<Vec<_>>()
    );
    assert_eq!(claim_names().await, before, "the cluster's claims stay");
    assert_eq!(broker_claims().await, broker_before, "the broker's claims stay");
    for claim in claims
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .into_iter()
        .chain(claims.list(&ListParams::default().labels(broker_selector)).await.unwrap())
    {
        assert!(claim.owner_references().is_empty(), "{} has no owner left", claim.name_any());
    }
    say(&format!(
        "ha retain: pipeline deleted in {:.1} s; claims {before:?} and {broker_before:?} remain, without an owner",
        started.elapsed().as_secs_f64()
    ));

    let again = Instant::now();
    node.kubectl(&["apply", "-n", NAMESPACE, "-f", "examples/ha.yaml"], None);
    node.ready(NAMESPACE).await;
    let status = healthy(node, "the re-created cluster to be healthy", |_| true).await;
    let shop = Shop::of(node, NAMESPACE).await;
    shop.in_sync_after(Instant::now(), STARTUP).await;
    standbys_caught_up(node).await;
    assert_eq!(claim_names().await, before, "the same claims, no new ones");
    assert_eq!(broker_claims().await, broker_before, "the broker's nodes on the same claims");
    ha_broker::members(node).await;
    assert_eq!(shop.get_query("/api/analytics/customers/42/lifetime-value").await, customer);
    let (write, read) = node.databases(NAMESPACE).await;
    let (orders_again,): (i64,) = sqlx::query_as("select count(*) from orders").fetch_one(&write).await.unwrap();
    assert_eq!(orders_again, orders);
    assert_read_model_matches_write_side(&shop.read, &write, &read, &shop.query).await;
    say(&format!(
        "ha retain: re-applied, Ready in {:.1} s on the same claims (primary {}, timeline {}) with the same {orders} orders",
        again.elapsed().as_secs_f64(),
        status.current_primary,
        status.timeline_id
    ));
}
