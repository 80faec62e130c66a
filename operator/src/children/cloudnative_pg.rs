//! The `cloudNativePG` mode: both databases in one CloudNativePG `Cluster`, `<pipeline>-postgres`, a
//! primary and streaming standbys that CloudNativePG fails over by itself.
//!
//! One cluster, not a write cluster and a read cluster: the managed mode keeps both databases in one
//! server too, so the services, the roles script and the maintenance Jobs see the same layout in every
//! mode; one failover domain means one primary to watch and one timeline in the status; and the read
//! side still scales out, because the query service reads from the standbys (`queryReadsFrom`) while the
//! consumers write the primary. The cost is that the command service and the consumers share the
//! primary's CPU and WAL; a pipeline that outgrows one primary points `external` at two clusters.
//!
//! What the operator asks for, and why:
//! - `bootstrap.initdb` makes `analytics_write`, owned by the administrator `analytics` (the same role as
//!   in the managed mode, who runs the migrations), with the password of the pipeline's credentials
//!   (through the basic-auth Secret `<pipeline>-postgres-admin`, which the reconciler copies from them);
//!   `postInitSQL` creates `analytics_read` for the same owner and lets it create roles.
//! - The services' roles come from the same `postgres-roles.sql` as in the managed mode, applied by a Job
//!   against the primary (`<pipeline>-postgres-roles-<hash>`), so that the grants and default privileges
//!   are the same in both modes.
//! - Synchronous replication (`method: any`) with the spec's number of standbys and data durability.
//! - The pipeline's labels on everything CloudNativePG makes (`inheritedMetadata`): its pods are the
//!   pipeline's pods, and its volume claims carry the pipeline's UID, so that `Delete` finds them.
//!
//! The operator owns the `Cluster`; CloudNativePG owns its pods, claims, Services and Secrets.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    batch::v1::{Job, JobSpec},
    core::v1::{PodSpec, ResourceRequirements, Secret, Toleration},
};
use kube::CustomResource;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    Footprint, data_labels,
    databases::{self, COMPONENT, POSTGRES_UID, READ_DATABASE, Roles, USER, WRITE_DATABASE},
    metadata, name, pod_security, pod_template,
};
use crate::crd::{AnalyticsPipeline, AntiAffinity, CloudNativePg, DataDurability, Image};

/// CloudNativePG's `Cluster` (postgresql.cnpg.io/v1), as far as the operator sets and reads it. Fields
/// left out are CloudNativePG's defaults; server-side apply leaves them alone.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "postgresql.cnpg.io",
    version = "v1",
    kind = "Cluster",
    namespaced,
    status = "ClusterStatus",
    schema = "disabled",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterSpec {
    pub instances: i32,
    pub image_name: String,
    pub image_pull_policy: String,
    #[serde(rename = "postgresUID")]
    pub postgres_uid: i64,
    #[serde(rename = "postgresGID")]
    pub postgres_gid: i64,
    pub storage: ClusterStorage,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    pub postgresql: PostgresConfiguration,
    pub bootstrap: Bootstrap,
    pub enable_superuser_access: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smart_shutdown_timeout: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switchover_delay: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover_delay: Option<i32>,
    pub affinity: Affinity,
    pub probes: Probes,
    pub inherited_metadata: InheritedMetadata,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<Plugin>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterStorage {
    pub size: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PostgresConfiguration {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub synchronous: Option<SynchronousConfiguration>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct SynchronousConfiguration {
    /// `any` (quorum) or `first` (priority).
    pub method: String,
    pub number: i32,
    /// `required` or `preferred`.
    pub data_durability: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Bootstrap {
    pub initdb: InitDb,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct InitDb {
    pub database: String,
    pub owner: String,
    pub secret: LocalObjectReference,
    #[serde(rename = "postInitSQL", skip_serializing_if = "Vec::is_empty")]
    pub post_init_sql: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct LocalObjectReference {
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Affinity {
    pub enable_pod_anti_affinity: bool,
    /// `preferred` or `required`.
    pub pod_anti_affinity_type: String,
    pub topology_key: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct Probes {
    pub readiness: ReadinessProbe,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ReadinessProbe {
    /// `pg_isready`, `streaming` or `query`.
    #[serde(rename = "type")]
    pub type_: String,
    pub maximum_lag: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct InheritedMetadata {
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Plugin {
    pub name: String,
    #[serde(rename = "isWALArchiver")]
    pub is_wal_archiver: bool,
    pub parameters: BTreeMap<String, String>,
}

/// What CloudNativePG reports, as far as the pipeline's status shows it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterStatus {
    pub instances: i32,
    pub ready_instances: i32,
    pub current_primary: String,
    pub target_primary: String,
    #[serde(rename = "timelineID")]
    pub timeline_id: i64,
    pub phase: String,
    pub phase_reason: String,
    pub conditions: Vec<ClusterCondition>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

/// The phase CloudNativePG reports for a cluster with every instance up and a primary.
pub const HEALTHY: &str = "Cluster in healthy state";

/// CloudNativePG's Barman Cloud plugin, for WAL archiving and base backups.
pub const BARMAN_CLOUD_PLUGIN: &str = "barman-cloud.cloudnative-pg.io";

/// The basic-auth Secret that holds the administrator's name and password for `bootstrap.initdb`.
pub const ADMIN_SECRET: &str = "postgres-admin";

/// CloudNativePG hibernates a cluster whose annotation says `on`, and resumes it at `off`.
pub const HIBERNATION_ANNOTATION: &str = "cnpg.io/hibernation";

/// The label CloudNativePG puts on everything of a cluster, with the cluster's name.
pub const CLUSTER_LABEL: &str = "cnpg.io/cluster";

/// The `Cluster` of `pipeline`, running `image`.
pub fn cluster(pipeline: &AnalyticsPipeline, spec: &CloudNativePg, image: &Image) -> Cluster {
    let synchronous = (spec.synchronous.number > 0).then(|| SynchronousConfiguration {
        method: "any".to_owned(),
        number: spec.synchronous.number,
        data_durability: match spec.synchronous.data_durability {
            DataDurability::Required => "required",
            DataDurability::Preferred => "preferred",
        }
        .to_owned(),
    });
    let plugins = spec
        .backup
        .iter()
        .map(|backup| Plugin {
            name: BARMAN_CLOUD_PLUGIN.to_owned(),
            is_wal_archiver: true,
            parameters: BTreeMap::from([("barmanObjectName".to_owned(), backup.barman_object_name.clone())]),
        })
        .collect();
    let mut cluster = Cluster::new(
        &name(pipeline, COMPONENT),
        ClusterSpec {
            instances: spec.instances,
            image_name: image.reference(),
            image_pull_policy: image.pull_policy.as_str().to_owned(),
            postgres_uid: POSTGRES_UID,
            postgres_gid: POSTGRES_UID,
            storage: ClusterStorage {
                size: spec.storage.size.clone(),
                storage_class: spec.storage.storage_class_name.clone(),
            },
            resources: Some(Footprint::Backend.or(spec.resources.as_ref())),
            postgresql: PostgresConfiguration { synchronous },
            bootstrap: Bootstrap {
                initdb: InitDb {
                    database: WRITE_DATABASE.to_owned(),
                    owner: USER.to_owned(),
                    secret: LocalObjectReference { name: name(pipeline, ADMIN_SECRET) },
                    post_init_sql: vec![
                        format!("create database {READ_DATABASE} owner {USER}"),
                        // The roles Job, as the administrator, creates the services' roles.
                        format!("alter role {USER} createrole"),
                    ],
                },
            },
            enable_superuser_access: false,
            smart_shutdown_timeout: spec.smart_shutdown_timeout,
            switchover_delay: spec.switchover_delay,
            failover_delay: spec.failover_delay,
            affinity: Affinity {
                enable_pod_anti_affinity: true,
                pod_anti_affinity_type: match spec.pod_anti_affinity {
                    AntiAffinity::Preferred => "preferred",
                    AntiAffinity::Required => "required",
                }
                .to_owned(),
                topology_key: "kubernetes.io/hostname".to_owned(),
                node_selector: pipeline.spec.node_selector.clone(),
                tolerations: pipeline.spec.tolerations.clone(),
            },
            // Reads go to standbys that stream and have caught up, not to one that has only started.
            probes: Probes {
                readiness: ReadinessProbe {
                    type_: "streaming".to_owned(),
                    maximum_lag: spec.standby_maximum_lag.clone(),
                },
            },
            inherited_metadata: InheritedMetadata {
                labels: {
                    let mut labels = pipeline.spec.pod_metadata.labels.clone();
                    labels.extend(data_labels(pipeline, COMPONENT));
                    labels
                },
                annotations: pipeline.spec.pod_metadata.annotations.clone(),
            },
            plugins,
            priority_class_name: pipeline.spec.priority_class_name.clone(),
            image_pull_secrets: pipeline
                .spec
                .image_pull_secrets
                .iter()
                .map(|secret| LocalObjectReference { name: secret.name.clone() })
                .collect(),
        },
    );
    cluster.metadata = metadata(pipeline, COMPONENT, COMPONENT);
    // CloudNativePG's declarative hibernation: it deletes the instances' pods and keeps their volumes.
    cluster.metadata.annotations = Some(BTreeMap::from([(
        HIBERNATION_ANNOTATION.to_owned(),
        if pipeline.spec.hibernate { "on" } else { "off" }.to_owned(),
    )]));
    cluster
}

/// The administrator's basic-auth Secret, with the password the pipeline's credentials hold. Like the
/// credentials, it has no owner: it outlives a pipeline deleted under `Retain`, whose data it opens.
pub fn admin_secret(pipeline: &AnalyticsPipeline, password: &str) -> Secret {
    let mut metadata = metadata(pipeline, ADMIN_SECRET, COMPONENT);
    metadata.labels = Some(data_labels(pipeline, COMPONENT));
    metadata.owner_references = None;
    Secret {
        metadata,
        string_data: Some(BTreeMap::from([
            ("username".to_owned(), USER.to_owned()),
            ("password".to_owned(), password.to_owned()),
        ])),
        type_: Some("kubernetes.io/basic-auth".to_owned()),
        ..Secret::default()
    }
}

/// The component label of the roles Jobs.
pub const ROLES: &str = "postgres-roles";

/// A roles Job may fail this often (the primary may be failing over) before it is made again.
const ROLES_RETRIES: i32 = 6;

/// The Job that applies `postgres-roles.sql` on the primary, named after its pod's form, so that a new
/// form (a new image or script) runs again and an unchanged one never does. It waits for the primary.
pub fn roles_job(pipeline: &AnalyticsPipeline, image: &Image) -> Job {
    let pod = pod_template(
        pipeline,
        ROLES,
        BTreeMap::new(),
        PodSpec {
            containers: vec![databases::roles_container(pipeline, image, Roles::Once)],
            volumes: Some(vec![databases::roles_volume(pipeline)]),
            restart_policy: Some("Never".to_owned()),
            security_context: Some(pod_security(POSTGRES_UID)),
            ..PodSpec::default()
        },
    );
    let form = serde_json::to_vec(&(&pod, include_str!("postgres-roles.sql"))).expect("a pod serializes");
    let hash: String = Sha256::digest(form).iter().take(4).map(|b| format!("{b:02x}")).collect();
    Job {
        metadata: metadata(pipeline, &format!("{ROLES}-{hash}"), ROLES),
        spec: Some(JobSpec { backoff_limit: Some(ROLES_RETRIES), template: pod, ..JobSpec::default() }),
        ..Job::default()
    }
}
