//! The operator: it watches AnalyticsPipelines (and the children it owns) and reconciles them, with
//! leader election so that several replicas are safe. Runs against any kubeconfig, or in-cluster.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use analytics_kit::http::{Check, Readiness, ops_router};
use analytics_operator::{
    children::{INSTANCE_LABEL, MANAGED_BY, cloudnative_pg, rabbitmq_cluster::RabbitmqCluster},
    controller::{self, Context},
    crd::{AnalyticsPipeline, Image, ImageSet, Images},
    metrics::Metrics,
    observe::{ClusterObserver, ConnectTo},
};
use anyhow::Context as _;
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        batch::v1::{CronJob, Job},
        core::v1::{ConfigMap, LocalObjectReference, Service},
        policy::v1::PodDisruptionBudget,
    },
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};
use kube::{
    Api, Client, ResourceExt,
    runtime::{
        Controller,
        events::{Recorder, Reporter},
        reflector::ObjectRef,
        watcher,
    },
};
use kube_lease_manager::LeaseManagerBuilder;
use prometheus::Registry;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "operator",
    version,
    about = "Runs AnalyticsPipelines: databases, broker and services, with consumers scaled on queue depth."
)]
struct Config {
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,

    /// Watch pipelines in this namespace only; every namespace when unset.
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,

    /// Run without leader election: then only one replica may run.
    #[arg(long, env = "NO_LEADER_ELECTION")]
    no_leader_election: bool,

    /// Name of the coordination.k8s.io Lease that elects the leader.
    #[arg(long, env = "LEASE_NAME", default_value = "analytics-operator")]
    lease_name: String,

    /// Namespace of the Lease (the operator's own namespace, in a cluster).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,

    /// This replica's identity in the Lease (its pod name, in a cluster); the host name by default.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,

    /// How long the Lease holds without renewal; a standby replica takes over after it.
    #[arg(long, env = "LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    lease_duration: Duration,

    /// Reach an in-cluster HOST:PORT at another one, as HOST:PORT=HOST:PORT (repeatable, or
    /// comma-separated): for running outside the cluster, where the pipelines' Service names do not
    /// resolve. Applies to the queue-depth and sync-status reads.
    #[arg(long = "connect-to", env = "OPERATOR_CONNECT_TO", value_delimiter = ',')]
    connect_to: Vec<ConnectTo>,

    /// The namespaces that may reach the pipelines' metrics ports, as a JSON label selector
    /// (`{"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}`); `{}` is every namespace.
    #[arg(long, env = "METRICS_FROM_NAMESPACES", default_value = "{}", value_parser = label_selector)]
    metrics_from_namespaces: LabelSelector,

    #[command(flatten)]
    images: DefaultImages,
}

fn label_selector(json: &str) -> Result<LabelSelector, String> {
    serde_json::from_str(json).map_err(|error| format!("not a label selector in JSON: {error}"))
}

/// The images every pipeline runs unless its `spec.images` names others (REPOSITORY:TAG); the chart sets
/// them from its `images` values. Unset, they are this version's published images and the official
/// PostgreSQL and RabbitMQ images.
#[derive(Debug, clap::Args)]
struct DefaultImages {
    /// The command service's image.
    #[arg(long, env = "COMMAND_IMAGE")]
    command_image: Option<Image>,
    /// The consumer service's image (its `migrate` also prepares the read schema).
    #[arg(long, env = "CONSUMER_IMAGE")]
    consumer_image: Option<Image>,
    /// The query service's image.
    #[arg(long, env = "QUERY_IMAGE")]
    query_image: Option<Image>,
    /// The managed PostgreSQL's image (the official `postgres` image's environment contract).
    #[arg(long, env = "POSTGRES_IMAGE")]
    postgres_image: Option<Image>,
    /// The managed RabbitMQ's image (the official `rabbitmq` image's environment contract).
    #[arg(long, env = "RABBITMQ_IMAGE")]
    rabbitmq_image: Option<Image>,
    /// Secrets that the pods of a pipeline without `spec.imagePullSecrets` pull their images with; each
    /// must exist in the pipeline's namespace (comma-separated names).
    #[arg(long, env = "IMAGE_PULL_SECRETS", value_delimiter = ',')]
    image_pull_secrets: Vec<String>,
}

impl DefaultImages {
    fn image_set(&self) -> ImageSet {
        let images = ImageSet::default().with_overrides(&Images {
            command: self.command_image.clone(),
            consumer: self.consumer_image.clone(),
            query: self.query_image.clone(),
            postgres: self.postgres_image.clone(),
            rabbitmq: self.rabbitmq_image.clone(),
        });
        let pull_secrets = self
            .image_pull_secrets
            .iter()
            .filter(|name| !name.is_empty())
            .map(|name| LocalObjectReference { name: name.clone() })
            .collect();
        ImageSet { pull_secrets, ..images }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    analytics_kit::telemetry::init();
    let client =
        Client::try_default().await.context("no Kubernetes configuration: set KUBECONFIG or run in a cluster")?;
    let shutdown = analytics_kit::shutdown::on_signal();
    let identity = config.identity.clone().unwrap_or_else(hostname);

    let registry = Registry::new();
    let metrics = Metrics::register(&registry, &controller::Error::KINDS)?;
    let listener = analytics_kit::http::bind(config.listen).await?;
    let ops = ops_router(registry, Ready { client: client.clone() });
    let server = tokio::spawn(analytics_kit::http::serve(listener, ops, shutdown.clone()));

    let reporter = Reporter { controller: MANAGED_BY.to_owned(), instance: Some(identity.clone()) };
    let ctx = Arc::new(Context::new(
        client.clone(),
        Recorder::new(client.clone(), reporter),
        metrics,
        Arc::new(ClusterObserver::new(client.clone(), config.connect_to.clone())),
        config.images.image_set(),
        config.lease_namespace.clone(),
        config.metrics_from_namespaces.clone(),
    ));

    if config.no_leader_election {
        run_controller(&client, ctx, config.namespace.as_deref(), shutdown.clone().cancelled_owned()).await;
    } else {
        lead(&config, &client, &identity, ctx, &shutdown).await?;
    }
    shutdown.cancel();
    server.await?.context("the ops server failed")?;
    Ok(())
}

/// Runs the controller while this replica holds the Lease; waits as a standby otherwise. On shutdown,
/// dropping the watch releases the Lease, so a standby takes over at once.
async fn lead(
    config: &Config,
    client: &Client,
    identity: &str,
    ctx: Arc<Context>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let manager = LeaseManagerBuilder::new(client.clone(), &config.lease_name)
        .with_namespace(&config.lease_namespace)
        .with_identity(identity)
        .with_duration(config.lease_duration.as_secs().max(2))
        .with_grace((config.lease_duration.as_secs() / 3).max(1))
        .build()
        .await
        .context("cannot set up leader election")?;
    let (mut leading, watch) = manager.watch().await;
    while !shutdown.is_cancelled() {
        if *leading.borrow_and_update() {
            tracing::info!(identity, "leading: reconciling pipelines");
            let mut still_leading = leading.clone();
            let token = shutdown.clone();
            let stop = async move {
                tokio::select! {
                    () = token.cancelled() => {}
                    () = async { while still_leading.changed().await.is_ok() && *still_leading.borrow() {} } => {
                        tracing::warn!("lost the lease: stopping");
                    }
                }
            };
            run_controller(client, ctx.clone(), config.namespace.as_deref(), stop).await;
            continue;
        }
        tracing::info!(identity, "standby: another replica leads");
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = leading.changed() => changed.context("leader election stopped")?,
        }
    }
    drop(leading);
    watch.await?.context("cannot release the lease")?;
    Ok(())
}

async fn run_controller(
    client: &Client,
    ctx: Arc<Context>,
    namespace: Option<&str>,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match namespace {
            Some(namespace) => Api::namespaced(client.clone(), namespace),
            None => Api::all(client.clone()),
        }
    }
    let children = watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"));
    // The clusters of CloudNativePG and of the RabbitMQ cluster operator are watched where those are
    // installed; elsewhere a pipeline in such a mode reports the missing CRD in its status, and is read
    // again on the resync.
    let serves = |group_version: &'static str, resource: &'static str| async move {
        client
            .list_api_group_resources(group_version)
            .await
            .is_ok_and(|resources| resources.resources.iter().any(|served| served.name == resource))
    };
    let cloudnative_pg = serves("postgresql.cnpg.io/v1", "clusters").await;
    let rabbitmq_cluster_operator = serves("rabbitmq.com/v1beta1", "rabbitmqclusters").await;
    tracing::info!(cloudnative_pg, rabbitmq_cluster_operator, "clusters of other operators watched");
    let mut controller = Controller::new(api::<AnalyticsPipeline>(client, namespace), watcher::Config::default());
    if cloudnative_pg {
        controller = controller.owns(api::<cloudnative_pg::Cluster>(client, namespace), children.clone());
    }
    if rabbitmq_cluster_operator {
        controller = controller.owns(api::<RabbitmqCluster>(client, namespace), children.clone());
    }
    controller
        .owns(api::<Deployment>(client, namespace), children.clone())
        .owns(api::<StatefulSet>(client, namespace), children.clone())
        .owns(api::<Service>(client, namespace), children.clone())
        .owns(api::<ConfigMap>(client, namespace), children.clone())
        .owns(api::<CronJob>(client, namespace), children.clone())
        .owns(api::<PodDisruptionBudget>(client, namespace), children.clone())
        // Rebuild Jobs are the pipeline's; verify Jobs are their CronJob's: both map by instance label.
        .watches(api::<Job>(client, namespace), children, |job| {
            let pipeline = job.labels().get(INSTANCE_LABEL)?;
            Some(ObjectRef::new(pipeline).within(&job.namespace()?))
        })
        .graceful_shutdown_on(stop)
        .run(controller::reconcile, controller::error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(pipeline = %object, "reconciled"),
                Err(error) => tracing::debug!(%error, "reconcile did not complete"),
            }
        })
        .await;
}

/// Ready when the API server answers.
struct Ready {
    client: Client,
}

impl Readiness for Ready {
    async fn checks(&self) -> Vec<(&'static str, Check)> {
        let api = self.client.apiserver_version().await.map(|_| "ok").map_err(|e| e.to_string());
        vec![("kubernetes", api)]
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "analytics-operator".to_owned())
}
