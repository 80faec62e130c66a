//! The reconciler: it makes the cluster match an `AnalyticsPipeline`, and reports what it sees.
//!
//! One pass, inside the finalizer: validate the spec (an invalid one is reported, never retried in a
//! loop), create the credentials and API tokens Secrets if they are missing, decide the consumer count, apply the
//! backends' NetworkPolicies and then every child that differs from its desired form (server-side
//! apply, one field manager), mark the pipeline's claims with its UID where they lack it
//! ([`adopt_claims`]), derive the status ([`status`]) and write it if it changed. A child's desired form
//! is hashed into an annotation, so a pass with nothing to change reads but never writes. Deletion
//! removes the children through their owner references; under the Delete policy the finalizer also
//! deletes the volume claims and the credentials that carry the operator's label and the pipeline's
//! UID, and nothing else.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Debug,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        batch::v1::{CronJob, Job},
        core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service},
        networking::v1::NetworkPolicy,
        policy::v1::PodDisruptionBudget,
    },
    apimachinery::pkg::apis::meta::v1::LabelSelector,
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions},
    runtime::{
        controller::Action,
        events::{Event, EventType, Recorder},
        finalizer::{Event as Finalized, finalizer},
    },
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;
use sha2::{Digest, Sha256};

pub mod cloudnative_pg;
pub mod rabbitmq_cluster;
pub mod read_model;
mod retain;
pub mod status;
pub mod storage;
pub mod upgrade;

use self::status::{Observation, Verdict};
use crate::{
    children::{self, Observed},
    crd::{AnalyticsPipeline, AnalyticsPipelineStatus, ApiAuthentication, DeletionPolicy, Endpoints, ImageSet},
    metrics::Metrics,
    observe::Observer,
    scaling::{Policy, Stabilizer},
};

pub const FIELD_MANAGER: &str = "analytics-operator";
pub const FINALIZER: &str = "analytics.example.com/cleanup";
/// The hash of a child's desired form, to tell "nothing to do" without writing.
pub const SPEC_HASH: &str = "analytics.example.com/spec-hash";
/// Lag and queue depth are read again this often, even when nothing changes.
pub const RESYNC: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer error: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// Something the pass waits for has not happened yet; it is tried again.
    #[error("{0}")]
    Pending(String),
}

impl Error {
    /// Every value [`Error::kind`] returns: the error metric starts each at 0, so a dashboard's rate of
    /// errors is 0, not absent, while nothing fails.
    pub const KINDS: [&'static str; 4] = ["api", "client", "finalizer", "pending"];

    /// A bounded label for the error metric; one of [`Error::KINDS`].
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Kube(kube::Error::Api(_)) => "api",
            Self::Kube(_) => "client",
            Self::Finalizer(_) => "finalizer",
            Self::Pending(_) => "pending",
        }
    }
}

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub observer: Arc<dyn Observer>,
    /// The images of a pipeline whose spec names none.
    pub images: ImageSet,
    /// Where the operator runs: the managed broker accepts its queue-depth reads from there.
    pub operator_namespace: String,
    /// The namespaces whose pods may reach the services' metrics ports.
    pub metrics_from: LabelSelector,
    /// Scale-down stabilization per pipeline (`namespace/name`); lost on restart, which only delays a
    /// scale-down.
    pub scalers: Mutex<HashMap<String, Stabilizer<Instant>>>,
    /// Consecutive failures per pipeline, for the error policy's backoff.
    pub failures: Mutex<HashMap<String, u32>>,
    /// The pipeline whose services get new default images now ([`upgrade`]).
    pub upgrade_slot: Mutex<upgrade::Slot>,
    /// Volume expansions the API server refused ([`storage`]).
    pub storage_refusals: Mutex<storage::Refusals>,
}

impl Context {
    pub fn new(
        client: Client,
        recorder: Recorder,
        metrics: Metrics,
        observer: Arc<dyn Observer>,
        images: ImageSet,
        operator_namespace: String,
        metrics_from: LabelSelector,
    ) -> Self {
        Self {
            client,
            recorder,
            metrics,
            observer,
            images,
            operator_namespace,
            metrics_from,
            scalers: Mutex::default(),
            failures: Mutex::default(),
            upgrade_slot: Mutex::default(),
            storage_refusals: Mutex::default(),
        }
    }
}

fn key(pipeline: &AnalyticsPipeline) -> String {
    format!("{}/{}", pipeline.namespace().unwrap_or_default(), pipeline.name_any())
}

/// Errors requeue with exponential backoff per pipeline (1 s, 2 s, 4 s … 256 s, then every 256 s),
/// counted by kind.
pub fn error_policy(pipeline: Arc<AnalyticsPipeline>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failures.with_label_values(&[error.kind()]).inc();
    let mut failures = ctx.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let attempts = failures.entry(key(&pipeline)).or_default();
    *attempts = attempts.saturating_add(1);
    let delay = Duration::from_secs(1_u64 << (*attempts - 1).min(8));
    tracing::warn!(pipeline = %key(&pipeline), %error, ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

/// The controller's entry point: everything happens inside the finalizer.
#[tracing::instrument(name = "reconcile", skip_all, fields(
    namespace = pipeline.namespace().unwrap_or_default(),
    pipeline = pipeline.name_any(),
    generation = pipeline.metadata.generation,
))]
pub async fn reconcile(pipeline: Arc<AnalyticsPipeline>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    ctx.metrics.reconciles.inc();
    let pipeline_key = key(&pipeline);
    // Boxed: a pass's future is large, and it should not sit on the caller's stack.
    let result = Box::pin(reconcile_inner(pipeline, &ctx)).await;
    ctx.metrics.duration.observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&pipeline_key);
    }
    result
}

async fn reconcile_inner(pipeline: Arc<AnalyticsPipeline>, ctx: &Arc<Context>) -> Result<Action, Error> {
    let namespace = pipeline.namespace().unwrap_or_else(|| "default".to_owned());
    let api: Api<AnalyticsPipeline> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, pipeline, |event| async {
        match event {
            Finalized::Apply(pipeline) => apply(&pipeline, ctx).await,
            Finalized::Cleanup(pipeline) => cleanup(&pipeline, ctx).await,
        }
    })
    .await
    .map_err(|error| Error::Finalizer(Box::new(error)))
}

async fn apply(pipeline: &AnalyticsPipeline, ctx: &Context) -> Result<Action, Error> {
    match apply_children(pipeline, ctx).await {
        Ok(action) => Ok(action),
        Err(error) => {
            // Seen in `kubectl describe` and in the status, not only in a log line.
            let message = error.to_string();
            publish(ctx, pipeline, EventType::Warning, "ReconcileFailed", &message).await;
            let failed =
                status::failed(pipeline.status.as_ref(), pipeline.metadata.generation, &message, Timestamp::now());
            drop(patch_status(pipeline, ctx, &failed).await);
            Err(error)
        }
    }
}

/// One pass: validate, credentials, scale, apply every child, then derive and write the status.
async fn apply_children(pipeline: &AnalyticsPipeline, ctx: &Context) -> Result<Action, Error> {
    if let Err(reason) = validate(pipeline) {
        let status = status::invalid(pipeline.status.as_ref(), pipeline.metadata.generation, &reason, Timestamp::now());
        if pipeline.status.as_ref() != Some(&status) {
            publish(ctx, pipeline, EventType::Warning, "InvalidSpec", &reason).await;
            patch_status(pipeline, ctx, &status).await?;
        }
        return Ok(Action::await_change());
    }
    let namespace = pipeline.namespace().unwrap_or_else(|| "default".to_owned());
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
    let databases = children::databases::mode(pipeline);
    let broker = children::broker::mode(pipeline);
    // Paused, the pass reads what is there and reports it, and changes nothing.
    let write = if is_paused(pipeline) { Write::Paused } else { Write::Apply };
    if write == Write::Apply {
        if databases.is_in_cluster() || broker.is_in_cluster() {
            ensure_credentials(pipeline, &secrets).await?;
        }
        if matches!(databases, children::databases::Mode::CloudNativePg(_)) {
            cloudnative_pg::ensure_admin_secret(pipeline, &secrets).await?;
        }
        if pipeline.spec.api_authentication == ApiAuthentication::BearerToken {
            ensure_api_tokens(pipeline, &secrets).await?;
        }
    }
    let (consumer_replicas, queue_depth) = scale_consumers(pipeline, ctx, &namespace, write).await?;
    if write == Write::Apply {
        // The policies first, so that the backends and the metrics are never reachable from elsewhere.
        let policies = Api::<NetworkPolicy>::namespaced(ctx.client.clone(), &namespace);
        for policy in children::network::policies(pipeline, &ctx.operator_namespace, &ctx.metrics_from) {
            apply_child(&policies, policy).await?;
        }
    }
    // New default images go to one pipeline at a time (a paused pass applies nothing, so it takes no turn).
    let images = match write {
        Write::Apply => Box::pin(upgrade::images(pipeline, ctx, &namespace)).await?,
        Write::Paused => {
            upgrade::release(pipeline, ctx);
            ctx.images.clone()
        }
    };
    // The claims first: the other operators are given only a size the claims can grow to.
    let (storage, sized) = Box::pin(storage::reconcile(pipeline, ctx, &namespace, write)).await?;
    let desired = children::desired(&sized, &images, Observed { consumer_replicas });
    // Boxed: the pass's future would otherwise carry every child's apply inline.
    let applied = Box::pin(apply_all(ctx, &namespace, desired, write)).await?;
    if write == Write::Apply {
        adopt_claims(pipeline, ctx, &namespace, &applied).await?;
    }

    let live_set = |part: &str| {
        let name = children::name(pipeline, part);
        Verdict::stateful_set(applied.stateful_sets.iter().find(|s| s.name_any() == name), &name)
    };
    let (databases, postgres) = match databases {
        children::databases::Mode::External(_) => (Verdict::external("external databases are not checked"), None),
        children::databases::Mode::Managed(_) => (live_set("postgres"), None),
        children::databases::Mode::CloudNativePg(_) => {
            let tidy = write == Write::Apply && !pipeline.spec.hibernate;
            cloudnative_pg::observe(
                pipeline,
                ctx,
                &namespace,
                applied.postgres_clusters.first(),
                applied.jobs.first(),
                tidy,
            )
            .await?
        }
    };
    let hibernation = if pipeline.spec.hibernate { Some(running_pods(pipeline, ctx, &namespace).await?) } else { None };
    let observation = Observation {
        generation: pipeline.metadata.generation,
        paused: write == Write::Paused,
        hibernation,
        storage,
        databases,
        broker: match broker {
            children::broker::Mode::External(_) => Verdict::external("an external broker is not checked"),
            children::broker::Mode::Managed(_) => live_set(children::broker::COMPONENT),
            children::broker::Mode::ClusterOperator(_) => Verdict::rabbitmq_cluster(
                applied.rabbitmq_clusters.first(),
                &children::name(pipeline, children::broker::COMPONENT),
            ),
        },
        services: match applied.missing_deployments.as_slice() {
            [] => Verdict::deployments(&applied.deployments),
            missing => Verdict::not_ready("Missing", format!("{} do not exist", missing.join(", "))),
        },
        endpoints: endpoints(pipeline, &namespace),
        consumer_replicas,
        queue_depth,
        // A hibernated pipeline's query service is not there to ask.
        sync: if pipeline.spec.hibernate { None } else { ctx.observer.sync_status(pipeline).await },
        read_model: read_model::observe(pipeline, ctx, &namespace).await?,
        postgres,
    };
    let status = status::derive(pipeline.status.as_ref(), observation, Timestamp::now());
    let consumers = &pipeline.spec.consumers;
    ctx.metrics.observe(
        &namespace,
        &pipeline.name_any(),
        &status,
        consumers.replicas.unwrap_or(consumers.max_replicas),
    );
    if pipeline.status.as_ref() != Some(&status) {
        patch_status(pipeline, ctx, &status).await?;
    }
    Ok(Action::requeue(RESYNC))
}

/// The annotation that pauses a pipeline: with `true`, the operator changes none of its objects (it
/// creates, updates and scales nothing, and starts no rebuild) and only reports their status, so that a
/// person can work on them. Removing it, or any other value, resumes; a deletion is carried out either way.
pub const PAUSED_ANNOTATION: &str = "analytics.example.com/paused";

pub fn is_paused(pipeline: &AnalyticsPipeline) -> bool {
    pipeline.annotations().get(PAUSED_ANNOTATION).is_some_and(|value| value == "true")
}

/// Whether a pass writes the children, or only reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    Apply,
    Paused,
}

/// The pipeline's pods that are not done (a finished Job's pod is), in every mode: the operator's own and
/// those of the CloudNativePG and RabbitMQ clusters carry its instance and managed-by labels.
async fn running_pods(pipeline: &AnalyticsPipeline, ctx: &Context, namespace: &str) -> Result<usize, Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let selector = format!(
        "{}={},{}={}",
        children::INSTANCE_LABEL,
        pipeline.name_any(),
        children::MANAGED_BY_LABEL,
        children::MANAGED_BY
    );
    let list = pods.list(&ListParams::default().labels(&selector)).await?;
    Ok(list
        .items
        .iter()
        .filter(|pod| {
            let phase = pod.status.as_ref().and_then(|status| status.phase.as_deref());
            !matches!(phase, Some("Succeeded" | "Failed"))
        })
        .count())
}

/// The live workloads after a pass applied every child.
struct Applied {
    stateful_sets: Vec<StatefulSet>,
    deployments: Vec<Deployment>,
    /// The services' Deployments that a paused pass found missing.
    missing_deployments: Vec<String>,
    postgres_clusters: Vec<children::cloudnative_pg::Cluster>,
    rabbitmq_clusters: Vec<children::rabbitmq_cluster::RabbitmqCluster>,
    jobs: Vec<Job>,
}

/// Applies every child, config first and workloads last; paused, reads the workloads that exist instead.
async fn apply_all(
    ctx: &Context,
    namespace: &str,
    desired: children::Children,
    write: Write,
) -> Result<Applied, Error> {
    let client = ctx.client.clone();
    if write == Write::Paused {
        return read_all(ctx, namespace, desired).await;
    }
    for config_map in desired.config_maps {
        apply_child(&Api::<ConfigMap>::namespaced(client.clone(), namespace), config_map).await?;
    }
    for service in desired.services {
        apply_child(&Api::<Service>::namespaced(client.clone(), namespace), service).await?;
    }
    let budgets = Api::<PodDisruptionBudget>::namespaced(client.clone(), namespace);
    for budget in desired.disruption_budgets {
        apply_child(&budgets, budget).await?;
    }
    let mut applied = Applied {
        stateful_sets: Vec::new(),
        deployments: Vec::new(),
        missing_deployments: Vec::new(),
        postgres_clusters: Vec::new(),
        rabbitmq_clusters: Vec::new(),
        jobs: Vec::new(),
    };
    let clusters = Api::<children::cloudnative_pg::Cluster>::namespaced(client.clone(), namespace);
    for cluster in desired.postgres_clusters {
        let cluster = apply_child(&clusters, cluster).await.map_err(|error| match error {
            Error::Kube(kube::Error::Api(status)) if status.is_not_found() => Error::Pending(
                "postgres.cloudNativePG needs CloudNativePG, and this cluster serves no postgresql.cnpg.io/v1 \
                 Cluster: install CloudNativePG 1.30"
                    .to_owned(),
            ),
            error => error,
        })?;
        applied.postgres_clusters.push(cluster);
    }
    let clusters = Api::<children::rabbitmq_cluster::RabbitmqCluster>::namespaced(client.clone(), namespace);
    for cluster in desired.rabbitmq_clusters {
        let cluster = apply_child(&clusters, cluster).await.map_err(|error| match error {
            Error::Kube(kube::Error::Api(status)) if status.is_not_found() => Error::Pending(
                "rabbitmq.clusterOperator needs the RabbitMQ cluster operator, and this cluster serves no \
                 rabbitmq.com/v1beta1 RabbitmqCluster: install the RabbitMQ cluster operator 2.22"
                    .to_owned(),
            ),
            error => error,
        })?;
        applied.rabbitmq_clusters.push(cluster);
    }
    let jobs = Api::<Job>::namespaced(client.clone(), namespace);
    for job in desired.jobs {
        applied.jobs.push(apply_child(&jobs, job).await?);
    }
    let stateful_sets = Api::<StatefulSet>::namespaced(client.clone(), namespace);
    for stateful_set in desired.stateful_sets {
        applied.stateful_sets.push(apply_child_keeping(&stateful_sets, stateful_set, keep_claim_templates).await?);
    }
    let deployments = Api::<Deployment>::namespaced(client.clone(), namespace);
    for deployment in desired.deployments {
        applied.deployments.push(apply_child(&deployments, deployment).await?);
    }
    let cron_jobs = Api::<CronJob>::namespaced(client, namespace);
    for cron_job in desired.cron_jobs {
        apply_child(&cron_jobs, cron_job).await?;
    }
    Ok(applied)
}

/// The live workloads, as far as they exist, for a pass that changes nothing.
async fn read_all(ctx: &Context, namespace: &str, desired: children::Children) -> Result<Applied, Error> {
    async fn live<K>(client: &Client, namespace: &str, desired: Vec<K>) -> Result<Vec<K>, Error>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    {
        let api = Api::<K>::namespaced(client.clone(), namespace);
        let mut found = Vec::new();
        for object in desired {
            found.extend(api.get_opt(&object.name_any()).await?);
        }
        Ok(found)
    }
    let client = &ctx.client;
    let wanted: Vec<String> = desired.deployments.iter().map(ResourceExt::name_any).collect();
    let deployments = live(client, namespace, desired.deployments).await?;
    let missing_deployments =
        wanted.into_iter().filter(|name| !deployments.iter().any(|found| found.name_any() == *name)).collect();
    Ok(Applied {
        stateful_sets: live(client, namespace, desired.stateful_sets).await?,
        deployments,
        missing_deployments,
        postgres_clusters: live(client, namespace, desired.postgres_clusters).await.unwrap_or_default(),
        rabbitmq_clusters: live(client, namespace, desired.rabbitmq_clusters).await.unwrap_or_default(),
        jobs: live(client, namespace, desired.jobs).await?,
    })
}

/// A StatefulSet's volume claim templates cannot change once it exists, so they stay as the live ones
/// are: neither a larger `storage.size` (the claims themselves grow, see [`storage`]) nor a label
/// that a newer operator adds (such as the pipeline UID; claims made before it get the label by
/// [`adopt_claims`]) may make every apply fail.
fn keep_claim_templates(desired: &mut StatefulSet, live: &StatefulSet) {
    let live_templates = live.spec.as_ref().and_then(|spec| spec.volume_claim_templates.clone());
    if let (Some(live_templates), Some(spec)) = (live_templates, desired.spec.as_mut()) {
        spec.volume_claim_templates = Some(live_templates);
    }
}

/// Marks the claims this pipeline's StatefulSets use with its UID where they lack it, if the operator
/// made them for a pipeline of this name (an earlier one, deleted under `Retain` and created again, or
/// one made by an operator that did not label them yet). What another party made is never touched, and
/// so never deleted.
async fn adopt_claims(
    pipeline: &AnalyticsPipeline,
    ctx: &Context,
    namespace: &str,
    applied: &Applied,
) -> Result<(), Error> {
    let label = uid_label(pipeline);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), namespace);
    let mut names = Vec::new();
    for set in &applied.stateful_sets {
        let spec = set.spec.as_ref();
        let templates = spec.and_then(|spec| spec.volume_claim_templates.as_deref()).unwrap_or_default();
        // A managed backend is one pod, ordinal 0, whose claim stays while it hibernates.
        for ordinal in 0..spec.and_then(|spec| spec.replicas).unwrap_or(1).max(1) {
            names.extend(
                templates.iter().map(|template| format!("{}-{}-{ordinal}", template.name_any(), set.name_any())),
            );
        }
    }
    names.extend(applied.rabbitmq_clusters.iter().flat_map(children::rabbitmq_cluster::claims));
    for name in names {
        if let Some(claim) = claims.get_opt(&name).await?
            && children::is_data_of_name(pipeline, claim.labels())
            && !children::is_data_of(pipeline, claim.labels())
        {
            claims.patch(&name, &PatchParams::default(), &Patch::Merge(&label)).await?;
        }
    }
    Ok(())
}

/// A merge patch that sets the pipeline's UID label.
fn uid_label(pipeline: &AnalyticsPipeline) -> serde_json::Value {
    json!({"metadata": {"labels": {children::PIPELINE_UID_LABEL: pipeline.uid().unwrap_or_default()}}})
}

/// Decides the consumer count from the live count and the queue depth, and says so in an Event when it
/// changes. Returns the count and the depth it saw.
async fn scale_consumers(
    pipeline: &AnalyticsPipeline,
    ctx: &Context,
    namespace: &str,
    write: Write,
) -> Result<(i32, Option<i64>), Error> {
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
    let current =
        deployments.get_opt(&children::name(pipeline, "consumer")).await?.and_then(|d| d.spec.and_then(|s| s.replicas));
    // A hibernated pipeline runs none, and its broker is not there to ask.
    if pipeline.spec.hibernate {
        return Ok((0, None));
    }
    let depth = ctx.observer.queue_depth(pipeline).await;
    if write == Write::Paused {
        return Ok((current.unwrap_or_default(), depth));
    }
    let replicas = decide_consumers(pipeline, ctx, current, depth);
    if let Some(from) = current.filter(|from| *from != replicas) {
        let note = format!("consumers {from} → {replicas} (order-events depth {})", depth.unwrap_or_default());
        publish(ctx, pipeline, EventType::Normal, "Scaled", &note).await;
    }
    Ok((replicas, depth))
}

fn endpoints(pipeline: &AnalyticsPipeline, namespace: &str) -> Endpoints {
    let url = |part: &str, port: i32| format!("http://{}.{namespace}.svc:{port}", children::name(pipeline, part));
    Endpoints {
        command: url("command", children::services::COMMAND_PORT),
        query: url("query", children::services::QUERY_PORT),
    }
}

/// What the API server's validation cannot catch (or a CRD without the rules let through).
pub fn validate(pipeline: &AnalyticsPipeline) -> Result<(), String> {
    let spec = &pipeline.spec;
    let consumers = &spec.consumers;
    if consumers.replicas.is_none() && consumers.min_replicas > consumers.max_replicas {
        return Err(format!(
            "consumers.minReplicas ({}) exceeds consumers.maxReplicas ({})",
            consumers.min_replicas, consumers.max_replicas
        ));
    }
    let postgres = &spec.postgres;
    let modes = [postgres.managed.is_some(), postgres.cloud_native_pg.is_some(), postgres.external.is_some()];
    if modes.into_iter().filter(|given| *given).count() > 1 {
        return Err("postgres is one of managed, cloudNativePG or external".to_owned());
    }
    if let Some(cluster) = &postgres.cloud_native_pg {
        if cluster.synchronous.number >= cluster.instances {
            return Err(format!(
                "postgres.cloudNativePG.synchronous.number ({}) must be less than instances ({})",
                cluster.synchronous.number, cluster.instances
            ));
        }
        if cluster.query_reads_from == crate::crd::ReadsFrom::Standbys && cluster.instances < 2 {
            return Err("postgres.cloudNativePG.queryReadsFrom Standbys needs at least 2 instances".to_owned());
        }
    }
    let rabbitmq = &spec.rabbitmq;
    let modes = [rabbitmq.managed.is_some(), rabbitmq.cluster_operator.is_some(), rabbitmq.external.is_some()];
    if modes.into_iter().filter(|given| *given).count() > 1 {
        return Err("rabbitmq is one of managed, clusterOperator or external".to_owned());
    }
    if let Some(cluster) = &rabbitmq.cluster_operator
        && (cluster.replicas < 1 || cluster.replicas % 2 == 0)
    {
        return Err(format!("rabbitmq.clusterOperator.replicas ({}) must be odd", cluster.replicas));
    }
    let reserved = ["app.kubernetes.io/", "cnpg.io/", "analytics.example.com/"];
    if let Some(label) =
        spec.pod_metadata.labels.keys().find(|key| reserved.iter().any(|prefix| key.starts_with(prefix)))
    {
        return Err(format!("podMetadata.labels must not use {label}: the selectors are made of those prefixes"));
    }
    let images = &spec.images;
    for (name, image) in [
        ("command", &images.command),
        ("consumer", &images.consumer),
        ("query", &images.query),
        ("postgres", &images.postgres),
        ("rabbitmq", &images.rabbitmq),
    ] {
        if image.as_ref().is_some_and(|image| !image.is_pinned()) {
            return Err(format!("images.{name} needs a tag or a digest"));
        }
    }
    Ok(())
}

/// The fixed count, or the stabilized scaling decision; the current count when the depth is unknown.
fn decide_consumers(pipeline: &AnalyticsPipeline, ctx: &Context, current: Option<i32>, depth: Option<i64>) -> i32 {
    let spec = &pipeline.spec.consumers;
    let Some(policy) = Policy::from_spec(spec) else {
        return spec.replicas.unwrap_or(1);
    };
    let current = current.unwrap_or(policy.min.max(1));
    let Some(depth) = depth else {
        return current.clamp(policy.min, policy.max);
    };
    let mut scalers = ctx.scalers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    scalers.entry(key(pipeline)).or_default().decide(&policy, current, depth, Instant::now())
}

/// Applies `desired` unless the live object already carries its hash. Returns the live object.
pub async fn apply_child<K>(api: &Api<K>, desired: K) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    apply_child_keeping(api, desired, |_, _| {}).await
}

/// [`apply_child`], after `keep` has copied into `desired` what must stay as the live object has it.
async fn apply_child_keeping<K>(api: &Api<K>, mut desired: K, keep: impl FnOnce(&mut K, &K)) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    let name = desired.name_any();
    let live = api.get_opt(&name).await?;
    if let Some(live) = &live {
        keep(&mut desired, live);
    }
    let hash = spec_hash(&desired);
    if let Some(live) = live
        && live.annotations().get(SPEC_HASH) == Some(&hash)
        && live.meta().deletion_timestamp.is_none()
    {
        return Ok(live);
    }
    desired.annotations_mut().insert(SPEC_HASH.to_owned(), hash);
    Ok(api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&desired)).await?)
}

/// A short SHA-256 of the object's JSON form.
pub fn spec_hash<K: Serialize>(object: &K) -> String {
    let bytes = serde_json::to_vec(object).expect("Kubernetes objects serialize");
    Sha256::digest(bytes).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Creates the credentials Secret if it does not exist. An existing one that the operator made is never
/// rewritten: it only gets the keys it lacks (made by an older operator), and is marked with the
/// pipeline's UID if it was made for an earlier pipeline of this name (see [`adopt_claims`]). One that
/// the operator did not make is left alone.
async fn ensure_credentials(pipeline: &AnalyticsPipeline, secrets: &Api<Secret>) -> Result<(), Error> {
    let name = children::name(pipeline, children::CREDENTIALS);
    let Some(secret) = secrets.get_opt(&name).await? else {
        return create_once(secrets, children::credentials_secret(pipeline, &mut random_token)).await;
    };
    // A Secret of this name that the operator did not make is the user's: used as it is.
    if !children::is_data_of_name(pipeline, secret.labels()) {
        return Ok(());
    }
    if !children::is_data_of(pipeline, secret.labels()) {
        secrets.patch(&name, &PatchParams::default(), &Patch::Merge(&uid_label(pipeline))).await?;
    }
    let data = secret.data.unwrap_or_default();
    let missing: BTreeMap<String, String> = children::credential_keys()
        .into_iter()
        .filter(|key| !data.contains_key(key))
        .map(|key| (key, random_token()))
        .collect();
    if !missing.is_empty() {
        tracing::info!(secret = %name, keys = ?missing.keys().collect::<Vec<_>>(), "adding credentials");
        let patch = json!({"stringData": missing});
        secrets.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    Ok(())
}

/// Creates the API tokens Secret if it does not exist. An existing one is used as it is, whoever made
/// it: a user may bring their own tokens, and rotates them by editing it.
async fn ensure_api_tokens(pipeline: &AnalyticsPipeline, secrets: &Api<Secret>) -> Result<(), Error> {
    if secrets.get_opt(&children::name(pipeline, children::API_TOKENS)).await?.is_some() {
        return Ok(());
    }
    create_once(secrets, children::api_tokens_secret(pipeline, &mut random_token)).await
}

/// Creates `secret`; if another replica or an earlier pass made it first, theirs stands.
async fn create_once(secrets: &Api<Secret>, secret: Secret) -> Result<(), Error> {
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// 32 alphanumeric characters from the OS's randomness: safe in URLs without escaping.
fn random_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0_u8; 32];
    getrandom::fill(&mut bytes).expect("the OS provides randomness");
    bytes.iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect()
}

async fn patch_status(
    pipeline: &AnalyticsPipeline,
    ctx: &Context,
    status: &AnalyticsPipelineStatus,
) -> Result<(), Error> {
    let api: Api<AnalyticsPipeline> = Api::namespaced(ctx.client.clone(), &pipeline.namespace().unwrap_or_default());
    let body = json!({
        "apiVersion": AnalyticsPipeline::api_version(&()),
        "kind": AnalyticsPipeline::kind(&()),
        "status": status,
    });
    api.patch_status(&pipeline.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await?;
    Ok(())
}

async fn publish(ctx: &Context, pipeline: &AnalyticsPipeline, type_: EventType, reason: &str, note: &str) {
    publish_related(ctx, pipeline, type_, reason, note, None).await;
}

/// [`publish`], naming a `related` object too. The recorder folds Events with the same reason and
/// related object into one series for a few minutes, keeping the first note; a related object at a new
/// resourceVersion makes an Event of its own.
async fn publish_related(
    ctx: &Context,
    pipeline: &AnalyticsPipeline,
    type_: EventType,
    reason: &str,
    note: &str,
    related: Option<k8s_openapi::api::core::v1::ObjectReference>,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note.to_owned()),
        action: "Reconcile".to_owned(),
        secondary: related,
    };
    if let Err(error) = ctx.recorder.publish(&event, &pipeline.object_ref(&())).await {
        tracing::warn!(%error, reason, "cannot publish an event");
    }
}

/// Children go with their owner; under Delete, so do the claims and the credentials.
async fn cleanup(pipeline: &AnalyticsPipeline, ctx: &Context) -> Result<Action, Error> {
    ctx.scalers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&key(pipeline));
    upgrade::release(pipeline, ctx);
    ctx.metrics.forget(&pipeline.namespace().unwrap_or_default(), &pipeline.name_any());
    let namespace = pipeline.namespace().unwrap_or_else(|| "default".to_owned());
    let cloudnative_pg = matches!(children::databases::mode(pipeline), children::databases::Mode::CloudNativePg(_));
    let rabbitmq_cluster = matches!(children::broker::mode(pipeline), children::broker::Mode::ClusterOperator(_));
    if pipeline.spec.deletion_policy == DeletionPolicy::Retain {
        if cloudnative_pg {
            cloudnative_pg::delete_keeping_volumes(pipeline, ctx, &namespace).await?;
        }
        if rabbitmq_cluster {
            rabbitmq_cluster::delete_keeping_volumes(pipeline, ctx, &namespace).await?;
        }
    }
    if pipeline.spec.deletion_policy == DeletionPolicy::Delete {
        // Only what carries the operator's label and this pipeline's UID: a claim or Secret that merely
        // shares the instance label or the name belongs to someone else.
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);
        let selector = children::data_selector(pipeline);
        claims.delete_collection(&DeleteParams::default(), &ListParams::default().labels(&selector)).await?;
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
        for part in [children::CREDENTIALS, children::cloudnative_pg::ADMIN_SECRET] {
            let name = children::name(pipeline, part);
            if let Some(secret) = secrets.get_opt(&name).await?
                && children::is_data_of(pipeline, secret.labels())
            {
                // The precondition makes sure it is still the Secret that was checked.
                let preconditions = Preconditions { uid: secret.uid(), resource_version: None };
                match secrets
                    .delete(&name, &DeleteParams { preconditions: Some(preconditions), ..DeleteParams::default() })
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.is_not_found() => {}
                    Err(error) => return Err(error.into()),
                }
            }
        }
        publish(
            ctx,
            pipeline,
            EventType::Normal,
            "DataDeleted",
            "deletionPolicy Delete: volume claims and credentials deleted",
        )
        .await;
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests;
