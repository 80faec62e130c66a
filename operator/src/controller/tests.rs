//! The reconciler against an in-memory API server ([`FakeApi`]): the exact writes of each pass, status
//! and conditions, scaling, errors, and deletion under both policies.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};

use super::{Context, Error, FINALIZER, SPEC_HASH, reconcile};
use crate::{
    children::fixtures,
    crd::{
        AnalyticsPipeline, AnalyticsPipelineSpec, ApiAuthentication, ApiSpec, ConsumerSpec, DeletionPolicy, ImageSet,
    },
    fake_api::FakeApi,
    metrics::Metrics,
    observe::{Observer, SyncStatus},
};

const PIPELINE: &str = "/apis/analytics.example.com/v1alpha1/namespaces/prod/analyticspipelines/shop";
const APPS: &str = "/apis/apps/v1/namespaces/prod";
const CORE: &str = "/api/v1/namespaces/prod";
const BATCH: &str = "/apis/batch/v1/namespaces/prod";
const EVENTS: &str = "POST /apis/events.k8s.io/v1/namespaces/prod/events";

/// Scripted answers for what the reconciler observes inside the pipeline.
#[derive(Default)]
struct Script {
    depth: Mutex<Option<i64>>,
    sync: Mutex<Option<SyncStatus>>,
}

impl Observer for Script {
    fn queue_depth<'a>(&'a self, _: &'a AnalyticsPipeline) -> BoxFuture<'a, Option<i64>> {
        Box::pin(async move { *self.depth.lock().unwrap() })
    }
    fn sync_status<'a>(&'a self, _: &'a AnalyticsPipeline) -> BoxFuture<'a, Option<SyncStatus>> {
        Box::pin(async move { self.sync.lock().unwrap().clone() })
    }
}

fn context(fake: &FakeApi, script: &Arc<Script>, images: ImageSet) -> Arc<Context> {
    let client = fake.client();
    let recorder = Recorder::new(client.clone(), Reporter { controller: "analytics-operator".into(), instance: None });
    let metrics = Metrics::register(&prometheus::Registry::new(), &Error::KINDS).unwrap();
    Arc::new(Context::new(
        client,
        recorder,
        metrics,
        script.clone(),
        images,
        "analytics-system".to_owned(),
        k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector::default(),
    ))
}

struct Harness {
    fake: FakeApi,
    script: Arc<Script>,
    ctx: Arc<Context>,
}

impl Harness {
    /// A stored pipeline (its finalizer already added) and a reconciler context around the fake.
    fn new(spec: AnalyticsPipelineSpec) -> Self {
        let fake = FakeApi::default();
        let mut pipeline = fixtures::pipeline(spec);
        pipeline.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
        fake.put(PIPELINE, serde_json::to_value(&pipeline).unwrap());
        let script = Arc::new(Script::default());
        let ctx = context(&fake, &script, ImageSet::default());
        Self { fake, script, ctx }
    }

    /// Another reconciler on the same fake, with other default images (an upgraded operator).
    fn upgraded(&self, images: ImageSet) -> Arc<Context> {
        context(&self.fake, &self.script, images)
    }

    fn pipeline(&self) -> AnalyticsPipeline {
        serde_json::from_value(self.fake.get(PIPELINE).unwrap()).unwrap()
    }

    /// One reconcile of the pipeline as stored; returns the writes it made, in order.
    async fn pass(&self) -> Vec<String> {
        self.fake.take_log();
        reconcile(Arc::new(self.pipeline()), self.ctx.clone()).await.unwrap();
        self.writes()
    }

    fn writes(&self) -> Vec<String> {
        self.fake.take_log().into_iter().filter(|request| !request.starts_with("GET ")).collect()
    }

    fn status(&self) -> Value {
        self.fake.get(PIPELINE).unwrap()["status"].clone()
    }

    fn condition(&self, type_: &str) -> Value {
        let status = self.status();
        status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == type_).cloned().unwrap()
    }

    /// What a kubelet and the controllers would report once every pod runs.
    fn mark_children_available(&self) {
        for set in ["shop-postgres", "shop-rabbitmq"] {
            self.fake.edit(&format!("{APPS}/statefulsets/{set}"), |s| {
                s["status"] = json!({"replicas": 1, "readyReplicas": 1})
            });
        }
        for deployment in ["shop-command", "shop-consumer", "shop-query"] {
            self.fake.edit(&format!("{APPS}/deployments/{deployment}"), |d| {
                let replicas = d["spec"]["replicas"].clone();
                d["status"] = json!({"observedGeneration": d["metadata"]["generation"], "replicas": replicas,
                                      "updatedReplicas": replicas, "availableReplicas": replicas});
            });
        }
    }

    fn set_spec(&self, change: impl FnOnce(&mut AnalyticsPipelineSpec)) {
        let mut pipeline = self.pipeline();
        change(&mut pipeline.spec);
        pipeline.metadata.generation = Some(pipeline.metadata.generation.unwrap_or(1) + 1);
        self.fake.put(PIPELINE, serde_json::to_value(&pipeline).unwrap());
    }
}

/// The value of `key` in a stored Secret.
fn decoded(secret: &Value, key: &str) -> String {
    let bytes: k8s_openapi::ByteString = serde_json::from_value(secret["data"][key].clone()).unwrap();
    String::from_utf8(bytes.0).unwrap()
}

fn every_child_applied() -> Vec<String> {
    [
        format!("POST {CORE}/secrets"),
        format!("POST {CORE}/secrets"),
        "PATCH /apis/networking.k8s.io/v1/namespaces/prod/networkpolicies/shop-command".to_owned(),
        "PATCH /apis/networking.k8s.io/v1/namespaces/prod/networkpolicies/shop-query".to_owned(),
        "PATCH /apis/networking.k8s.io/v1/namespaces/prod/networkpolicies/shop-consumer".to_owned(),
        "PATCH /apis/networking.k8s.io/v1/namespaces/prod/networkpolicies/shop-jobs".to_owned(),
        "PATCH /apis/networking.k8s.io/v1/namespaces/prod/networkpolicies/shop-postgres".to_owned(),
        "PATCH /apis/networking.k8s.io/v1/namespaces/prod/networkpolicies/shop-rabbitmq".to_owned(),
        format!("PATCH {CORE}/configmaps/shop-postgres-init"),
        format!("PATCH {CORE}/services/shop-postgres"),
        format!("PATCH {CORE}/services/shop-rabbitmq"),
        format!("PATCH {CORE}/services/shop-command"),
        format!("PATCH {CORE}/services/shop-query"),
        "PATCH /apis/policy/v1/namespaces/prod/poddisruptionbudgets/shop-postgres".to_owned(),
        "PATCH /apis/policy/v1/namespaces/prod/poddisruptionbudgets/shop-rabbitmq".to_owned(),
        "PATCH /apis/policy/v1/namespaces/prod/poddisruptionbudgets/shop-command".to_owned(),
        "PATCH /apis/policy/v1/namespaces/prod/poddisruptionbudgets/shop-consumer".to_owned(),
        "PATCH /apis/policy/v1/namespaces/prod/poddisruptionbudgets/shop-query".to_owned(),
        format!("PATCH {APPS}/statefulsets/shop-postgres"),
        format!("PATCH {APPS}/statefulsets/shop-rabbitmq"),
        format!("PATCH {APPS}/deployments/shop-command"),
        format!("PATCH {APPS}/deployments/shop-consumer"),
        format!("PATCH {APPS}/deployments/shop-query"),
        format!("PATCH {BATCH}/cronjobs/shop-verify"),
        format!("PATCH {PIPELINE}/status"),
    ]
    .into()
}

#[tokio::test]
async fn a_new_pipeline_gets_every_child_and_a_provisioning_status() {
    let h = Harness::new(AnalyticsPipelineSpec::default());
    assert_eq!(h.pass().await, every_child_applied());

    let command = h.fake.get(&format!("{APPS}/deployments/shop-command")).unwrap();
    assert_eq!(command["metadata"]["ownerReferences"][0]["name"], "shop");
    assert!(command["metadata"]["annotations"][SPEC_HASH].is_string());
    let secret = h.fake.get(&format!("{CORE}/secrets/shop-credentials")).unwrap();
    assert_eq!(decoded(&secret, "postgres-password").len(), 32);
    let tokens = h.fake.get(&format!("{CORE}/secrets/shop-api-tokens")).unwrap();
    let (write, read) = (decoded(&tokens, "write"), decoded(&tokens, "read"));
    assert_eq!((write.trim().len(), read.trim().len()), (32, 32));
    assert_ne!(write, read, "reads and writes take different tokens");
    assert_eq!(tokens["metadata"]["ownerReferences"][0]["name"], "shop", "the tokens go with the pipeline");

    let status = h.status();
    assert_eq!(status["phase"], "Provisioning");
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["consumerReplicas"], 1);
    assert_eq!(status["endpoints"]["query"], "http://shop-query.prod.svc:8081");
    assert_eq!(h.condition("Ready")["status"], "False");
    assert_eq!(h.condition("DatabasesReady")["reason"], "NotReady");
    assert_eq!(h.condition("ServicesReady")["observedGeneration"], 1);
}

#[tokio::test]
async fn a_pass_with_nothing_to_change_makes_no_write() {
    let h = Harness::new(AnalyticsPipelineSpec::default());
    h.pass().await;
    assert_eq!(h.pass().await, Vec::<String>::new());
    let secret = h.fake.get(&format!("{CORE}/secrets/shop-credentials")).unwrap();
    h.pass().await;
    assert_eq!(
        h.fake.get(&format!("{CORE}/secrets/shop-credentials")).unwrap(),
        secret,
        "credentials are never regenerated"
    );
}

/// Credentials made by an older operator get the keys a newer one needs (each service's passwords), and
/// keep every value they have; credentials the operator did not make are left as they are.
#[tokio::test]
async fn credentials_get_only_the_keys_they_lack_and_only_if_the_operator_made_them() {
    let encoded = |text: &str| serde_json::to_value(k8s_openapi::ByteString(text.as_bytes().to_vec())).unwrap();
    let older = |labels: Value| {
        json!({"metadata": {"name": "shop-credentials", "namespace": "prod", "labels": labels},
               "data": {"postgres-password": encoded("old-pg"), "rabbitmq-password": encoded("old-mq"),
                        "erlang-cookie": encoded("old-cookie")}})
    };
    let ours = json!({"app.kubernetes.io/managed-by": "analytics-operator", "app.kubernetes.io/instance": "shop",
                      "analytics.example.com/pipeline-uid": "0f8fad5b-d9cb-469f-a165-70867728950e"});
    let h = Harness::new(AnalyticsPipelineSpec::default());
    h.fake.put(&format!("{CORE}/secrets/shop-credentials"), older(ours));
    let writes = h.pass().await;
    assert!(writes.contains(&format!("PATCH {CORE}/secrets/shop-credentials")), "{writes:?}");
    let secret = h.fake.get(&format!("{CORE}/secrets/shop-credentials")).unwrap();
    assert_eq!(decoded(&secret, "postgres-password"), "old-pg");
    assert_eq!(decoded(&secret, "erlang-cookie"), "old-cookie");
    for key in crate::children::credential_keys() {
        assert!(!decoded(&secret, &key).is_empty(), "{key}");
    }
    assert_eq!(decoded(&secret, "query-db-password").len(), 32);
    assert!(!h.pass().await.iter().any(|write| write.contains("/secrets/")), "complete credentials stay as they are");

    let theirs = Harness::new(AnalyticsPipelineSpec::default());
    let foreign = older(json!({"team": "payments"}));
    theirs.fake.put(&format!("{CORE}/secrets/shop-credentials"), foreign.clone());
    theirs.pass().await;
    assert_eq!(theirs.fake.get(&format!("{CORE}/secrets/shop-credentials")).unwrap(), foreign);
}

#[tokio::test]
async fn an_existing_api_tokens_secret_is_used_as_it_is_and_without_authentication_none_is_made() {
    let h = Harness::new(AnalyticsPipelineSpec::default());
    let theirs = json!({"metadata": {"name": "shop-api-tokens", "namespace": "prod"},
                        "data": {"write": "dGhlaXJz", "read": "dGhlaXJz"}});
    h.fake.put(&format!("{CORE}/secrets/shop-api-tokens"), theirs.clone());
    let writes = h.pass().await;
    assert_eq!(writes.iter().filter(|w| w.starts_with(&format!("POST {CORE}/secrets"))).count(), 1, "{writes:?}");
    assert_eq!(h.fake.get(&format!("{CORE}/secrets/shop-api-tokens")).unwrap(), theirs);

    let open = Harness::new(AnalyticsPipelineSpec {
        api_authentication: ApiAuthentication::None,
        ..AnalyticsPipelineSpec::default()
    });
    open.pass().await;
    assert!(open.fake.get(&format!("{CORE}/secrets/shop-api-tokens")).is_none());
}

#[tokio::test]
async fn children_becoming_available_make_the_pipeline_ready() {
    let h = Harness::new(AnalyticsPipelineSpec::default());
    h.pass().await;
    h.mark_children_available();
    assert_eq!(h.pass().await, [format!("PATCH {PIPELINE}/status")]);
    assert_eq!(h.status()["phase"], "Ready");
    for type_ in ["DatabasesReady", "BrokerReady", "ServicesReady", "Ready"] {
        assert_eq!(h.condition(type_)["status"], "True", "{type_}");
    }
    assert!(h.condition("Ready")["lastTransitionTime"].is_string());

    // A child going away (e.g. a Deployment losing its pods) turns it Degraded.
    h.fake.edit(&format!("{APPS}/deployments/shop-query"), |d| d["status"]["availableReplicas"] = json!(0));
    h.pass().await;
    assert_eq!(h.status()["phase"], "Degraded");
    assert_eq!(h.condition("ServicesReady")["reason"], "NotAvailable");
}

#[tokio::test]
async fn a_spec_change_updates_only_the_children_it_touches() {
    let h = Harness::new(AnalyticsPipelineSpec::default());
    h.pass().await;
    h.set_spec(|spec| spec.command = ApiSpec { replicas: 5, ..ApiSpec::default() });
    assert_eq!(h.pass().await, [format!("PATCH {APPS}/deployments/shop-command"), format!("PATCH {PIPELINE}/status")]);
    assert_eq!(h.fake.get(&format!("{APPS}/deployments/shop-command")).unwrap()["spec"]["replicas"], 5);
    assert_eq!(h.status()["observedGeneration"], 2);
    assert_eq!(h.condition("Ready")["observedGeneration"], 2, "Ready speaks of the generation it saw");
}

#[tokio::test]
async fn consumers_scale_up_at_once_and_down_after_the_window_with_events() {
    let h = Harness::new(AnalyticsPipelineSpec {
        consumers: ConsumerSpec { scale_down_stabilization_seconds: 0, ..ConsumerSpec::default() },
        ..AnalyticsPipelineSpec::default()
    });
    *h.script.depth.lock().unwrap() = Some(0);
    h.pass().await;

    *h.script.depth.lock().unwrap() = Some(4_500);
    let writes = h.pass().await;
    assert_eq!(
        writes,
        [
            "POST /apis/events.k8s.io/v1/namespaces/prod/events".to_owned(),
            format!("PATCH {APPS}/deployments/shop-consumer"),
            format!("PATCH {PIPELINE}/status"),
        ]
    );
    assert_eq!(h.fake.get(&format!("{APPS}/deployments/shop-consumer")).unwrap()["spec"]["replicas"], 5);
    assert_eq!((h.status()["consumerReplicas"].clone(), h.status()["queueDepth"].clone()), (json!(5), json!(4_500)));

    *h.script.depth.lock().unwrap() = Some(10);
    h.pass().await;
    assert_eq!(h.fake.get(&format!("{APPS}/deployments/shop-consumer")).unwrap()["spec"]["replicas"], 1);
}

#[tokio::test]
async fn lag_and_pending_events_come_from_sync_status() {
    let h = Harness::new(AnalyticsPipelineSpec::default());
    *h.script.sync.lock().unwrap() = Some(super::status::catching_up());
    h.pass().await;
    let status = h.status();
    assert_eq!((status["lagSeconds"].clone(), status["pendingEvents"].clone()), (json!(2.5), json!(40)));
    assert!(status["lastSyncTime"].as_str().unwrap().starts_with("2026-11-24T06:00:00"));
}

#[tokio::test]
async fn an_invalid_spec_is_reported_in_status_and_an_event_and_changes_nothing() {
    let h = Harness::new(AnalyticsPipelineSpec {
        consumers: ConsumerSpec { min_replicas: 8, max_replicas: 2, ..ConsumerSpec::default() },
        ..AnalyticsPipelineSpec::default()
    });
    assert_eq!(
        h.pass().await,
        ["POST /apis/events.k8s.io/v1/namespaces/prod/events".to_owned(), format!("PATCH {PIPELINE}/status")]
    );
    assert_eq!(h.status()["phase"], "Failed");
    assert_eq!(h.condition("Ready")["reason"], "InvalidSpec");
    assert!(h.condition("Ready")["message"].as_str().unwrap().contains("minReplicas"));
    assert_eq!(h.pass().await, Vec::<String>::new(), "reported once, not in a loop");
}

#[tokio::test]
async fn a_failing_api_call_shows_up_as_a_condition_and_a_warning_event() {
    let h = Harness::new(AnalyticsPipelineSpec::default());
    h.fake.fail("PATCH", &format!("{APPS}/statefulsets"));
    let pipeline = Arc::new(h.pipeline());
    let error = reconcile(pipeline, h.ctx.clone()).await.unwrap_err();
    assert_eq!(error.kind(), "finalizer");
    let writes = h.writes();
    assert!(writes.contains(&"POST /apis/events.k8s.io/v1/namespaces/prod/events".to_owned()), "{writes:?}");
    assert_eq!(h.condition("Ready")["reason"], "ReconcileFailed");
    assert_eq!(h.status()["phase"], "Degraded");
}

#[tokio::test]
async fn deletion_keeps_the_claims_under_retain_and_removes_them_under_delete() {
    for policy in [DeletionPolicy::Retain, DeletionPolicy::Delete] {
        let h = Harness::new(AnalyticsPipelineSpec { deletion_policy: policy, ..AnalyticsPipelineSpec::default() });
        h.pass().await;
        let claim = format!("{CORE}/persistentvolumeclaims/data-shop-postgres-0");
        h.fake.put(
            &claim,
            json!({"metadata": {"name": "data-shop-postgres-0", "labels": {"app.kubernetes.io/instance": "shop"}}}),
        );
        h.fake.edit(PIPELINE, |p| p["metadata"]["deletionTimestamp"] = json!("2026-11-24T07:00:00Z"));

        let writes = h.pass().await;
        let finalizers = h.fake.get(PIPELINE).unwrap()["metadata"]["finalizers"].clone();
        assert_eq!(finalizers, json!([]), "{policy:?}: the finalizer is released");
        match policy {
            DeletionPolicy::Retain => {
                assert_eq!(writes, [format!("PATCH {PIPELINE}")]);
                assert!(
                    h.fake.get(&claim).is_some() && h.fake.get(&format!("{CORE}/secrets/shop-credentials")).is_some()
                );
            }
            DeletionPolicy::Delete => {
                assert_eq!(
                    writes,
                    [
                        format!("DELETE {CORE}/persistentvolumeclaims"),
                        format!("DELETE {CORE}/secrets/shop-credentials"),
                        "POST /apis/events.k8s.io/v1/namespaces/prod/events".to_owned(),
                        format!("PATCH {PIPELINE}"),
                    ]
                );
                assert!(
                    h.fake.get(&claim).is_none() && h.fake.get(&format!("{CORE}/secrets/shop-credentials")).is_none()
                );
            }
        }
    }
}

/// A Job of the read model as the Job controller leaves it, and its pod's container as the kubelet
/// reports it after exiting with `exit_code` and `message` in its termination log.
fn finished_job(h: &Harness, name: &str, component: &str, succeeded: bool, exit_code: i32, message: &str) {
    let condition = if succeeded { "Complete" } else { "Failed" };
    h.fake.put(
        &format!("{BATCH}/jobs/{name}"),
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": "prod",
                         "labels": {"app.kubernetes.io/instance": "shop", "app.kubernetes.io/component": component}},
            "status": {"startTime": "2026-12-04T10:00:00Z",
                       "conditions": [{"type": condition, "status": "True", "lastTransitionTime": "2026-12-04T10:01:00Z"}]},
        }),
    );
    h.fake.put(
        &format!("{CORE}/pods/{name}-x7k2p"),
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{name}-x7k2p"), "namespace": "prod", "labels": {"batch.kubernetes.io/job-name": name}},
            "status": {"containerStatuses": [{
                "name": component, "image": "consumer", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": exit_code, "message": message, "finishedAt": "2026-12-04T10:01:00Z"}},
            }]},
        }),
    );
}

#[tokio::test]
async fn a_verify_that_finds_drift_sets_the_condition_false_once_with_a_warning() {
    let h = Harness::new(AnalyticsPipelineSpec::default());
    h.pass().await;
    assert_eq!(h.condition("ReadModelConsistent")["status"], "Unknown");
    let cron = h.fake.get(&format!("{BATCH}/cronjobs/shop-verify")).unwrap();
    assert_eq!(cron["spec"]["schedule"], "@hourly");

    finished_job(&h, "shop-verify-29417160", "verify", true, 0, "consistent: 6 views, 40 keys");
    assert_eq!(h.pass().await, [format!("PATCH {PIPELINE}/status")], "consistent is no news");
    let condition = h.condition("ReadModelConsistent");
    assert_eq!((condition["status"].clone(), condition["reason"].clone()), (json!("True"), json!("Consistent")));

    finished_job(&h, "shop-verify-29417220", "verify", false, 1, "drift: 2 keys differ (customer_ltv_view 2)");
    h.fake.edit(&format!("{BATCH}/jobs/shop-verify-29417220"), |job| {
        job["status"]["conditions"][0]["lastTransitionTime"] = json!("2026-12-04T11:01:00Z");
    });
    assert_eq!(h.pass().await, [EVENTS.to_owned(), format!("PATCH {PIPELINE}/status")]);
    let condition = h.condition("ReadModelConsistent");
    assert_eq!(
        (condition["status"].clone(), condition["reason"].clone(), condition["message"].clone()),
        (json!("False"), json!("Drift"), json!("drift: 2 keys differ (customer_ltv_view 2)"))
    );
    assert_eq!(h.status()["readModel"]["lastVerify"]["job"], "shop-verify-29417220");
    assert_eq!(h.pass().await, Vec::<String>::new(), "the same verify is reported once");
}

#[tokio::test]
async fn a_rebuild_request_starts_one_job_and_its_outcome_shows_in_the_status() {
    let h = Harness::new(AnalyticsPipelineSpec::default());
    h.pass().await;
    h.set_spec(|spec| spec.read_model.rebuild_requested_at = Some(Time("2026-12-04T10:00:00Z".parse().unwrap())));
    let writes = h.pass().await;
    let job_name =
        crate::children::maintenance::rebuild_job_name(&h.pipeline(), &Time("2026-12-04T10:00:00Z".parse().unwrap()));
    assert_eq!(writes, [format!("POST {BATCH}/jobs"), EVENTS.to_owned(), format!("PATCH {PIPELINE}/status")]);
    let rebuild = &h.status()["readModel"]["rebuild"];
    assert_eq!((rebuild["job"].as_str(), rebuild["phase"].as_str()), (Some(job_name.as_str()), Some("Pending")));
    assert_eq!(h.pass().await, Vec::<String>::new(), "one Job per request");

    finished_job(&h, &job_name, "rebuild", true, 0, "rebuilt: 1200 rows in 0.4 s (3000 rows/s)");
    assert_eq!(h.pass().await, [EVENTS.to_owned(), format!("PATCH {PIPELINE}/status")]);
    let rebuild = &h.status()["readModel"]["rebuild"];
    assert_eq!(
        (rebuild["phase"].clone(), rebuild["message"].clone(), rebuild["completionTime"].clone()),
        (json!("Succeeded"), json!("rebuilt: 1200 rows in 0.4 s (3000 rows/s)"), json!("2026-12-04T10:01:00Z"))
    );
    // Done is done: the Job's TTL may remove it, and the request does not run again.
    h.fake.remove(&format!("{BATCH}/jobs/{job_name}"));
    assert_eq!(h.pass().await, Vec::<String>::new());
}

#[tokio::test]
async fn a_request_with_a_fraction_of_a_second_runs_once_and_a_new_one_waits_for_the_running_rebuild() {
    use crate::children::maintenance::rebuild_job_name;
    // A Job, its RebuildStarted Event (new, or the recorder's next in a series), and the status.
    let assert_started = |writes: Vec<String>| {
        assert_eq!(writes.len(), 3, "{writes:?}");
        assert_eq!(writes[0], format!("POST {BATCH}/jobs"));
        assert!(writes[1].contains("/events"), "{writes:?}");
        assert_eq!(writes[2], format!("PATCH {PIPELINE}/status"));
    };
    let h = Harness::new(AnalyticsPipelineSpec::default());
    h.pass().await;
    // The status keeps times to the second; the request is matched by its Job, not by its time.
    // (written as a client would: a Time serializes to the second, so set_spec cannot say it).
    let first = Time("2026-12-04T10:00:00.123Z".parse().unwrap());
    let mut stored = h.fake.get(PIPELINE).unwrap();
    stored["spec"]["readModel"] = json!({"rebuildRequestedAt": "2026-12-04T10:00:00.123Z"});
    stored["metadata"]["generation"] = json!(2);
    h.fake.put(PIPELINE, stored);
    assert_started(h.pass().await);
    let first_job = rebuild_job_name(&h.pipeline(), &first);
    finished_job(&h, &first_job, "rebuild", true, 0, "rebuilt: 10 rows in 0.1 s (100 rows/s)");
    assert_eq!(h.pass().await, [EVENTS.to_owned(), format!("PATCH {PIPELINE}/status")]);
    assert_eq!(h.pass().await, Vec::<String>::new(), "one Rebuilt Event, not one a reconcile");
    h.fake.remove(&format!("{BATCH}/jobs/{first_job}"));
    assert_eq!(h.pass().await, Vec::<String>::new(), "the request does not run again when its Job is gone");

    let second = Time("2026-12-04T11:00:00Z".parse().unwrap());
    h.set_spec(|spec| spec.read_model.rebuild_requested_at = Some(second.clone()));
    assert_started(h.pass().await);
    let second_job = rebuild_job_name(&h.pipeline(), &second);
    // A third request while the second's Job runs: no Job yet, the request is Pending and says why.
    let third = Time("2026-12-04T12:00:00Z".parse().unwrap());
    h.set_spec(|spec| spec.read_model.rebuild_requested_at = Some(third.clone()));
    assert_eq!(h.pass().await, [format!("PATCH {PIPELINE}/status")]);
    let rebuild = &h.status()["readModel"]["rebuild"];
    assert_eq!(rebuild["phase"], json!("Pending"));
    assert_eq!(rebuild["message"], json!(format!("waiting for the running rebuild (Job {second_job}) to end")));
    assert_eq!(h.pass().await, Vec::<String>::new(), "still waiting");
    finished_job(&h, &second_job, "rebuild", true, 0, "rebuilt: 10 rows in 0.1 s (100 rows/s)");
    assert_started(h.pass().await);
    let rebuild = &h.status()["readModel"]["rebuild"];
    let third_job = rebuild_job_name(&h.pipeline(), &third);
    assert_eq!((rebuild["job"].as_str(), rebuild["phase"].as_str()), (Some(third_job.as_str()), Some("Pending")));
}

/// Paused, a pass changes nothing (a deleted child stays deleted, a spec change waits) and reports the
/// pause and what it sees; resumed, both happen.
#[tokio::test]
async fn a_paused_pipeline_is_left_alone_until_it_is_resumed() {
    let h = Harness::new(AnalyticsPipelineSpec::default());
    h.pass().await;
    let pause = |value: Option<&str>| {
        h.fake.edit(PIPELINE, |pipeline| {
            pipeline["metadata"]["annotations"] = match value {
                Some(value) => json!({super::PAUSED_ANNOTATION: value}),
                None => json!({}),
            };
        });
    };
    pause(Some("true"));
    h.fake.remove(&format!("{APPS}/deployments/shop-query"));
    h.set_spec(|spec| spec.command.replicas = 5);
    let writes = h.pass().await;
    assert_eq!(writes, [format!("PATCH {PIPELINE}/status")], "only the status is written while paused");
    assert_eq!(h.condition("Paused")["status"], "True");
    assert_eq!(h.condition("Paused")["reason"], "ReconciliationPaused");
    assert_eq!(h.condition("ServicesReady")["status"], "False");
    assert_eq!(h.condition("ServicesReady")["message"], "shop-query do not exist");
    assert!(h.fake.get(&format!("{APPS}/deployments/shop-query")).is_none(), "not recreated while paused");
    let command = h.fake.get(&format!("{APPS}/deployments/shop-command")).unwrap();
    assert_eq!(command["spec"]["replicas"], 2, "the spec change waits");
    assert_eq!(h.pass().await, Vec::<String>::new(), "a paused pass with nothing new writes nothing");

    pause(None);
    let writes = h.pass().await;
    assert!(writes.contains(&format!("PATCH {APPS}/deployments/shop-query")), "{writes:?}");
    assert!(writes.contains(&format!("PATCH {APPS}/deployments/shop-command")), "{writes:?}");
    assert_eq!(h.fake.get(&format!("{APPS}/deployments/shop-command")).unwrap()["spec"]["replicas"], 5);
    let conditions = h.status()["conditions"].as_array().unwrap().clone();
    assert!(conditions.iter().all(|c| c["type"] != "Paused"), "{conditions:?}");
}

/// Hibernated, every workload is scaled to 0, no broker or query service is asked, and the status says
/// Hibernated once no pod of the pipeline runs; resumed, the pipeline provisions again.
#[tokio::test]
async fn a_hibernated_pipeline_scales_to_nothing_and_says_so() {
    let h = Harness::new(AnalyticsPipelineSpec::default());
    h.pass().await;
    h.mark_children_available();
    *h.script.depth.lock().unwrap() = Some(4_000);
    h.set_spec(|spec| spec.hibernate = true);
    let pod = |name: &str, phase: &str| {
        json!({"metadata": {"name": name, "labels": {
            "app.kubernetes.io/instance": "shop", "app.kubernetes.io/managed-by": "analytics-operator"}},
            "status": {"phase": phase}})
    };
    h.fake.put(&format!("{CORE}/pods/shop-command-1"), pod("shop-command-1", "Running"));
    h.fake.put(&format!("{CORE}/pods/shop-verify-1"), pod("shop-verify-1", "Succeeded"));
    h.pass().await;
    for name in ["shop-command", "shop-consumer", "shop-query"] {
        assert_eq!(h.fake.get(&format!("{APPS}/deployments/{name}")).unwrap()["spec"]["replicas"], 0, "{name}");
    }
    for name in ["shop-postgres", "shop-rabbitmq"] {
        assert_eq!(h.fake.get(&format!("{APPS}/statefulsets/{name}")).unwrap()["spec"]["replicas"], 0, "{name}");
    }
    assert_eq!(h.status()["phase"], "Hibernated");
    assert_eq!(h.status()["consumerReplicas"], 0, "the queue depth is not what decides while asleep");
    assert_eq!(h.condition("Ready")["reason"], "Hibernated");
    assert_eq!(h.condition("Hibernated")["status"], "False");
    assert_eq!(h.condition("Hibernated")["message"], "1 pods are still stopping");
    h.fake.remove(&format!("{CORE}/pods/shop-command-1"));
    h.pass().await;
    assert_eq!(h.condition("Hibernated")["status"], "True");

    h.set_spec(|spec| spec.hibernate = false);
    h.pass().await;
    assert_eq!(h.fake.get(&format!("{APPS}/deployments/shop-command")).unwrap()["spec"]["replicas"], 2);
    assert_eq!(h.status()["phase"], "Provisioning");
    let conditions = h.status()["conditions"].as_array().unwrap().clone();
    assert!(conditions.iter().all(|c| c["type"] != "Hibernated"), "{conditions:?}");
}

/// A larger storage.size expands the managed backends' existing claims and leaves the StatefulSets'
/// claim templates as they are; a class that cannot expand is a condition and a Warning, and the pass
/// goes on.
#[tokio::test]
async fn a_larger_storage_size_expands_the_claims_or_says_why_it_cannot() {
    let h = Harness::new(AnalyticsPipelineSpec::default());
    h.pass().await;
    let claim = |name: &str| {
        json!({"metadata": {"name": name},
               "spec": {"resources": {"requests": {"storage": "10Gi"}}},
               "status": {"capacity": {"storage": "10Gi"}}})
    };
    for name in ["data-shop-postgres-0", "data-shop-rabbitmq-0"] {
        h.fake.put(&format!("{CORE}/persistentvolumeclaims/{name}"), claim(name));
    }
    h.pass().await;
    assert_eq!(h.condition("StorageResized")["status"], "True");

    h.set_spec(|spec| {
        spec.postgres.managed = Some(crate::crd::Managed {
            storage: crate::crd::Storage { size: "20Gi".into(), storage_class_name: None },
            resources: None,
        });
    });
    let writes = h.pass().await;
    assert!(writes.contains(&format!("PATCH {CORE}/persistentvolumeclaims/data-shop-postgres-0")), "{writes:?}");
    assert!(!writes.iter().any(|w| w.contains("data-shop-rabbitmq-0")), "{writes:?}");
    let postgres = h.fake.get(&format!("{CORE}/persistentvolumeclaims/data-shop-postgres-0")).unwrap();
    assert_eq!(postgres["spec"]["resources"]["requests"]["storage"], "20Gi");
    let set = h.fake.get(&format!("{APPS}/statefulsets/shop-postgres")).unwrap();
    assert_eq!(
        set["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"], "10Gi",
        "the claim template never changes"
    );
    assert_eq!(h.condition("StorageResized")["reason"], "Resizing");
    h.fake.edit(&format!("{CORE}/persistentvolumeclaims/data-shop-postgres-0"), |claim| {
        claim["status"]["capacity"]["storage"] = json!("20Gi");
    });
    h.pass().await;
    assert_eq!(h.condition("StorageResized")["status"], "True");

    // A class without allowVolumeExpansion: the API server refuses, the pass goes on.
    h.fake.refuse("PATCH", &format!("{CORE}/persistentvolumeclaims/"), 403, "Forbidden");
    h.set_spec(|spec| {
        spec.rabbitmq.managed = Some(crate::crd::Managed {
            storage: crate::crd::Storage { size: "15Gi".into(), storage_class_name: None },
            resources: None,
        });
        spec.query.replicas = 3;
    });
    let writes = h.pass().await;
    assert!(writes.contains(&format!("PATCH {APPS}/deployments/shop-query")), "the rest is applied: {writes:?}");
    assert!(writes.contains(&EVENTS.to_owned()), "{writes:?}");
    let resized = h.condition("StorageResized");
    assert_eq!((resized["status"].as_str(), resized["reason"].as_str()), (Some("False"), Some("ExpansionRefused")));
    assert!(resized["message"].as_str().unwrap().starts_with("data-shop-rabbitmq-0 cannot grow to 15Gi"), "{resized}");
    assert_eq!(h.condition("Ready")["status"], "False", "not yet available, and the storage does not change that");
}

/// New default images (an upgraded chart's) reach one pipeline at a time: the first to pass takes the
/// rollout, the next keeps the images it runs until the first one's Deployments have rolled out; a
/// pipeline that names its own images is not held.
#[tokio::test]
async fn new_default_images_roll_out_one_pipeline_at_a_time() {
    let h = Harness::new(AnalyticsPipelineSpec::default());
    let cart_path = PIPELINE.replace("/shop", "/cart");
    let mut cart = fixtures::pipeline(AnalyticsPipelineSpec::default());
    cart.metadata.name = Some("cart".into());
    cart.metadata.uid = Some("5b6f7a42-8c1e-4c1b-9d3e-2f0a7d1c9b11".into());
    cart.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
    h.fake.put(&cart_path, serde_json::to_value(&cart).unwrap());
    let cart =
        || -> Arc<AnalyticsPipeline> { Arc::new(serde_json::from_value(h.fake.get(&cart_path).unwrap()).unwrap()) };
    let shop = || Arc::new(h.pipeline());
    reconcile(shop(), h.ctx.clone()).await.unwrap();
    reconcile(cart(), h.ctx.clone()).await.unwrap();
    let rolled_out = |pipeline: &str| {
        for component in ["command", "consumer", "query"] {
            h.fake.edit(&format!("{APPS}/deployments/{pipeline}-{component}"), |d| {
                let replicas = d["spec"]["replicas"].clone();
                d["status"] = json!({"observedGeneration": d["metadata"]["generation"], "replicas": replicas,
                                      "updatedReplicas": replicas, "availableReplicas": replicas});
            });
        }
    };
    rolled_out("shop");
    rolled_out("cart");
    let image = |deployment: &str| {
        h.fake.get(&format!("{APPS}/deployments/{deployment}")).unwrap()["spec"]["template"]["spec"]["containers"][0]
            ["image"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let old = image("shop-command");

    let new =
        ImageSet { command: "registry.example.com/analytics-command:9.9.9".parse().unwrap(), ..ImageSet::default() };
    let upgraded = h.upgraded(new);
    reconcile(shop(), upgraded.clone()).await.unwrap();
    assert_eq!(image("shop-command"), "registry.example.com/analytics-command:9.9.9", "the first pipeline rolls");
    h.fake.take_log();
    reconcile(cart(), upgraded.clone()).await.unwrap();
    assert_eq!(image("cart-command"), old, "the second waits");
    assert!(h.fake.take_log().iter().any(|request| request.starts_with(EVENTS)), "an UpgradeQueued Event");
    reconcile(shop(), upgraded.clone()).await.unwrap();
    reconcile(cart(), upgraded.clone()).await.unwrap();
    assert_eq!(image("cart-command"), old, "still waiting: the first has not rolled out");

    rolled_out("shop");
    reconcile(shop(), upgraded.clone()).await.unwrap();
    reconcile(cart(), upgraded.clone()).await.unwrap();
    assert_eq!(image("cart-command"), "registry.example.com/analytics-command:9.9.9", "then the second rolls");

    // A pipeline that pins its own image is never held, even while another holds the rollout.
    let newer =
        ImageSet { command: "registry.example.com/analytics-command:10.0.0".parse().unwrap(), ..ImageSet::default() };
    let upgraded = h.upgraded(newer);
    reconcile(shop(), upgraded.clone()).await.unwrap();
    assert_eq!(image("shop-command"), "registry.example.com/analytics-command:10.0.0");
    h.fake.edit(&cart_path, |pipeline| {
        pipeline["spec"]["images"] = json!({"command": {"repository": "registry.example.com/pinned", "tag": "1.0"}});
    });
    reconcile(cart(), upgraded).await.unwrap();
    assert_eq!(image("cart-command"), "registry.example.com/pinned:1.0");
}

/// The RabbitMQ cluster operator deletes its StatefulSet before it patches the claims, so it is given a
/// larger size only once a dry run shows the API server allows it; refused, it keeps the claims' size, the
/// condition says why, and the refusal is announced once and not asked again on every pass.
#[tokio::test]
async fn another_operator_is_given_a_larger_size_only_if_the_claims_can_grow() {
    use crate::crd::{RabbitmqClusterOperator, RabbitmqSpec, Storage};
    let cluster = |size: &str| RabbitmqSpec {
        cluster_operator: Some(RabbitmqClusterOperator {
            storage: Storage { size: size.into(), storage_class_name: None },
            ..RabbitmqClusterOperator::default()
        }),
        ..RabbitmqSpec::default()
    };
    let h = Harness::new(AnalyticsPipelineSpec { rabbitmq: cluster("10Gi"), ..AnalyticsPipelineSpec::default() });
    for ordinal in 0..3 {
        let name = format!("persistence-shop-rabbitmq-server-{ordinal}");
        h.fake.put(
            &format!("{CORE}/persistentvolumeclaims/{name}"),
            json!({"metadata": {"name": name}, "spec": {"resources": {"requests": {"storage": "10Gi"}}},
                   "status": {"capacity": {"storage": "10Gi"}}}),
        );
    }
    h.pass().await;
    let rabbitmq_cluster = "/apis/rabbitmq.com/v1beta1/namespaces/prod/rabbitmqclusters/shop-rabbitmq";
    let persistence = || h.fake.get(rabbitmq_cluster).unwrap()["spec"]["persistence"]["storage"].clone();
    assert_eq!(persistence(), "10Gi");

    h.fake.refuse("PATCH", &format!("{CORE}/persistentvolumeclaims/"), 403, "Forbidden");
    h.set_spec(|spec| spec.rabbitmq = cluster("20Gi"));
    let writes = h.pass().await;
    assert_eq!(persistence(), "10Gi", "the cluster operator keeps the size the claims have");
    let resized = h.condition("StorageResized");
    assert_eq!(resized["reason"], "ExpansionRefused");
    assert!(resized["message"].as_str().unwrap().contains("persistence-shop-rabbitmq-server-0 cannot grow to 20Gi"));
    // One dry run decides for the cluster: its other claims are in the same class.
    assert_eq!(writes.iter().filter(|w| w.contains("persistentvolumeclaims")).count(), 1, "{writes:?}");
    assert_eq!(writes.iter().filter(|w| w.starts_with(EVENTS)).count(), 1, "one Warning: {writes:?}");
    h.fake.take_log();
    h.pass().await;
    let requests = h.fake.take_log();
    assert!(!requests.iter().any(|r| r.starts_with("PATCH") && r.contains("persistentvolumeclaims")), "{requests:?}");
    assert!(!requests.iter().any(|r| r.starts_with(EVENTS)), "announced once: {requests:?}");
}
