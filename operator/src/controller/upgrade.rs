//! New default images roll out one pipeline at a time. When the operator's default service images change
//! (a chart upgrade with new `images`), every pipeline that runs the old ones would otherwise roll at once;
//! instead one pipeline at a time takes the rollout slot and gets the new images, and the others keep the
//! images they run until its Deployments have all rolled out. A pipeline whose spec names its own images is
//! not held, nor is a new or hibernated one (nothing of it runs). The slot lives in the leader's memory: a
//! new leader starts with it free, and a holder that has not finished after [`SLOT_TIMEOUT`] loses it.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, runtime::events::EventType};

use super::{Context, Error, key, publish, status::Verdict};
use crate::{
    children,
    crd::{AnalyticsPipeline, Image, ImageSet, PullPolicy},
};

/// How long one pipeline may hold the rollout slot.
pub const SLOT_TIMEOUT: Duration = Duration::from_secs(600);

/// The pipeline holding the slot, and since when.
#[derive(Debug, Default)]
pub struct Slot(Option<(String, Instant)>);

/// The default images this pass gives `pipeline`: the operator's, or the ones it runs while another
/// pipeline rolls out first.
pub(super) async fn images(pipeline: &AnalyticsPipeline, ctx: &Context, namespace: &str) -> Result<ImageSet, Error> {
    let target = &ctx.images;
    if pipeline.spec.hibernate {
        return Ok(target.clone());
    }
    let overrides = &pipeline.spec.images;
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
    let mut live = Vec::new();
    let mut outdated = Vec::new();
    for (component, overridden, wanted) in [
        ("command", overrides.command.is_some(), &target.command),
        ("consumer", overrides.consumer.is_some(), &target.consumer),
        ("query", overrides.query.is_some(), &target.query),
    ] {
        let Some(deployment) = api.get_opt(&children::name(pipeline, component)).await? else { continue };
        let running = running_image(&deployment, component);
        live.push(deployment);
        if !overridden && let Some(running) = running.filter(|running| running.reference() != wanted.reference()) {
            outdated.push((component, running));
        }
    }
    let Some(holder) = take_turn(ctx, &key(pipeline), outdated.is_empty(), Verdict::deployments(&live).ready) else {
        return Ok(target.clone());
    };
    let mut held = target.clone();
    for (component, running) in outdated {
        match component {
            "command" => held.command = running,
            "consumer" => held.consumer = running,
            _ => held.query = running,
        }
    }
    let note = format!("new default images wait until the rollout of {holder} has finished");
    publish(ctx, pipeline, EventType::Normal, "UpgradeQueued", &note).await;
    Ok(held)
}

/// Whether the pipeline `me` may have the operator's images now: `None` if so, or the pipeline that holds the
/// rollout. A pipeline that is `current` needs no turn, and gives the slot back once its Deployments have
/// `rolled_out`.
fn take_turn(ctx: &Context, me: &str, current: bool, rolled_out: bool) -> Option<String> {
    let mut slot = ctx.upgrade_slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mine = slot.0.as_ref().is_some_and(|(holder, _)| holder == me);
    if current {
        if mine && rolled_out {
            slot.0 = None;
        }
        return None;
    }
    match &slot.0 {
        Some((holder, since)) if !mine && since.elapsed() <= SLOT_TIMEOUT => Some(holder.clone()),
        taken => {
            if let Some((holder, _)) = taken.as_ref().filter(|_| !mine) {
                tracing::warn!(%holder, "the rollout of new default images took too long; the next pipeline goes on");
            }
            if !mine {
                slot.0 = Some((me.to_owned(), Instant::now()));
            }
            None
        }
    }
}

/// Releases the slot if `pipeline` holds it (deleted, say).
pub(super) fn release(pipeline: &AnalyticsPipeline, ctx: &Context) {
    let mut slot = ctx.upgrade_slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if slot.0.as_ref().is_some_and(|(holder, _)| *holder == key(pipeline)) {
        slot.0 = None;
    }
}

/// The image a service's container runs, as its Deployment says.
fn running_image(deployment: &Deployment, component: &str) -> Option<Image> {
    let pod = deployment.spec.as_ref()?.template.spec.as_ref()?;
    let container = pod.containers.iter().find(|container| container.name == component)?;
    let mut image: Image = container.image.as_deref()?.parse().ok()?;
    image.pull_policy = match container.image_pull_policy.as_deref() {
        Some("Always") => PullPolicy::Always,
        Some("Never") => PullPolicy::Never,
        _ => PullPolicy::IfNotPresent,
    };
    Some(image)
}
