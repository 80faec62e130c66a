//! The reconciler's part of the `clusterOperator` broker mode that is not a desired child: `Retain`.

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount},
    rbac::v1::{Role, RoleBinding},
};

use kube::api::DeleteParams;

use super::{Context, Error, retain};

/// How long each node of a cluster that goes under `Retain` has to stop. Its preStop hook would wait for
/// its quorum queues to keep a quorum without it, which the other nodes, leaving too, never give (the
/// cluster operator's finalizer asks the hook to skip that, but the pods may not see it in time); a
/// node stopped after this is as safe as one that crashed: quorum queues sync their log to disk.
const NODE_STOP_SECONDS: u32 = 30;
use crate::{
    children::{
        self, broker,
        rabbitmq_cluster::{CLUSTER_LABEL, RabbitmqCluster},
    },
    crd::AnalyticsPipeline,
};

/// Under `Retain` ([`retain`]): the cluster goes with propagation `Orphan`, then its StatefulSet (the
/// claims stay, the StatefulSet retains them), its pods, each given [`NODE_STOP_SECONDS`] to stop,
/// Services, Secrets, ConfigMaps and the peer discovery's ServiceAccount, Role and RoleBinding, by the
/// cluster operator's label. A `RabbitmqCluster` of the same name made later gets a StatefulSet of the same
/// name, whose pods start on the claims of the same names, with their queues and messages.
pub async fn delete_keeping_volumes(pipeline: &AnalyticsPipeline, ctx: &Context, namespace: &str) -> Result<(), Error> {
    let name = children::name(pipeline, broker::COMPONENT);
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
