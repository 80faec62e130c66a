//! The reconciler's part of the `clusterOperator` broker mode that is not a desired child: `Retain`.

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Secret, Service, ServiceAccount},
    rbac::v1::{Role, RoleBinding},
};

use super::{Context, Error, retain};
use crate::{
    children::{
        self, broker,
        rabbitmq_cluster::{CLUSTER_LABEL, RabbitmqCluster},
    },
    crd::AnalyticsPipeline,
};

/// Under `Retain` ([`retain`]): the cluster goes with propagation `Orphan`, then its StatefulSet (and with
/// it the pods; the claims stay, the StatefulSet retains them), Services, Secrets, ConfigMaps and the
/// peer discovery's ServiceAccount, Role and RoleBinding, by the cluster operator's label. A
/// `RabbitmqCluster` of the same name made later gets a StatefulSet of the same name, whose pods start on
/// the claims of the same names, with their queues and messages.
pub async fn delete_keeping_volumes(pipeline: &AnalyticsPipeline, ctx: &Context, namespace: &str) -> Result<(), Error> {
    let name = children::name(pipeline, broker::COMPONENT);
    retain::orphan::<RabbitmqCluster>(ctx, namespace, &name, "RabbitMQ cluster").await?;
    let selector = format!("{CLUSTER_LABEL}={name}");
    retain::delete_labelled::<StatefulSet>(ctx, namespace, &selector).await?;
    retain::delete_labelled::<Service>(ctx, namespace, &selector).await?;
    retain::delete_labelled::<Secret>(ctx, namespace, &selector).await?;
    retain::delete_labelled::<ConfigMap>(ctx, namespace, &selector).await?;
    retain::delete_labelled::<ServiceAccount>(ctx, namespace, &selector).await?;
    retain::delete_labelled::<Role>(ctx, namespace, &selector).await?;
    retain::delete_labelled::<RoleBinding>(ctx, namespace, &selector).await?;
    Ok(())
}
