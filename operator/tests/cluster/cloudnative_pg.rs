//! The `cloudNativePG` mode on a real control plane with CloudNativePG's CRDs (from its release manifest,
//! `hack/tools.sh ha-crds`) and no CloudNativePG operator: the test plays CloudNativePG's part
//! by writing the `Cluster`'s status, and a kubelet's by ending the roles Job's pod. The API server checks
//! the operator's `Cluster` against CloudNativePG's own schema, and the real garbage collector carries out
//! the deletion under Retain.

use analytics_operator::children::cloudnative_pg;
use analytics_testkit::eventually;
use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Event, PersistentVolumeClaim, Pod, Secret, Service},
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use crate::{
    harness::{Cluster, Operator, TIMEOUT, condition, create_pipeline, pipeline_until},
    pipeline,
    read_model::end_pod,
};

/// CloudNativePG's status of the cluster, as its operator writes it.
async fn report(client: &Client, namespace: &str, status: Value) {
    let clusters: Api<cloudnative_pg::Cluster> = Api::namespaced(client.clone(), namespace);
    clusters
        .patch_status("shop-postgres", &PatchParams::default(), &Patch::Merge(&json!({"status": status})))
        .await
        .unwrap();
}

fn healthy(primary: &str, timeline: i64) -> Value {
    json!({"phase": "Cluster in healthy state", "instances": 3, "readyInstances": 3,
           "currentPrimary": primary, "targetPrimary": primary, "timelineID": timeline})
}

#[tokio::test]
async fn a_cloudnative_pg_pipeline_asks_for_a_cluster_follows_it_and_keeps_its_volumes_under_retain() {
    let cluster = Cluster::connect().await;
    cluster.install_ha_crds().await;
    let tenant = cluster.tenant("cnpg").await;
    let namespace = tenant.namespace.as_str();
    let client = &cluster.client;
    let _operator = Operator::start(&tenant, "solo", &[]);
    let spec = json!({"command": {"replicas": 1}, "query": {"replicas": 1},
                      "postgres": {"cloudNativePG": {"smartShutdownTimeout": 15}}});
    create_pipeline(client, namespace, pipeline("shop", spec)).await;

    // The Cluster, as CloudNativePG's schema admits it, owned by the pipeline.
    let clusters: Api<cloudnative_pg::Cluster> = Api::namespaced(client.clone(), namespace);
    let asked =
        eventually(TIMEOUT, "the CloudNativePG Cluster", || async { clusters.get_opt("shop-postgres").await.ok()? })
            .await;
    assert_eq!(asked.owner_references()[0].name, "shop");
    let spec = serde_json::to_value(&asked.spec).unwrap();
    assert_eq!(
        (&spec["instances"], &spec["postgresUID"], &spec["smartShutdownTimeout"]),
        (&json!(3), &json!(999), &json!(15))
    );
    assert_eq!(spec["postgresql"]["synchronous"], json!({"method": "any", "number": 1, "dataDurability": "required"}));
    assert_eq!(spec["bootstrap"]["initdb"]["secret"]["name"], "shop-postgres-admin");
    // The administrator's Secret carries the credentials' password, as basic auth.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let admin = secrets.get("shop-postgres-admin").await.unwrap();
    let credentials = secrets.get("shop-credentials").await.unwrap();
    assert_eq!(admin.type_.as_deref(), Some("kubernetes.io/basic-auth"));
    assert_eq!(admin.data.as_ref().unwrap()["password"], credentials.data.as_ref().unwrap()["postgres-password"]);
    assert!(admin.owner_references().is_empty());
    // No PostgreSQL StatefulSet of the operator's own; the roles Job instead.
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let roles = eventually(TIMEOUT, "the roles Job", || async {
        let list = jobs.list(&ListParams::default().labels("app.kubernetes.io/component=postgres-roles")).await.ok()?;
        list.items.into_iter().next()
    })
    .await;
    let waiting = pipeline_until(client, namespace, "shop", "DatabasesReady False", |p| {
        condition(p, "DatabasesReady").as_deref() == Some("False")
    })
    .await;
    let databases = waiting.status.unwrap().conditions.into_iter().find(|c| c.type_ == "DatabasesReady").unwrap();
    assert_eq!(databases.reason, "ClusterNotHealthy", "{databases:?}");

    // CloudNativePG reports it healthy and the roles Job ends: the databases are ready.
    report(client, namespace, healthy("shop-postgres-1", 1)).await;
    end_pod(client, namespace, &roles.name_any(), "roles", 0, "the services' roles are in place").await;
    let ready = pipeline_until(client, namespace, "shop", "DatabasesReady True", |p| {
        condition(p, "DatabasesReady").as_deref() == Some("True")
    })
    .await;
    let shown = ready.status.unwrap().postgres.unwrap();
    assert_eq!(
        (shown.primary.as_deref(), shown.timeline, shown.ready_instances),
        (Some("shop-postgres-1"), Some(1), 3)
    );

    // A failover: not ready while CloudNativePG fails over, then a new primary on a new timeline, with an Event.
    report(client, namespace, json!({"phase": "Failing over", "readyInstances": 2, "targetPrimary": "pending"})).await;
    let failing = pipeline_until(client, namespace, "shop", "DatabasesReady False while failing over", |p| {
        condition(p, "DatabasesReady").as_deref() == Some("False")
    })
    .await;
    let message = failing.status.unwrap().conditions.into_iter().find(|c| c.type_ == "DatabasesReady").unwrap().message;
    assert_eq!(message, "shop-postgres: Failing over; 2 of 3 instances ready");
    report(client, namespace, healthy("shop-postgres-2", 2)).await;
    pipeline_until(client, namespace, "shop", "the new primary in the status", |p| {
        p.status.as_ref().and_then(|s| s.postgres.as_ref()).is_some_and(|pg| pg.timeline == Some(2))
            && condition(p, "DatabasesReady").as_deref() == Some("True")
    })
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let failover = eventually(TIMEOUT, "a Failover Event", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| e.reason.as_deref() == Some("Failover"))
    })
    .await;
    assert_eq!(
        (failover.type_.as_deref(), failover.message.as_deref()),
        (Some("Warning"), Some("the primary moved from shop-postgres-1 to shop-postgres-2 (timeline 1 → 2)"))
    );

    // What CloudNativePG made for its Cluster: claims, an instance pod and a Service, each owned by it.
    let owner = json!([{"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster", "name": "shop-postgres",
                        "uid": asked.uid().unwrap(), "controller": true}]);
    let made_by_cloudnative_pg = |kind: &str, name: &str, spec: Value| {
        json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "namespace": namespace,
               "labels": {"cnpg.io/cluster": "shop-postgres"}, "annotations": {"cnpg.io/nodeSerial": "1"},
               "ownerReferences": owner}, "spec": spec})
    };
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    for name in ["shop-postgres-1", "shop-postgres-2", "shop-postgres-3"] {
        let claim = made_by_cloudnative_pg(
            "PersistentVolumeClaim",
            name,
            json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}),
        );
        claims.create(&PostParams::default(), &serde_json::from_value(claim).unwrap()).await.unwrap();
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod = made_by_cloudnative_pg(
        "Pod",
        "shop-postgres-2",
        json!({"containers": [{"name": "postgres", "image": "postgres:16"}]}),
    );
    pods.create(&PostParams::default(), &serde_json::from_value(pod).unwrap()).await.unwrap();
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let service = made_by_cloudnative_pg("Service", "shop-postgres-rw", json!({"ports": [{"port": 5432}]}));
    services.create(&PostParams::default(), &serde_json::from_value(service).unwrap()).await.unwrap();

    // Deleting the pipeline under Retain: the Cluster goes, its claims stay without an owner, and what ran
    // or routed for it goes.
    let pipelines: Api<analytics_operator::crd::AnalyticsPipeline> = Api::namespaced(client.clone(), namespace);
    pipelines.delete("shop", &DeleteParams::default()).await.unwrap();
    eventually(TIMEOUT, "the pipeline and its Cluster to go", || async {
        let gone =
            pipelines.get_opt("shop").await.ok()?.is_none() && clusters.get_opt("shop-postgres").await.ok()?.is_none();
        gone.then_some(())
    })
    .await;
    let left = claims.list(&ListParams::default().labels("cnpg.io/cluster=shop-postgres")).await.unwrap();
    assert_eq!(
        left.items.iter().map(ResourceExt::name_any).collect::<Vec<_>>(),
        ["shop-postgres-1", "shop-postgres-2", "shop-postgres-3"]
    );
    for claim in &left.items {
        assert!(claim.owner_references().is_empty(), "{}: {:?}", claim.name_any(), claim.owner_references());
        assert!(claim.metadata.deletion_timestamp.is_none(), "{} is not being deleted", claim.name_any());
        assert_eq!(claim.annotations()["cnpg.io/nodeSerial"], "1", "CloudNativePG finds its claims by these");
    }
    eventually(TIMEOUT, "the instance pod and the Service to go", || async {
        let pods = pods.list(&ListParams::default().labels("cnpg.io/cluster=shop-postgres")).await.ok()?;
        let services = services.list(&ListParams::default().labels("cnpg.io/cluster=shop-postgres")).await.ok()?;
        // A pod without a node is deleted at once; one on a node would be terminating here.
        (pods.items.iter().all(|p| p.metadata.deletion_timestamp.is_some()) && services.items.is_empty()).then_some(())
    })
    .await;
    assert!(
        secrets.get_opt("shop-postgres-admin").await.unwrap().is_some(),
        "the administrator's Secret stays with the data"
    );
    assert!(secrets.get_opt("shop-credentials").await.unwrap().is_some());
}
