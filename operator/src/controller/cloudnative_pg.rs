//! The reconciler's part of the `cloudNativePG` mode: the administrator's Secret, the roles Jobs, the
//! cluster's condition and status, and an Event on every change of primary.

use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Pod, Secret, Service},
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PropagationPolicy},
    runtime::events::EventType,
};

use super::{Context, Error, create_once, publish_related, retain, status::Verdict, uid_label};
use crate::{
    children::{
        self, COMPONENT_LABEL, INSTANCE_LABEL, POSTGRES_PASSWORD_KEY,
        cloudnative_pg::{self, ADMIN_SECRET, CLUSTER_LABEL, Cluster, ROLES},
        databases,
    },
    crd::{AnalyticsPipeline, PostgresStatus},
};

/// Creates the administrator's basic-auth Secret from the credentials if it does not exist; marks one
/// made for an earlier pipeline of this name as this one's. The credentials exist already.
pub async fn ensure_admin_secret(pipeline: &AnalyticsPipeline, secrets: &Api<Secret>) -> Result<(), Error> {
    let name = children::name(pipeline, ADMIN_SECRET);
    if let Some(secret) = secrets.get_opt(&name).await? {
        if children::is_data_of_name(pipeline, secret.labels()) && !children::is_data_of(pipeline, secret.labels()) {
            secrets.patch(&name, &PatchParams::default(), &Patch::Merge(&uid_label(pipeline))).await?;
        }
        return Ok(());
    }
    let credentials = secrets.get(&children::name(pipeline, children::CREDENTIALS)).await?;
    let password = credentials
        .data
        .as_ref()
        .and_then(|data| data.get(POSTGRES_PASSWORD_KEY))
        .map(|value| String::from_utf8_lossy(&value.0).into_owned())
        .unwrap_or_default();
    create_once(secrets, cloudnative_pg::admin_secret(pipeline, &password)).await
}

/// The cluster's condition and status after a pass applied `cluster` and `roles` (the current roles
/// Job). When the pass may `tidy`, roles Jobs of an earlier form are deleted, and so is a current one that
/// failed, so that the next pass makes it again (not while the pipeline is paused or hibernated). A new
/// timeline is announced with a Warning Event.
pub async fn observe(
    pipeline: &AnalyticsPipeline,
    ctx: &Context,
    namespace: &str,
    cluster: Option<&Cluster>,
    roles: Option<&Job>,
    tidy: bool,
) -> Result<(Verdict, Option<PostgresStatus>), Error> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let selector = format!("{INSTANCE_LABEL}={},{COMPONENT_LABEL}={ROLES}", pipeline.name_any());
    let current = roles.map(ResourceExt::name_any);
    let background =
        DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..DeleteParams::default() };
    let listed = if tidy { jobs.list(&ListParams::default().labels(&selector)).await?.items } else { Vec::new() };
    for job in listed {
        let failed = job
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|conditions| conditions.iter().any(|c| c.type_ == "Failed" && c.status == "True"));
        if Some(job.name_any()) != current || failed {
            if failed {
                tracing::warn!(job = %job.name_any(), "the roles Job failed; it runs again");
            }
            retain::ignore_not_found(jobs.delete(&job.name_any(), &background).await.map(drop))?;
        }
    }
    let name = children::name(pipeline, databases::COMPONENT);
    let verdict = Verdict::cloudnative_pg(cluster, &name, roles);
    let previous = pipeline.status.as_ref().and_then(|status| status.postgres.as_ref());
    let status = cluster.and_then(|cluster| cluster.status.as_ref()).map(|now| postgres_status(previous, now));
    if let (Some(cluster), Some(note)) = (cluster, status.as_ref().and_then(|now| primary_changed(previous, now))) {
        // The Cluster at this resourceVersion: each change of primary is an Event of its own.
        let mut related = cluster.object_ref(&());
        related.resource_version = cluster.resource_version();
        publish_related(ctx, pipeline, EventType::Warning, "Failover", &note, Some(related)).await;
    }
    Ok((verdict, status))
}

/// The pipeline's view of CloudNativePG's status. While CloudNativePG names no primary or timeline (in
/// the middle of a failover), the last ones it named stay.
pub fn postgres_status(previous: Option<&PostgresStatus>, cluster: &cloudnative_pg::ClusterStatus) -> PostgresStatus {
    let primary = Some(cluster.current_primary.clone()).filter(|primary| !primary.is_empty());
    let timeline = Some(cluster.timeline_id).filter(|timeline| *timeline > 0);
    PostgresStatus {
        primary: primary.or_else(|| previous.and_then(|p| p.primary.clone())),
        timeline: timeline.or_else(|| previous.and_then(|p| p.timeline)),
        instances: cluster.instances,
        ready_instances: cluster.ready_instances,
        phase: cluster.phase.clone(),
    }
}

/// The Event's note when `now` names another primary than `previous`: a standby was promoted, by a
/// failover or a switchover. CloudNativePG names the new primary first and its timeline a moment later,
/// so the note gives the new timeline when it is known already.
pub fn primary_changed(previous: Option<&PostgresStatus>, now: &PostgresStatus) -> Option<String> {
    let (old, new) = (previous?.primary.as_deref()?, now.primary.as_deref()?);
    (old != new).then(|| {
        let timeline = match (previous.and_then(|p| p.timeline), now.timeline) {
            (Some(before), Some(after)) if after > before => format!("timeline {before} → {after}"),
            (Some(before), _) => format!("from timeline {before}"),
            (None, _) => "timeline unknown".to_owned(),
        };
        format!("the primary moved from {old} to {new} ({timeline})")
    })
}

/// Under `Retain` ([`retain`]): the cluster goes with propagation `Orphan`, then its pods (each given the
/// spec's `smartShutdownTimeout` and 15 s to stop), Services, Secrets and PodDisruptionBudgets, by
/// CloudNativePG's cluster label. The claims keep CloudNativePG's
/// labels and annotations: a `Cluster` of the same name made later finds them without an owner and starts
/// its instances on them, primary first, without initdb.
pub async fn delete_keeping_volumes(pipeline: &AnalyticsPipeline, ctx: &Context, namespace: &str) -> Result<(), Error> {
    let name = children::name(pipeline, databases::COMPONENT);
    retain::orphan::<Cluster>(ctx, namespace, &name, "CloudNativePG cluster").await?;
    let selector = format!("{CLUSTER_LABEL}={name}");
    // The spec's smart shutdown, then a stop (CloudNativePG's default, 180 s, when the spec sets none).
    let smart = pipeline.spec.postgres.cloud_native_pg.as_ref().and_then(|spec| spec.smart_shutdown_timeout);
    let grace = u32::try_from(smart.unwrap_or(180)).unwrap_or(180) + 15;
    let plain = DeleteParams::default();
    retain::delete_labelled::<Pod>(ctx, namespace, &selector, &retain::stopping_within(grace)).await?;
    retain::delete_labelled::<Service>(ctx, namespace, &selector, &plain).await?;
    retain::delete_labelled::<Secret>(ctx, namespace, &selector, &plain).await?;
    retain::delete_labelled::<PodDisruptionBudget>(ctx, namespace, &selector, &plain).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::batch::v1::JobStatus;

    use super::*;
    use crate::children::cloudnative_pg::{ClusterSpec, ClusterStatus};

    fn cluster(instances: i32, status: ClusterStatus) -> Cluster {
        let mut cluster = Cluster::new("shop-postgres", ClusterSpec { instances, ..ClusterSpec::default() });
        cluster.status = Some(status);
        cluster
    }

    fn healthy(ready: i32) -> ClusterStatus {
        ClusterStatus {
            instances: 3,
            ready_instances: ready,
            current_primary: "shop-postgres-1".into(),
            target_primary: "shop-postgres-1".into(),
            timeline_id: 1,
            phase: cloudnative_pg::HEALTHY.into(),
            ..ClusterStatus::default()
        }
    }

    fn roles(succeeded: i32) -> Job {
        Job { status: Some(JobStatus { succeeded: Some(succeeded), ..JobStatus::default() }), ..Job::default() }
    }

    #[test]
    fn the_databases_are_ready_when_cloudnative_pg_reports_every_instance_healthy_and_the_roles_are_applied() {
        let done = roles(1);
        let verdict =
            |cluster: Option<&Cluster>, roles: Option<&Job>| Verdict::cloudnative_pg(cluster, "shop-postgres", roles);
        let ready = verdict(Some(&cluster(3, healthy(3))), Some(&done));
        assert!(ready.ready, "{ready:?}");
        assert_eq!(ready.message, "shop-postgres: 3 of 3 instances ready, primary shop-postgres-1");

        let missing = verdict(None, Some(&done));
        assert_eq!((missing.ready, missing.reason), (false, "Missing"));
        let one_down = verdict(Some(&cluster(3, healthy(2))), Some(&done));
        assert_eq!((one_down.ready, one_down.reason), (false, "ClusterNotHealthy"));
        let failing_over = ClusterStatus { phase: "Failing over".into(), ..healthy(2) };
        let failing_over = verdict(Some(&cluster(3, failing_over)), Some(&done));
        assert_eq!(failing_over.message, "shop-postgres: Failing over; 2 of 3 instances ready");
        let new = verdict(Some(&cluster(3, ClusterStatus::default())), None);
        assert_eq!(new.message, "shop-postgres: not reported yet; 0 of 3 instances ready");
        let no_roles = verdict(Some(&cluster(3, healthy(3))), Some(&roles(0)));
        assert_eq!((no_roles.ready, no_roles.reason), (false, "RolesPending"));
    }

    #[test]
    fn a_new_primary_is_announced_with_its_timeline_once_it_is_known() {
        let at = |primary: &str, timeline: i64| PostgresStatus {
            primary: Some(primary.into()),
            timeline: Some(timeline),
            instances: 3,
            ready_instances: 3,
            phase: cloudnative_pg::HEALTHY.into(),
        };
        assert_eq!(
            primary_changed(Some(&at("shop-postgres-1", 1)), &at("shop-postgres-2", 2)).as_deref(),
            Some("the primary moved from shop-postgres-1 to shop-postgres-2 (timeline 1 → 2)")
        );
        // CloudNativePG names the new primary before its timeline.
        assert_eq!(
            primary_changed(Some(&at("shop-postgres-1", 1)), &at("shop-postgres-2", 1)).as_deref(),
            Some("the primary moved from shop-postgres-1 to shop-postgres-2 (from timeline 1)")
        );
        assert_eq!(
            primary_changed(Some(&at("shop-postgres-2", 1)), &at("shop-postgres-2", 2)),
            None,
            "announced already"
        );
        assert_eq!(primary_changed(Some(&at("shop-postgres-1", 1)), &at("shop-postgres-1", 1)), None);
        assert_eq!(primary_changed(None, &at("shop-postgres-1", 1)), None, "the first status announces nothing");
    }

    #[test]
    fn cloudnative_pgs_status_is_shown_as_it_reports_it() {
        let shown = postgres_status(None, &healthy(3));
        assert_eq!(
            shown,
            PostgresStatus {
                primary: Some("shop-postgres-1".into()),
                timeline: Some(1),
                instances: 3,
                ready_instances: 3,
                phase: cloudnative_pg::HEALTHY.into(),
            }
        );
        assert_eq!(postgres_status(None, &ClusterStatus::default()).primary, None);
        // In the middle of a failover CloudNativePG may name no primary: the last one stays.
        let failing_over = ClusterStatus { phase: "Failing over".into(), ..ClusterStatus::default() };
        let kept = postgres_status(Some(&shown), &failing_over);
        assert_eq!(
            (kept.primary.as_deref(), kept.timeline, kept.phase.as_str()),
            (Some("shop-postgres-1"), Some(1), "Failing over")
        );
    }
}
