//! Day 2 on the node: drains that respect the budgets, a pause that holds the operator's hands, storage
//! growth on the node's StorageClass, hibernation and resumption with the same data, and an operator
//! upgrade under order load that restarts no pipeline pod.

use std::{
    collections::BTreeMap,
    process::Command,
    time::{Duration, Instant},
};

use analytics_operator::crd::{AnalyticsPipeline, Phase};
use analytics_testkit::{assert_read_model_matches_write_side, eventually, run, try_run};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Event, PersistentVolumeClaim, Pod},
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde_json::json;

use crate::{NAMESPACE, Node, PIPELINE, RELEASE, STARTUP, Shop, is_job_pod, load::Load, say, values};

/// The pipeline's pods that are not done, by name: their UID and restart count.
async fn serving_pods(node: &Node) -> BTreeMap<String, (String, i32)> {
    let pods: Api<Pod> = node.api(NAMESPACE);
    let selector = format!("app.kubernetes.io/instance={PIPELINE}");
    let list = pods.list(&ListParams::default().labels(&selector)).await.unwrap();
    list.items
        .iter()
        .filter(|pod| !is_job_pod(pod))
        .filter(|pod| !matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed")))
        .map(|pod| {
            let restarts = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .map_or(0, |statuses| statuses.iter().map(|s| s.restart_count).sum());
            (pod.name_any(), (pod.uid().unwrap_or_default(), restarts))
        })
        .collect()
}

fn condition(pipeline: &AnalyticsPipeline, type_: &str) -> Option<(String, String, String)> {
    let status = pipeline.status.as_ref()?;
    let condition = status.conditions.iter().find(|c| c.type_ == type_)?;
    Some((condition.status.clone(), condition.reason.clone(), condition.message.clone()))
}

/// Evictions, as `kubectl drain` asks for them: one command pod may go, a second not while the first is
/// away, and the managed database's only pod never; a drain of the pipeline's pods (a server dry run, so
/// the node is neither cordoned nor emptied) stops at the database's budget.
pub async fn disruptions(node: &Node) {
    let pods: Api<Pod> = node.api(NAMESPACE);
    // The budget as the disruption controller sees it: both command pods healthy, one may go. (An eviction
    // of a pod that is not ready spends nothing of the budget.)
    let budgets: Api<PodDisruptionBudget> = node.api(NAMESPACE);
    eventually(STARTUP, "both command pods healthy in their budget", || async {
        let status = budgets.get("shop-command").await.ok()?.status?;
        (status.current_healthy == 2 && status.disruptions_allowed == 1).then_some(())
    })
    .await;
    let commands = pods.list(&ListParams::default().labels("app.kubernetes.io/component=command")).await.unwrap();
    let names: Vec<String> = commands.items.iter().map(ResourceExt::name_any).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // The Eviction API, as `kubectl drain` calls it: a 201 evicts, a 429 is the budget saying no.
    let evict = |pod: &str, dry_run: bool| {
        let options = if dry_run { r#","deleteOptions":{"dryRun":["All"]}"# } else { "" };
        let body = format!(
            r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{pod}","namespace":"{NAMESPACE}"}}{options}}}"#
        );
        let path = format!("/api/v1/namespaces/{NAMESPACE}/pods/{pod}/eviction");
        try_run(&mut node.command("KUBECTL", &["create", "--raw", &path, "-f", "-"]), Some(&body))
    };
    evict(&names[0], false).expect("the first command pod may be evicted");
    // The budget spent, as a drain's next eviction finds it.
    eventually(Duration::from_secs(30), "the command budget to be spent", || async {
        (budgets.get("shop-command").await.ok()?.status?.disruptions_allowed == 0).then_some(())
    })
    .await;
    let refused = evict(&names[1], true).expect_err("a second command pod must wait");
    assert!(refused.contains("disruption budget"), "{refused}");
    let refused = evict(&format!("{PIPELINE}-postgres-0"), true).expect_err("the database stays");
    assert!(refused.contains("disruption budget"), "{refused}");
    let why = refused.lines().find(|line| line.contains("disruption budget")).unwrap_or_default().trim().to_owned();
    say(&format!("disruptions: {} evicted; a second command pod and shop-postgres-0 refused: {why}", names[0]));

    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(node.client.clone());
    let node_name = nodes.list(&ListParams::default()).await.unwrap().items[0].name_any();
    let drain = [
        "drain",
        &node_name,
        "--dry-run=server",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--pod-selector",
        "app.kubernetes.io/instance=shop,app.kubernetes.io/component=postgres",
        "--timeout=15s",
    ];
    let failure =
        try_run(&mut node.command("KUBECTL", &drain), None).expect_err("the drain must wait for the database");
    assert!(failure.contains("disruption budget"), "{failure}");
    let unschedulable = node.kubectl(&["get", "node", &node_name, "-o", "jsonpath={.spec.unschedulable}"], None);
    assert_eq!(unschedulable.trim(), "", "a server dry run cordons nothing");
    node.ready(NAMESPACE).await;
    say("disruptions: kubectl drain (server dry run) stops at shop-postgres-0's budget; the pipeline is Ready again");
}

/// Paused, the operator recreates no deleted child and applies no spec change, and says it is paused;
/// resumed, both happen.
pub async fn pause(node: &Node) {
    let pipelines: Api<AnalyticsPipeline> = node.api(NAMESPACE);
    let deployments: Api<Deployment> = node.api(NAMESPACE);
    node.kubectl(&["annotate", "-n", NAMESPACE, "ap", PIPELINE, "analytics.example.com/paused=true"], None);
    eventually(Duration::from_secs(60), "the Paused condition", || async {
        let pipeline = pipelines.get(PIPELINE).await.ok()?;
        (condition(&pipeline, "Paused")?.0 == "True").then_some(())
    })
    .await;
    deployments.delete("shop-query", &DeleteParams::default()).await.unwrap();
    node.patch_pipeline(NAMESPACE, json!({"spec": {"command": {"replicas": 3}}})).await;
    // Two passes: the deletion and the spec change each wake the operator at once, and a resync follows.
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(deployments.get_opt("shop-query").await.unwrap().is_none(), "recreated while paused");
    assert_eq!(node.deployment_replicas(NAMESPACE, "shop-command").await.0, 2, "applied while paused");
    let pipeline = pipelines.get(PIPELINE).await.unwrap();
    let (status, _, message) = condition(&pipeline, "ServicesReady").unwrap();
    assert_eq!((status.as_str(), message.as_str()), ("False", "shop-query do not exist"), "the status tells");
    say(
        "pause: paused 20 s: shop-query stayed deleted, command replicas stayed 2, ServicesReady False: shop-query do not exist",
    );

    let resumed = Instant::now();
    node.kubectl(&["annotate", "-n", NAMESPACE, "ap", PIPELINE, "analytics.example.com/paused-"], None);
    node.ready(NAMESPACE).await;
    assert_eq!(node.deployment_replicas(NAMESPACE, "shop-command").await, (3, 3));
    let pipeline = pipelines.get(PIPELINE).await.unwrap();
    assert!(condition(&pipeline, "Paused").is_none(), "the condition goes with the pause");
    node.patch_pipeline(NAMESPACE, json!({"spec": {"command": {"replicas": 2}}})).await;
    node.ready(NAMESPACE).await;
    say(&format!(
        "pause: resumed: shop-query recreated, command scaled to 3, Ready in {:.1} s",
        resumed.elapsed().as_secs_f64()
    ));
}

/// A larger broker volume on the node's StorageClass (pre-made hostPath volumes, which cannot expand):
/// the condition and the Event say why, and the rest of the spec is still applied; a smaller size is
/// refused by the API server.
pub async fn storage(node: &Node) {
    let pipelines: Api<AnalyticsPipeline> = node.api(NAMESPACE);
    let claims: Api<PersistentVolumeClaim> = node.api(NAMESPACE);
    let claim = claims.get("data-shop-rabbitmq-0").await.unwrap();
    let size = claim.spec.unwrap().resources.unwrap().requests.unwrap()["storage"].0.clone();
    assert_eq!(size, "10Gi");
    let refused = pipelines
        .patch(
            PIPELINE,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"rabbitmq": {"managed": {"storage": {"size": "5Gi"}}}}})),
        )
        .await
        .expect_err("a smaller size must be refused");
    assert!(refused.to_string().contains("storage.size cannot shrink"), "{refused}");

    node.patch_pipeline(
        NAMESPACE,
        json!({"spec": {"rabbitmq": {"managed": {"storage": {"size": "12Gi"}}}, "query": {"replicas": 3}}}),
    )
    .await;
    let (_, reason, message) = eventually(Duration::from_secs(60), "the StorageResized condition", || async {
        let pipeline = pipelines.get(PIPELINE).await.ok()?;
        condition(&pipeline, "StorageResized").filter(|(status, _, _)| status == "False")
    })
    .await;
    assert_eq!(reason, "ExpansionRefused", "{message}");
    assert!(message.starts_with("data-shop-rabbitmq-0 cannot grow to 12Gi"), "{message}");
    let events: Api<Event> = node.api(NAMESPACE);
    let warned = events.list(&ListParams::default()).await.unwrap().items;
    assert!(warned.iter().any(|e| e.reason.as_deref() == Some("StorageNotExpanded")), "a StorageNotExpanded Event");
    // Everything else is still reconciled: the query service scales, and the pipeline is Ready.
    node.ready(NAMESPACE).await;
    assert_eq!(node.deployment_replicas(NAMESPACE, "shop-query").await, (3, 3));
    let claim = claims.get("data-shop-rabbitmq-0").await.unwrap();
    assert_eq!(claim.spec.unwrap().resources.unwrap().requests.unwrap()["storage"].0, "10Gi");
    node.patch_pipeline(NAMESPACE, json!({"spec": {"query": {"replicas": 2}}})).await;
    node.ready(NAMESPACE).await;
    say(&format!(
        "storage: 10Gi → 12Gi on the node's StorageClass: {reason}: {message}; 5Gi refused; query scaled 2 → 3 → 2"
    ));
}

/// Hibernated, the pipeline runs no pod and keeps its data; resumed, it is Ready with the same orders and
/// read model.
pub async fn hibernate(node: &Node, shop: &Shop) {
    let (write, read) = node.databases(NAMESPACE).await;
    let (orders,): (i64,) = sqlx::query_as("select count(*) from orders").fetch_one(&write).await.unwrap();
    let customer = shop.get_query("/api/analytics/customers/42/lifetime-value").await;
    write.close().await;
    read.close().await;
    let pipelines: Api<AnalyticsPipeline> = node.api(NAMESPACE);

    let asleep = Instant::now();
    node.patch_pipeline(NAMESPACE, json!({"spec": {"hibernate": true}})).await;
    eventually(STARTUP, "the pipeline to hibernate", || async {
        let pipeline = pipelines.get(PIPELINE).await.ok()?;
        let hibernated = condition(&pipeline, "Hibernated")?.0 == "True";
        let phase = pipeline.status.as_ref()?.phase;
        (hibernated && phase == Some(Phase::Hibernated) && serving_pods(node).await.is_empty()).then_some(())
    })
    .await;
    let claims: Api<PersistentVolumeClaim> = node.api(NAMESPACE);
    let mut kept: Vec<String> =
        claims.list(&ListParams::default()).await.unwrap().items.iter().map(ResourceExt::name_any).collect();
    kept.sort();
    assert_eq!(kept, ["data-shop-postgres-0", "data-shop-rabbitmq-0"]);
    say(&format!(
        "hibernate: 0 pods and phase Hibernated {:.1} s after the patch; claims {kept:?} kept",
        asleep.elapsed().as_secs_f64()
    ));

    let awake = Instant::now();
    node.patch_pipeline(NAMESPACE, json!({"spec": {"hibernate": false}})).await;
    node.ready(NAMESPACE).await;
    shop.in_sync_after(Instant::now(), STARTUP).await;
    let (write, read) = node.databases(NAMESPACE).await;
    let (orders_again,): (i64,) = sqlx::query_as("select count(*) from orders").fetch_one(&write).await.unwrap();
    assert_eq!(orders_again, orders);
    assert_eq!(shop.get_query("/api/analytics/customers/42/lifetime-value").await, customer);
    assert_read_model_matches_write_side(&shop.read, &write, &read, &shop.query).await;
    say(&format!(
        "hibernate: resumed, Ready in {:.1} s with the same {orders} orders and read model",
        awake.elapsed().as_secs_f64()
    ));
}

/// A new operator image (the same bits under a new tag, with the same default images) rolled out by
/// `helm upgrade` under order load: no pipeline pod restarts, and no client sees a failure.
pub async fn operator_upgrade(node: &Node, shop: &Shop, products: &[i64]) {
    let deployments: Api<Deployment> = node.api(NAMESPACE);
    let operator_name = format!("{RELEASE}-operator");
    let operator = deployments.get(&operator_name).await.unwrap();
    let image = operator.spec.unwrap().template.spec.unwrap().containers[0].image.clone().unwrap();
    let (repository, tag) = image.rsplit_once(':').unwrap();
    let new_tag = format!("{tag}-upgrade");
    run(
        Command::new("ctr").args([
            "-n",
            "k8s.io",
            "images",
            "tag",
            "--force",
            &image,
            &format!("{repository}:{new_tag}"),
        ]),
        None,
    );

    // The consumers at a fixed count for the while: a scale-up on the load's queue depth would be a new pod
    // that no upgrade made.
    let (consumers, _) = node.deployment_replicas(NAMESPACE, "shop-consumer").await;
    node.patch_pipeline(NAMESPACE, json!({"spec": {"consumers": {"replicas": consumers}}})).await;
    let before = serving_pods(node).await;
    let load = Load::start(&shop.write, &shop.command, products, 4, Duration::from_millis(20));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let started = Instant::now();
    let values = values();
    let tag_flag = format!("operator.image.tag={new_tag}");
    node.helm(&[
        "upgrade",
        RELEASE,
        "charts/analytics-pipeline",
        "-n",
        NAMESPACE,
        "-f",
        &values,
        "--set",
        &tag_flag,
        "--wait",
        "--timeout=300s",
    ]);
    let rolled = started.elapsed();
    // Every new replica has reconciled by now, or does within a pass: wait for two resyncs of the leader.
    let pods: Api<Pod> = node.api(NAMESPACE);
    eventually(STARTUP, "only the new operator's pods", || async {
        let list = pods.list(&ListParams::default().labels("app.kubernetes.io/name=analytics-operator")).await.ok()?;
        list.items
            .iter()
            .all(|pod| {
                pod.spec
                    .as_ref()
                    .is_some_and(|s| s.containers[0].image.as_deref().is_some_and(|i| i.ends_with(&new_tag)))
            })
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(35)).await;
    let report = load.stop().await;
    let after = serving_pods(node).await;
    say(&format!(
        "operator upgrade: helm upgrade to {new_tag} rolled in {:.1} s under load: {}; pipeline pods {} before, {} after",
        rolled.as_secs_f64(),
        report.summary(),
        before.len(),
        after.len()
    ));
    assert_eq!(after, before, "no pipeline pod was replaced or restarted (name → uid, restarts)");
    assert!(report.failures.is_empty(), "an operator upgrade must not fail a client: {}", report.summary());
    let (write, _) = node.databases(NAMESPACE).await;
    report.assert_all_recorded(&write).await;
    node.patch_pipeline(NAMESPACE, json!({"spec": {"consumers": {"replicas": null}}})).await;
}
