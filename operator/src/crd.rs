//! The `AnalyticsPipeline` custom resource: what a user asks for (spec, with defaults, so a name alone is
//! a valid pipeline) and what the operator reports back (status).
//!
//! Validation lives in the schema wherever the API server can do it: OpenAPI bounds on numbers and CEL
//! rules across fields (`min ≤ max`, managed xor external). `crds/analyticspipeline.yaml` is generated from
//! these types by `make crds`.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{LocalObjectReference, ResourceRequirements, Toleration},
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Everything a pipeline is made of; every field has a default.
// Each printcolumn(..) repeats `type_ = ..` by design; clippy reads that as a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "analytics.example.com",
    version = "v1alpha1",
    kind = "AnalyticsPipeline",
    namespaced,
    shortname = "ap",
    status = "AnalyticsPipelineStatus",
    derive = "PartialEq",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Lag", type_ = "number", json_path = ".status.lagSeconds"),
    printcolumn(name = "Pending", type_ = "integer", json_path = ".status.pendingEvents"),
    printcolumn(name = "Consumers", type_ = "integer", json_path = ".status.consumerReplicas"),
    printcolumn(
        name = "Consistent",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"ReadModelConsistent\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Primary", type_ = "string", json_path = ".status.postgres.primary", priority = 1),
    printcolumn(name = "Timeline", type_ = "integer", json_path = ".status.postgres.timeline", priority = 1)
)]
#[serde(rename_all = "camelCase")]
pub struct AnalyticsPipelineSpec {
    /// Container images of the three services.
    #[serde(default)]
    pub images: Images,
    /// The command API (writes).
    #[serde(default)]
    pub command: ApiSpec,
    /// The query API (analytics).
    #[serde(default)]
    pub query: ApiSpec,
    /// The consumers: autoscaled on queue depth, or a fixed count.
    #[serde(default)]
    pub consumers: ConsumerSpec,
    /// The write and read databases.
    #[serde(default)]
    pub postgres: PostgresSpec,
    /// The broker.
    #[serde(default)]
    pub rabbitmq: RabbitmqSpec,
    /// Node labels every pod of the pipeline must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations for every pod of the pipeline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// The PriorityClass of every pod of the pipeline; the cluster's default if unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Secrets (in the pipeline's namespace) that every pod of the pipeline pulls its images with, for a
    /// private registry. Unset, the operator's default ones (the chart's `imagePullSecrets`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Labels and annotations added to every pod of the pipeline (the operator's own win where they meet).
    #[serde(default, skip_serializing_if = "PodMetadata::is_empty")]
    pub pod_metadata: PodMetadata,
    /// Scales the whole pipeline to no pods, keeping its volumes and so its data; false resumes it with
    /// the same orders. External backends are left as they are.
    #[serde(default)]
    pub hibernate: bool,
    /// What happens to the data (PVCs) when the pipeline is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Who may call the two APIs.
    #[serde(default)]
    pub api_authentication: ApiAuthentication,
    /// TLS to external backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Checks of the read model against the write side, and its rebuilds.
    #[serde(default)]
    pub read_model: ReadModelSpec,
}

/// What every pod of a pipeline carries besides the operator's labels.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
pub struct PodMetadata {
    /// Not under `app.kubernetes.io/`, `cnpg.io/` or `analytics.example.com/`: the operator's, CloudNativePG's
    /// and the RabbitMQ cluster operator's selectors are made of those.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("self.all(k, !k.startsWith('app.kubernetes.io/') && !k.startsWith('cnpg.io/') && !k.startsWith('analytics.example.com/'))").message("podMetadata.labels must not use the app.kubernetes.io/, cnpg.io/ or analytics.example.com/ prefixes: the selectors are made of them"))]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl PodMetadata {
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.annotations.is_empty()
    }
}

/// `consumer-service verify` on a schedule, as a CronJob; `consumer-service rebuild` on request, as a
/// Job. Both run the consumer image as the databases' administrator (a rebuild creates and swaps
/// tables; neither needs the broker).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadModelSpec {
    /// When the read model is compared with the write side: a CronJob schedule, `@hourly` or five cron
    /// fields, in the time zone of the cluster's controller manager.
    #[serde(default = "hourly")]
    #[x_kube(validation = Rule::new("self.size() > 0").message("verifySchedule must not be empty"))]
    pub verify_schedule: String,
    /// Pauses the scheduled verify; a run under way finishes.
    #[serde(default)]
    pub suspend_verify: bool,
    /// A new value asks for one online rebuild of every view, e.g. the time of asking
    /// (`kubectl patch ap shop --type merge -p '{"spec":{"readModel":{"rebuildRequestedAt":"2026-12-04T10:00:00Z"}}}'`).
    /// The rebuild of a value runs once; `status.readModel.rebuild` follows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuild_requested_at: Option<Time>,
}

impl Default for ReadModelSpec {
    fn default() -> Self {
        Self { verify_schedule: hourly(), suspend_verify: false, rebuild_requested_at: None }
    }
}

fn hourly() -> String {
    "@hourly".to_owned()
}

/// Trust for external backends that use TLS. The URLs ask for it: `sslmode=verify-full` for
/// PostgreSQL, `amqps://` for RabbitMQ; certificates are checked against the system's roots, plus this
/// bundle if given.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// PEM certificates of the CAs that sign the backends' certificates, for a private CA. Mounted into
    /// every service at `/var/run/secrets/analytics/tls/ca.crt`; the URLs name that file
    /// (`sslrootcert=/var/run/secrets/analytics/tls/ca.crt`, `cacertfile=/var/run/secrets/analytics/tls/ca.crt`).
    /// The operator reads it from the Secret for its own broker connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<SecretKeyRef>,
}

/// How the command and query APIs authenticate their callers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ApiAuthentication {
    /// A bearer token: from the `write` key of the `<name>-api-tokens` Secret for the command API, from
    /// its `read` key for the query API, one token per line. The operator generates the Secret once if
    /// it does not exist; editing it rotates the tokens without a restart.
    #[default]
    BearerToken,
    /// None: for a mesh or gateway that authenticates in front of the APIs.
    None,
}

/// Images for this pipeline only. Each one left out is the operator's default for it, which the chart
/// sets (its `images` values), so that a private or air-gapped registry is one setting for every pipeline.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Images {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Image>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<Image>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<Image>,
    /// The managed PostgreSQL: an image with the official `postgres` image's environment contract.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<Image>,
    /// The managed RabbitMQ: an image with the official `rabbitmq` image's environment contract.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rabbitmq: Option<Image>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    pub repository: String,
    /// Required unless `digest` is given.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tag: String,
    /// Pins the image by content, `sha256:` and 64 hex digits. With a tag as well, the digest decides
    /// what runs and the tag only documents it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^sha256:[a-f0-9]{64}$"))]
    pub digest: Option<String>,
    #[serde(default)]
    pub pull_policy: PullPolicy,
}

impl Image {
    /// `repository:tag`, `repository@digest` or `repository:tag@digest`.
    pub fn reference(&self) -> String {
        let mut reference = self.repository.clone();
        if !self.tag.is_empty() {
            reference = format!("{reference}:{}", self.tag);
        }
        if let Some(digest) = &self.digest {
            reference = format!("{reference}@{digest}");
        }
        reference
    }

    /// Whether it names a tag or a digest (an image without either is refused as an invalid spec).
    pub fn is_pinned(&self) -> bool {
        !self.tag.is_empty() || self.digest.is_some()
    }
}

/// Whether `digest` is `sha256:` and 64 lower-case hex digits.
fn is_digest(digest: &str) -> bool {
    digest
        .strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// `REPOSITORY:TAG`, `REPOSITORY@sha256:…` or `REPOSITORY:TAG@sha256:…`, as the operator's image flags take
/// it; the pull policy is the default.
impl std::str::FromStr for Image {
    type Err = String;

    fn from_str(reference: &str) -> Result<Self, Self::Err> {
        let invalid = || format!("expected REPOSITORY:TAG or REPOSITORY[:TAG]@sha256:DIGEST, got {reference:?}");
        let (name, digest) = match reference.split_once('@') {
            Some((name, digest)) if is_digest(digest) => (name, Some(digest.to_owned())),
            Some(_) => return Err(invalid()),
            None => (reference, None),
        };
        // The tag is after the last colon that follows the last slash (a registry may have a port).
        let name_start = name.rfind('/').map_or(0, |slash| slash + 1);
        let (repository, tag) = match name[name_start..].rfind(':').map(|colon| name_start + colon) {
            Some(colon) if colon > 0 && colon + 1 < name.len() => (&name[..colon], &name[colon + 1..]),
            Some(_) => return Err(invalid()),
            None if digest.is_some() && !name.is_empty() => (name, ""),
            None => return Err(invalid()),
        };
        Ok(Self { repository: repository.to_owned(), tag: tag.to_owned(), digest, pull_policy: PullPolicy::default() })
    }
}

/// Every image a pipeline runs: the operator's defaults, or those with a pipeline's overrides applied;
/// and the Secrets its pods pull them with.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSet {
    pub command: Image,
    pub consumer: Image,
    pub query: Image,
    pub postgres: Image,
    pub rabbitmq: Image,
    /// The pull Secrets of a pipeline whose spec names none.
    pub pull_secrets: Vec<LocalObjectReference>,
}

/// The project's images are published as `<registry>/analytics-<service>:<version>`.
pub const IMAGE_REGISTRY: &str = "ghcr.io/analytics-pipeline";

impl Default for ImageSet {
    /// The published images of this version, and the official PostgreSQL and RabbitMQ images.
    fn default() -> Self {
        let ours = |service: &str| Image {
            repository: format!("{IMAGE_REGISTRY}/analytics-{service}"),
            tag: env!("CARGO_PKG_VERSION").to_owned(),
            digest: None,
            pull_policy: PullPolicy::default(),
        };
        let official = |repository: &str, tag: &str| Image {
            repository: repository.to_owned(),
            tag: tag.to_owned(),
            digest: None,
            pull_policy: PullPolicy::default(),
        };
        Self {
            command: ours("command"),
            consumer: ours("consumer"),
            query: ours("query"),
            postgres: official("postgres", "16"),
            rabbitmq: official("rabbitmq", "4.3-management"),
            pull_secrets: Vec::new(),
        }
    }
}

impl ImageSet {
    /// These images, with the ones `overrides` names replaced.
    pub fn with_overrides(&self, overrides: &Images) -> Self {
        let pick = |image: &Option<Image>, default: &Image| image.clone().unwrap_or_else(|| default.clone());
        Self {
            command: pick(&overrides.command, &self.command),
            consumer: pick(&overrides.consumer, &self.consumer),
            query: pick(&overrides.query, &self.query),
            postgres: pick(&overrides.postgres, &self.postgres),
            rabbitmq: pick(&overrides.rabbitmq, &self.rabbitmq),
            pull_secrets: self.pull_secrets.clone(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// The name Kubernetes uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// One of the two HTTP APIs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiSpec {
    #[serde(default = "two")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 100").message("replicas must be from 0 to 100"))]
    pub replicas: i32,
    /// How the API is exposed.
    #[serde(default)]
    pub service_type: ServiceType,
    /// A fixed node port (30000-32767) when serviceType is NodePort, e.g. for kind's port mappings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 30000 && self <= 32767").message("nodePort must be from 30000 to 32767"))]
    pub node_port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for ApiSpec {
    fn default() -> Self {
        Self { replicas: two(), service_type: ServiceType::default(), node_port: None, resources: None }
    }
}

fn two() -> i32 {
    2
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

/// Consumers scale on the depth of `order-events` (KEDA's queueLength semantics): desired =
/// clamp(ceil(depth / targetQueueDepthPerReplica), minReplicas, maxReplicas), and minReplicas while the
/// depth is at or below activationQueueDepth. Up at once; down only after the stabilization window.
/// `replicas` fixes the count instead.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas"))]
pub struct ConsumerSpec {
    /// A fixed number of consumers; autoscaling is off when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 100").message("replicas must be from 0 to 100"))]
    pub replicas: Option<i32>,
    #[serde(default = "one")]
    #[x_kube(validation = Rule::new("self >= 0").message("minReplicas must not be negative"))]
    pub min_replicas: i32,
    #[serde(default = "ten")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100").message("maxReplicas must be from 1 to 100"))]
    pub max_replicas: i32,
    /// Messages one consumer is expected to have waiting.
    #[serde(default = "thousand")]
    #[x_kube(validation = Rule::new("self >= 1").message("targetQueueDepthPerReplica must be at least 1"))]
    pub target_queue_depth_per_replica: i64,
    /// At or below this depth the pipeline runs minReplicas consumers.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= 0").message("activationQueueDepth must not be negative"))]
    pub activation_queue_depth: i64,
    /// How long the desired count must stay lower before consumers are removed.
    #[serde(default = "five_minutes")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 3600").message("scaleDownStabilizationSeconds must be from 0 to 3600"))]
    pub scale_down_stabilization_seconds: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for ConsumerSpec {
    fn default() -> Self {
        Self {
            replicas: None,
            min_replicas: one(),
            max_replicas: ten(),
            target_queue_depth_per_replica: thousand(),
            activation_queue_depth: 0,
            scale_down_stabilization_seconds: five_minutes(),
            resources: None,
        }
    }
}

fn one() -> i32 {
    1
}
fn ten() -> i32 {
    10
}
fn thousand() -> i64 {
    1000
}
fn five_minutes() -> i64 {
    300
}

/// The write and read databases, in one of three ways: `managed`, one PostgreSQL pod that the operator
/// runs (the default, for development); `cloudNativePG`, a replicated cluster with automatic failover
/// that the operator asks CloudNativePG for (for production); or `external`, databases that someone
/// else runs. At most one of them is given; none means `managed`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.managed), has(self.cloudNativePG), has(self.external)].filter(x, x).size() <= 1").message("postgres is one of managed, cloudNativePG or external"))]
#[x_kube(validation = Rule::new("!has(self.managed) || has(oldSelf.managed) || has(oldSelf.cloudNativePG) || has(oldSelf.external) || !has(self.managed.storage) || !isQuantity(self.managed.storage.size) || quantity(self.managed.storage.size).compareTo(quantity('10Gi')) >= 0").message("storage.size cannot shrink: the managed database's volume has the default 10Gi"))]
pub struct PostgresSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<Managed>,
    #[serde(default, rename = "cloudNativePG", skip_serializing_if = "Option::is_none")]
    pub cloud_native_pg: Option<CloudNativePg>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalPostgres>,
}

/// Both databases in one CloudNativePG `Cluster` (`<pipeline>-postgres`): a primary and streaming
/// standbys, with automatic failover. CloudNativePG (1.30) must be installed in the cluster. The image is
/// `images.postgres`; its tag must begin with the PostgreSQL major version (`15`, `16.4`…). The writers
/// connect through `<pipeline>-postgres-rw`, which follows the primary.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.synchronous.number < self.instances").message("synchronous.number must be less than instances: only standbys acknowledge a commit (set synchronous.number to 0 for a single instance)"))]
#[x_kube(validation = Rule::new("self.queryReadsFrom != 'Standbys' || self.instances >= 2").message("queryReadsFrom Standbys needs at least 2 instances (use Primary for a single instance)"))]
pub struct CloudNativePg {
    /// PostgreSQL instances: one primary and the rest streaming standbys.
    #[serde(default = "three")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 9").message("instances must be from 1 to 9"))]
    pub instances: i32,
    /// Each instance's volume.
    #[serde(default)]
    pub storage: Storage,
    /// Each instance's resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// How many standbys must have a commit on disk before it is acknowledged.
    #[serde(default)]
    pub synchronous: Synchronous,
    /// Where the query service reads the read database.
    #[serde(default)]
    pub query_reads_from: ReadsFrom,
    /// A standby is ready, and so serves reads through `-ro` and `-r`, only while it streams from the
    /// primary with at most this much WAL received and not yet replayed (CloudNativePG's `streaming`
    /// readiness probe). A standby that rejoins after a failover, or falls behind, serves no reads until
    /// it has caught up.
    #[serde(default = "sixteen_mebibytes")]
    #[x_kube(validation = Rule::new("isQuantity(self)").message("standbyMaximumLag must be a quantity of bytes, e.g. 16Mi"))]
    pub standby_maximum_lag: String,
    /// Seconds a stopping primary waits for its clients before it stops fast (CloudNativePG's default,
    /// 180, if unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0").message("smartShutdownTimeout must not be negative"))]
    pub smart_shutdown_timeout: Option<i32>,
    /// Seconds a primary that is being switched over may take to shut down and archive its WAL before
    /// the standby is promoted (CloudNativePG's default, 3600, if unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0").message("switchoverDelay must not be negative"))]
    pub switchover_delay: Option<i32>,
    /// Seconds to wait after a primary is found unhealthy before failing over (CloudNativePG's default,
    /// 0, if unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0").message("failoverDelay must not be negative"))]
    pub failover_delay: Option<i32>,
    /// Whether the instances must run on different nodes (`Required`), or should (`Preferred`, the
    /// default, as CloudNativePG's).
    #[serde(default)]
    pub pod_anti_affinity: AntiAffinity,
    /// Continuous WAL archiving and base backups through CloudNativePG's Barman Cloud plugin, to the
    /// plugin's `ObjectStore` of this name (in the pipeline's namespace; the plugin and the object store
    /// are installed and configured apart). Point-in-time recovery is CloudNativePG's: a new cluster
    /// bootstrapped from that object store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BarmanBackup>,
}

impl Default for CloudNativePg {
    fn default() -> Self {
        Self {
            instances: three(),
            storage: Storage::default(),
            resources: None,
            synchronous: Synchronous::default(),
            query_reads_from: ReadsFrom::default(),
            standby_maximum_lag: sixteen_mebibytes(),
            smart_shutdown_timeout: None,
            switchover_delay: None,
            failover_delay: None,
            pod_anti_affinity: AntiAffinity::default(),
            backup: None,
        }
    }
}

fn three() -> i32 {
    3
}

fn sixteen_mebibytes() -> String {
    "16Mi".to_owned()
}

/// Synchronous replication: a commit, and so an accepted order, is acknowledged once `number` standbys
/// have it on disk, so that it survives the loss of the primary.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Synchronous {
    /// Standbys that must confirm each commit; 0 replicates asynchronously, and then a failover can lose
    /// the last acknowledged orders.
    #[serde(default = "one")]
    #[x_kube(validation = Rule::new("self >= 0").message("synchronous.number must not be negative"))]
    pub number: i32,
    /// `Required` (the default): with fewer than `number` standbys up, commits wait. `Preferred`:
    /// commits go on without them, unprotected, until they are back.
    #[serde(default)]
    pub data_durability: DataDurability,
}

impl Default for Synchronous {
    fn default() -> Self {
        Self { number: one(), data_durability: DataDurability::default() }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DataDurability {
    #[default]
    Required,
    Preferred,
}

/// Which instances the query service reads. Every answer, sync-status included, is about the instance
/// that gave it: a standby that lags reports its lag.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ReadsFrom {
    /// The standbys (`<pipeline>-postgres-ro`): queries do not load the primary that the consumers
    /// write. The default.
    #[default]
    Standbys,
    /// Every instance (`<pipeline>-postgres-r`).
    AnyInstance,
    /// The primary (`<pipeline>-postgres-rw`), as the writers.
    Primary,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum AntiAffinity {
    #[default]
    Preferred,
    Required,
}

/// Where WAL and base backups go.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BarmanBackup {
    /// The name of the Barman Cloud plugin's `ObjectStore`.
    pub barman_object_name: String,
}

/// A database or broker the operator runs as a StatefulSet: its volume and its resources.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Managed {
    #[serde(default)]
    pub storage: Storage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// Managed cloud databases: Secrets that hold their connection URLs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalPostgres {
    pub write_url: SecretKeyRef,
    pub read_url: SecretKeyRef,
}

/// The broker, in one of three ways: `managed`, one RabbitMQ node that the operator runs (the default, for
/// development); `clusterOperator`, a cluster of nodes that the operator asks the RabbitMQ cluster operator
/// for (for production); or `external`, a broker that someone else runs. At most one of them is given;
/// none means `managed`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.managed), has(self.clusterOperator), has(self.external)].filter(x, x).size() <= 1").message("rabbitmq is one of managed, clusterOperator or external"))]
#[x_kube(validation = Rule::new("!has(self.managed) || has(oldSelf.managed) || has(oldSelf.clusterOperator) || has(oldSelf.external) || !has(self.managed.storage) || !isQuantity(self.managed.storage.size) || quantity(self.managed.storage.size).compareTo(quantity('10Gi')) >= 0").message("storage.size cannot shrink: the managed broker's volume has the default 10Gi"))]
pub struct RabbitmqSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<Managed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_operator: Option<RabbitmqClusterOperator>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalRabbitmq>,
}

/// A RabbitMQ cluster (`<pipeline>-rabbitmq`) that the RabbitMQ cluster operator (2.22) runs: nodes that
/// form one cluster, each queue a quorum queue with a member on every node, rolling restarts that wait for
/// quorum. The cluster operator must be installed in the cluster. The image is `images.rabbitmq`
/// (RabbitMQ 4.2.4 or later: the cluster operator's startup probe asks its health API).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RabbitmqClusterOperator {
    /// Broker nodes: an odd number, so that a quorum outlives a minority (3 survive the loss of 1, 5 of 2).
    #[serde(default = "three")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 9 && self % 2 == 1").message("replicas must be odd, from 1 to 9: a quorum queue needs a majority of its members"))]
    pub replicas: i32,
    /// Each node's volume.
    #[serde(default)]
    pub storage: Storage,
    /// Each node's resources (the cluster operator's defaults, 1 CPU and 2Gi, if unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Whether the nodes must run on different nodes of the cluster (`Required`), or should (`Preferred`,
    /// the default).
    #[serde(default)]
    pub pod_anti_affinity: AntiAffinity,
    /// Seconds a stopping node may take to hand its queue leaders over and drain (the cluster operator's
    /// default, 604800, if unset: it waits until the other nodes have every quorum queue in quorum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0").message("terminationGracePeriodSeconds must not be negative"))]
    pub termination_grace_period_seconds: Option<i64>,
}

impl Default for RabbitmqClusterOperator {
    fn default() -> Self {
        Self {
            replicas: three(),
            storage: Storage::default(),
            resources: None,
            pod_anti_affinity: AntiAffinity::default(),
            termination_grace_period_seconds: None,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalRabbitmq {
    /// A Secret key holding the AMQP URL.
    pub url: SecretKeyRef,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)").message("storage.storageClassName cannot change: the volumes exist in their class"))]
pub struct Storage {
    /// Size of each volume, e.g. `10Gi`. A larger size expands the existing volumes in place where their
    /// StorageClass allows it (`allowVolumeExpansion`); the `StorageResized` condition tells. It never
    /// shrinks.
    #[serde(default = "ten_gibibytes")]
    #[x_kube(validation = Rule::new("isQuantity(self)").message("storage.size must be a quantity of bytes, e.g. 10Gi"))]
    #[x_kube(validation = Rule::new("!isQuantity(oldSelf) || !isQuantity(self) || quantity(self).compareTo(quantity(oldSelf)) >= 0").message("storage.size cannot shrink: a volume keeps its size; set it at least to the current size"))]
    pub size: String,
    /// StorageClass of the volume; the cluster's default if unset. Fixed once the volumes exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for Storage {
    fn default() -> Self {
        Self { size: ten_gibibytes(), storage_class_name: None }
    }
}

fn ten_gibibytes() -> String {
    "10Gi".to_owned()
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretKeyRef {
    /// The Secret's name, in the pipeline's namespace.
    pub name: String,
    /// The key within the Secret.
    pub key: String,
}

/// `Retain` (the default) leaves the PVCs when the pipeline is deleted: they carry no owner reference.
/// `Delete` removes them, through a finalizer.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Retain,
    Delete,
}

/// What the operator observed at `observedGeneration`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalyticsPipelineStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// DatabasesReady, BrokerReady, ServicesReady and Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_replicas: Option<i32>,
    /// Ready messages on `order-events`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<i64>,
    /// From the query service's sync-status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_events: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// The last verify that finished, and the rebuild asked for last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_model: Option<ReadModelStatus>,
    /// The CloudNativePG cluster, in `cloudNativePG` mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresStatus>,
}

/// What CloudNativePG reports of the pipeline's PostgreSQL cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresStatus {
    /// The instance (pod) that is the primary now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// The PostgreSQL timeline: every promotion of a standby, by failover or switchover, starts a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<i64>,
    pub instances: i32,
    pub ready_instances: i32,
    /// CloudNativePG's phase, e.g. `Cluster in healthy state` or `Failing over`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadModelStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verify: Option<VerifyRun>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuild: Option<RebuildStatus>,
}

/// A verify Job that finished.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifyRun {
    pub job: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    pub outcome: VerifyOutcome,
    /// Its one-line outcome: the keys that differ per view, or what was equal, or the error.
    pub message: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum VerifyOutcome {
    /// Every view equals the write side's history.
    Consistent,
    /// Some keys differ.
    Drift,
    /// The comparison could not be made.
    Failed,
}

/// The rebuild of one `rebuildRequestedAt`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebuildStatus {
    pub requested_at: Time,
    pub job: String,
    pub phase: RebuildPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// The rows built, the rate, the orders caught up and the consumers' pause; or the error.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RebuildPhase {
    /// The Job exists; its pod has not started.
    Pending,
    /// Building the shadow tables, catching up, or swapping.
    Running,
    Succeeded,
    Failed,
}

impl RebuildPhase {
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    Provisioning,
    Ready,
    Degraded,
    Failed,
    /// `spec.hibernate`: no pods run; the volumes keep the data.
    Hibernated,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    pub command: String,
    pub query: String,
}
