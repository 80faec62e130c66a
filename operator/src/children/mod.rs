//! The objects a pipeline is made of, as pure functions of its spec (and of the few facts the
//! reconciler observes, such as the consumer count). Nothing here talks to the API server, so every
//! builder is tested without a cluster.
//!
//! Managed databases and the broker are StatefulSets with headless Services and volume claim
//! templates; the three services are Deployments, and the two APIs get Services. Every object carries
//! the pipeline as its controlling owner, so Kubernetes garbage-collects it with the pipeline. The PVCs
//! of the StatefulSets follow the deletion policy (see [`databases`]).

pub mod broker;
pub mod cloudnative_pg;
pub mod databases;
pub mod maintenance;
pub mod network;
pub mod rabbitmq_cluster;
pub mod services;

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        batch::v1::{CronJob, Job},
        core::v1::{
            Capabilities, ConfigMap, PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements,
            SeccompProfile, Secret, SecretKeySelector, SecurityContext, Service, ServicePort, ServiceSpec,
        },
        policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use kube::{Resource, ResourceExt};

use crate::crd::{AnalyticsPipeline, ImageSet};

/// The label that ties every child to its pipeline.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "analytics-operator";
/// The pipeline's UID, on what outlives the pipeline's owner references: the volume claims and the
/// credentials. Under `Delete`, the finalizer deletes only objects that carry this label with the
/// pipeline's UID and [`MANAGED_BY_LABEL`] with [`MANAGED_BY`], never one that merely shares a name or
/// an instance label.
pub const PIPELINE_UID_LABEL: &str = "analytics.example.com/pipeline-uid";

/// Everything the operator applies for one pipeline (the credentials Secret is created once, apart).
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    pub config_maps: Vec<ConfigMap>,
    pub services: Vec<Service>,
    pub stateful_sets: Vec<StatefulSet>,
    pub deployments: Vec<Deployment>,
    pub cron_jobs: Vec<CronJob>,
    pub disruption_budgets: Vec<PodDisruptionBudget>,
    /// Jobs that run once for a form of the pipeline (the roles on a CloudNativePG cluster).
    pub jobs: Vec<Job>,
    /// CloudNativePG clusters.
    pub postgres_clusters: Vec<cloudnative_pg::Cluster>,
    /// RabbitMQ cluster operator clusters.
    pub rabbitmq_clusters: Vec<rabbitmq_cluster::RabbitmqCluster>,
}

/// Facts the reconciler decides or observes, which the spec alone does not give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// How many consumers to run now (the spec's fixed count, or the scaling decision).
    pub consumer_replicas: i32,
}

/// `pipeline` with the operator's defaults for what its spec leaves to the operator: the image pull Secrets.
pub fn with_defaults(pipeline: &AnalyticsPipeline, images: &ImageSet) -> AnalyticsPipeline {
    let mut pipeline = pipeline.clone();
    if pipeline.spec.image_pull_secrets.is_empty() {
        pipeline.spec.image_pull_secrets.clone_from(&images.pull_secrets);
    }
    pipeline
}

/// The desired children of `pipeline`, with the operator's default `images` (and their pull Secrets)
/// unless the spec overrides them.
pub fn desired(pipeline: &AnalyticsPipeline, images: &ImageSet, observed: Observed) -> Children {
    let pipeline = &with_defaults(pipeline, images);
    let images = images.with_overrides(&pipeline.spec.images);
    let mut children = Children {
        config_maps: Vec::new(),
        services: Vec::new(),
        stateful_sets: Vec::new(),
        deployments: Vec::new(),
        cron_jobs: Vec::new(),
        disruption_budgets: Vec::new(),
        jobs: Vec::new(),
        postgres_clusters: Vec::new(),
        rabbitmq_clusters: Vec::new(),
    };
    match databases::mode(pipeline) {
        databases::Mode::Managed(managed) => {
            children.config_maps.push(databases::init_script(pipeline));
            children.services.push(databases::service(pipeline));
            children.stateful_sets.push(databases::stateful_set(pipeline, &managed, &images.postgres));
            // The only copy of the data: a drain waits until someone moves it (or hibernates the pipeline).
            let component = databases::COMPONENT;
            children.disruption_budgets.push(disruption_budget(pipeline, component, selector(pipeline, component), 0));
        }
        databases::Mode::CloudNativePg(spec) => {
            children.config_maps.push(databases::init_script(pipeline));
            children.postgres_clusters.push(cloudnative_pg::cluster(pipeline, &spec, &images.postgres));
            // A hibernated cluster has no primary to apply the roles on.
            if !pipeline.spec.hibernate {
                children.jobs.push(cloudnative_pg::roles_job(pipeline, &images.postgres));
            }
        }
        databases::Mode::External(_) => {}
    }
    match broker::mode(pipeline) {
        broker::Mode::Managed(managed) => {
            children.services.push(broker::service(pipeline));
            children.stateful_sets.push(broker::stateful_set(pipeline, &managed, &images.rabbitmq));
            let component = broker::COMPONENT;
            children.disruption_budgets.push(disruption_budget(pipeline, component, selector(pipeline, component), 0));
        }
        broker::Mode::ClusterOperator(spec) => {
            children.rabbitmq_clusters.push(rabbitmq_cluster::cluster(pipeline, &spec, &images.rabbitmq));
            // One node at a time: each quorum queue keeps its majority (CloudNativePG makes its own budgets).
            children.disruption_budgets.push(rabbitmq_cluster::disruption_budget(pipeline));
        }
        broker::Mode::External(_) => {}
    }
    children.services.extend(services::services(pipeline));
    children.deployments.extend(services::deployments(pipeline, &images, observed));
    children.disruption_budgets.extend(
        services::COMPONENTS.map(|component| disruption_budget(pipeline, component, selector(pipeline, component), 1)),
    );
    children.cron_jobs.push(maintenance::verify_cron_job(pipeline, &images.consumer));
    children
}

/// `<pipeline>-<suffix>`, the name of a child.
pub fn name(pipeline: &AnalyticsPipeline, suffix: &str) -> String {
    format!("{}-{suffix}", pipeline.name_any())
}

/// Labels of a child (and the selector of its pods): the pipeline instance and the component.
pub fn labels(pipeline: &AnalyticsPipeline, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "analytics-pipeline".to_owned()),
        (INSTANCE_LABEL.to_owned(), pipeline.name_any()),
        (COMPONENT_LABEL.to_owned(), component.to_owned()),
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
    ])
}

/// Labels of the pipeline's data (claims and credentials): [`labels`] plus [`PIPELINE_UID_LABEL`].
pub fn data_labels(pipeline: &AnalyticsPipeline, component: &str) -> BTreeMap<String, String> {
    let mut labels = labels(pipeline, component);
    labels.insert(PIPELINE_UID_LABEL.to_owned(), pipeline.uid().unwrap_or_default());
    labels
}

/// The label selector of everything [`data_labels`] marks as this pipeline's.
pub fn data_selector(pipeline: &AnalyticsPipeline) -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY},{PIPELINE_UID_LABEL}={}", pipeline.uid().unwrap_or_default())
}

/// Whether an object with `labels` is this pipeline's data: made by the operator, for this pipeline's UID.
pub fn is_data_of(pipeline: &AnalyticsPipeline, labels: &BTreeMap<String, String>) -> bool {
    labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
        && labels.get(PIPELINE_UID_LABEL) == pipeline.uid().as_ref()
}

/// Whether an object with `labels` was made by the operator for a pipeline of this name, perhaps an
/// earlier one (deleted under `Retain` and created again), so that this pipeline may adopt it.
pub fn is_data_of_name(pipeline: &AnalyticsPipeline, labels: &BTreeMap<String, String>) -> bool {
    labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
        && labels.get(INSTANCE_LABEL) == Some(&pipeline.name_any())
}

/// The selector part of [`labels`]: stable across operator versions, as selectors must be.
pub fn selector(pipeline: &AnalyticsPipeline, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (INSTANCE_LABEL.to_owned(), pipeline.name_any()),
        (COMPONENT_LABEL.to_owned(), component.to_owned()),
    ])
}

/// Metadata of a child: name, namespace, labels, and the pipeline as controlling owner.
pub fn metadata(pipeline: &AnalyticsPipeline, suffix: &str, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name(pipeline, suffix)),
        namespace: pipeline.namespace(),
        labels: Some(labels(pipeline, component)),
        owner_references: Some(vec![owner(pipeline)]),
        ..ObjectMeta::default()
    }
}

/// The pipeline as controlling owner: children are garbage-collected with it.
pub fn owner(pipeline: &AnalyticsPipeline) -> OwnerReference {
    OwnerReference {
        api_version: AnalyticsPipeline::api_version(&()).into_owned(),
        kind: AnalyticsPipeline::kind(&()).into_owned(),
        name: pipeline.name_any(),
        uid: pipeline.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A headless Service for a StatefulSet: its pod gets a stable DNS name.
pub fn headless_service(pipeline: &AnalyticsPipeline, component: &str, ports: &[(&str, i32)]) -> Service {
    Service {
        metadata: metadata(pipeline, component, component),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            selector: Some(selector(pipeline, component)),
            ports: Some(
                ports
                    .iter()
                    .map(|(name, port)| ServicePort {
                        name: Some((*name).to_owned()),
                        port: *port,
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The template of `component`'s pods: the pipeline's pod labels and annotations under the operator's
/// own (which win), and what every pod of the pipeline shares: its node selector, tolerations, priority
/// class and image pull Secrets, and no service account token (nothing in the pods talks to the
/// Kubernetes API).
pub fn pod_template(
    pipeline: &AnalyticsPipeline,
    component: &str,
    annotations: BTreeMap<String, String>,
    spec: PodSpec,
) -> PodTemplateSpec {
    let extra = &pipeline.spec.pod_metadata;
    let mut all_labels = extra.labels.clone();
    all_labels.extend(labels(pipeline, component));
    let mut all_annotations = extra.annotations.clone();
    all_annotations.extend(annotations);
    let shared = &pipeline.spec;
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(all_labels),
            annotations: (!all_annotations.is_empty()).then_some(all_annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            automount_service_account_token: Some(false),
            node_selector: (!shared.node_selector.is_empty()).then(|| shared.node_selector.clone()),
            tolerations: (!shared.tolerations.is_empty()).then(|| shared.tolerations.clone()),
            priority_class_name: shared.priority_class_name.clone(),
            image_pull_secrets: (!shared.image_pull_secrets.is_empty()).then(|| shared.image_pull_secrets.clone()),
            ..spec
        }),
    }
}

/// A PodDisruptionBudget over `component`'s pods (those `selector` matches): a drain or any other eviction
/// takes at most `max_unavailable` of them at a time. A pod that is not ready may always be evicted, so
/// that one which cannot start never blocks a drain.
pub fn disruption_budget(
    pipeline: &AnalyticsPipeline,
    component: &str,
    selector: BTreeMap<String, String>,
    max_unavailable: i32,
) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: metadata(pipeline, component, component),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(max_unavailable)),
            selector: Some(LabelSelector { match_labels: Some(selector), ..LabelSelector::default() }),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_owned()),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

/// What a container asks for where the spec gives no `resources`: every container has requests and
/// limits of CPU and memory, so that a namespace whose ResourceQuota demands them admits every pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Footprint {
    /// A service, its `migrate`, and the read model's Jobs: 50m and 64Mi, at most 1 CPU and 256Mi.
    Service,
    /// A PostgreSQL or RabbitMQ server, managed or in another operator's cluster: 100m and 512Mi, at most
    /// 2 CPUs and the same 512Mi (RabbitMQ sizes its memory alarm from the limit).
    Backend,
    /// The roles program beside the managed PostgreSQL (bash, psql, then sleep), whatever the server's
    /// resources: 10m and 32Mi, at most 200m and 64Mi.
    Helper,
}

impl Footprint {
    /// `given`, or this footprint.
    pub fn or(self, given: Option<&ResourceRequirements>) -> ResourceRequirements {
        given.cloned().unwrap_or_else(|| self.requirements())
    }

    pub fn requirements(self) -> ResourceRequirements {
        let (requests, limits) = match self {
            Self::Service => (("50m", "64Mi"), ("1", "256Mi")),
            Self::Backend => (("100m", "512Mi"), ("2", "512Mi")),
            Self::Helper => (("10m", "32Mi"), ("200m", "64Mi")),
        };
        let quantities = |(cpu, memory): (&str, &str)| {
            BTreeMap::from([("cpu".to_owned(), Quantity(cpu.into())), ("memory".to_owned(), Quantity(memory.into()))])
        };
        ResourceRequirements {
            requests: Some(quantities(requests)),
            limits: Some(quantities(limits)),
            ..ResourceRequirements::default()
        }
    }
}

/// Pods run as this non-root user, with no privilege escalation.
pub fn pod_security(user: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(user),
        run_as_group: Some(user),
        fs_group: Some(user),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..SeccompProfile::default() }),
        ..PodSecurityContext::default()
    }
}

/// Whether a container's root file system is read-only (the databases' images write beside their data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOnlyRoot {
    Yes,
    No,
}

/// A container as the `restricted` Pod Security Standard asks (with [`pod_security`]): no privilege
/// escalation and no capabilities.
pub fn container_security(read_only_root: ReadOnlyRoot) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(read_only_root == ReadOnlyRoot::Yes),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Capabilities::default() }),
        ..SecurityContext::default()
    }
}

/// The credentials Secret: generated once by the reconciler. A value is never rewritten; a key that a
/// newer operator needs is added to an existing Secret.
pub const CREDENTIALS: &str = "credentials";
/// The administrator of the managed PostgreSQL, who owns the schema and runs the migrations.
pub const POSTGRES_PASSWORD_KEY: &str = "postgres-password";
/// The administrator of the managed broker.
pub const RABBITMQ_PASSWORD_KEY: &str = "rabbitmq-password";
pub const ERLANG_COOKIE_KEY: &str = "erlang-cookie";

/// The three services. In the managed backends each has a database role and a broker user of its own,
/// named after it, with the passwords [`database_password_key`] and [`broker_password_key`].
pub const SERVICES: [&str; 3] = ["command", "consumer", "query"];

pub fn database_password_key(service: &str) -> String {
    format!("{service}-db-password")
}

pub fn broker_password_key(service: &str) -> String {
    format!("{service}-mq-password")
}

/// Every key of the credentials Secret.
pub fn credential_keys() -> Vec<String> {
    let mut keys =
        vec![POSTGRES_PASSWORD_KEY.to_owned(), RABBITMQ_PASSWORD_KEY.to_owned(), ERLANG_COOKIE_KEY.to_owned()];
    keys.extend(SERVICES.iter().flat_map(|service| [database_password_key(service), broker_password_key(service)]));
    keys
}

/// A key of the pipeline's credentials Secret.
pub fn credential(pipeline: &AnalyticsPipeline, key: &str) -> SecretKeySelector {
    SecretKeySelector { name: name(pipeline, CREDENTIALS), key: key.to_owned(), optional: Some(false) }
}

/// The credentials Secret with freshly generated values; the reconciler creates it only if it is absent.
pub fn credentials_secret(pipeline: &AnalyticsPipeline, random: &mut impl FnMut() -> String) -> Secret {
    let mut metadata = metadata(pipeline, CREDENTIALS, "credentials");
    metadata.labels = Some(data_labels(pipeline, "credentials"));
    // Like the PVCs, the credentials must outlive a pipeline that is deleted and re-created with Retain.
    metadata.owner_references = None;
    Secret {
        metadata,
        string_data: Some(credential_keys().into_iter().map(|key| (key, random())).collect()),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    }
}

/// The API tokens Secret: generated once by the reconciler when the APIs authenticate with bearer
/// tokens, never rewritten, so that a user rotates the tokens by editing it. Each key holds one token per
/// line; the command service accepts those of [`WRITE_TOKENS_KEY`], the query service (and the
/// operator, for sync-status) those of [`READ_TOKENS_KEY`]. Unlike the credentials it guards no data, so
/// it goes with the pipeline.
pub const API_TOKENS: &str = "api-tokens";
pub const WRITE_TOKENS_KEY: &str = "write";
pub const READ_TOKENS_KEY: &str = "read";

/// The API tokens Secret with freshly generated tokens; the reconciler creates it only if it is absent.
pub fn api_tokens_secret(pipeline: &AnalyticsPipeline, random: &mut impl FnMut() -> String) -> Secret {
    Secret {
        metadata: metadata(pipeline, API_TOKENS, "api-tokens"),
        string_data: Some(BTreeMap::from([
            (WRITE_TOKENS_KEY.to_owned(), format!("{}\n", random())),
            (READ_TOKENS_KEY.to_owned(), format!("{}\n", random())),
        ])),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    }
}

/// The first token in a key of the API tokens Secret (one per line; blank lines and `#` comments are
/// skipped, as the services skip them).
pub fn first_token(tokens: &str) -> Option<&str> {
    tokens.lines().map(str::trim).find(|line| !line.is_empty() && !line.starts_with('#'))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
pub(crate) mod fixtures {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use crate::crd::{AnalyticsPipeline, AnalyticsPipelineSpec};

    /// A pipeline as the API server returns it: named, namespaced, with a uid.
    pub fn pipeline(spec: AnalyticsPipelineSpec) -> AnalyticsPipeline {
        AnalyticsPipeline {
            metadata: ObjectMeta {
                name: Some("shop".into()),
                namespace: Some("prod".into()),
                uid: Some("0f8fad5b-d9cb-469f-a165-70867728950e".into()),
                generation: Some(1),
                ..ObjectMeta::default()
            },
            spec,
            status: None,
        }
    }
}
