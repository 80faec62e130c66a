//! The `clusterOperator` broker mode on a real control plane with the RabbitMQ cluster operator's CRD
//! (from its module, `hack/tools.sh ha-crds`) and no cluster operator: the test plays its part by writing
//! the `RabbitmqCluster`'s status and making what it makes. The API server checks the operator's
//! `RabbitmqCluster` against the cluster operator's own schema, and the real garbage collector carries out
//! the deletion under Retain.

use analytics_operator::{children::rabbitmq_cluster::RabbitmqCluster, crd::AnalyticsPipeline};
use analytics_testkit::eventually;
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount},
    rbac::v1::{Role, RoleBinding},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::{
    harness::{Cluster, Operator, TIMEOUT, condition, create_pipeline, pipeline_until},
    pipeline,
};

const UID_LABEL: &str = "analytics.example.com/pipeline-uid";

/// The cluster operator's status of the cluster: each of `conditions` with its status, at `generation`.
async fn report(client: &Client, namespace: &str, conditions: &[(&str, &str)], generation: i64) {
    let conditions: Vec<Value> = conditions
        .iter()
        .map(|(type_, status)| json!({"type": type_, "status": status, "reason": "Reported", "message": "by the test"}))
        .collect();
    let status = json!({"status": {"conditions": conditions, "observedGeneration": generation}});
    let clusters: Api<RabbitmqCluster> = Api::namespaced(client.clone(), namespace);
    clusters.patch_status("shop-rabbitmq", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
}

/// Makes `object` in `namespace`, as the cluster operator would.
async fn make<K>(client: &Client, namespace: &str, object: Value)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.create(&PostParams::default(), &serde_json::from_value(object).unwrap()).await.unwrap();
}

async fn names<K>(client: &Client, namespace: &str) -> Vec<String>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let list = api.list(&ListParams::default().labels("app.kubernetes.io/name=shop-rabbitmq")).await.unwrap();
    list.items.iter().filter(|o| o.meta().deletion_timestamp.is_none()).map(ResourceExt::name_any).collect()
}

#[tokio::test]
async fn a_rabbitmq_cluster_pipeline_asks_for_a_cluster_follows_it_and_keeps_its_volumes_under_retain() {
    let cluster = Cluster::connect().await;
    cluster.install_ha_crds().await;
    let tenant = cluster.tenant("rmq").await;
    let namespace = tenant.namespace.as_str();
    let client = &cluster.client;
    let _operator = Operator::start(&tenant, "solo", &[]);
    let spec = json!({"command": {"replicas": 1}, "query": {"replicas": 1},
                      "rabbitmq": {"clusterOperator": {"storage": {"size": "1Gi"}}}});
    let created = create_pipeline(client, namespace, pipeline("shop", spec.clone())).await;

    // The RabbitmqCluster, as the cluster operator's schema admits it, owned by the pipeline.
    let clusters: Api<RabbitmqCluster> = Api::namespaced(client.clone(), namespace);
    let asked =
        eventually(TIMEOUT, "the RabbitmqCluster", || async { clusters.get_opt("shop-rabbitmq").await.ok()? }).await;
    assert_eq!(asked.owner_references()[0].name, "shop");
    assert_eq!((asked.spec.replicas, asked.spec.persistence.storage.as_str()), (3, "1Gi"));
    assert_eq!(asked.labels()[UID_LABEL], created.uid().unwrap());
    let template = &asked.spec.override_["statefulSet"]["spec"]["template"]["spec"];
    assert_eq!(template["initContainers"][0]["name"], "definitions", "the override survives the schema");
    let waiting = pipeline_until(client, namespace, "shop", "BrokerReady False", |p| {
        condition(p, "BrokerReady").as_deref() == Some("False")
    })
    .await;
    let broker = waiting.status.unwrap().conditions.into_iter().find(|c| c.type_ == "BrokerReady").unwrap();
    assert_eq!(
        (broker.reason.as_str(), broker.message.as_str()),
        ("ClusterNotReady", "shop-rabbitmq: AllReplicasReady not reported yet; 3 nodes")
    );

    // The cluster operator reports the cluster whole: the broker is ready; a node down: it is not.
    let generation = asked.metadata.generation.unwrap();
    let all = [("AllReplicasReady", "True"), ("ClusterAvailable", "True"), ("ReconcileSuccess", "True")];
    report(client, namespace, &all, generation).await;
    pipeline_until(client, namespace, "shop", "BrokerReady True", |p| {
        condition(p, "BrokerReady").as_deref() == Some("True")
    })
    .await;
    let one_down = [("AllReplicasReady", "False"), ("ClusterAvailable", "True"), ("ReconcileSuccess", "True")];
    report(client, namespace, &one_down, generation).await;
    let degraded = pipeline_until(client, namespace, "shop", "BrokerReady False again", |p| {
        condition(p, "BrokerReady").as_deref() == Some("False")
    })
    .await;
    let broker = degraded.status.unwrap().conditions.into_iter().find(|c| c.type_ == "BrokerReady").unwrap();
    assert_eq!(broker.message, "shop-rabbitmq: AllReplicasReady is False (Reported: by the test); 3 nodes");

    // What the cluster operator makes for its cluster, each owned by it.
    let owner = json!([{"apiVersion": "rabbitmq.com/v1beta1", "kind": "RabbitmqCluster", "name": "shop-rabbitmq",
                        "uid": asked.uid().unwrap(), "controller": true}]);
    let labels = json!({"app.kubernetes.io/name": "shop-rabbitmq", "app.kubernetes.io/part-of": "rabbitmq"});
    let meta = |name: &str| json!({"name": name, "namespace": namespace, "labels": labels, "ownerReferences": owner});
    let mut claim_labels = labels.clone();
    claim_labels["app.kubernetes.io/managed-by"] = json!("analytics-operator");
    claim_labels["app.kubernetes.io/instance"] = json!("shop");
    claim_labels[UID_LABEL] = json!(created.uid().unwrap());
    for ordinal in 0..3 {
        let claim = json!({"metadata": {"name": format!("persistence-shop-rabbitmq-server-{ordinal}"),
                                        "labels": claim_labels, "ownerReferences": owner},
                           "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
        make::<PersistentVolumeClaim>(client, namespace, claim).await;
    }
    let selector = json!({"matchLabels": {"app.kubernetes.io/name": "shop-rabbitmq"}});
    let set = json!({"metadata": meta("shop-rabbitmq-server"), "spec": {
        "replicas": 3, "serviceName": "shop-rabbitmq-nodes", "selector": selector,
        "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "rabbitmq", "image": "rabbitmq"}]}}}});
    make::<StatefulSet>(client, namespace, set).await;
    make::<Service>(
        client,
        namespace,
        json!({"metadata": meta("shop-rabbitmq-nodes"), "spec": {"clusterIP": "None", "ports": [{"port": 4369}]}}),
    )
    .await;
    make::<Secret>(
        client,
        namespace,
        json!({"metadata": meta("shop-rabbitmq-default-user"), "stringData": {"username": "u"}}),
    )
    .await;
    make::<ConfigMap>(client, namespace, json!({"metadata": meta("shop-rabbitmq-server-conf"), "data": {}})).await;
    make::<ServiceAccount>(client, namespace, json!({"metadata": meta("shop-rabbitmq-server")})).await;
    make::<Role>(client, namespace, json!({"metadata": meta("shop-rabbitmq-peer-discovery"), "rules": []})).await;
    let binding = json!({"metadata": meta("shop-rabbitmq-server"),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "shop-rabbitmq-peer-discovery"},
        "subjects": [{"kind": "ServiceAccount", "name": "shop-rabbitmq-server"}]});
    make::<RoleBinding>(client, namespace, binding).await;

    // The cluster operator's finalizer, which it puts on every cluster it runs.
    let finalized = json!({"metadata": {"finalizers": ["deletion.finalizers.rabbitmqclusters.rabbitmq.com"]}});
    clusters.patch("shop-rabbitmq", &PatchParams::default(), &Patch::Merge(&finalized)).await.unwrap();

    // Deleting the pipeline under Retain: the RabbitmqCluster, taken out of the cluster operator's hands
    // first (its reconciliation paused, its finalizer off), goes; its claims stay without an owner, and what
    // ran or routed for it goes.
    let mark = cluster.audit_mark();
    let pipelines: Api<AnalyticsPipeline> = Api::namespaced(client.clone(), namespace);
    pipelines.delete("shop", &DeleteParams::default()).await.unwrap();
    eventually(TIMEOUT, "the pipeline and its RabbitmqCluster to go", || async {
        let gone =
            pipelines.get_opt("shop").await.ok()?.is_none() && clusters.get_opt("shop-rabbitmq").await.ok()?.is_none();
        gone.then_some(())
    })
    .await;
    let writes: Vec<Value> = cluster
        .writes_since(mark, &tenant.username)
        .into_iter()
        .filter(|write| write["objectRef"]["resource"] == "rabbitmqclusters")
        .map(|write| json!([write["verb"], write["responseStatus"]["code"]]))
        .collect();
    assert_eq!(
        writes,
        [json!(["patch", 200]), json!(["patch", 200]), json!(["delete", 200])],
        "label, finalizer, delete"
    );
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let left = claims.list(&ListParams::default().labels("app.kubernetes.io/name=shop-rabbitmq")).await.unwrap();
    assert_eq!(
        left.items.iter().map(ResourceExt::name_any).collect::<Vec<_>>(),
        [
            "persistence-shop-rabbitmq-server-0",
            "persistence-shop-rabbitmq-server-1",
            "persistence-shop-rabbitmq-server-2"
        ]
    );
    for claim in &left.items {
        assert!(claim.owner_references().is_empty(), "{}: {:?}", claim.name_any(), claim.owner_references());
        assert!(claim.metadata.deletion_timestamp.is_none(), "{} is not being deleted", claim.name_any());
    }
    eventually(TIMEOUT, "what ran or routed for the cluster to go", || async {
        let gone = names::<StatefulSet>(client, namespace).await.is_empty()
            && names::<Service>(client, namespace).await.is_empty()
            && names::<Secret>(client, namespace).await.is_empty()
            && names::<ConfigMap>(client, namespace).await.is_empty()
            && names::<ServiceAccount>(client, namespace).await.is_empty()
            && names::<Role>(client, namespace).await.is_empty()
            && names::<RoleBinding>(client, namespace).await.is_empty();
        gone.then_some(())
    })
    .await;

    // Applied again, the pipeline asks for a cluster of the same name, whose StatefulSet finds the claims
    // by name, and marks them as its own, so that a later `Delete` finds them.
    let again = create_pipeline(client, namespace, pipeline("shop", spec)).await;
    eventually(TIMEOUT, "the claims marked with the new pipeline's UID", || async {
        let list = claims.list(&ListParams::default().labels("app.kubernetes.io/name=shop-rabbitmq")).await.ok()?;
        list.items.iter().all(|claim| claim.labels().get(UID_LABEL) == again.uid().as_ref()).then_some(())
    })
    .await;
    assert!(clusters.get_opt("shop-rabbitmq").await.unwrap().is_some());
}
