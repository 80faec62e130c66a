//! The broker. `managed`: one StatefulSet with a volume claim, and a headless Service; `clusterOperator`:
//! a `RabbitmqCluster` ([`super::rabbitmq_cluster`]). The services declare the queues themselves (quorum
//! queues with a dead-letter exchange) when they connect. Each service has a user of its own: in both
//! modes the broker pods' `definitions` init container writes them, with their permissions, as
//! definitions that the broker imports at boot (`rabbitmq-definitions.sh`).

use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        core::v1::{
            Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction, Probe,
            ResourceRequirements, Service, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::api::resource::Quantity,
};

use super::{
    ERLANG_COOKIE_KEY, Footprint, RABBITMQ_PASSWORD_KEY, ReadOnlyRoot, SERVICES, broker_password_key,
    container_security, credential,
    databases::{Pod, stateful},
    headless_service, name,
};
use crate::crd::{AnalyticsPipeline, ExternalRabbitmq, Image, Managed, RabbitmqClusterOperator};

pub const COMPONENT: &str = "rabbitmq";
pub const PORT: i32 = 5672;
pub const USER: &str = "analytics";
/// The uid of the `rabbitmq` user in the official image.
const RABBITMQ_UID: i64 = 999;

/// How a pipeline's broker is run.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// One node the operator runs (also when the spec names no mode).
    Managed(Managed),
    /// A cluster the RabbitMQ cluster operator runs.
    ClusterOperator(RabbitmqClusterOperator),
    /// Someone else's.
    External(ExternalRabbitmq),
}

impl Mode {
    /// Whether the operator makes the broker (and so its users and their credentials).
    pub fn is_in_cluster(&self) -> bool {
        !matches!(self, Self::External(_))
    }
}

pub fn mode(pipeline: &AnalyticsPipeline) -> Mode {
    let rabbitmq = &pipeline.spec.rabbitmq;
    match (&rabbitmq.external, &rabbitmq.cluster_operator) {
        (Some(external), _) => Mode::External(external.clone()),
        (None, Some(cluster)) => Mode::ClusterOperator(cluster.clone()),
        (None, None) => Mode::Managed(rabbitmq.managed.clone().unwrap_or_default()),
    }
}

/// The Service (and host name) of the broker in both in-cluster modes: the managed node's headless
/// Service, or the cluster's client Service (the cluster operator names it after the `RabbitmqCluster`).
pub fn host(pipeline: &AnalyticsPipeline) -> String {
    name(pipeline, COMPONENT)
}

pub fn service(pipeline: &AnalyticsPipeline) -> Service {
    headless_service(pipeline, COMPONENT, &[("amqp", PORT), ("management", 15672)])
}

pub fn stateful_set(pipeline: &AnalyticsPipeline, managed: &Managed, image: &Image) -> StatefulSet {
    let secret =
        |key: &str| EnvVarSource { secret_key_ref: Some(credential(pipeline, key)), ..EnvVarSource::default() };
    let diagnostics =
        |check: &str| ExecAction { command: Some(vec!["rabbitmq-diagnostics".into(), "-q".into(), check.into()]) };
    let data = VolumeMount { name: "data".into(), mount_path: RABBITMQ_HOME.into(), ..VolumeMount::default() };
    let container = Container {
        name: COMPONENT.to_owned(),
        image: Some(image.reference()),
        image_pull_policy: Some(image.pull_policy.as_str().to_owned()),
        ports: Some(vec![
            ContainerPort { name: Some("amqp".into()), container_port: PORT, ..ContainerPort::default() },
            ContainerPort { name: Some("management".into()), container_port: 15672, ..ContainerPort::default() },
        ]),
        env: Some(vec![
            EnvVar { name: "RABBITMQ_DEFAULT_USER".into(), value: Some(USER.into()), ..EnvVar::default() },
            EnvVar {
                name: "RABBITMQ_DEFAULT_PASS".into(),
                value_from: Some(secret(RABBITMQ_PASSWORD_KEY)),
                ..EnvVar::default()
            },
        ]),
        readiness_probe: Some(Probe {
            exec: Some(diagnostics("check_port_connectivity")),
            period_seconds: Some(10),
            timeout_seconds: Some(10),
            ..Probe::default()
        }),
        liveness_probe: Some(Probe {
            exec: Some(diagnostics("ping")),
            initial_delay_seconds: Some(30),
            period_seconds: Some(30),
            timeout_seconds: Some(15),
            ..Probe::default()
        }),
        resources: Some(Footprint::Backend.or(managed.resources.as_ref())),
        security_context: Some(container_security(ReadOnlyRoot::No)),
        volume_mounts: Some(std::iter::once(data.clone()).chain(definitions_mounts()).collect()),
        ..Container::default()
    };
    // The node's Erlang cookie, written by the definitions container into the node's home on its volume.
    let cookie = vec![
        EnvVar { name: "ERLANG_COOKIE".into(), value_from: Some(secret(ERLANG_COOKIE_KEY)), ..EnvVar::default() },
        EnvVar { name: "HOME".into(), value: Some(RABBITMQ_HOME.into()), ..EnvVar::default() },
    ];
    let (mut definitions, volume) =
        definitions(pipeline, image, cookie, Footprint::Backend.or(managed.resources.as_ref()));
    definitions.volume_mounts.get_or_insert_default().push(data);
    let pod = Pod { containers: vec![container], init_containers: vec![definitions], volumes: vec![volume] };
    stateful(pipeline, COMPONENT, &managed.storage, pod, RABBITMQ_UID)
}

/// The broker's home (its `HOME`) and data directory, on its volume: the image's, as the official one's.
const RABBITMQ_HOME: &str = "/var/lib/rabbitmq";

/// The volume the `definitions` init container writes and the broker reads.
const DEFINITIONS: &str = "definitions";
const DEFINITIONS_DIR: &str = "/var/run/analytics";

/// The `definitions` init container, which writes the broker's users (from the pipeline's credentials,
/// and `env`) into the in-memory volume it returns too. It asks for the broker's `resources` (see the
/// services' `migrate`).
pub(super) fn definitions(
    pipeline: &AnalyticsPipeline,
    image: &Image,
    env: Vec<EnvVar>,
    resources: ResourceRequirements,
) -> (Container, Volume) {
    let secret =
        |key: &str| EnvVarSource { secret_key_ref: Some(credential(pipeline, key)), ..EnvVarSource::default() };
    let mut definitions_env = vec![EnvVar {
        name: "RABBITMQ_DEFAULT_PASS".into(),
        value_from: Some(secret(RABBITMQ_PASSWORD_KEY)),
        ..EnvVar::default()
    }];
    definitions_env.extend(SERVICES.map(|service| EnvVar {
        name: format!("{}_PASSWORD", service.to_uppercase()),
        value_from: Some(secret(&broker_password_key(service))),
        ..EnvVar::default()
    }));
    definitions_env.extend(env);
    let container = Container {
        name: DEFINITIONS.to_owned(),
        image: Some(image.reference()),
        image_pull_policy: Some(image.pull_policy.as_str().to_owned()),
        command: Some(vec![
            "bash".into(),
            "-c".into(),
            include_str!("rabbitmq-definitions.sh").into(),
            "definitions".into(),
            DEFINITIONS_DIR.into(),
        ]),
        env: Some(definitions_env),
        resources: Some(resources),
        security_context: Some(container_security(ReadOnlyRoot::Yes)),
        volume_mounts: Some(vec![VolumeMount {
            name: DEFINITIONS.into(),
            mount_path: DEFINITIONS_DIR.into(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    // In memory: the definitions hold the users' passwords.
    let volume = Volume {
        name: DEFINITIONS.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: Some(Quantity("1Mi".into())),
        }),
        ..Volume::default()
    };
    (container, volume)
}

/// The broker container's mounts of the definitions: the directory, and in conf.d the file that makes
/// the broker import them (the broker reads every file of conf.d).
pub(super) fn definitions_mounts() -> [VolumeMount; 2] {
    [
        VolumeMount {
            name: DEFINITIONS.into(),
            mount_path: DEFINITIONS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: DEFINITIONS.into(),
            mount_path: "/etc/rabbitmq/conf.d/90-analytics.conf".into(),
            sub_path: Some("analytics.conf".into()),
            read_only: Some(true),
            ..VolumeMount::default()
        },
    ]
}
