//! What the read model's Jobs did: the newest verify Job that finished, and the rebuild of the spec's
//! `rebuildRequestedAt` (started here when it has no Job yet). Outcomes come from the Jobs' conditions
//! and their pods' exit status and termination message (see [`crate::children::maintenance`]).

use k8s_openapi::{
    api::{
        batch::v1::{Job, JobCondition},
        core::v1::{ContainerStateTerminated, Pod},
    },
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, PostParams},
    runtime::events::EventType,
};

use super::{Context, Error, publish};
use crate::{
    children::{self, COMPONENT_LABEL, INSTANCE_LABEL, maintenance},
    crd::{AnalyticsPipeline, ReadModelStatus, RebuildPhase, RebuildStatus, VerifyOutcome, VerifyRun},
};

/// Exit status of `consumer-service verify` on drift.
const DRIFT_EXIT_CODE: i32 = 1;
/// The label the Job controller puts on a Job's pods.
const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

/// The read model's status after this pass: the newest finished verify, and the rebuild asked for,
/// started if it has no Job yet. Publishes an Event when a verify finds drift or fails, and when a
/// rebuild starts and ends.
pub async fn observe(
    pipeline: &AnalyticsPipeline,
    ctx: &Context,
    namespace: &str,
) -> Result<Option<ReadModelStatus>, Error> {
    let previous = pipeline.status.as_ref().and_then(|s| s.read_model.clone()).unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let last_verify = last_verify(pipeline, &jobs, &pods, previous.last_verify.as_ref()).await?;
    if let Some(run) = &last_verify
        && previous.last_verify.as_ref().map(|p| &p.job) != Some(&run.job)
    {
        match run.outcome {
            VerifyOutcome::Drift => publish(ctx, pipeline, EventType::Warning, "ReadModelDrift", &run.message).await,
            VerifyOutcome::Failed => publish(ctx, pipeline, EventType::Warning, "VerifyFailed", &run.message).await,
            VerifyOutcome::Consistent => {}
        }
    }
    let rebuild = rebuild(pipeline, ctx, &jobs, &pods, previous.rebuild.as_ref()).await?;
    let status = ReadModelStatus { last_verify, rebuild };
    Ok((status != ReadModelStatus::default()).then_some(status))
}

/// When a Job finished, and whether it succeeded; `None` while it runs.
fn finished(job: &Job) -> Option<(bool, Option<Time>)> {
    let status = job.status.as_ref()?;
    let holds = |type_: &str| -> Option<&JobCondition> {
        status.conditions.iter().flatten().find(|c| c.type_ == type_ && c.status == "True")
    };
    if let Some(complete) = holds("Complete") {
        return Some((true, status.completion_time.clone().or_else(|| complete.last_transition_time.clone())));
    }
    holds("Failed").map(|failed| (false, failed.last_transition_time.clone()))
}

/// The pipeline's Jobs of one maintenance component (verify or rebuild).
async fn jobs_of(jobs: &Api<Job>, pipeline: &AnalyticsPipeline, component: &str) -> Result<Vec<Job>, Error> {
    let selector = format!("{INSTANCE_LABEL}={},{COMPONENT_LABEL}={component}", pipeline.name_any());
    Ok(jobs.list(&ListParams::default().labels(&selector)).await?.items)
}

/// The terminated state of the Job's container, from its newest pod that has one.
async fn terminated(pods: &Api<Pod>, job: &str, container: &str) -> Result<Option<ContainerStateTerminated>, Error> {
    let list = pods.list(&ListParams::default().labels(&format!("{JOB_NAME_LABEL}={job}"))).await?;
    let mut states: Vec<ContainerStateTerminated> = list
        .items
        .into_iter()
        .filter_map(|pod| {
            let statuses = pod.status?.container_statuses?;
            statuses.into_iter().find(|s| s.name == container)?.state?.terminated
        })
        .collect();
    states.sort_by_key(|state| state.finished_at.as_ref().map(|t| t.0));
    Ok(states.pop())
}

/// The one-line outcome a container left, or `fallback`.
fn message(state: Option<&ContainerStateTerminated>, fallback: &str) -> String {
    state
        .and_then(|s| s.message.as_deref())
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map_or_else(|| fallback.to_owned(), str::to_owned)
}

/// The newest verify Job that finished; `previous` again while it is still the newest.
async fn last_verify(
    pipeline: &AnalyticsPipeline,
    jobs: &Api<Job>,
    pods: &Api<Pod>,
    previous: Option<&VerifyRun>,
) -> Result<Option<VerifyRun>, Error> {
    let newest = jobs_of(jobs, pipeline, maintenance::VERIFY)
        .await?
        .into_iter()
        .filter_map(|job| finished(&job).map(|(succeeded, at)| (job.name_any(), succeeded, at)))
        .max_by_key(|(_, _, at)| at.as_ref().map(|t| t.0));
    let Some((job, succeeded, finished_at)) = newest else { return Ok(previous.cloned()) };
    if let Some(previous) = previous.filter(|p| p.job == job) {
        return Ok(Some(previous.clone()));
    }
    let state = terminated(pods, &job, maintenance::VERIFY).await?;
    let outcome = match (succeeded, state.as_ref().map(|s| s.exit_code)) {
        (true, _) => VerifyOutcome::Consistent,
        (false, Some(DRIFT_EXIT_CODE)) => VerifyOutcome::Drift,
        (false, _) => VerifyOutcome::Failed,
    };
    let fallback = match outcome {
        VerifyOutcome::Consistent => "consistent",
        VerifyOutcome::Drift => "drift",
        VerifyOutcome::Failed => "the verify Job failed; see its pod's log",
    };
    Ok(Some(VerifyRun { job, finished_at, outcome, message: message(state.as_ref(), fallback) }))
}

/// The rebuild of the spec's `rebuildRequestedAt`: its Job created if it has none, and followed.
async fn rebuild(
    pipeline: &AnalyticsPipeline,
    ctx: &Context,
    jobs: &Api<Job>,
    pods: &Api<Pod>,
    previous: Option<&RebuildStatus>,
) -> Result<Option<RebuildStatus>, Error> {
    let Some(requested_at) = pipeline.spec.read_model.rebuild_requested_at.clone() else {
        return Ok(previous.cloned());
    };
    let name = maintenance::rebuild_job_name(pipeline, &requested_at);
    // By the Job's name, which is made from the spec's value: the status keeps `requestedAt` to the second,
    // so a value with a fraction of a second would never equal it.
    let previous = previous.filter(|p| p.job == name);
    // Done once: a finished rebuild's Job may be gone (its TTL), and it is never run again.
    if let Some(done) = previous.filter(|p| p.phase.is_finished()) {
        return Ok(Some(done.clone()));
    }
    let job = match jobs.get_opt(&name).await? {
        Some(job) => job,
        None => {
            let waiting = |message: String| RebuildStatus {
                requested_at: requested_at.clone(),
                job: name.clone(),
                phase: RebuildPhase::Pending,
                start_time: None,
                completion_time: None,
                message,
            };
            // One rebuild at a time: a second would only fail on the rebuild's lock. The new request
            // waits, Pending, until the running one ends.
            let running = jobs_of(jobs, pipeline, maintenance::REBUILD).await?;
            if let Some(other) = running.iter().find(|job| finished(job).is_none()) {
                return Ok(Some(waiting(format!("waiting for the running rebuild (Job {}) to end", other.name_any()))));
            }
            // Paused, or with the databases asleep, the request waits.
            if super::is_paused(pipeline) || pipeline.spec.hibernate {
                return Ok(Some(waiting("waiting: the pipeline is paused or hibernated".to_owned())));
            }
            let pipeline = &children::with_defaults(pipeline, &ctx.images);
            let image = ctx.images.with_overrides(&pipeline.spec.images).consumer;
            let job = maintenance::rebuild_job(pipeline, &image, &requested_at);
            let created = match jobs.create(&PostParams::default(), &job).await {
                Ok(created) => created,
                Err(kube::Error::Api(status)) if status.is_already_exists() => jobs.get(&name).await?,
                Err(error) => return Err(error.into()),
            };
            let note = format!("rebuilding the read model online (Job {name})");
            publish(ctx, pipeline, EventType::Normal, "RebuildStarted", &note).await;
            created
        }
    };
    let status = job.status.clone().unwrap_or_default();
    let mut rebuild = RebuildStatus {
        requested_at,
        job: name.clone(),
        phase: if status.start_time.is_some() || status.active.unwrap_or(0) > 0 {
            RebuildPhase::Running
        } else {
            RebuildPhase::Pending
        },
        start_time: status.start_time.clone(),
        completion_time: None,
        message: String::new(),
    };
    if let Some((succeeded, at)) = finished(&job) {
        let state = terminated(pods, &name, maintenance::REBUILD).await?;
        rebuild.completion_time = at;
        if succeeded {
            rebuild.phase = RebuildPhase::Succeeded;
            rebuild.message = message(state.as_ref(), "rebuilt");
            publish(ctx, pipeline, EventType::Normal, "Rebuilt", &rebuild.message).await;
        } else {
            rebuild.phase = RebuildPhase::Failed;
            rebuild.message = message(state.as_ref(), "the rebuild Job failed; see its pods' logs");
            publish(ctx, pipeline, EventType::Warning, "RebuildFailed", &rebuild.message).await;
        }
    }
    Ok(Some(rebuild))
}
