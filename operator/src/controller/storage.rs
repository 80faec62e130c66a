//! Growing the volumes of the managed database and broker. A StatefulSet's volume claim template cannot
//! change, so a larger `storage.size` expands the existing claims instead, as CloudNativePG does: the
//! claim's request is patched, and the StorageClass's provisioner grows the volume (and the kubelet its
//! file system). Where the class does not allow expansion, the API server refuses the patch; the
//! `StorageResized` condition and a Warning Event say so, and the rest of the pass goes on. (The
//! CloudNativePG and RabbitMQ clusters grow their own claims from the size the operator passes on.)

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::PersistentVolumeClaim};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::events::EventType,
};
use serde_json::json;

use super::{Context, Error, Write, publish, status::Verdict};
use crate::{
    children::{self, broker, databases},
    crd::AnalyticsPipeline,
};

/// Expands the managed backends' claims to the spec's size where they are smaller (only reads them when
/// `write` is [`Write::Paused`]), and tells how far they are: `None` when the pipeline has no managed
/// backend.
pub(super) async fn reconcile(
    pipeline: &AnalyticsPipeline,
    ctx: &Context,
    namespace: &str,
    sets: &[StatefulSet],
    write: Write,
) -> Result<Option<Verdict>, Error> {
    let mut wanted = Vec::new();
    if let databases::Mode::Managed(managed) = databases::mode(pipeline) {
        wanted.push((children::name(pipeline, databases::COMPONENT), managed.storage.size));
    }
    if let broker::Mode::Managed(managed) = broker::mode(pipeline) {
        wanted.push((children::name(pipeline, broker::COMPONENT), managed.storage.size));
    }
    if wanted.is_empty() {
        return Ok(None);
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), namespace);
    let mut verdicts = Vec::new();
    for (set_name, size) in wanted {
        let Some(set) = sets.iter().find(|set| set.name_any() == set_name) else { continue };
        let templates = set.spec.as_ref().and_then(|spec| spec.volume_claim_templates.as_deref()).unwrap_or_default();
        for template in templates {
            // The managed backends are one pod each: ordinal 0.
            let name = format!("{}-{set_name}-0", template.name_any());
            let Some(claim) = claims.get_opt(&name).await? else { continue };
            let requested = quantity(&claim, Figure::Requested);
            let mut refused = None;
            if bytes(&size) > requested.as_deref().and_then(bytes) {
                if write == Write::Paused {
                    verdicts.push(Verdict::not_ready(
                        "Paused",
                        format!("{name}: {} requested, the spec asks {size}; paused", requested.unwrap_or_default()),
                    ));
                    continue;
                }
                let patch = json!({"spec": {"resources": {"requests": {"storage": size}}}});
                match claims.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                    Ok(_) => {
                        let note = format!("{name}: expanding from {} to {size}", requested.unwrap_or_default());
                        publish(ctx, pipeline, EventType::Normal, "StorageExpanding", &note).await;
                    }
                    Err(kube::Error::Api(status)) if matches!(status.code, 403 | 422) => {
                        let note = format!(
                            "{name} cannot grow to {size}: {} (its StorageClass must allow volume expansion)",
                            status.message
                        );
                        publish(ctx, pipeline, EventType::Warning, "StorageNotExpanded", &note).await;
                        refused = Some(note);
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            verdicts.push(match refused {
                Some(note) => Verdict::not_ready("ExpansionRefused", note),
                None => progress(&claims.get(&name).await?, &name, &size),
            });
        }
    }
    Ok(Some(
        verdicts
            .into_iter()
            .find(|verdict| !verdict.ready)
            .unwrap_or_else(|| Verdict::ready("Resized", "every volume has the size the spec asks for")),
    ))
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
