//! New default images roll out one pipeline at a time. When the operator's default service images change
//! (a chart upgrade with new `images`), every pipeline that runs the old ones would otherwise roll at once;
//! instead one pipeline at a time takes the rollout slot and gets the new images, and the others keep the
//! images they run until its Deployments have all rolled out: every replica updated and available, no old
//! one left. A rollout that does not finish holds the others back, as a canary would: the waiting
//! pipelines' Events say for how long. A pipeline whose spec names its own images is not held, nor is a
//! new one (nothing of it runs); a hibernated, paused or deleted pipeline gives its turn back. The slot
//! lives in the leader's memory: a new leader starts with it free.

use std::{collections::HashMap, time::Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, runtime::events::EventType};

use super::{Context, Error, key, publish};
use crate::{
    children,
    crd::{AnalyticsPipeline, Image, ImageSet, PullPolicy},
};

/// The pipeline holding the slot and since when; and, for each waiting pipeline, the holder it was told of.
#[derive(Debug, Default)]
pub struct Slot {
    holder: Option<(String, Instant)>,
    told: HashMap<String, String>,
}

/// The default images this pass gives `pipeline`: the operator's, or the ones it runs while another
/// pipeline rolls out first.
pub(super) async fn images(pipeline: &AnalyticsPipeline, ctx: &Context, namespace: &str) -> Result<ImageSet, Error> {
    let target = &ctx.images;
    if pipeline.spec.hibernate {
        release(pipeline, ctx);
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
    let rolled_out = live.iter().all(rolled_out);
    let Some((holder, since, tell)) = take_turn(ctx, &key(pipeline), outdated.is_empty(), rolled_out) else {
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
    if tell {
        let note = format!(
            "new default images wait until the rollout of {holder} has finished (under way for {} s)",
            since.elapsed().as_secs()
        );
        publish(ctx, pipeline, EventType::Normal, "UpgradeQueued", &note).await;
    }
    Ok(held)
}

/// Whether the pipeline `me` may have the operator's images now: `None` if so; or the pipeline that holds
/// the rollout, since when, and whether `me` has not been told of it yet. A pipeline that is `current`
/// needs no turn, and gives the slot back once its Deployments have `rolled_out`.
fn take_turn(ctx: &Context, me: &str, current: bool, rolled_out: bool) -> Option<(String, Instant, bool)> {
    let mut slot = ctx.upgrade_slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mine = slot.holder.as_ref().is_some_and(|(holder, _)| holder == me);
    if current {
        if mine && rolled_out {
            slot.holder = None;
        }
        slot.told.remove(me);
        return None;
    }
    match slot.holder.clone() {
        Some((holder, since)) if !mine => {
            let tell = slot.told.insert(me.to_owned(), holder.clone()).as_ref() != Some(&holder);
            Some((holder, since, tell))
        }
        _ => {
            if !mine {
                slot.holder = Some((me.to_owned(), Instant::now()));
            }
            slot.told.remove(me);
            None
        }
    }
}

/// Gives the slot back if `pipeline` holds it (deleted, hibernated or paused), and forgets what it was told.
pub(super) fn release(pipeline: &AnalyticsPipeline, ctx: &Context) {
    let me = key(pipeline);
    let mut slot = ctx.upgrade_slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if slot.holder.as_ref().is_some_and(|(holder, _)| *holder == me) {
        slot.holder = None;
    }
    slot.told.remove(&me);
}

/// Whether a Deployment's rollout is complete, as `kubectl rollout status` tells it: the controller has
/// seen the current spec, and every replica is updated and available, with no old one left.
fn rolled_out(deployment: &Deployment) -> bool {
    let wanted = deployment.spec.as_ref().and_then(|spec| spec.replicas).unwrap_or(1);
    let Some(status) = deployment.status.as_ref() else { return false };
    status.observed_generation >= deployment.metadata.generation
        && status.updated_replicas.unwrap_or(0) == wanted
        && status.replicas.unwrap_or(0) == wanted
        && status.available_replicas.unwrap_or(0) == wanted
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
