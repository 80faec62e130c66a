//! The managed PostgreSQL: one StatefulSet with both databases (`analytics_write`, `analytics_read`),
//! a headless Service, and an init script that creates the read database on first start.
//!
//! Its PVC follows the pipeline's deletion policy through the StatefulSet's
//! `persistentVolumeClaimRetentionPolicy` (Retain: the claim outlives everything; Delete: it goes with the
//! StatefulSet), and the reconciler's finalizer deletes leftover claims under Delete.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec},
        core::v1::{
            ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource, ExecAction,
            PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe, Service, Volume,
            VolumeMount, VolumeResourceRequirements,
        },
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::LabelSelector},
};

use super::{
    POSTGRES_PASSWORD_KEY, ReadOnlyRoot, container_security, credential, data_labels, headless_service, labels,
    metadata, name, pod_security, selector,
};
use crate::crd::{AnalyticsPipeline, DeletionPolicy, Image, Managed, Storage};

pub const COMPONENT: &str = "postgres";
pub const PORT: i32 = 5432;
pub const USER: &str = "analytics";
pub const WRITE_DATABASE: &str = "analytics_write";
pub const READ_DATABASE: &str = "analytics_read";
/// The uid of the `postgres` user in the official image.
const POSTGRES_UID: i64 = 999;

/// The managed settings, or `None` when the databases are external.
pub fn managed(pipeline: &AnalyticsPipeline) -> Option<Managed> {
    let postgres = &pipeline.spec.postgres;
    if postgres.external.is_some() { None } else { Some(postgres.managed.clone().unwrap_or_default()) }
}

/// The Service (and host name) of the managed PostgreSQL.
pub fn host(pipeline: &AnalyticsPipeline) -> String {
    name(pipeline, COMPONENT)
}

pub fn init_script(pipeline: &AnalyticsPipeline) -> ConfigMap {
    ConfigMap {
        metadata: metadata(pipeline, "postgres-init", COMPONENT),
        data: Some(BTreeMap::from([(
            "10-read-database.sql".to_owned(),
            format!(
                "-- The read side's database; the image creates {WRITE_DATABASE} itself.\ncreate database {READ_DATABASE};\n"
            ),
        )])),
        ..ConfigMap::default()
    }
}

pub fn service(pipeline: &AnalyticsPipeline) -> Service {
    headless_service(pipeline, COMPONENT, &[("postgres", PORT)])
}

pub fn stateful_set(pipeline: &AnalyticsPipeline, managed: &Managed, image: &Image) -> StatefulSet {
    let is_ready = Probe {
        exec: Some(ExecAction {
            command: Some(vec!["pg_isready".into(), "-U".into(), USER.into(), "-d".into(), WRITE_DATABASE.into()]),
        }),
        period_seconds: Some(5),
        ..Probe::default()
    };
    let container = Container {
        name: COMPONENT.to_owned(),
        image: Some(image.reference()),
        image_pull_policy: Some(image.pull_policy.as_str().to_owned()),
        ports: Some(vec![ContainerPort {
            name: Some("postgres".into()),
            container_port: PORT,
            ..ContainerPort::default()
        }]),
        env: Some(vec![
            EnvVar { name: "POSTGRES_USER".into(), value: Some(USER.into()), ..EnvVar::default() },
            EnvVar { name: "POSTGRES_DB".into(), value: Some(WRITE_DATABASE.into()), ..EnvVar::default() },
            EnvVar {
                name: "POSTGRES_PASSWORD".into(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(credential(pipeline, POSTGRES_PASSWORD_KEY)),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            },
            EnvVar {
                name: "PGDATA".into(),
                value: Some("/var/lib/postgresql/data/pgdata".into()),
                ..EnvVar::default()
            },
        ]),
        readiness_probe: Some(is_ready.clone()),
        liveness_probe: Some(Probe { period_seconds: Some(10), failure_threshold: Some(6), ..is_ready }),
        resources: managed.resources.clone(),
        security_context: Some(container_security(ReadOnlyRoot::No)),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "data".into(),
                mount_path: "/var/lib/postgresql/data".into(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "init".into(),
                mount_path: "/docker-entrypoint-initdb.d".into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    stateful(
        pipeline,
        COMPONENT,
        &managed.storage,
        container,
        POSTGRES_UID,
        vec![Volume {
            name: "init".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: name(pipeline, "postgres-init"),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        }],
    )
}

/// A one-replica StatefulSet whose container mounts a `data` volume claim that follows the deletion
/// policy. Shared by the databases and the broker.
pub(super) fn stateful(
    pipeline: &AnalyticsPipeline,
    component: &str,
    storage: &Storage,
    container: Container,
    uid: i64,
    volumes: Vec<Volume>,
) -> StatefulSet {
    let when_deleted = match pipeline.spec.deletion_policy {
        DeletionPolicy::Retain => "Retain",
        DeletionPolicy::Delete => "Delete",
    };
    let claim = PersistentVolumeClaim {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("data".into()),
            labels: Some(data_labels(pipeline, component)),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), Quantity(storage.size.clone()))])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };
    StatefulSet {
        metadata: metadata(pipeline, component, component),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(name(pipeline, component)),
            selector: LabelSelector { match_labels: Some(selector(pipeline, component)), ..LabelSelector::default() },
            template: PodTemplateSpec {
                metadata: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                    labels: Some(labels(pipeline, component)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: (!volumes.is_empty()).then_some(volumes),
                    security_context: Some(pod_security(uid)),
                    // Nothing in the pod talks to the Kubernetes API.
                    automount_service_account_token: Some(false),
                    node_selector: (!pipeline.spec.node_selector.is_empty())
                        .then(|| pipeline.spec.node_selector.clone()),
                    tolerations: (!pipeline.spec.tolerations.is_empty()).then(|| pipeline.spec.tolerations.clone()),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![claim]),
            persistent_volume_claim_retention_policy: Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some(when_deleted.to_owned()),
                when_scaled: Some("Retain".to_owned()),
            }),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}
