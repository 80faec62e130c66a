//! The operator and the chart against a real control plane: etcd, kube-apiserver and
//! kube-controller-manager built from the pinned Go modules and started by `make test`
//! (hack/control-plane.sh). Without them (TEST_KUBECONFIG unset) every test fails loudly.
//!
//! There is no kubelet: where a test needs children to become available, it sets their pods' status as
//! a kubelet would, and the real ReplicaSet, StatefulSet and Deployment controllers take it from there.

#![allow(clippy::unwrap_used)]

mod cloudnative_pg;
mod harness;
mod rabbitmq_cluster;
mod read_model;

use std::{collections::BTreeSet, time::Duration};

use analytics_events::Topology;
use analytics_operator::{
    children::{self, Observed},
    controller::FIELD_MANAGER,
    crd::{AnalyticsPipeline, ImageSet, Phase},
};
use analytics_testkit::{PrivateBroker, eventually};
use harness::{Cluster, Operator, TIMEOUT, condition, create_pipeline, make_pods_ready, pipeline_until, repo};
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        coordination::v1::Lease,
        core::v1::{ConfigMap, Event, Namespace, PersistentVolumeClaim, Pod, Secret, Service},
    },
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use sqlx::PgPool;

fn pipeline(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "analytics.example.com/v1alpha1", "kind": "AnalyticsPipeline",
        "metadata": {"name": name}, "spec": spec,
    })
}

fn instance(name: &str) -> ListParams {
    ListParams::default().labels(&format!("{}={name}", children::INSTANCE_LABEL))
}

#[tokio::test]
async fn the_chart_installs_and_the_api_server_accepts_every_manifest_and_example() {
    let cluster = Cluster::connect().await;
    let namespace = format!("chart-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    // The release is named after the namespace: the chart's ClusterRole is named after the release.
    let release = namespace.as_str();
    let operator = format!("{release}-operator");
    // The Prometheus operator's CRDs, as a cluster with it has them: the chart then renders its
    // ServiceMonitor, PodMonitor and PrometheusRule, and the API server checks them against the real schemas.
    let crds = analytics_testkit::env("PROMETHEUS_OPERATOR_CRDS");
    cluster.kubectl(&["apply", "--server-side", "-f", &crds], None);
    let monitoring =
        ["servicemonitors", "podmonitors", "prometheusrules"].map(|k| format!("crd/{k}.monitoring.coreos.com"));
    let mut wait = vec!["wait", "--for=condition=Established", "--timeout=60s"];
    wait.extend(monitoring.iter().map(String::as_str));
    cluster.kubectl(&wait, None);
    cluster.install_chart(release, &namespace, &["--set", "examplePipeline.enabled=true"]);

    let status: Value =
        serde_json::from_str(&cluster.helm(&["status", release, "--namespace", &namespace, "-o", "json"])).unwrap();
    assert_eq!(status["info"]["status"], "deployed", "{status}");
    let deployment = Api::<Deployment>::namespaced(cluster.client.clone(), &namespace).get(&operator).await.unwrap();
    let containers = deployment.spec.unwrap().template.spec.unwrap().containers;
    assert_eq!(containers[0].name, "operator");
    // The example pipeline went through the CRD's schema: the API server filled in every default.
    let example = Api::<AnalyticsPipeline>::namespaced(cluster.client.clone(), &namespace).get("shop").await.unwrap();
    assert_eq!(example.spec.consumers.max_replicas, 10);
    assert_eq!(example.spec.command.replicas, 2);
    let installed = cluster.kubectl(
        &["get", "servicemonitors,podmonitors,prometheusrules", "--namespace", &namespace, "-o", "name"],
        None,
    );
    assert_eq!(
        installed.lines().collect::<Vec<_>>(),
        [
            format!("servicemonitor.monitoring.coreos.com/{operator}"),
            format!("podmonitor.monitoring.coreos.com/{release}-pipelines"),
            format!("prometheusrule.monitoring.coreos.com/{operator}"),
        ],
        "the monitoring objects are installed when the cluster serves monitoring.coreos.com/v1"
    );

    // Every manifest the chart renders, under the value sets a user is likely to choose, CRD included.
    let chart = repo().join("charts/analytics-pipeline");
    let watch_own = format!("operator.watchNamespace={namespace}");
    let value_sets: [&[&str]; 3] = [
        &[],
        &["--set", "examplePipeline.enabled=true", "--set", "networkPolicy.enabled=true"],
        &[
            "--set",
            &watch_own,
            "--set",
            "operator.leaderElection=false",
            "--set",
            "operator.replicas=1",
            "--set",
            "monitoring.grafanaDashboard.enabled=false",
        ],
    ];
    for values in value_sets {
        let mut args = vec!["template", release, chart.to_str().unwrap(), "--namespace", &namespace, "--include-crds"];
        args.extend_from_slice(&["--api-versions", "monitoring.coreos.com/v1"]);
        args.extend_from_slice(values);
        let rendered = cluster.helm(&args);
        let applied =
            cluster.kubectl(&["apply", "--dry-run=server", "--namespace", &namespace, "-f", "-"], Some(&rendered));
        for object in
            [format!("deployment.apps/{operator}"), format!("prometheusrule.monitoring.coreos.com/{operator}")]
        {
            assert!(applied.contains(&object), "{values:?}: {object} missing from {applied}");
        }
    }
    // The examples as written; the production one names its namespace.
    let analytics = r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "analytics"}}"#;
    cluster.kubectl(&["apply", "-f", "-"], Some(analytics));
    for example in std::fs::read_dir(repo().join("examples")).unwrap() {
        let path = example.unwrap().path();
        let applied = cluster.kubectl(&["apply", "--dry-run=server", "-f", path.to_str().unwrap()], None);
        assert!(applied.contains("analyticspipeline.analytics.example.com/"), "{}: {applied}", path.display());
    }
}

#[tokio::test]
async fn the_api_server_rejects_an_invalid_spec() {
    let cluster = Cluster::connect().await;
    // The CRD as `make crds` wrote it, whichever test runs first (the others install it with the chart).
    let crd = repo().join("crds/analyticspipeline.yaml");
    cluster.kubectl(&["apply", "--server-side", "--force-conflicts", "-f", crd.to_str().unwrap()], None);
    cluster.kubectl(
        &["wait", "--for=condition=Established", "--timeout=60s", "crd/analyticspipelines.analytics.example.com"],
        None,
    );
    let namespace = format!("invalid-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    cluster.kubectl(&["create", "namespace", &namespace], None);
    // Untyped, so that a test can send what the typed struct cannot hold.
    let resource = kube::api::ApiResource::erase::<AnalyticsPipeline>(&());
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(cluster.client.clone(), &namespace, &resource);
    let secret = json!({"name": "s", "key": "k"});
    let cases = [
        (json!({"consumers": {"minReplicas": 5, "maxReplicas": 2}}), "minReplicas must not exceed maxReplicas"),
        (json!({"consumers": {"maxReplicas": 0}}), "maxReplicas must be from 1 to 100"),
        (json!({"consumers": {"scaleDownStabilizationSeconds": 7200}}), "scaleDownStabilizationSeconds"),
        (
            json!({"postgres": {"managed": {}, "external": {"writeUrl": secret, "readUrl": secret}}}),
            "postgres is one of managed, cloudNativePG or external",
        ),
        (
            json!({"postgres": {"managed": {}, "cloudNativePG": {}}}),
            "postgres is one of managed, cloudNativePG or external",
        ),
        (
            json!({"postgres": {"cloudNativePG": {}, "external": {"writeUrl": secret, "readUrl": secret}}}),
            "postgres is one of managed, cloudNativePG or external",
        ),
        (json!({"postgres": {"cloudNativePG": {"instances": 1}}}), "synchronous.number must be less than instances"),
        (
            json!({"postgres": {"cloudNativePG": {"instances": 1, "synchronous": {"number": 0}}}}),
            "queryReadsFrom Standbys needs at least 2 instances",
        ),
        (json!({"postgres": {"cloudNativePG": {"instances": 12}}}), "instances must be from 1 to 9"),
        (
            json!({"postgres": {"cloudNativePG": {"standbyMaximumLag": "a lot"}}}),
            "standbyMaximumLag must be a quantity of bytes",
        ),
        (json!({"postgres": {"cloudNativePG": {"synchronous": {"dataDurability": "Sometimes"}}}}), "dataDurability"),
        (
            json!({"rabbitmq": {"managed": {}, "external": {"url": secret}}}),
            "rabbitmq is one of managed, clusterOperator or external",
        ),
        (
            json!({"rabbitmq": {"managed": {}, "clusterOperator": {}}}),
            "rabbitmq is one of managed, clusterOperator or external",
        ),
        (json!({"rabbitmq": {"clusterOperator": {"replicas": 2}}}), "replicas must be odd, from 1 to 9"),
        (json!({"rabbitmq": {"clusterOperator": {"replicas": 11}}}), "replicas must be odd, from 1 to 9"),
        (
            json!({"rabbitmq": {"clusterOperator": {"terminationGracePeriodSeconds": -1}}}),
            "terminationGracePeriodSeconds must not be negative",
        ),
        (json!({"deletionPolicy": "Sometimes"}), "deletionPolicy"),
        (json!({"postgres": {"managed": {"storage": {"size": "big"}}}}), "storage.size must be a quantity of bytes"),
        (json!({"podMetadata": {"labels": {"app.kubernetes.io/name": "x"}}}), "podMetadata.labels must not use"),
        (json!({"command": {"replicas": "two"}}), "command.replicas"),
    ];
    for (spec, expected) in cases {
        let object: Value = pipeline("bad", spec.clone());
        let error = api
            .create(&Default::default(), &serde_json::from_value(object.clone()).unwrap())
            .await
            .expect_err(&format!("{spec} must be rejected"));
        let kube::Error::Api(status) = error else { panic!("{spec}: not an API error: {error}") };
        assert_eq!(status.code, 422, "{spec}: {status:?}");
        assert!(status.message.contains(expected), "{spec}: expected {expected:?} in {:?}", status.message);
        // kubectl's server-side dry run gives the same verdict.
        let kubectl = analytics_testkit::tool("KUBECTL");
        let args = ["apply", "--dry-run=server", "--namespace", &namespace, "-f", "-"];
        let dry_run = analytics_testkit::try_run(
            &mut harness::command(&kubectl, &args, &cluster.kubeconfig),
            Some(&object.to_string()),
        );
        assert!(dry_run.is_err_and(|e| e.contains(expected)), "{spec}: kubectl accepted it");
    }
    assert!(api.list(&ListParams::default()).await.unwrap().items.is_empty(), "nothing was stored");

    // A single CloudNativePG instance is valid once it asks for no synchronous standby and reads the
    // primary; the API server fills in the mode's defaults.
    let single = json!({"postgres": {"cloudNativePG": {"instances": 1, "synchronous": {"number": 0}, "queryReadsFrom": "Primary"}}});
    let created =
        api.create(&Default::default(), &serde_json::from_value(pipeline("single", single)).unwrap()).await.unwrap();
    assert_eq!(
        created.data["spec"]["postgres"]["cloudNativePG"],
        json!({"instances": 1, "synchronous": {"number": 0, "dataDurability": "Required"}, "queryReadsFrom": "Primary",
               "storage": {"size": "10Gi"}, "podAntiAffinity": "Preferred", "standbyMaximumLag": "16Mi"})
    );

    // A pipeline that left its managed volumes at the default gives them a size: never a smaller one.
    api.create(&Default::default(), &serde_json::from_value(pipeline("implicit", json!({}))).unwrap()).await.unwrap();
    for (spec, expected) in [
        (
            json!({"postgres": {"managed": {"storage": {"size": "5Gi"}}}}),
            "the managed database's volume has the default 10Gi",
        ),
        (
            json!({"rabbitmq": {"managed": {"storage": {"size": "5Gi"}}}}),
            "the managed broker's volume has the default 10Gi",
        ),
    ] {
        let patch = kube::api::Patch::Merge(json!({"spec": spec}));
        let error = api.patch("implicit", &kube::api::PatchParams::default(), &patch).await.expect_err("a shrink");
        assert!(error.to_string().contains(expected), "{spec}: {error}");
    }
    let patch = kube::api::Patch::Merge(json!({"spec": {"rabbitmq": {"managed": {"storage": {"size": "20Gi"}}}}}));
    api.patch("implicit", &kube::api::PatchParams::default(), &patch).await.unwrap();

    // Volumes grow and never shrink, and stay in their class: each rule of a change, in every mode.
    let managed = json!({"postgres": {"managed": {"storage": {"size": "1Gi", "storageClassName": "fast"}}},
                         "rabbitmq": {"clusterOperator": {"storage": {"size": "1Gi"}}}});
    api.create(&Default::default(), &serde_json::from_value(pipeline("volumes", managed)).unwrap()).await.unwrap();
    let change = |patch: Value| {
        let api = api.clone();
        async move {
            api.patch("volumes", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(json!({"spec": patch})))
                .await
        }
    };
    for (patch, expected) in [
        (json!({"postgres": {"managed": {"storage": {"size": "512Mi"}}}}), "storage.size cannot shrink"),
        (json!({"rabbitmq": {"clusterOperator": {"storage": {"size": "1000M"}}}}), "storage.size cannot shrink"),
        (
            json!({"postgres": {"managed": {"storage": {"storageClassName": "slow"}}}}),
            "storage.storageClassName cannot change",
        ),
        (
            json!({"postgres": {"managed": {"storage": {"storageClassName": null}}}}),
            "storage.storageClassName cannot change",
        ),
        (
            json!({"rabbitmq": {"clusterOperator": {"storage": {"storageClassName": "fast"}}}}),
            "storage.storageClassName cannot change",
        ),
    ] {
        let error = change(patch.clone()).await.expect_err(&format!("{patch} must be rejected"));
        let kube::Error::Api(status) = error else { panic!("{patch}: not an API error: {error}") };
        assert!(status.message.contains(expected), "{patch}: expected {expected:?} in {:?}", status.message);
    }
    let grown = change(json!({"postgres": {"managed": {"storage": {"size": "1536Mi"}}}})).await.unwrap();
    assert_eq!(grown.data["spec"]["postgres"]["managed"]["storage"]["size"], json!("1536Mi"), "growing is accepted");
}

#[tokio::test]
async fn a_managed_pipeline_is_reconciled_edited_left_alone_and_deleted_keeping_its_claims() {
    let cluster = Cluster::connect().await;
    let tenant = cluster.tenant("managed").await;
    let namespace = tenant.namespace.as_str();
    let client = &cluster.client;
    let operator = Operator::start(&tenant, "solo", &[]);

    let spec = json!({"command": {"replicas": 1}, "query": {"replicas": 1}, "deletionPolicy": "Retain"});
    create_pipeline(client, namespace, pipeline("shop", spec)).await;
    let provisioning = pipeline_until(client, namespace, "shop", "a first status", |p| {
        p.status.as_ref().is_some_and(|s| s.observed_generation == Some(1))
    })
    .await;
    let status = provisioning.status.as_ref().unwrap();
    assert_eq!(status.phase, Some(Phase::Provisioning));
    assert_eq!(condition(&provisioning, "Ready").as_deref(), Some("False"));
    assert_eq!(status.consumer_replicas, Some(1));
    assert!(provisioning.finalizers().contains(&"analytics.example.com/cleanup".to_owned()));

    // Every child exists, owned by the pipeline, and already holds everything the operator would apply:
    // a server-side dry-run apply of the desired object changes nothing in its spec.
    let desired = children::desired(&provisioning, &ImageSet::default(), Observed { consumer_replicas: 1 });
    let names = |objects: &[ConfigMap]| objects.iter().map(ResourceExt::name_any).collect::<Vec<_>>();
    assert_eq!(names(&desired.config_maps), ["shop-postgres-init"]);
    for object in desired.config_maps {
        check_child(client, namespace, &provisioning, object, |c| serde_json::to_value(&c.data).unwrap()).await;
    }
    for object in desired.services {
        check_child(client, namespace, &provisioning, object, |s| serde_json::to_value(&s.spec).unwrap()).await;
    }
    assert_eq!(desired.stateful_sets.len(), 2);
    for object in desired.stateful_sets {
        check_child(client, namespace, &provisioning, object, |s| serde_json::to_value(&s.spec).unwrap()).await;
    }
    assert_eq!(desired.deployments.len(), 3);
    for object in desired.deployments {
        check_child(client, namespace, &provisioning, object, |d| serde_json::to_value(&d.spec).unwrap()).await;
    }
    // A budget for each service and each managed backend.
    assert_eq!(desired.disruption_budgets.len(), 5);
    for object in desired.disruption_budgets {
        check_child(client, namespace, &provisioning, object, |b| serde_json::to_value(&b.spec).unwrap()).await;
    }
    // The services', the Jobs' and the backends' NetworkPolicies, as the API server stores them (the operator runs
    // in the tenant's namespace here, so that is the namespace its queue-depth reads come from; every
    // namespace may scrape, its default).
    let policies = children::network::policies(&provisioning, namespace, &LabelSelector::default());
    assert_eq!(policies.len(), 6);
    for object in policies {
        check_child(client, namespace, &provisioning, object, |p| serde_json::to_value(&p.spec).unwrap()).await;
    }
    let credentials = Api::<Secret>::namespaced(client.clone(), namespace).get("shop-credentials").await.unwrap();
    assert!(credentials.owner_references().is_empty(), "the credentials outlive the pipeline under Retain");

    // The StatefulSet controller makes one claim per database and broker; under Retain nobody owns them.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let made = eventually(TIMEOUT, "two volume claims", || async {
        let list = claims.list(&ListParams::default()).await.ok()?;
        (list.items.len() == 2).then_some(list.items)
    })
    .await;
    let mut claim_names: Vec<String> = made.iter().map(ResourceExt::name_any).collect();
    claim_names.sort();
    assert_eq!(claim_names, ["data-shop-postgres-0", "data-shop-rabbitmq-0"]);
    assert!(made.iter().all(|c| c.owner_references().is_empty()), "Retain: the claims have no owner");

    // As pods turn ready, the children's controllers report it, and the conditions follow.
    let ready = eventually(TIMEOUT, "Ready once every pod is ready", || async {
        make_pods_ready(client, namespace).await;
        let api: Api<AnalyticsPipeline> = Api::namespaced(client.clone(), namespace);
        api.get("shop").await.ok().filter(|p| condition(p, "Ready").as_deref() == Some("True"))
    })
    .await;
    let status = ready.status.as_ref().unwrap();
    assert_eq!(status.phase, Some(Phase::Ready));
    for type_ in ["DatabasesReady", "BrokerReady", "ServicesReady"] {
        assert_eq!(condition(&ready, type_).as_deref(), Some("True"), "{type_}");
    }
    assert!(status.conditions.iter().all(|c| c.observed_generation == Some(1)));

    // An edit: the one Deployment it concerns is updated, and the status moves to the new generation.
    settle(&cluster, &tenant.username).await;
    let mark = cluster.audit_mark();
    let pipelines: Api<AnalyticsPipeline> = Api::namespaced(client.clone(), namespace);
    let override_image = json!({"repository": "registry.example.com/analytics-command", "tag": "edited"});
    let edit = json!({"spec": {"command": {"replicas": 2}, "images": {"command": override_image}}});
    pipelines.patch("shop", &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    eventually(TIMEOUT, "the command Deployment to follow the edit", || async {
        let spec = deployments.get("shop-command").await.ok()?.spec?;
        let image = spec.template.spec?.containers[0].image.clone()?;
        (spec.replicas == Some(2) && image == "registry.example.com/analytics-command:edited").then_some(())
    })
    .await;
    let edited = eventually(TIMEOUT, "Ready at generation 2", || async {
        make_pods_ready(client, namespace).await;
        pipelines.get("shop").await.ok().filter(|p| {
            p.status.as_ref().is_some_and(|s| s.observed_generation == Some(2) && s.phase == Some(Phase::Ready))
        })
    })
    .await;
    assert!(edited.status.unwrap().conditions.iter().all(|c| c.observed_generation == Some(2)));
    let touched: BTreeSet<(String, String)> = cluster
        .writes_since(mark, &tenant.username)
        .iter()
        .map(|w| (w["objectRef"]["resource"].as_str().unwrap().to_owned(), w["objectRef"]["name"].to_string()))
        .collect();
    let children_written: BTreeSet<_> =
        touched.iter().filter(|(resource, _)| resource != "analyticspipelines" && resource != "events").collect();
    assert_eq!(
        children_written.into_iter().cloned().collect::<Vec<_>>(),
        [("deployments".to_owned(), "\"shop-command\"".to_owned())],
        "only the edited child is written"
    );

    // Nothing changed: a reconcile (triggered by a metadata-only edit) writes nothing at all.
    settle(&cluster, &tenant.username).await;
    let mark = cluster.audit_mark();
    let before = operator.reconciles().await;
    let touch = json!({"metadata": {"annotations": {"example.com/touched": "yes"}}});
    pipelines.patch("shop", &PatchParams::default(), &Patch::Merge(&touch)).await.unwrap();
    eventually(TIMEOUT, "a reconcile after the touch", || async {
        (operator.reconciles().await > before).then_some(())
    })
    .await;
    let writes = cluster.writes_since(mark, &tenant.username);
    assert!(writes.is_empty(), "a reconcile with nothing to do wrote: {writes:#?}");

    // Deletion: the children go (owner references, real garbage collection); the claims and the
    // credentials stay under Retain.
    pipelines.delete("shop", &DeleteParams::default()).await.unwrap();
    eventually(TIMEOUT, "the pipeline to be gone", || async {
        pipelines.get_opt("shop").await.unwrap().is_none().then_some(())
    })
    .await;
    eventually(TIMEOUT, "every child to be gone", || async {
        let left = count::<Deployment>(client, namespace).await
            + count::<StatefulSet>(client, namespace).await
            + count::<Service>(client, namespace).await
            + count::<ConfigMap>(client, namespace).await;
        (left == 0).then_some(())
    })
    .await;
    let kept = claims.list(&ListParams::default()).await.unwrap();
    assert_eq!(kept.items.len(), 2, "Retain keeps the claims");
    assert!(kept.items.iter().all(|c| c.metadata.deletion_timestamp.is_none()));
    assert!(Api::<Secret>::namespaced(client.clone(), namespace).get_opt("shop-credentials").await.unwrap().is_some());
}

/// Children of a pipeline named "shop" in `namespace` (the pipeline's instance label).
async fn count<K>(client: &Client, namespace: &str) -> usize
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), namespace).list(&instance("shop")).await.unwrap().items.len()
}

/// Waits until the operator has written nothing for 3 s, so that what follows is measured from a quiet start.
async fn settle(cluster: &Cluster, username: &str) {
    eventually(TIMEOUT, "the operator to go quiet", || async {
        let mark = cluster.audit_mark();
        tokio::time::sleep(Duration::from_secs(3)).await;
        cluster.writes_since(mark, username).is_empty().then_some(())
    })
    .await;
}

/// The live child exists, is controlled by `owner`, and a dry-run server-side apply of `desired` (as
/// the operator's field manager) leaves the part `view` picks unchanged.
async fn check_child<K>(
    client: &Client,
    namespace: &str,
    owner: &AnalyticsPipeline,
    desired: K,
    view: impl Fn(&K) -> Value,
) where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = desired.name_any();
    let live = eventually(TIMEOUT, &format!("{name} to exist"), || async { api.get_opt(&name).await.unwrap() }).await;
    let owners = live.owner_references();
    assert_eq!(owners.len(), 1, "{name}: {owners:?}");
    assert_eq!(owners[0].uid, owner.uid().unwrap(), "{name}");
    assert_eq!((owners[0].controller, owners[0].block_owner_deletion), (Some(true), Some(true)), "{name}");
    assert_eq!(live.labels().get("app.kubernetes.io/managed-by").map(String::as_str), Some("analytics-operator"));
    let params = PatchParams::apply(FIELD_MANAGER).dry_run();
    let applied = api.patch(&name, &params, &Patch::Apply(&desired)).await.unwrap();
    assert_eq!(view(&applied), view(&live), "{name}: the live object differs from what the operator applies");
}

#[tokio::test]
async fn under_delete_the_claims_go_with_the_pipeline() {
    let cluster = Cluster::connect().await;
    let tenant = cluster.tenant("delete").await;
    let namespace = tenant.namespace.as_str();
    let client = &cluster.client;
    let _operator = Operator::start(&tenant, "solo", &[]);
    create_pipeline(client, namespace, pipeline("shop", json!({"deletionPolicy": "Delete"}))).await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    eventually(TIMEOUT, "two volume claims", || async {
        (claims.list(&ListParams::default()).await.ok()?.items.len() == 2).then_some(())
    })
    .await;
    let pipelines: Api<AnalyticsPipeline> = Api::namespaced(client.clone(), namespace);
    pipelines.delete("shop", &DeleteParams::default()).await.unwrap();
    eventually(TIMEOUT, "the claims and the credentials to be gone", || async {
        let claims_left = claims.list(&ListParams::default()).await.ok()?.items.len();
        let secret = Api::<Secret>::namespaced(client.clone(), namespace).get_opt("shop-credentials").await.ok()?;
        (claims_left == 0 && secret.is_none()).then_some(())
    })
    .await;
    assert!(pipelines.get_opt("shop").await.unwrap().is_none());
}

#[tokio::test]
async fn under_delete_only_the_data_the_operator_made_for_the_pipeline_is_deleted() {
    let cluster = Cluster::connect().await;
    let tenant = cluster.tenant("foreign").await;
    let namespace = tenant.namespace.as_str();
    let client = &cluster.client;
    let _operator = Operator::start(&tenant, "solo", &[]);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let pipelines: Api<AnalyticsPipeline> = Api::namespaced(client.clone(), namespace);

    // Someone else's: a Helm release's claim with the pipeline's instance label, and a `cart-credentials`
    // Secret that was there before the `cart` pipeline (which then uses it, as it never touches one).
    let foreign_claim = json!({
        "metadata": {"name": "helm-data", "labels": {children::INSTANCE_LABEL: "shop", "app.kubernetes.io/managed-by": "Helm"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    });
    claims.create(&Default::default(), &serde_json::from_value(foreign_claim).unwrap()).await.unwrap();
    let foreign_secret = json!({
        "metadata": {"name": "cart-credentials", "labels": {children::INSTANCE_LABEL: "cart"}},
        "stringData": {"postgres-password": "p", "rabbitmq-password": "r", "erlang-cookie": "c"},
    });
    secrets.create(&Default::default(), &serde_json::from_value(foreign_secret).unwrap()).await.unwrap();
    create_pipeline(client, namespace, pipeline("cart", json!({"deletionPolicy": "Delete"}))).await;

    // A Retain pipeline's claims and credentials outlive it...
    create_pipeline(client, namespace, pipeline("shop", json!({"deletionPolicy": "Retain"}))).await;
    let made_for = |name: &'static str| {
        let claims = claims.clone();
        async move {
            let selector =
                format!("app.kubernetes.io/managed-by=analytics-operator,{}={name}", children::INSTANCE_LABEL);
            claims.list(&ListParams::default().labels(&selector)).await.unwrap().items
        }
    };
    eventually(TIMEOUT, "two volume claims per pipeline", || async {
        (made_for("shop").await.len() == 2 && made_for("cart").await.len() == 2).then_some(())
    })
    .await;
    pipelines.delete("shop", &DeleteParams::default()).await.unwrap();
    eventually(TIMEOUT, "the Retain pipeline to be gone", || async {
        pipelines.get_opt("shop").await.unwrap().is_none().then_some(())
    })
    .await;
    assert_eq!(made_for("shop").await.len(), 2, "Retain keeps the claims");

    // ...and a Delete pipeline of the same name adopts them: they carry its UID, and go with it.
    let second = create_pipeline(client, namespace, pipeline("shop", json!({"deletionPolicy": "Delete"}))).await;
    let uid = second.uid().unwrap();
    eventually(TIMEOUT, "the retained claims and credentials to carry the new pipeline's UID", || async {
        let claims = made_for("shop").await;
        let adopted = claims.iter().filter(|c| c.labels().get(children::PIPELINE_UID_LABEL) == Some(&uid)).count();
        let secret = secrets.get_opt("shop-credentials").await.unwrap()?;
        (adopted == 2 && secret.labels().get(children::PIPELINE_UID_LABEL) == Some(&uid)).then_some(())
    })
    .await;
    for name in ["shop", "cart"] {
        pipelines.delete(name, &DeleteParams::default()).await.unwrap();
    }
    eventually(TIMEOUT, "both Delete pipelines and their own data to be gone", || async {
        let pipelines_left = pipelines.list(&ListParams::default()).await.unwrap().items.len();
        let claims_left = made_for("shop").await.len() + made_for("cart").await.len();
        let secret_left = secrets.get_opt("shop-credentials").await.unwrap().is_some();
        (pipelines_left == 0 && claims_left == 0 && !secret_left).then_some(())
    })
    .await;
    assert!(claims.get_opt("helm-data").await.unwrap().is_some(), "the foreign claim survives");
    assert!(secrets.get_opt("cart-credentials").await.unwrap().is_some(), "the foreign Secret survives");
}

#[tokio::test]
async fn every_pod_of_the_chart_and_of_a_pipeline_is_admitted_under_pod_security_restricted() {
    let cluster = Cluster::connect().await;
    let tenant = cluster.tenant("restricted").await;
    let namespace = tenant.namespace.as_str();
    let client = &cluster.client;
    // The API server's PodSecurity admission checks every pod the controllers create from now on.
    let enforce = json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}}});
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces.patch(namespace, &PatchParams::default(), &Patch::Merge(&enforce)).await.unwrap();
    // The chart's operator pods were created before the label: let its ReplicaSet create them again.
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    pods.delete_collection(&DeleteParams::default(), &ListParams::default()).await.unwrap();
    let _operator = Operator::start(&tenant, "solo", &[]);
    create_pipeline(client, namespace, pipeline("shop", json!({}))).await;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let stateful_sets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    eventually(TIMEOUT, "every workload to have created all its pods", || async {
        let deployments = deployments.list(&ListParams::default()).await.ok()?.items;
        let sets = stateful_sets.list(&ListParams::default()).await.ok()?.items;
        // Pods created (status.replicas), not ready: there is no kubelet here.
        let created = |wanted: Option<i32>, have: Option<i32>| wanted.unwrap_or(1) == have.unwrap_or(0);
        let all = deployments.len() == 4 // the chart's operator and the three services
            && sets.len() == 2
            && deployments.iter().all(|d| {
                created(d.spec.as_ref().and_then(|s| s.replicas), d.status.as_ref().and_then(|s| s.replicas))
            })
            && sets.iter().all(|s| {
                created(s.spec.as_ref().and_then(|s| s.replicas), s.status.as_ref().map(|s| s.replicas))
            });
        all.then_some(())
    })
    .await;
    let refused: Vec<String> = Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|event| event.reason.as_deref() == Some("FailedCreate"))
        .map(|event| event.message.unwrap_or_default())
        .collect();
    assert!(refused.is_empty(), "pods refused under restricted: {refused:#?}");
    let pods = pods.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(pods.len(), 2 + 2 + 1 + 2 + 2, "2 operator, 2 command, 1 consumer, 2 query, PostgreSQL and RabbitMQ");
}

#[tokio::test]
async fn with_only_the_namespaced_roles_the_operator_reconciles_a_pipeline_fully() {
    let cluster = Cluster::connect().await;
    let tenant = cluster.namespaced_tenant("namespaced").await;
    let namespace = tenant.namespace.as_str();
    let client = &cluster.client;
    // The operator's own identity can do nothing outside its namespace.
    let operator_client = harness::client_for(&tenant.kubeconfig).await;
    let elsewhere = Api::<Secret>::namespaced(operator_client.clone(), "default").list(&ListParams::default()).await;
    assert!(matches!(elsewhere, Err(kube::Error::Api(ref status)) if status.code == 403), "{elsewhere:?}");
    let everywhere = Api::<AnalyticsPipeline>::all(operator_client).list(&ListParams::default()).await;
    assert!(matches!(everywhere, Err(kube::Error::Api(ref status)) if status.code == 403), "{everywhere:?}");

    let _operator = Operator::start(&tenant, "solo", &[]);
    create_pipeline(client, namespace, pipeline("shop", json!({"deletionPolicy": "Delete"}))).await;
    eventually(TIMEOUT, "every child's pods to be ready", || async {
        make_pods_ready(client, namespace).await;
        let shop = Api::<AnalyticsPipeline>::namespaced(client.clone(), namespace).get("shop").await.ok()?;
        (shop.status?.phase == Some(Phase::Ready)).then_some(())
    })
    .await;
    let pipelines: Api<AnalyticsPipeline> = Api::namespaced(client.clone(), namespace);
    pipelines.delete("shop", &DeleteParams::default()).await.unwrap();
    eventually(TIMEOUT, "the pipeline, its claims and its credentials to be gone", || async {
        let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace);
        let left = claims.list(&ListParams::default()).await.ok()?.items.len();
        let secret = Api::<Secret>::namespaced(client.clone(), namespace).get_opt("shop-credentials").await.ok()?;
        (pipelines.get_opt("shop").await.ok()?.is_none() && left == 0 && secret.is_none()).then_some(())
    })
    .await;
}

/// The relay's side of sync-status, played by the test: a fresh watermark every 300 ms on both streams,
/// with the outbox backlog it should report.
async fn watermarks(pool: PgPool, mut backlog: tokio::sync::watch::Receiver<(i64, i64)>) {
    loop {
        let (pending, oldest_seconds) = *backlog.borrow_and_update();
        sqlx::query(
            "insert into sync_state (stream, watermark_as_of, watermark_applied_at, outbox_pending, outbox_oldest_pending_at)
             select stream, now(), now(), $1, case when $1 > 0 then now() - make_interval(secs => $2) end
             from unnest(array['orders', 'products']) as stream
             on conflict (stream) do update set watermark_as_of = excluded.watermark_as_of,
                 watermark_applied_at = excluded.watermark_applied_at, outbox_pending = excluded.outbox_pending,
                 outbox_oldest_pending_at = excluded.outbox_oldest_pending_at",
        )
        .bind(pending)
        .bind(oldest_seconds as f64)
        .execute(&pool)
        .await
        .unwrap();
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(300)) => {}
            changed = backlog.changed() => if changed.is_err() { return },
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_follow_a_real_queue_and_the_status_follows_a_real_query_service() {
    let cluster = Cluster::connect().await;
    let tenant = cluster.tenant("observe").await;
    let namespace = tenant.namespace.as_str();
    let client = &cluster.client;

    // The pipeline's backends, outside the cluster: a RabbitMQ node and a read database, and the real
    // query service over them.
    let broker = tokio::task::spawn_blocking(PrivateBroker::start).await.unwrap();
    analytics_testkit::declare(&broker.url(), &Topology::with_prefix("")).await;
    let read_url = analytics_testkit::fresh_database(&consumer_service::MIGRATOR).await;
    let (backlog, backlog_rx) = tokio::sync::watch::channel((0_i64, 0_i64));
    tokio::spawn(watermarks(PgPool::connect(&read_url).await.unwrap(), backlog_rx));
    let query = query_service::App::build(query_service::config::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        auth: analytics_testkit::auth_config(),
        database_url: read_url.clone().into(),
        database_max_connections: 2,
        amqp_url: broker.url().into(),
        topology_prefix: String::new(),
    })
    .await
    .unwrap();
    let query_port = query.port();
    let stop_query = tokio_util::sync::CancellationToken::new();
    tokio::spawn(query.run(stop_query.clone()));

    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "backends"},
        "stringData": {"amqp": broker.url(), "write": read_url, "read": read_url}});
    secrets.create(&Default::default(), &serde_json::from_value(secret).unwrap()).await.unwrap();
    // The query service takes the test's token; a tokens Secret that exists is used as it is, so the
    // operator asks sync-status with that token.
    let tokens = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "shop-api-tokens"},
        "stringData": {"read": analytics_testkit::API_TOKEN, "write": analytics_testkit::API_TOKEN}});
    secrets.create(&Default::default(), &serde_json::from_value(tokens).unwrap()).await.unwrap();
    let reference = |key: &str| json!({"name": "backends", "key": key});
    let spec = json!({
        "postgres": {"external": {"writeUrl": reference("write"), "readUrl": reference("read")}},
        "rabbitmq": {"external": {"url": reference("amqp")}},
        "consumers": {"minReplicas": 1, "maxReplicas": 4, "targetQueueDepthPerReplica": 10,
                      "scaleDownStabilizationSeconds": 30},
    });
    create_pipeline(client, namespace, pipeline("shop", spec)).await;
    // In a cluster the operator reaches shop-query.<namespace>.svc; here it is on loopback.
    let connect_to = format!("shop-query.{namespace}.svc:8081=127.0.0.1:{query_port}");
    let _operator = Operator::start(&tenant, "solo", &["--connect-to", &connect_to]);

    let in_sync = pipeline_until(client, namespace, "shop", "an observed, idle pipeline", |p| {
        p.status.as_ref().is_some_and(|s| s.queue_depth == Some(0) && s.lag_seconds == Some(0.0))
    })
    .await;
    let status = in_sync.status.unwrap();
    assert_eq!((status.consumer_replicas, status.pending_events), (Some(1), Some(0)));

    // 35 orders wait and the relay reports 7 more in the outbox, the oldest 40 s old.
    let connection = analytics_kit::amqp::connect(&broker.url().into(), "test publisher").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    for i in 0..35 {
        channel
            .basic_publish(
                "".into(),
                "order-events".into(),
                Default::default(),
                format!("{{\"order\": {i}}}").as_bytes(),
                Default::default(),
            )
            .await
            .unwrap();
    }
    backlog.send((7, 40)).unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let replicas = || async { deployments.get("shop-consumer").await.ok()?.spec?.replicas };
    eventually(TIMEOUT, "4 consumers for 35 waiting orders", || async { (replicas().await == Some(4)).then_some(()) })
        .await;
    // One pass's status: a pass that read the queue before the orders were published can read sync-status
    // after the backlog was reported, and its status is still the newest until the next pass writes its own.
    let behind = pipeline_until(client, namespace, "shop", "the queue depth, lag and backlog in one status", |p| {
        p.status.as_ref().is_some_and(|s| {
            s.queue_depth == Some(35) && s.pending_events == Some(42) && s.lag_seconds.is_some_and(|lag| lag >= 40.0)
        })
    })
    .await;
    let status = behind.status.unwrap();
    assert_eq!(status.consumer_replicas, Some(4));
    assert!(status.lag_seconds.unwrap() < 120.0, "{status:?}");

    // The backlog drains: the status catches up at once, the consumers stay for the 30 s window, then go.
    channel.queue_purge("order-events".into(), Default::default()).await.unwrap();
    connection.close(200, "done".into()).await.unwrap();
    backlog.send((0, 0)).unwrap();
    let drained = pipeline_until(client, namespace, "shop", "an empty queue in the status", |p| {
        p.status.as_ref().is_some_and(|s| s.queue_depth == Some(0))
    })
    .await;
    assert_eq!(drained.status.as_ref().unwrap().consumer_replicas, Some(4), "no scale-down inside the window");
    eventually(TIMEOUT * 2, "back to 1 consumer", || async { (replicas().await == Some(1)).then_some(()) }).await;
    // The status is written after the children, so it may trail the Deployment by a moment.
    pipeline_until(client, namespace, "shop", "in sync again, with 1 consumer", |p| {
        p.status.as_ref().is_some_and(|s| {
            s.lag_seconds == Some(0.0) && s.pending_events == Some(0) && s.consumer_replicas == Some(1)
        })
    })
    .await;
    stop_query.cancel();
}

#[tokio::test]
async fn two_replicas_elect_one_leader_and_the_other_takes_over() {
    let cluster = Cluster::connect().await;
    let tenant = cluster.tenant("election").await;
    let namespace = tenant.namespace.as_str();
    let client = &cluster.client;
    let lease_flags = ["--lease-duration", "6s"];
    let a = Operator::start(&tenant, "replica-a", &lease_flags);
    let b = Operator::start(&tenant, "replica-b", &lease_flags);
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let holder =
        || async { leases.get_opt("analytics-operator").await.ok()??.spec?.holder_identity.filter(|h| !h.is_empty()) };
    let first = eventually(TIMEOUT, "a leader", holder).await;
    let (mut leader, standby) = if first == a.identity { (a, b) } else { (b, a) };
    assert_eq!(first, leader.identity);

    create_pipeline(client, namespace, pipeline("shop", json!({}))).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    eventually(TIMEOUT, "the leader to create the children", || async {
        deployments.get_opt("shop-command").await.unwrap().map(|_| ())
    })
    .await;
    eventually(TIMEOUT, "the leader to finish a reconcile", || async { (leader.reconciles().await > 0).then_some(()) })
        .await;
    assert_eq!(standby.reconciles().await, 0, "the standby does not reconcile");
    assert_eq!(holder().await.as_deref(), Some(leader.identity.as_str()));

    // The leader stops the way a pod does: it releases the lease, and the standby takes over.
    assert!(leader.terminate(), "{} exits cleanly on SIGTERM", leader.identity);
    eventually(TIMEOUT, "the standby to take the lease", || async {
        (holder().await.as_deref() == Some(standby.identity.as_str())).then_some(())
    })
    .await;
    let pipelines: Api<AnalyticsPipeline> = Api::namespaced(client.clone(), namespace);
    let edit = json!({"spec": {"command": {"replicas": 3}}});
    pipelines.patch("shop", &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap();
    eventually(TIMEOUT, "the new leader to apply an edit", || async {
        (deployments.get("shop-command").await.ok()?.spec?.replicas == Some(3)).then_some(())
    })
    .await;
    // The count moves when a reconcile finishes, a moment after it applied the edit.
    eventually(TIMEOUT, "the new leader to finish a reconcile", || async {
        (standby.reconciles().await > 0).then_some(())
    })
    .await;

    // A leader that dies without a word (SIGKILL) loses the lease when it expires.
    let c = Operator::start(&tenant, "replica-c", &lease_flags);
    drop(standby);
    eventually(TIMEOUT, "replica-c to take the expired lease", || async {
        (holder().await.as_deref() == Some(c.identity.as_str())).then_some(())
    })
    .await;
    let edit = json!({"spec": {"command": {"replicas": 1}}});
    pipelines.patch("shop", &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap();
    eventually(TIMEOUT, "replica-c to apply an edit", || async {
        (deployments.get("shop-command").await.ok()?.spec?.replicas == Some(1)).then_some(())
    })
    .await;
}
