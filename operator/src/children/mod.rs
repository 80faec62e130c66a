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
            Capabilities, ConfigMap, PodSecurityContext, SeccompProfile, Secret, SecretKeySelector, SecurityContext,
            Service, ServicePort, ServiceSpec,
        },
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
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

/// The desired children of `pipeline`, with the operator's default `images` unless the spec overrides them.
pub fn desired(pipeline: &AnalyticsPipeline, images: &ImageSet, observed: Observed) -> Children {
    let images = images.with_overrides(&pipeline.spec.images);
    let mut children = Children {
        config_maps: Vec::new(),
        services: Vec::new(),
        stateful_sets: Vec::new(),
        deployments: Vec::new(),
        cron_jobs: Vec::new(),
        jobs: Vec::new(),
        postgres_clusters: Vec::new(),
        rabbitmq_clusters: Vec::new(),
    };
    match databases::mode(pipeline) {
        databases::Mode::Managed(managed) => {
            children.config_maps.push(databases::init_script(pipeline));
            children.services.push(databases::service(pipeline));
            children.stateful_sets.push(databases::stateful_set(pipeline, &managed, &images.postgres));
        }
        databases::Mode::CloudNativePg(spec) => {
            children.config_maps.push(databases::init_script(pipeline));
            children.postgres_clusters.push(cloudnative_pg::cluster(pipeline, &spec, &images.postgres));
            children.jobs.push(cloudnative_pg::roles_job(pipeline, &images.postgres));
        }
        databases::Mode::External(_) => {}
    }
    match broker::mode(pipeline) {
        broker::Mode::Managed(managed) => {
            children.services.push(broker::service(pipeline));
            children.stateful_sets.push(broker::stateful_set(pipeline, &managed, &images.rabbitmq));
        }
        broker::Mode::ClusterOperator(spec) => {
            children.rabbitmq_clusters.push(rabbitmq_cluster::cluster(pipeline, &spec, &images.rabbitmq));
        }
        broker::Mode::External(_) => {}
    }
    children.services.extend(services::services(pipeline));
    children.deployments.extend(services::deployments(pipeline, &images, observed));
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
