//! Growing the volumes of the databases and the broker. A StatefulSet's volume claim template cannot
//! change, so a larger `storage.size` expands the existing claims instead, as CloudNativePG does: the
//! claim's request is patched, and the StorageClass's provisioner grows the volume (and the kubelet its
//! file system). The claims of CloudNativePG's and the RabbitMQ cluster operator's clusters are grown by
//! those operators from the size the pipeline passes on, but only once a server-side dry run of the same
//! patch shows that the API server allows it: the RabbitMQ cluster operator deletes its StatefulSet before
//! it patches the claims, and would not make it again if the patch were refused. Where the StorageClass
//! does not allow expansion, the API server refuses; the `StorageResized` condition and a Warning Event say
//! so, the other operator keeps the size the claims have, and the rest of the pass goes on. A refusal is
//! tried again every [`RETRY`] (the class may have been changed), and announced once.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::events::EventType,
};
use serde_json::json;

use super::{Context, Error, Write, key, publish, status::Verdict};
use crate::{
    children::{self, broker, cloudnative_pg, databases, rabbitmq_cluster},
    crd::AnalyticsPipeline,
};

/// How often a refused expansion is asked again.
pub const RETRY: Duration = Duration::from_secs(600);

/// Expansions the API server refused, by pipeline and claim: the size asked for, the refusal, and when.
#[derive(Debug, Default)]
pub struct Refusals(HashMap<(String, String), (String, String, Instant)>);

/// Who grows a group of claims.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Grower {
    /// The operator, for the managed backends' StatefulSets.
    Operator,
    /// CloudNativePG or the RabbitMQ cluster operator.
    Delegated,
}

/// Expands the claims to the spec's sizes where they are smaller (only reads them when `write` is
/// [`Write::Paused`]). Returns how far they are (`None` without an in-cluster backend), and `pipeline`
/// with the sizes to pass on to the other operators: the spec's, or the claims' own where the class
/// refuses to grow them.
pub(super) async fn reconcile(
    pipeline: &AnalyticsPipeline,
    ctx: &Context,
    namespace: &str,
    write: Write,
) -> Result<(Option<Verdict>, AnalyticsPipeline), Error> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), namespace);
    let mut sized = pipeline.clone();
    let spec = &mut sized.spec;
    let mut groups: Vec<(Vec<String>, &mut String, Grower)> = Vec::new();
    let postgres = children::name(pipeline, databases::COMPONENT);
    let rabbitmq = children::name(pipeline, broker::COMPONENT);
    if let Some(cluster) = spec.postgres.cloud_native_pg.as_mut() {
        let selector = format!("{}={postgres}", cloudnative_pg::CLUSTER_LABEL);
        let mut names: Vec<String> = claims
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
            .iter()
            .map(ResourceExt::name_any)
            .collect();
        names.sort();
        groups.push((names, &mut cluster.storage.size, Grower::Delegated));
    } else if spec.postgres.external.is_none() {
        let managed = spec.postgres.managed.get_or_insert_default();
        groups.push((vec![format!("data-{postgres}-0")], &mut managed.storage.size, Grower::Operator));
    }
    if let Some(cluster) = spec.rabbitmq.cluster_operator.as_mut() {
        let names = (0..cluster.replicas).map(|ordinal| rabbitmq_cluster::claim_name(&rabbitmq, ordinal)).collect();
        groups.push((names, &mut cluster.storage.size, Grower::Delegated));
    } else if spec.rabbitmq.external.is_none() {
        let managed = spec.rabbitmq.managed.get_or_insert_default();
        groups.push((vec![format!("data-{rabbitmq}-0")], &mut managed.storage.size, Grower::Operator));
    }
    if groups.is_empty() {
        return Ok((None, pipeline.clone()));
    }
    let mut verdicts = Vec::new();
    for (names, size, grower) in groups {
        for name in names {
            let Some(claim) = claims.get_opt(&name).await? else { continue };
            let requested = quantity(&claim, Figure::Requested);
            if bytes(size) <= requested.as_deref().and_then(bytes) {
                verdicts.push(progress(&claim, &name, size));
                continue;
            }
            let current = requested.clone().unwrap_or_default();
            if write == Write::Paused {
                verdicts.push(Verdict::not_ready(
                    "Paused",
                    format!("{name}: {current} requested, the spec asks {size}; paused"),
                ));
                continue;
            }
            let refusal = match refused(ctx, pipeline, &name, size) {
                Some(known) => Some(known),
                None => expand(ctx, pipeline, &claims, &name, size, &current, grower).await?,
            };
            match refusal {
                Some(note) => {
                    verdicts.push(Verdict::not_ready("ExpansionRefused", note));
                    if grower == Grower::Delegated {
                        // The other operator keeps the claims as they are; the cluster's other claims, in
                        // the same class, are not asked again.
                        size.clone_from(&current);
                    }
                }
                None => verdicts.push(progress(&claims.get(&name).await?, &name, size)),
            }
        }
    }
    let refused: Vec<String> =
        verdicts.iter().filter(|v| v.reason == "ExpansionRefused").map(|v| v.message.clone()).collect();
    let verdict = if refused.is_empty() {
        verdicts
            .into_iter()
            .find(|verdict| !verdict.ready)
            .unwrap_or_else(|| Verdict::ready("Resized", "every volume has the size the spec asks for"))
    } else {
        Verdict::not_ready("ExpansionRefused", refused.join("; "))
    };
    Ok((Some(verdict), sized))
}

/// The refusal of `name`'s expansion to `size`, if the API server refused it less than [`RETRY`] ago.
fn refused(ctx: &Context, pipeline: &AnalyticsPipeline, name: &str, size: &str) -> Option<String> {
    let refusals = ctx.storage_refusals.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let (asked, note, at) = refusals.0.get(&(key(pipeline), name.to_owned()))?;
    (asked == size && at.elapsed() < RETRY).then(|| note.clone())
}

/// Asks the API server to grow `name` to `size`: for real if the operator grows it, as a dry run if another
/// operator does. Returns the refusal, if any; a new refusal is announced with a Warning Event.
async fn expand(
    ctx: &Context,
    pipeline: &AnalyticsPipeline,
    claims: &Api<PersistentVolumeClaim>,
    name: &str,
    size: &str,
    current: &str,
    grower: Grower,
) -> Result<Option<String>, Error> {
    let patch = json!({"spec": {"resources": {"requests": {"storage": size}}}});
    let params = match grower {
        Grower::Operator => PatchParams::default(),
        Grower::Delegated => PatchParams::default().dry_run(),
    };
    let key = (key(pipeline), name.to_owned());
    match claims.patch(name, &params, &Patch::Merge(&patch)).await {
        Ok(_) => {
            ctx.storage_refusals.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0.remove(&key);
            if grower == Grower::Operator {
                let note = format!("{name}: expanding from {current} to {size}");
                publish(ctx, pipeline, EventType::Normal, "StorageExpanding", &note).await;
            }
            Ok(None)
        }
        Err(kube::Error::Api(status)) if matches!(status.code, 403 | 422) => {
            let note = format!(
                "{name} cannot grow to {size}: {} (its StorageClass must allow volume expansion)",
                status.message
            );
            let announced = {
                let mut refusals = ctx.storage_refusals.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let before = refusals.0.insert(key, (size.to_owned(), note.clone(), Instant::now()));
                before.is_some_and(|(asked, _, _)| asked == size)
            };
            if !announced {
                publish(ctx, pipeline, EventType::Warning, "StorageNotExpanded", &note).await;
            }
            Ok(Some(note))
        }
        Err(error) => Err(error.into()),
    }
}

/// How far a claim that was asked to grow to `size` is.
fn progress(claim: &PersistentVolumeClaim, name: &str, size: &str) -> Verdict {
    let capacity = quantity(claim, Figure::Capacity);
    if capacity.as_deref().and_then(bytes) >= bytes(size) {
        return Verdict::ready("Resized", "every volume has the size the spec asks for");
    }
    let conditions = claim.status.as_ref().and_then(|status| status.conditions.as_deref()).unwrap_or_default();
    let file_system = conditions.iter().any(|c| c.type_ == "FileSystemResizePending" && c.status == "True");
    let step = if file_system {
        "the volume has grown; its file system grows when the pod next starts"
    } else {
        "the volume is being expanded"
    };
    Verdict::not_ready("Resizing", format!("{name}: {} of {size}; {step}", capacity.unwrap_or_default()))
}

enum Figure {
    Requested,
    Capacity,
}

/// The claim's requested or actual storage.
fn quantity(claim: &PersistentVolumeClaim, figure: Figure) -> Option<String> {
    let map = match figure {
        Figure::Requested => claim.spec.as_ref()?.resources.as_ref()?.requests.as_ref()?,
        Figure::Capacity => claim.status.as_ref()?.capacity.as_ref()?,
    };
    map.get("storage").map(|quantity| quantity.0.clone())
}

/// The bytes of a Kubernetes quantity (`10Gi`, `500M`, `1.5Ti`, `2e9`), near enough to compare sizes.
pub(crate) fn bytes(quantity: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 13] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let quantity = quantity.trim();
    let (number, factor) = SUFFIXES
        .iter()
        .find_map(|(suffix, factor)| quantity.strip_suffix(suffix).map(|number| (number, *factor)))
        .unwrap_or((quantity, 1.0));
    number.parse::<f64>().ok().filter(|value| value.is_finite() && *value >= 0.0).map(|value| value * factor)
}

#[cfg(test)]
mod tests {
    use super::bytes;

    #[test]
    fn quantities_compare_by_their_bytes() {
        assert_eq!(bytes("10Gi"), Some(10.0 * 1_073_741_824.0));
        assert_eq!(bytes("500M"), Some(5e8));
        assert_eq!(bytes("1.5Ti"), Some(1.5 * 1_099_511_627_776.0));
        assert_eq!(bytes("2e9"), Some(2e9));
        assert_eq!(bytes("1024"), Some(1024.0));
        assert!(bytes("2Gi") > bytes("2G"));
        assert!(bytes("1Gi") < bytes("1100Mi"));
        assert_eq!(bytes("ten"), None);
        assert_eq!(bytes("-1Gi"), None);
    }
}
