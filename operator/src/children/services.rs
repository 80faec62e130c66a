//! The command, consumer and query Deployments, and the Services of the two APIs.
//!
//! Each pod gets its connection URLs from the environment: built from the generated credentials for
//! managed backends (Kubernetes expands `$(VAR)` from earlier variables), or read from the user's
//! Secrets for external ones. Migrations run in an init container (`migrate`, which takes a database
//! advisory lock, so concurrent runs are safe) before the new version serves. The APIs read their
//! bearer tokens from a file mounted from the API tokens Secret.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment},
        core::v1::{
            Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler,
            PodSpec, Probe, ResourceRequirements, SecretKeySelector, SecretVolumeSource, Service, ServicePort,
            ServiceSpec, SleepAction, TopologySpreadConstraint, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};

use super::databases::Access;
use super::{
    API_TOKENS, Footprint, Observed, POSTGRES_PASSWORD_KEY, READ_TOKENS_KEY, ReadOnlyRoot, WRITE_TOKENS_KEY, broker,
    broker_password_key, container_security, credential, database_password_key, databases, metadata, name,
    pod_security, pod_template, selector,
};
use crate::crd::{AnalyticsPipeline, ApiAuthentication, Image, ImageSet, SecretKeyRef, ServiceType};

pub const COMMAND_PORT: i32 = 8080;
pub const QUERY_PORT: i32 = 8081;
/// The ports of the services' /healthz, /readyz and /metrics (the consumer serves nothing else).
pub const COMMAND_ADMIN_PORT: i32 = 8090;
pub const QUERY_ADMIN_PORT: i32 = 8091;
pub const CONSUMER_ADMIN_PORT: i32 = 8082;
/// The names of the API's port and of the admin port, in containers and Services.
pub const API_PORT_NAME: &str = "http";
pub const ADMIN_PORT_NAME: &str = "metrics";
/// The distroless `nonroot` user.
pub(super) const NONROOT_UID: i64 = 65532;

/// Which databases a service reads or writes.
#[derive(Clone, Copy)]
pub(super) enum Database {
    Write,
    Read,
}

/// The three services' components, each a Deployment.
pub const COMPONENTS: [&str; 3] = ["command", "consumer", "query"];

pub fn deployments(pipeline: &AnalyticsPipeline, images: &ImageSet, observed: Observed) -> Vec<Deployment> {
    let spec = &pipeline.spec;
    // A hibernated pipeline runs no pods.
    let replicas = |count: i32| if spec.hibernate { 0 } else { count };
    vec![
        deployment(
            pipeline,
            Workload {
                component: "command",
                image: &images.command,
                args: vec![
                    "serve".into(),
                    "--listen".into(),
                    format!("0.0.0.0:{COMMAND_PORT}"),
                    "--admin-listen".into(),
                    format!("0.0.0.0:{COMMAND_ADMIN_PORT}"),
                ],
                api_port: Some(COMMAND_PORT),
                admin_port: COMMAND_ADMIN_PORT,
                replicas: replicas(spec.command.replicas),
                database: Database::Write,
                access: Access::Write,
                migrate: &images.command,
                resources: Footprint::Service.or(spec.command.resources.as_ref()),
                api_tokens: Some(WRITE_TOKENS_KEY),
            },
        ),
        deployment(
            pipeline,
            Workload {
                component: "consumer",
                image: &images.consumer,
                args: vec!["serve".into(), "--listen".into(), format!("0.0.0.0:{CONSUMER_ADMIN_PORT}")],
                api_port: None,
                admin_port: CONSUMER_ADMIN_PORT,
                replicas: replicas(observed.consumer_replicas),
                database: Database::Read,
                access: Access::Write,
                migrate: &images.consumer,
                resources: Footprint::Service.or(spec.consumers.resources.as_ref()),
                api_tokens: None,
            },
        ),
        deployment(
            pipeline,
            Workload {
                component: "query",
                image: &images.query,
                args: vec![
                    "--listen".into(),
                    format!("0.0.0.0:{QUERY_PORT}"),
                    "--admin-listen".into(),
                    format!("0.0.0.0:{QUERY_ADMIN_PORT}"),
                ],
                api_port: Some(QUERY_PORT),
                admin_port: QUERY_ADMIN_PORT,
                replicas: replicas(spec.query.replicas),
                database: Database::Read,
                access: Access::Query,
                // The consumer owns the read schema; the query service waits for it the same way.
                migrate: &images.consumer,
                resources: Footprint::Service.or(spec.query.resources.as_ref()),
                api_tokens: Some(READ_TOKENS_KEY),
            },
        ),
    ]
}

pub fn services(pipeline: &AnalyticsPipeline) -> Vec<Service> {
    let spec = &pipeline.spec;
    [("command", COMMAND_PORT, &spec.command), ("query", QUERY_PORT, &spec.query)]
        .into_iter()
        .map(|(component, port, api)| Service {
            metadata: metadata(pipeline, component, component),
            spec: Some(ServiceSpec {
                type_: Some(
                    match api.service_type {
                        ServiceType::ClusterIP => "ClusterIP",
                        ServiceType::NodePort => "NodePort",
                        ServiceType::LoadBalancer => "LoadBalancer",
                    }
                    .to_owned(),
                ),
                selector: Some(selector(pipeline, component)),
                // The API only: the admin port is for the kubelet and monitoring, which reach pods.
                ports: Some(vec![ServicePort {
                    name: Some(API_PORT_NAME.into()),
                    port,
                    target_port: Some(IntOrString::String(API_PORT_NAME.into())),
                    node_port: api.node_port.filter(|_| api.service_type == ServiceType::NodePort),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        })
        .collect()
}

struct Workload<'a> {
    component: &'static str,
    image: &'a Image,
    args: Vec<String>,
    /// An API's port, which a Service sends requests to: then a stopping pod keeps serving until the
    /// endpoints have dropped it, and a rollout adds the new pod before it removes an old one.
    api_port: Option<i32>,
    /// The port of /healthz, /readyz and /metrics.
    admin_port: i32,
    replicas: i32,
    database: Database,
    /// Which of the databases' hosts it connects to: only the query service reads where the spec says.
    access: Access,
    /// The image whose `migrate` runs before the service starts.
    migrate: &'a Image,
    resources: ResourceRequirements,
    /// For an API: the key of the API tokens Secret that holds the tokens it accepts.
    api_tokens: Option<&'static str>,
}

/// Where an API's tokens file is mounted. A Secret volume without `subPath` is updated in place by the
/// kubelet, and the service re-reads the file, so editing the Secret rotates the tokens.
const API_TOKENS_DIR: &str = "/var/run/secrets/analytics/api";

/// How long a stopping API pod goes on serving: kube-proxy and other clients' endpoint watches need a
/// moment to stop sending it new connections (then the service drains gracefully on SIGTERM).
const DEREGISTRATION_SECONDS: i64 = 5;

fn deployment(pipeline: &AnalyticsPipeline, workload: Workload<'_>) -> Deployment {
    let env = environment(pipeline, &[workload.database], Identity::Service(workload.component), workload.access);
    let (api_env, api_tokens) = api_authentication(pipeline, workload.api_tokens);
    let ca = ca_bundle(pipeline);
    let mounts = |with_tokens: bool| {
        let mounts: Vec<VolumeMount> =
            ca.iter().chain(api_tokens.iter().filter(|_| with_tokens)).map(|(_, mount)| mount.clone()).collect();
        (!mounts.is_empty()).then_some(mounts)
    };
    let http_probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(ADMIN_PORT_NAME.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        ..Probe::default()
    };
    let container = Container {
        name: workload.component.to_owned(),
        image: Some(workload.image.reference()),
        image_pull_policy: Some(workload.image.pull_policy.as_str().to_owned()),
        args: Some(workload.args),
        ports: Some(
            workload
                .api_port
                .map(|port| (API_PORT_NAME, port))
                .into_iter()
                .chain([(ADMIN_PORT_NAME, workload.admin_port)])
                .map(|(name, port)| ContainerPort {
                    name: Some(name.into()),
                    container_port: port,
                    ..ContainerPort::default()
                })
                .collect(),
        ),
        env: Some([env.clone(), api_env].concat()),
        volume_mounts: mounts(true),
        liveness_probe: Some(http_probe("/healthz", 10)),
        readiness_probe: Some(http_probe("/readyz", 5)),
        resources: Some(workload.resources.clone()),
        security_context: Some(container_security(ReadOnlyRoot::Yes)),
        lifecycle: workload.api_port.map(|_| Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction { seconds: DEREGISTRATION_SECONDS }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        ..Container::default()
    };
    let migrate = Container {
        name: "migrate".to_owned(),
        image: Some(workload.migrate.reference()),
        image_pull_policy: Some(workload.migrate.pull_policy.as_str().to_owned()),
        args: Some(vec!["migrate".into()]),
        // Migrations write, the query service's too.
        env: Some(environment(pipeline, &[workload.database], Identity::Administrator, Access::Write)),
        volume_mounts: mounts(false),
        security_context: Some(container_security(ReadOnlyRoot::Yes)),
        // The service's own: an init container adds nothing to what the pod asks for, and in a namespace
        // whose ResourceQuota demands requests and limits, a container without them keeps the pod out.
        resources: Some(workload.resources.clone()),
        ..Container::default()
    };
    let annotations = BTreeMap::from([
        ("prometheus.io/scrape".to_owned(), "true".to_owned()),
        ("prometheus.io/port".to_owned(), workload.admin_port.to_string()),
        ("prometheus.io/path".to_owned(), "/metrics".to_owned()),
    ]);
    Deployment {
        metadata: metadata(pipeline, workload.component, workload.component),
        spec: Some(DeploymentSpec {
            replicas: Some(workload.replicas),
            selector: LabelSelector {
                match_labels: Some(selector(pipeline, workload.component)),
                ..LabelSelector::default()
            },
            template: pod_template(
                pipeline,
                workload.component,
                annotations,
                PodSpec {
                    init_containers: Some(vec![migrate]),
                    containers: vec![container],
                    volumes: {
                        let volumes: Vec<Volume> =
                            ca.iter().chain(api_tokens.iter()).map(|(volume, _)| volume.clone()).collect();
                        (!volumes.is_empty()).then_some(volumes)
                    },
                    security_context: Some(pod_security(NONROOT_UID)),
                    topology_spread_constraints: Some(spread(pipeline, workload.component)),
                    ..PodSpec::default()
                },
            ),
            strategy: workload.api_port.map(|_| DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// Spreads `component`'s pods over nodes, and over zones where the nodes have them, as far as the
/// scheduler can (a pod that cannot be placed evenly is still placed). Only the pods of one rollout's
/// ReplicaSet count, so the old pods of a rollout do not skew where the new ones go.
fn spread(pipeline: &AnalyticsPipeline, component: &str) -> Vec<TopologySpreadConstraint> {
    ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
        .into_iter()
        .map(|topology_key| TopologySpreadConstraint {
            max_skew: 1,
            topology_key: topology_key.to_owned(),
            when_unsatisfiable: "ScheduleAnyway".to_owned(),
            label_selector: Some(LabelSelector {
                match_labels: Some(selector(pipeline, component)),
                ..LabelSelector::default()
            }),
            match_label_keys: Some(vec!["pod-template-hash".to_owned()]),
            ..TopologySpreadConstraint::default()
        })
        .collect()
}

/// A Secret's keys as files of a read-only volume, mounted at `dir`. Without `subPath`, so that the
/// kubelet updates the files in place when the Secret changes.
fn secret_volume(name: &str, secret: String, items: Vec<KeyToPath>, dir: &str) -> (Volume, VolumeMount) {
    let volume = Volume {
        name: name.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret),
            items: Some(items),
            default_mode: Some(0o440),
            optional: Some(false),
        }),
        ..Volume::default()
    };
    let mount = VolumeMount {
        name: name.to_owned(),
        mount_path: dir.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    (volume, mount)
}

/// What an API needs to authenticate its callers as the spec asks: its tokens file from the API tokens
/// Secret (the environment variable and the volume), or leave to run open. Nothing for the consumer.
fn api_authentication(pipeline: &AnalyticsPipeline, key: Option<&str>) -> (Vec<EnvVar>, Option<(Volume, VolumeMount)>) {
    let Some(key) = key else { return (Vec::new(), None) };
    let value =
        |name: &str, value: &str| EnvVar { name: name.to_owned(), value: Some(value.to_owned()), ..EnvVar::default() };
    match pipeline.spec.api_authentication {
        ApiAuthentication::None => (vec![value("ALLOW_UNAUTHENTICATED", "true")], None),
        ApiAuthentication::BearerToken => {
            let items = vec![KeyToPath { key: key.to_owned(), path: "tokens".to_owned(), mode: None }];
            let volume = secret_volume(API_TOKENS, name(pipeline, API_TOKENS), items, API_TOKENS_DIR);
            (vec![value("API_TOKENS_FILE", &format!("{API_TOKENS_DIR}/tokens"))], Some(volume))
        }
    }
}

/// Where the CA bundle of `spec.tls.caBundle` is mounted, in every container that connects to a backend.
pub const CA_BUNDLE_DIR: &str = "/var/run/secrets/analytics/tls";

/// The CA bundle as `ca.crt` in [`CA_BUNDLE_DIR`], if the spec names one.
pub(super) fn ca_bundle(pipeline: &AnalyticsPipeline) -> Option<(Volume, VolumeMount)> {
    let reference = pipeline.spec.tls.as_ref()?.ca_bundle.as_ref()?;
    let items = vec![KeyToPath { key: reference.key.clone(), path: "ca.crt".to_owned(), mode: None }];
    Some(secret_volume("ca-bundle", reference.name.clone(), items, CA_BUNDLE_DIR))
}

/// Whom a container connects to the managed backends as.
#[derive(Clone, Copy)]
pub(super) enum Identity {
    /// The service's own database role and broker user.
    Service(&'static str),
    /// The database's administrator, who owns the schema: for the migrations, which need no broker.
    Administrator,
}

/// The connection settings a container needs: the URL of each database it `uses` and, for a service,
/// the AMQP URL. With managed backends they carry `identity`'s user and password; external backends are
/// the user's URLs.
pub(super) fn environment(
    pipeline: &AnalyticsPipeline,
    uses: &[Database],
    identity: Identity,
    access: Access,
) -> Vec<EnvVar> {
    let from_secret = |name: &str, selector: SecretKeySelector| EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource { secret_key_ref: Some(selector), ..EnvVarSource::default() }),
        ..EnvVar::default()
    };
    let value = |name: &str, value: String| EnvVar { name: name.to_owned(), value: Some(value), ..EnvVar::default() };
    let user_secret = |reference: &SecretKeyRef| SecretKeySelector {
        name: reference.name.clone(),
        key: reference.key.clone(),
        optional: Some(false),
    };
    let mut env = vec![value("RUST_LOG", "info".into())];
    match &pipeline.spec.postgres.external {
        Some(external) => {
            for database in uses {
                let (variable, reference) = match database {
                    Database::Write => ("WRITE_DATABASE_URL", &external.write_url),
                    Database::Read => ("READ_DATABASE_URL", &external.read_url),
                };
                env.push(from_secret(variable, user_secret(reference)));
            }
        }
        None => {
            let (user, key) = match identity {
                Identity::Service(service) => (service, database_password_key(service)),
                Identity::Administrator => (databases::USER, POSTGRES_PASSWORD_KEY.to_owned()),
            };
            env.push(from_secret("POSTGRES_PASSWORD", credential(pipeline, &key)));
            for database in uses {
                let (variable, name) = match database {
                    Database::Write => ("WRITE_DATABASE_URL", databases::WRITE_DATABASE),
                    Database::Read => ("READ_DATABASE_URL", databases::READ_DATABASE),
                };
                env.push(value(
                    variable,
                    format!(
                        "postgres://{user}:$(POSTGRES_PASSWORD)@{}:{}/{name}{}",
                        databases::host(pipeline, access),
                        databases::PORT,
                        databases::url_query(pipeline, access),
                    ),
                ));
            }
        }
    }
    let Identity::Service(service) = identity else { return env };
    match &pipeline.spec.rabbitmq.external {
        Some(external) => env.push(from_secret("AMQP_URL", user_secret(&external.url))),
        None => {
            env.push(from_secret("RABBITMQ_PASSWORD", credential(pipeline, &broker_password_key(service))));
            env.push(value(
                "AMQP_URL",
                format!("amqp://{service}:$(RABBITMQ_PASSWORD)@{}:{}/%2f", broker::host(pipeline), broker::PORT),
            ));
        }
    }
    env
}
