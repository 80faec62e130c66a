//! The reconciler's part of the `clusterOperator` broker mode that is not a desired child: `Retain`.

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount},
    rbac::v1::{Role, RoleBinding},
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::json;

use super::{Context, Error, retain};
use crate::{
    children::{
        self, broker,
        rabbitmq_cluster::{CLUSTER_LABEL, RabbitmqCluster},
    },
    crd::AnalyticsPipeline,
};

/// How long each node of a cluster that goes under `Retain` has to stop. Its preStop hook would wait for
/// its quorum queues to keep a quorum without it, which the other nodes, leaving too, never give (the
/// cluster operator's finalizer asks the hook to skip that, but the pods may not see it in time); a
/// node stopped after this is as safe as one that crashed: quorum queues sync their log to disk.
const NODE_STOP_SECONDS: u32 = 30;

/// The cluster operator's label that stops it reconciling a cluster (it still runs its finalizer).
const PAUSE_LABEL: &str = "rabbitmq.com/pauseReconciliation";

/// The cluster operator's finalizer on every cluster it runs.
const FINALIZER: &str = "deletion.finalizers.rabbitmqclusters.rabbitmq.com";

/// Under `Retain` ([`retain`]): the cluster is let go of ([`let_go`]) and goes with propagation `Orphan`,
/// then its StatefulSet (the claims stay, the StatefulSet retains them), its pods, each given
/// [`NODE_STOP_SECONDS`] to stop, Services, Secrets, ConfigMaps and the peer discovery's ServiceAccount,
/// Role and RoleBinding, by the cluster operator's label. A `RabbitmqCluster` of the same name made later
/// gets a StatefulSet of the same name, whose pods start on the claims of the same names, with their queues
/// and messages.
pub async fn delete_keeping_volumes(pipeline: &AnalyticsPipeline, ctx: &Context, namespace: &str) -> Result<(), Error> {
    let name = children::name(pipeline, broker::COMPONENT);
    let_go(ctx, namespace, &name).await?;
    retain::orphan::<RabbitmqCluster>(ctx, namespace, &name, "RabbitMQ cluster").await?;
    let selector = format!("{CLUSTER_LABEL}={name}");
    let plain = DeleteParams::default();
    // The StatefulSet without its pods, which then stop in at most 30 s: their preStop hook would wait for
    // the quorum of peers that leave with them.
    retain::delete_labelled::<StatefulSet>(ctx, namespace, &selector, &retain::orphaning()).await?;
    retain::delete_labelled::<Pod>(ctx, namespace, &selector, &retain::stopping_within(NODE_STOP_SECONDS)).await?;
    retain::delete_labelled::<Service>(ctx, namespace, &selector, &plain).await?;
    retain::delete_labelled::<Secret>(ctx, namespace, &selector, &plain).await?;
    retain::delete_labelled::<ConfigMap>(ctx, namespace, &selector, &plain).await?;
    retain::delete_labelled::<ServiceAccount>(ctx, namespace, &selector, &plain).await?;
    retain::delete_labelled::<Role>(ctx, namespace, &selector, &plain).await?;
    retain::delete_labelled::<RoleBinding>(ctx, namespace, &selector, &plain).await?;
    Ok(())
}

/// Takes the cluster out of the cluster operator's hands before it is deleted: its reconciliation paused,
/// then its finalizer removed (at the version read, so that an update the operator makes from an older read
/// fails rather than puts it back). The cluster operator 2.22 removes that finalizer with a create-or-update:
/// when its cache has seen the cluster go by then, it creates the cluster again, empty, with a StatefulSet
/// of its defaults on the retained claims. Its finalizer only marks the pods to skip their preStop wait,
/// which [`NODE_STOP_SECONDS`] bounds instead.
async fn let_go(ctx: &Context, namespace: &str, name: &str) -> Result<(), Error> {
    let clusters: Api<RabbitmqCluster> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(cluster) = clusters.get_opt(name).await? else { return Ok(()) };
    if cluster.metadata.deletion_timestamp.is_some() || !cluster.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let params = PatchParams::default();
    let paused = json!({"metadata": {"labels": {PAUSE_LABEL: "true"}}});
    let cluster = clusters.patch(name, &params, &Patch::Merge(&paused)).await?;
    let finalizers: Vec<&String> = cluster.finalizers().iter().filter(|f| *f != FINALIZER).collect();
    let unfinalized = json!({"metadata": {"resourceVersion": cluster.resource_version(), "finalizers": finalizers}});
    clusters.patch(name, &params, &Patch::Merge(&unfinalized)).await?;
    Ok(())
}
