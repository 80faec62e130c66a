//! The read model's maintenance on a real control plane: the verify CronJob runs on the spec's
//! schedule (the real CronJob and Job controllers make its Job and pod), the pod ends as a kubelet would
//! report it, and the condition, the Event, the metric and the rebuild Job follow.

use analytics_operator::crd::{AnalyticsPipeline, RebuildPhase, VerifyOutcome};
use analytics_testkit::eventually;
use k8s_openapi::{
    api::{
        batch::v1::{CronJob, Job},
        core::v1::{Event, Pod},
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::json;

use crate::{
    harness::{Cluster, Operator, TIMEOUT, condition, create_pipeline, pipeline_until},
    pipeline,
};

/// A CronJob on `* * * * *` makes its first Job within a minute and ten seconds (its controller's period).
const FIRST_RUN: std::time::Duration = std::time::Duration::from_secs(150);

/// The pod of `job` (made by the Job controller), ended as a kubelet reports a container that exited
/// with `exit_code` after writing `message` to its termination log.
pub async fn end_pod(client: &Client, namespace: &str, job: &str, container: &str, exit_code: i32, message: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod = eventually(TIMEOUT, &format!("the pod of {job}"), || async {
        let list =
            pods.list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"))).await.ok()?;
        list.items.into_iter().next()
    })
    .await;
    let now = Timestamp::now().to_string();
    let status = json!({"status": {
        "phase": if exit_code == 0 { "Succeeded" } else { "Failed" },
        "startTime": now,
        "containerStatuses": [{
            "name": container, "image": "analytics-consumer", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {
                "exitCode": exit_code, "reason": if exit_code == 0 { "Completed" } else { "Error" },
                "message": message, "startedAt": now, "finishedAt": now,
            }},
        }],
    }});
    pods.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
}

async fn events(client: &Client, namespace: &str, reason: &str) -> Vec<Event> {
    let list = Api::<Event>::namespaced(client.clone(), namespace).list(&ListParams::default()).await.unwrap();
    list.items.into_iter().filter(|e| e.reason.as_deref() == Some(reason)).collect()
}

#[tokio::test]
async fn a_scheduled_verify_that_finds_drift_and_a_requested_rebuild_show_in_the_status() {
    let cluster = Cluster::connect().await;
    let tenant = cluster.tenant("readmodel").await;
    let namespace = tenant.namespace.as_str();
    let client = &cluster.client;
    let operator = Operator::start(&tenant, "solo", &[]);
    let spec = json!({"command": {"replicas": 1}, "query": {"replicas": 1},
                      "readModel": {"verifySchedule": "* * * * *"}});
    create_pipeline(client, namespace, pipeline("shop", spec)).await;
    let first = pipeline_until(client, namespace, "shop", "a first status", |p| p.status.is_some()).await;
    assert_eq!(condition(&first, "ReadModelConsistent").as_deref(), Some("Unknown"), "nothing verified yet");

    let cron_jobs: Api<CronJob> = Api::namespaced(client.clone(), namespace);
    let cron = cron_jobs.get("shop-verify").await.unwrap();
    assert_eq!(cron.owner_references()[0].name, "shop");
    let cron_spec = cron.spec.unwrap();
    assert_eq!((cron_spec.schedule.as_str(), cron_spec.concurrency_policy.as_deref()), ("* * * * *", Some("Forbid")));

    // The CronJob controller starts a verify; its pod finds drift.
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let verify = eventually(FIRST_RUN, "the CronJob's first Job", || async {
        let list = jobs.list(&ListParams::default().labels("app.kubernetes.io/component=verify")).await.ok()?;
        list.items.into_iter().next()
    })
    .await;
    let container = &verify.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
    assert_eq!(container.args.as_ref().unwrap()[..2], ["verify".to_owned(), "--output".to_owned()]);
    // Stop the schedule, so that no later run takes the verdict's place during the test.
    let suspend = json!({"spec": {"readModel": {"suspendVerify": true}}});
    let pipelines: Api<AnalyticsPipeline> = Api::namespaced(client.clone(), namespace);
    pipelines.patch("shop", &PatchParams::default(), &Patch::Merge(&suspend)).await.unwrap();
    let drift = "drift: 2 keys differ (customer_ltv_view 1, hourly_sales_view 1), 5400 keys compared, 1.2 s";
    end_pod(client, namespace, &verify.name_any(), "verify", 1, drift).await;

    let drifted = pipeline_until(client, namespace, "shop", "ReadModelConsistent False", |p| {
        condition(p, "ReadModelConsistent").as_deref() == Some("False")
    })
    .await;
    let found = drifted.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == "ReadModelConsistent").unwrap();
    assert_eq!((found.reason.as_str(), found.message.as_str()), ("Drift", drift));
    let last = drifted.status.as_ref().unwrap().read_model.as_ref().unwrap().last_verify.clone().unwrap();
    assert_eq!((last.job, last.outcome), (verify.name_any(), VerifyOutcome::Drift));
    let warned = eventually(TIMEOUT, "a ReadModelDrift Event", || async {
        let found = events(client, namespace, "ReadModelDrift").await;
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert_eq!(warned.len(), 1, "one Event per verify");
    assert_eq!((warned[0].type_.as_deref(), warned[0].message.as_deref()), (Some("Warning"), Some(drift)));
    assert_eq!(warned[0].involved_object.name.as_deref(), Some("shop"));
    let metrics = operator.metrics().await;
    assert!(
        metrics.contains(&format!("pipeline_read_model_consistent{{name=\"shop\",namespace=\"{namespace}\"}} 0")),
        "{metrics}"
    );
    assert_eq!(cron_jobs.get("shop-verify").await.unwrap().spec.unwrap().suspend, Some(true));

    // A rebuild request: one Job, owned by the pipeline; its progress and outcome in the status.
    let requested = "2026-12-04T10:00:00Z";
    let request = json!({"spec": {"readModel": {"rebuildRequestedAt": requested}}});
    pipelines.patch("shop", &PatchParams::default(), &Patch::Merge(&request)).await.unwrap();
    let started = pipeline_until(client, namespace, "shop", "a rebuild under way", |p| {
        let rebuild = p.status.as_ref().and_then(|s| s.read_model.as_ref()).and_then(|r| r.rebuild.as_ref());
        rebuild.is_some_and(|r| !r.phase.is_finished())
    })
    .await;
    let rebuild = started.status.unwrap().read_model.unwrap().rebuild.unwrap();
    assert_eq!(rebuild.requested_at.0.to_string(), requested);
    let job = jobs.get(&rebuild.job).await.unwrap();
    assert_eq!(job.owner_references()[0].name, "shop");
    assert_eq!(job.labels()["app.kubernetes.io/component"], "rebuild");
    let pod_spec = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod_spec.containers[0].args.as_ref().unwrap()[0], "rebuild");
    assert_eq!(events(client, namespace, "RebuildStarted").await.len(), 1);

    let outcome = "rebuilt: 5400 rows in 0.8 s (6750 rows/s), 12 orders caught up, consumers paused 41 ms";
    end_pod(client, namespace, &rebuild.job, "rebuild", 0, outcome).await;
    let rebuilt = pipeline_until(client, namespace, "shop", "the rebuild done", |p| {
        let rebuild = p.status.as_ref().and_then(|s| s.read_model.as_ref()).and_then(|r| r.rebuild.as_ref());
        rebuild.is_some_and(|r| r.phase == RebuildPhase::Succeeded)
    })
    .await;
    let rebuild = rebuilt.status.unwrap().read_model.unwrap().rebuild.unwrap();
    assert_eq!(rebuild.message, outcome);
    assert!(rebuild.start_time.is_some() && rebuild.completion_time.is_some(), "{rebuild:?}");
    let done = eventually(TIMEOUT, "a Rebuilt Event", || async {
        let found = events(client, namespace, "Rebuilt").await;
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert_eq!(done[0].message.as_deref(), Some(outcome));
    let rebuild_jobs = jobs.list(&ListParams::default().labels("app.kubernetes.io/component=rebuild")).await.unwrap();
    assert_eq!(rebuild_jobs.items.len(), 1, "one Job for one request");
}
