//! The managed PostgreSQL: one StatefulSet with both databases (`analytics_write`, `analytics_read`),
//! a headless Service, and an init script that creates the read database on first start. A second
//! container, `roles`, gives each service its own least-privilege role on every start
//! (`postgres-roles.sql`); the administrator keeps the schema and runs the migrations.
//!
//! Its PVC follows the pipeline's deletion policy through the StatefulSet's
//! `persistentVolumeClaimRetentionPolicy` (Retain: the claim outlives everything; Delete: it goes with the
//! StatefulSet), and the reconciler's finalizer deletes leftover claims under Delete.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec},
        core::v1::{
            ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource, ExecAction, KeyToPath,
            PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec, Probe, Service, Volume, VolumeMount,
            VolumeResourceRequirements,
        },
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::LabelSelector},
};

use super::{
    Footprint, POSTGRES_PASSWORD_KEY, ReadOnlyRoot, SERVICES, container_security, credential, data_labels,
    database_password_key, headless_service, metadata, name, pod_security, pod_template, selector,
};
use crate::crd::{
    AnalyticsPipeline, CloudNativePg, DeletionPolicy, ExternalPostgres, Image, Managed, ReadsFrom, Storage,
};

pub const COMPONENT: &str = "postgres";
pub const PORT: i32 = 5432;
pub const USER: &str = "analytics";
pub const WRITE_DATABASE: &str = "analytics_write";
pub const READ_DATABASE: &str = "analytics_read";
/// The uid of the `postgres` user in the official image.
pub(super) const POSTGRES_UID: i64 = 999;

/// How a pipeline's databases are run.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// One pod the operator runs (also when the spec names no mode).
    Managed(Managed),
    /// A CloudNativePG cluster the operator asks for.
    CloudNativePg(CloudNativePg),
    /// Someone else's.
    External(ExternalPostgres),
}

impl Mode {
    /// Whether the operator makes the databases (and so their credentials and roles).
    pub fn is_in_cluster(&self) -> bool {
        !matches!(self, Self::External(_))
    }
}

pub fn mode(pipeline: &AnalyticsPipeline) -> Mode {
    let postgres = &pipeline.spec.postgres;
    match (&postgres.external, &postgres.cloud_native_pg) {
        (Some(external), _) => Mode::External(external.clone()),
        (None, Some(cluster)) => Mode::CloudNativePg(cluster.clone()),
        (None, None) => Mode::Managed(postgres.managed.clone().unwrap_or_default()),
    }
}

/// Who connects: a writer (the command service, the consumers, migrations and maintenance) or the query
/// service, which may read from standbys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Write,
    Query,
}

/// The host name of the databases for `access`, in the two in-cluster modes: the managed pod's Service,
/// or one of the CloudNativePG cluster's Services.
pub fn host(pipeline: &AnalyticsPipeline, access: Access) -> String {
    let cluster = name(pipeline, COMPONENT);
    match (mode(pipeline), access) {
        (Mode::CloudNativePg(spec), Access::Query) => match spec.query_reads_from {
            ReadsFrom::Standbys => format!("{cluster}-ro"),
            ReadsFrom::AnyInstance => format!("{cluster}-r"),
            ReadsFrom::Primary => format!("{cluster}-rw"),
        },
        (Mode::CloudNativePg(_), Access::Write) => format!("{cluster}-rw"),
        _ => cluster,
    }
}

/// The query of the databases' URLs for `access`: the query service, when it reads the standbys, asks for
/// a standby (libpq's `target_session_attrs`), so that its connections to a standby that is promoted, by a
/// failover or a switchover, are closed rather than go on loading the new primary.
pub fn url_query(pipeline: &AnalyticsPipeline, access: Access) -> &'static str {
    match (mode(pipeline), access) {
        (Mode::CloudNativePg(spec), Access::Query) if spec.query_reads_from == ReadsFrom::Standbys => {
            "?target_session_attrs=standby"
        }
        _ => "",
    }
}

/// The key of the init ConfigMap that creates the read database on a new cluster (the image's
/// entrypoint runs it once), and the one with the services' roles (the `roles` container runs it on
/// every start).
const READ_DATABASE_SCRIPT: &str = "10-read-database.sql";
const ROLES_SCRIPT: &str = "roles.sql";

/// The scripts, for the managed pod; CloudNativePG creates the read database itself (see
/// [`super::cloudnative_pg`]), so there the ConfigMap has only the roles.
pub fn init_script(pipeline: &AnalyticsPipeline) -> ConfigMap {
    let mut data = BTreeMap::from([(ROLES_SCRIPT.to_owned(), include_str!("postgres-roles.sql").to_owned())]);
    if matches!(mode(pipeline), Mode::Managed(_)) {
        data.insert(
            READ_DATABASE_SCRIPT.to_owned(),
            format!(
                "-- The read side's database; the image creates {WRITE_DATABASE} itself.\ncreate database {READ_DATABASE};\n"
            ),
        );
    }
    ConfigMap { metadata: metadata(pipeline, INIT_SCRIPTS, COMPONENT), data: Some(data), ..ConfigMap::default() }
}

/// The ConfigMap of [`init_script`], `<pipeline>-postgres-init`.
pub(super) const INIT_SCRIPTS: &str = "postgres-init";

/// The `roles` program: wait for the server at `$PGHOST`, apply the roles script as the administrator.
/// It stops at once on SIGINT, the postgres image's stop signal (which the runtime sends to every
/// container of the image), and on SIGTERM. psql exits 2 when it cannot connect or loses the connection (the server is still starting, the
/// administrator's password is not set yet, a failover), which is tried again; any other failure, an
/// error in the script, is not.
const APPLY_ROLES: &str = r#"set -eu
trap 'exit 0' INT TERM
until pg_isready -q -p 5432 -U "$PGUSER" -d analytics_write; do sleep 1; done
until psql -X -q -p 5432 -d analytics_write -f /etc/analytics/roles.sql; do
  status=$?
  [ "$status" -eq 2 ] || exit "$status"
  sleep 2
done
echo "the services' roles are in place"
"#;

/// In the managed pod, the roles container then stays (a container that exits is restarted); a failure
/// exits, and so retries.
const STAY: &str = "sleep infinity &\nwait\n";

/// How long the roles program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Roles {
    /// Beside the managed server, on its loopback, for as long as the pod runs.
    Sidecar,
    /// Once, as a Job, against the CloudNativePG primary.
    Once,
}

/// The container that gives each service its own role (see `postgres-roles.sql`).
pub(super) fn roles_container(pipeline: &AnalyticsPipeline, image: &Image, roles: Roles) -> Container {
    let secret = |name: &str, key: &str| EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource { secret_key_ref: Some(credential(pipeline, key)), ..EnvVarSource::default() }),
        ..EnvVar::default()
    };
    let (pg_host, program) = match roles {
        Roles::Sidecar => ("127.0.0.1".to_owned(), format!("{APPLY_ROLES}{STAY}")),
        Roles::Once => (host(pipeline, Access::Write), APPLY_ROLES.to_owned()),
    };
    let mut env = vec![
        EnvVar { name: "PGHOST".into(), value: Some(pg_host), ..EnvVar::default() },
        EnvVar { name: "PGUSER".into(), value: Some(USER.into()), ..EnvVar::default() },
        EnvVar { name: "PGCONNECT_TIMEOUT".into(), value: Some("5".into()), ..EnvVar::default() },
        secret("PGPASSWORD", POSTGRES_PASSWORD_KEY),
    ];
    env.extend(
        SERVICES
            .map(|service| secret(&format!("{}_PASSWORD", service.to_uppercase()), &database_password_key(service))),
    );
    Container {
        name: "roles".to_owned(),
        image: Some(image.reference()),
        image_pull_policy: Some(image.pull_policy.as_str().to_owned()),
        command: Some(vec!["bash".into(), "-c".into(), program]),
        env: Some(env),
        resources: Some(Footprint::Helper.requirements()),
        security_context: Some(container_security(ReadOnlyRoot::Yes)),
        volume_mounts: Some(vec![VolumeMount {
            name: "roles".into(),
            mount_path: "/etc/analytics".into(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        ..Container::default()
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
        resources: Some(Footprint::Backend.or(managed.resources.as_ref())),
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
        Pod {
            containers: vec![container, roles_container(pipeline, image, Roles::Sidecar)],
            init_containers: Vec::new(),
            volumes: vec![script_volume(pipeline, "init", READ_DATABASE_SCRIPT), roles_volume(pipeline)],
        },
        POSTGRES_UID,
    )
}

/// The volume `roles` that [`roles_container`] mounts.
pub(super) fn roles_volume(pipeline: &AnalyticsPipeline) -> Volume {
    script_volume(pipeline, "roles", ROLES_SCRIPT)
}

/// A volume of one key of the init ConfigMap.
fn script_volume(pipeline: &AnalyticsPipeline, volume: &str, key: &str) -> Volume {
    Volume {
        name: volume.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: name(pipeline, INIT_SCRIPTS),
            items: Some(vec![KeyToPath { key: key.into(), path: key.into(), mode: None }]),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// The containers and volumes of a backend's pod, beside its `data` claim.
pub(super) struct Pod {
    pub containers: Vec<Container>,
    pub init_containers: Vec<Container>,
    pub volumes: Vec<Volume>,
}

/// A one-replica StatefulSet of `pod`, with a `data` volume claim (for its containers to mount) that
/// follows the deletion policy. Shared by the databases and the broker.
pub(super) fn stateful(
    pipeline: &AnalyticsPipeline,
    component: &str,
    storage: &Storage,
    pod: Pod,
    uid: i64,
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
            // A hibernated pipeline runs no pods; the claim stays.
            replicas: Some(if pipeline.spec.hibernate { 0 } else { 1 }),
            service_name: Some(name(pipeline, component)),
            selector: LabelSelector { match_labels: Some(selector(pipeline, component)), ..LabelSelector::default() },
            template: pod_template(
                pipeline,
                component,
                BTreeMap::new(),
                PodSpec {
                    containers: pod.containers,
                    init_containers: (!pod.init_containers.is_empty()).then_some(pod.init_containers),
                    volumes: (!pod.volumes.is_empty()).then_some(pod.volumes),
                    security_context: Some(pod_security(uid)),
                    ..PodSpec::default()
                },
            ),
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
