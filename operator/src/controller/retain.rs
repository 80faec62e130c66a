//! `deletionPolicy: Retain` for a cluster that another operator runs (CloudNativePG's `Cluster`, the
//! RabbitMQ cluster operator's `RabbitmqCluster`): both make their cluster the owner of its volume claims,
//! so deleting it the ordinary way, or letting the garbage collector delete it with the pipeline, deletes
//! the data. The finalizer deletes it with propagation `Orphan` instead, so that the garbage collector
//! takes the owner reference off the claims (and off everything else the cluster made), and then deletes
//! what ran or routed for it itself, by the other operator's cluster label. The claims stay, with their
//! data and the other operator's labels: a cluster of the same name made later finds them by name and
//! starts on them, which is how re-applying the pipeline comes back with the same data.

use std::{
    fmt::Debug,
    time::{Duration, Instant},
};

use k8s_openapi::NamespaceResourceScope;
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams, PropagationPolicy},
};
use serde::de::DeserializeOwned;

use super::{Context, Error};

/// How long the finalizer waits, in one pass, for the API server to orphan and delete the cluster.
const ORPHANING: Duration = Duration::from_secs(60);

/// Deletes the cluster `name` of kind `K` with propagation `Orphan` and waits until it is gone (its
/// operator's finalizer runs first); `what` names it in the error of a pass that waited too long.
pub async fn orphan<K>(ctx: &Context, namespace: &str, name: &str, what: &str) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
{
    let clusters: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    if clusters.get_opt(name).await?.is_none() {
        return Ok(());
    }
    ignore_not_found(clusters.delete(name, &orphaning()).await.map(drop))?;
    let started = Instant::now();
    while clusters.get_opt(name).await?.is_some() {
        if started.elapsed() > ORPHANING {
            return Err(Error::Pending(format!("waiting for {what} {name} to be deleted")));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// Deletes, one by one, the objects of kind `K` that match `selector`, as `params` says.
pub async fn delete_labelled<K>(
    ctx: &Context,
    namespace: &str,
    selector: &str,
    params: &DeleteParams,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    for object in api.list(&ListParams::default().labels(selector)).await? {
        ignore_not_found(api.delete(&object.name_any(), params).await.map(drop))?;
    }
    Ok(())
}

/// Propagation `Orphan`: what the deleted object owns stays, without its owner reference.
pub fn orphaning() -> DeleteParams {
    DeleteParams { propagation_policy: Some(PropagationPolicy::Orphan), ..DeleteParams::default() }
}

/// A pod deleted so has at most `seconds` to stop: once its cluster is gone, it no longer knows the
/// cluster's settings, and would stop by its defaults (a CloudNativePG instance waits 180 s for its
/// clients; a RabbitMQ node waits in its preStop hook for a quorum that its leaving peers will not give).
pub fn stopping_within(seconds: u32) -> DeleteParams {
    DeleteParams { grace_period_seconds: Some(seconds), ..DeleteParams::default() }
}

/// `result`, with a NotFound (deleted already) as success.
pub fn ignore_not_found(result: Result<(), kube::Error>) -> Result<(), Error> {
    match result {
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        other => Ok(other?),
    }
}
