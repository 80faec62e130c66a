//! The `clusterOperator` broker mode: a `RabbitmqCluster`, `<pipeline>-rabbitmq`, that the RabbitMQ
//! cluster operator runs as a StatefulSet of nodes that form one cluster.
//!
//! What the operator asks for, and why:
//! - The image of `images.rabbitmq`, always: since 2.22 the cluster operator's webhook defaults it, and
//!   the webhook needs cert-manager, so clusters here run without it.
//! - The users and permissions of the managed mode, through the same `definitions` init container and
//!   `rabbitmq-definitions.sh` (added to the pods by `override`), which the broker imports at boot: one
//!   way in both modes, and no second operator (the messaging-topology operator's `User` and
//!   `Permission` would need one, and its own credentials). The cluster operator's default user is in
//!   the definitions too: a broker that imports definitions does not create it, and the cluster operator
//!   uses it for the management API.
//! - Quorum queues that keep a member on every node: RabbitMQ grows a queue back to `replicas` members
//!   when a node joins or returns (`quorum_queue.continuous_membership_reconciliation`), so a queue that
//!   was declared while a node was away, or lost a member with a node's volume, is whole again.
//! - The pipeline's labels on the pods (the NetworkPolicy and `kubectl get pods -l` find them) and its
//!   data labels on the volume claims (`Delete` finds them, and a pipeline of the same name adopts them),
//!   through `override`: the cluster operator copies only labels outside `app.kubernetes.io/` from the
//!   `RabbitmqCluster` to what it makes.
//!
//! The operator owns the `RabbitmqCluster`; the cluster operator owns its StatefulSet, Services, Secrets
//! and ConfigMaps, and sets itself as the owner of the volume claims (cluster-operator#1992).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        core::v1::{
            Affinity, EnvVar, EnvVarSource, LocalObjectReference, PersistentVolumeClaimSpec, PodAffinityTerm,
            PodAntiAffinity, ResourceRequirements, SecretKeySelector, VolumeResourceRequirements,
            WeightedPodAffinityTerm,
        },
        policy::v1::PodDisruptionBudget,
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta},
    },
};
use kube::{CustomResource, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    COMPONENT_LABEL, Footprint, INSTANCE_LABEL, MANAGED_BY_LABEL, broker, data_labels, labels, metadata, name,
};
use crate::crd::{AnalyticsPipeline, AntiAffinity, Image, RabbitmqClusterOperator};

/// The cluster operator's `RabbitmqCluster` (rabbitmq.com/v1beta1), as far as the operator sets and reads
/// it. Fields left out are the cluster operator's defaults; server-side apply leaves them alone.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "rabbitmq.com",
    version = "v1beta1",
    kind = "RabbitmqCluster",
    namespaced,
    status = "RabbitmqClusterStatus",
    schema = "disabled",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase", default)]
pub struct RabbitmqClusterSpec {
    pub replicas: i32,
    pub image: String,
    pub persistence: Persistence,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    pub rabbitmq: RabbitmqConfiguration,
    /// Strategic merge patches of what the cluster operator makes (`statefulSet`, `service`).
    #[serde(rename = "override", skip_serializing_if = "serde_json::Value::is_null")]
    pub override_: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
    /// Seconds the init container waits before the node starts (the cluster operator's default: 30).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_start_seconds: Option<i32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Persistence {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    pub storage: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct RabbitmqConfiguration {
    /// rabbitmq.conf settings, after the cluster operator's own.
    pub additional_config: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct RabbitmqClusterStatus {
    pub conditions: Vec<ClusterCondition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The conditions that make the broker ready: every node ready, the client Service has an endpoint, and
/// the cluster operator's last pass succeeded (it also waits for a rollout to finish).
pub const READY_CONDITIONS: [&str; 3] = ["AllReplicasReady", "ClusterAvailable", "ReconcileSuccess"];

/// The label the cluster operator puts on everything of a cluster, with the cluster's name.
pub const CLUSTER_LABEL: &str = "app.kubernetes.io/name";

/// The cluster operator's Secret of the default user (keys `username`, `password`).
pub fn default_user_secret(pipeline: &AnalyticsPipeline) -> String {
    format!("{}-default-user", name(pipeline, broker::COMPONENT))
}

/// The `RabbitmqCluster` of `spec`, named like the managed broker, so that its client Service has the
/// managed broker's host name.
pub fn cluster(pipeline: &AnalyticsPipeline, spec: &RabbitmqClusterOperator, image: &Image) -> RabbitmqCluster {
    let component = broker::COMPONENT;
    let cluster_name = name(pipeline, component);
    let from_default_user = |key: &str| EnvVarSource {
        secret_key_ref: Some(SecretKeySelector {
            name: default_user_secret(pipeline),
            key: key.to_owned(),
            optional: Some(false),
        }),
        ..EnvVarSource::default()
    };
    let (definitions, volume) = broker::definitions(
        pipeline,
        image,
        vec![
            EnvVar {
                name: "CLUSTER_OPERATOR_USER".into(),
                value_from: Some(from_default_user("username")),
                ..EnvVar::default()
            },
            EnvVar {
                name: "CLUSTER_OPERATOR_PASSWORD".into(),
                value_from: Some(from_default_user("password")),
                ..EnvVar::default()
            },
        ],
        Footprint::Backend.or(spec.resources.as_ref()),
    );
    // Not app.kubernetes.io/name: the StatefulSet's selector is that label with the cluster's name.
    let mut pod_labels = pipeline.spec.pod_metadata.labels.clone();
    pod_labels.extend(
        labels(pipeline, component)
            .into_iter()
            .filter(|(key, _)| [INSTANCE_LABEL, COMPONENT_LABEL, MANAGED_BY_LABEL].contains(&key.as_str())),
    );
    let mut pod_metadata = json!({"labels": pod_labels});
    if !pipeline.spec.pod_metadata.annotations.is_empty() {
        pod_metadata["annotations"] = json!(pipeline.spec.pod_metadata.annotations);
    }
    let mut pod_spec = json!({
        "initContainers": [definitions],
        "containers": [{"name": "rabbitmq", "volumeMounts": broker::definitions_mounts()}],
        "volumes": [volume],
    });
    if let Some(priority_class_name) = &pipeline.spec.priority_class_name {
        pod_spec["priorityClassName"] = json!(priority_class_name);
    }
    let claim = PersistentVolumeClaimSpec {
        access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
        storage_class_name: spec.storage.storage_class_name.clone(),
        resources: Some(VolumeResourceRequirements {
            requests: Some(BTreeMap::from([("storage".to_owned(), Quantity(spec.storage.size.clone()))])),
            ..VolumeResourceRequirements::default()
        }),
        ..PersistentVolumeClaimSpec::default()
    };
    let override_ = json!({
        "statefulSet": {"spec": {
            "template": {"metadata": pod_metadata, "spec": pod_spec},
            // The cluster operator's claim template (`persistence`), with the pipeline's data labels.
            "volumeClaimTemplates": [{
                "metadata": {"name": "persistence", "labels": data_labels(pipeline, component)},
                "spec": claim,
            }],
        }},
    });
    let additional_config = format!(
        "quorum_queue.continuous_membership_reconciliation.enabled = true\n\
         quorum_queue.continuous_membership_reconciliation.target_group_size = {}\n",
        spec.replicas
    );
    // The cluster operator copies the pipeline's UID label to everything it makes.
    let metadata =
        ObjectMeta { labels: Some(data_labels(pipeline, component)), ..metadata(pipeline, component, component) };
    RabbitmqCluster {
        metadata,
        spec: RabbitmqClusterSpec {
            // The cluster operator scales to 0 and back to the count it noted before.
            replicas: if pipeline.spec.hibernate { 0 } else { spec.replicas },
            image_pull_secrets: pipeline.spec.image_pull_secrets.clone(),
            image: image.reference(),
            persistence: Persistence {
                storage_class_name: spec.storage.storage_class_name.clone(),
                storage: spec.storage.size.clone(),
            },
            resources: Some(Footprint::Backend.or(spec.resources.as_ref())),
            affinity: Some(anti_affinity(&cluster_name, spec.pod_anti_affinity)),
            rabbitmq: RabbitmqConfiguration { additional_config },
            override_,
            termination_grace_period_seconds: spec.termination_grace_period_seconds,
            delay_start_seconds: Some(0),
        },
        status: None,
    }
}

/// At most one node of the cluster away at a time, by a drain or another eviction: each quorum queue
/// keeps its majority (as the cluster operator's production-ready example).
pub fn disruption_budget(pipeline: &AnalyticsPipeline) -> PodDisruptionBudget {
    let cluster_name = name(pipeline, broker::COMPONENT);
    super::disruption_budget(pipeline, broker::COMPONENT, BTreeMap::from([(CLUSTER_LABEL.to_owned(), cluster_name)]), 1)
}

/// The names of the volume claims of `cluster`'s nodes (the cluster operator's StatefulSet is
/// `<cluster>-server`, its claim template `persistence`).
pub fn claims(cluster: &RabbitmqCluster) -> impl Iterator<Item = String> + '_ {
    (0..cluster.spec.replicas).map(move |ordinal| claim_name(&cluster.name_any(), ordinal))
}

/// The claim of node `ordinal` of the cluster `cluster_name`.
pub fn claim_name(cluster_name: &str, ordinal: i32) -> String {
    format!("persistence-{cluster_name}-server-{ordinal}")
}

/// One node of the cluster per Kubernetes node: required, or preferred.
fn anti_affinity(cluster_name: &str, kind: AntiAffinity) -> Affinity {
    let term = PodAffinityTerm {
        label_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(CLUSTER_LABEL.to_owned(), cluster_name.to_owned())])),
            ..LabelSelector::default()
        }),
        topology_key: "kubernetes.io/hostname".to_owned(),
        ..PodAffinityTerm::default()
    };
    let pod_anti_affinity = match kind {
        AntiAffinity::Required => PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![term]),
            ..PodAntiAffinity::default()
        },
        AntiAffinity::Preferred => PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
                weight: 100,
                pod_affinity_term: term,
            }]),
            ..PodAntiAffinity::default()
        },
    };
    Affinity { pod_anti_affinity: Some(pod_anti_affinity), ..Affinity::default() }
}
