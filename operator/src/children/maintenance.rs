//! The read model's maintenance: `consumer-service verify` on the spec's schedule, as a CronJob, and
//! `consumer-service rebuild` for each `rebuildRequestedAt`, as a Job.
//!
//! Both are Jobs rather than work inside the consumers: they need the write database, which the
//! consumers' role cannot read, and a rebuild creates and swaps tables, which only the administrator
//! may; a Job runs once however many consumers there are, and Kubernetes keeps its outcome (exit status
//! and termination message) where the operator and `kubectl` can read it. The container writes its
//! one-line outcome to `/dev/termination-log`; its exit status says which it is (verify: 0 consistent,
//! 1 drift, 2 failed).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        batch::v1::{CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec},
        core::v1::{Container, PodSpec},
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};
use sha2::{Digest, Sha256};

use super::{
    Footprint, ReadOnlyRoot, container_security,
    databases::Access,
    labels, metadata, name, pod_security, pod_template,
    services::{Database, Identity, NONROOT_UID, ca_bundle, environment},
};
use crate::crd::{AnalyticsPipeline, Image};

pub const VERIFY: &str = "verify";
pub const REBUILD: &str = "rebuild";
/// Where a container's termination message is read from (the Kubernetes default).
const TERMINATION_LOG: &str = "/dev/termination-log";
/// A finished rebuild Job is deleted after this long; the status keeps its outcome.
const REBUILD_TTL_SECONDS: i32 = 7 * 24 * 3600;
/// A rebuild is idempotent (it drops its shadow tables first and takes a lock), so a failed pod is retried.
const REBUILD_RETRIES: i32 = 2;
/// A scheduled verify that could not start within this long is skipped; the next one runs.
const VERIFY_STARTING_DEADLINE_SECONDS: i64 = 600;

/// The periodic verify.
pub fn verify_cron_job(pipeline: &AnalyticsPipeline, image: &Image) -> CronJob {
    let spec = &pipeline.spec.read_model;
    CronJob {
        metadata: metadata(pipeline, VERIFY, VERIFY),
        spec: Some(CronJobSpec {
            schedule: spec.verify_schedule.clone(),
            // Nothing to compare while the databases sleep.
            suspend: Some(spec.suspend_verify || pipeline.spec.hibernate),
            // One comparison at a time; a run that takes longer than the interval skips the next.
            concurrency_policy: Some("Forbid".to_owned()),
            starting_deadline_seconds: Some(VERIFY_STARTING_DEADLINE_SECONDS),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels(pipeline, VERIFY)), ..ObjectMeta::default() }),
                // Drift is an answer, not a failure to retry; the next schedule runs again anyway.
                spec: Some(job_spec(pipeline, image, VERIFY, 0)),
            },
            ..CronJobSpec::default()
        }),
        ..CronJob::default()
    }
}

/// The name of the Job that rebuilds for `requested_at`: the same for the same request, so that creating it
/// twice is harmless.
pub fn rebuild_job_name(pipeline: &AnalyticsPipeline, requested_at: &Time) -> String {
    let digest = Sha256::digest(requested_at.0.to_string().as_bytes());
    let suffix: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    name(pipeline, &format!("{REBUILD}-{suffix}"))
}

/// The rebuild asked for at `requested_at`.
pub fn rebuild_job(pipeline: &AnalyticsPipeline, image: &Image, requested_at: &Time) -> Job {
    let mut metadata = metadata(pipeline, REBUILD, REBUILD);
    metadata.name = Some(rebuild_job_name(pipeline, requested_at));
    metadata.annotations =
        Some([(REQUESTED_AT_ANNOTATION.to_owned(), requested_at.0.to_string())].into_iter().collect());
    let mut spec = job_spec(pipeline, image, REBUILD, REBUILD_RETRIES);
    spec.ttl_seconds_after_finished = Some(REBUILD_TTL_SECONDS);
    Job { metadata, spec: Some(spec), ..Job::default() }
}

/// The `rebuildRequestedAt` a rebuild Job was made for.
pub const REQUESTED_AT_ANNOTATION: &str = "analytics.example.com/rebuild-requested-at";

/// A Job of one pod that runs `consumer-service <command>` as the databases' administrator.
fn job_spec(pipeline: &AnalyticsPipeline, image: &Image, command: &str, retries: i32) -> JobSpec {
    let ca = ca_bundle(pipeline);
    let container = Container {
        name: command.to_owned(),
        image: Some(image.reference()),
        image_pull_policy: Some(image.pull_policy.as_str().to_owned()),
        args: Some(vec![
            command.to_owned(),
            "--output".into(),
            "json".into(),
            "--outcome-file".into(),
            TERMINATION_LOG.into(),
        ]),
        env: Some(environment(pipeline, &[Database::Read, Database::Write], Identity::Administrator, Access::Write)),
        volume_mounts: ca.as_ref().map(|(_, mount)| vec![mount.clone()]),
        resources: Some(Footprint::Service.or(pipeline.spec.consumers.resources.as_ref())),
        security_context: Some(container_security(ReadOnlyRoot::Yes)),
        ..Container::default()
    };
    JobSpec {
        backoff_limit: Some(retries),
        template: pod_template(
            pipeline,
            command,
            BTreeMap::new(),
            PodSpec {
                containers: vec![container],
                restart_policy: Some("Never".to_owned()),
                volumes: ca.map(|(volume, _)| vec![volume]),
                security_context: Some(pod_security(NONROOT_UID)),
                ..PodSpec::default()
            },
        ),
        ..JobSpec::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        children::fixtures::pipeline,
        crd::{AnalyticsPipelineSpec, ReadModelSpec},
    };

    fn image() -> Image {
        "registry.local/analytics-consumer:1.2.3".parse().unwrap()
    }

    #[test]
    fn verify_runs_on_the_spec_schedule_one_at_a_time_as_the_administrator_with_both_databases() {
        let spec = AnalyticsPipelineSpec {
            read_model: ReadModelSpec {
                verify_schedule: "*/5 * * * *".into(),
                suspend_verify: true,
                ..Default::default()
            },
            ..AnalyticsPipelineSpec::default()
        };
        let cron = verify_cron_job(&pipeline(spec), &image());
        let cron = serde_json::to_value(&cron).unwrap();
        assert_eq!(cron["metadata"]["name"], "shop-verify");
        assert_eq!(cron["metadata"]["ownerReferences"][0]["kind"], "AnalyticsPipeline");
        let spec = &cron["spec"];
        assert_eq!(
            (&spec["schedule"], &spec["suspend"], &spec["concurrencyPolicy"]),
            (&json!("*/5 * * * *"), &json!(true), &json!("Forbid"))
        );
        let job = &spec["jobTemplate"]["spec"];
        assert_eq!(job["backoffLimit"], 0);
        assert_eq!(job["template"]["metadata"]["labels"]["app.kubernetes.io/component"], "verify");
        let pod = &job["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never");
        let container = &pod["containers"][0];
        assert_eq!(container["image"], "registry.local/analytics-consumer:1.2.3");
        assert_eq!(container["args"], json!(["verify", "--output", "json", "--outcome-file", "/dev/termination-log"]));
        let env: Vec<_> = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap(), e.get("value").cloned()))
            .collect();
        assert_eq!(
            env,
            [
                ("RUST_LOG", Some(json!("info"))),
                ("POSTGRES_PASSWORD", None),
                (
                    "READ_DATABASE_URL",
                    Some(json!("postgres://analytics:$(POSTGRES_PASSWORD)@shop-postgres:5432/analytics_read"))
                ),
                (
                    "WRITE_DATABASE_URL",
                    Some(json!("postgres://analytics:$(POSTGRES_PASSWORD)@shop-postgres:5432/analytics_write"))
                ),
            ]
        );
        assert_eq!(container["env"][1]["valueFrom"]["secretKeyRef"]["key"], "postgres-password");
    }

    #[test]
    fn a_rebuild_job_is_named_by_its_request_and_retried() {
        let shop = pipeline(AnalyticsPipelineSpec::default());
        let at = |s: &str| Time(s.parse().unwrap());
        let first = rebuild_job(&shop, &image(), &at("2026-12-04T10:00:00Z"));
        let again = rebuild_job(&shop, &image(), &at("2026-12-04T10:00:00Z"));
        let other = rebuild_job(&shop, &image(), &at("2026-12-04T10:00:01Z"));
        assert_eq!(first.metadata.name, again.metadata.name);
        assert_ne!(first.metadata.name, other.metadata.name);
        let name = first.metadata.name.clone().unwrap();
        assert!(name.starts_with("shop-rebuild-") && name.len() == "shop-rebuild-".len() + 8, "{name}");
        let job = serde_json::to_value(&first).unwrap();
        assert_eq!(job["metadata"]["annotations"][REQUESTED_AT_ANNOTATION], "2026-12-04T10:00:00Z");
        assert_eq!(job["metadata"]["labels"]["app.kubernetes.io/component"], "rebuild");
        assert_eq!(
            (&job["spec"]["backoffLimit"], &job["spec"]["ttlSecondsAfterFinished"]),
            (&json!(2), &json!(604_800))
        );
        assert_eq!(job["spec"]["template"]["spec"]["containers"][0]["args"][0], "rebuild");
    }
}
