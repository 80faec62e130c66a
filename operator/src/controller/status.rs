//! The pipeline's status, derived from what one pass applied and observed, with no I/O.
//!
//! [`Observation`] is everything a pass learned: the live children after apply, the consumer count it
//! chose, the queue depth and the query service's sync-status. [`derive`] turns it into the status;
//! [`invalid`] and [`failed`] give the status of a spec that cannot be applied and of a pass that failed.

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        batch::v1::Job,
    },
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use kube::{Resource, ResourceExt};

use super::PAUSED_ANNOTATION;
use crate::{
    children::{
        cloudnative_pg::{self, Cluster},
        rabbitmq_cluster::{self, RabbitmqCluster},
    },
    crd::{AnalyticsPipelineStatus, Endpoints, Phase, PostgresStatus, ReadModelStatus, VerifyOutcome},
    observe::SyncStatus,
};

/// The condition that the last verify sets.
pub const READ_MODEL_CONSISTENT: &str = "ReadModelConsistent";

/// One condition's verdict: its status, a CamelCase reason and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub ready: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Verdict {
    pub(crate) fn ready(reason: &'static str, message: impl Into<String>) -> Self {
        Self { ready: true, reason, message: message.into() }
    }

    pub(crate) fn not_ready(reason: &'static str, message: impl Into<String>) -> Self {
        Self { ready: false, reason, message: message.into() }
    }

    /// A dependency the operator does not run, and so does not check.
    pub fn external(message: &str) -> Self {
        Self::ready("External", message)
    }

    /// A managed StatefulSet: ready with one ready pod.
    pub fn stateful_set(set: Option<&StatefulSet>, name: &str) -> Self {
        let Some(set) = set else { return Self::not_ready("Missing", format!("{name} does not exist")) };
        if set.meta().deletion_timestamp.is_some() {
            return Self::not_ready("Terminating", format!("{name} is being deleted"));
        }
        if set.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0) >= 1 {
            Self::ready("Ready", format!("{name} is ready"))
        } else {
            Self::not_ready("NotReady", format!("{name} has no ready pod"))
        }
    }

    /// A CloudNativePG cluster: ready when CloudNativePG reports it healthy with every instance ready and
    /// a primary, and the roles Job has applied the services' roles. During a failover or switchover it
    /// is not ready, with CloudNativePG's phase as the message.
    pub fn cloudnative_pg(cluster: Option<&Cluster>, name: &str, roles: Option<&Job>) -> Self {
        let Some(cluster) = cluster else { return Self::not_ready("Missing", format!("{name} does not exist")) };
        if cluster.meta().deletion_timestamp.is_some() {
            return Self::not_ready("Terminating", format!("{name} is being deleted"));
        }
        let status = cluster.status.clone().unwrap_or_default();
        let wanted = cluster.spec.instances;
        let figures = format!("{} of {wanted} instances ready", status.ready_instances);
        if status.phase != cloudnative_pg::HEALTHY
            || status.ready_instances < wanted
            || status.current_primary.is_empty()
        {
            let phase = if status.phase.is_empty() { "not reported yet" } else { status.phase.as_str() };
            return Self::not_ready("ClusterNotHealthy", format!("{name}: {phase}; {figures}"));
        }
        let roles_done = roles.and_then(|job| job.status.as_ref()).and_then(|s| s.succeeded).unwrap_or(0) >= 1;
        if !roles_done {
            return Self::not_ready("RolesPending", format!("{name}: waiting for the services' roles (the roles Job)"));
        }
        Self::ready("Healthy", format!("{name}: {figures}, primary {}", status.current_primary))
    }

    /// A RabbitMQ cluster operator cluster: ready when the cluster operator has acted on its spec and
    /// reports every node ready, an endpoint behind the client Service and a successful pass.
    pub fn rabbitmq_cluster(cluster: Option<&RabbitmqCluster>, name: &str) -> Self {
        let Some(cluster) = cluster else { return Self::not_ready("Missing", format!("{name} does not exist")) };
        if cluster.meta().deletion_timestamp.is_some() {
            return Self::not_ready("Terminating", format!("{name} is being deleted"));
        }
        let status = cluster.status.clone().unwrap_or_default();
        let nodes = format!("{} nodes", cluster.spec.replicas);
        for wanted in rabbitmq_cluster::READY_CONDITIONS {
            let Some(condition) = status.conditions.iter().find(|c| c.type_ == wanted) else {
                return Self::not_ready("ClusterNotReady", format!("{name}: {wanted} not reported yet; {nodes}"));
            };
            if condition.status != "True" {
                let why = [condition.reason.as_deref(), condition.message.as_deref()]
                    .into_iter()
                    .flatten()
                    .filter(|part| !part.is_empty())
                    .collect::<Vec<_>>()
                    .join(": ");
                return Self::not_ready(
                    "ClusterNotReady",
                    format!("{name}: {wanted} is {} ({why}); {nodes}", condition.status),
                );
            }
        }
        if status.observed_generation < cluster.meta().generation {
            return Self::not_ready(
                "ClusterNotReady",
                format!("{name}: the cluster operator is rolling out a change; {nodes}"),
            );
        }
        Self::ready("Ready", format!("{name}: {nodes} ready"))
    }

    /// The services' Deployments: available when each has rolled out and has every replica available.
    pub fn deployments(deployments: &[Deployment]) -> Self {
        for deployment in deployments {
            let name = deployment.name_any();
            if deployment.meta().deletion_timestamp.is_some() {
                return Self::not_ready("Terminating", format!("{name} is being deleted"));
            }
            let wanted = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let status = deployment.status.clone().unwrap_or_default();
            let current = status.observed_generation >= deployment.metadata.generation;
            let updated = status.updated_replicas.unwrap_or(0) >= wanted;
            let available = status.available_replicas.unwrap_or(0) >= wanted;
            if !(current && updated && available) {
                let message =
                    format!("{name}: {} of {wanted} replicas available", status.available_replicas.unwrap_or(0));
                return Self::not_ready("NotAvailable", message);
            }
        }
        Self::ready("Available", "every service is available")
    }
}

/// What one pass applied and observed.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub generation: Option<i64>,
    /// The pipeline carries the pause annotation: the pass changed nothing.
    pub paused: bool,
    /// With `spec.hibernate`, how many of the pipeline's pods still run.
    pub hibernation: Option<usize>,
    /// Whether the managed backends' volumes have the spec's size; `None` without a managed backend.
    pub storage: Option<Verdict>,
    pub databases: Verdict,
    pub broker: Verdict,
    pub services: Verdict,
    pub endpoints: Endpoints,
    pub consumer_replicas: i32,
    /// `None` when the broker could not be asked.
    pub queue_depth: Option<i64>,
    /// `None` when the query service did not answer, or not with a sync-status: the lag stays as last
    /// seen.
    pub sync: Option<SyncStatus>,
    /// The last verify and the rebuild asked for; `None` before either.
    pub read_model: Option<ReadModelStatus>,
    /// The CloudNativePG cluster, in that mode.
    pub postgres: Option<PostgresStatus>,
}

/// The status after a pass that applied every child. Conditions keep their transition time unless their
/// status flips; a pipeline that was ready and no longer is, is Degraded rather than Provisioning.
pub fn derive(
    previous: Option<&AnalyticsPipelineStatus>,
    observed: Observation,
    now: Timestamp,
) -> AnalyticsPipelineStatus {
    let mut status = previous.cloned().unwrap_or_default();
    let was = status.phase;
    status.observed_generation = observed.generation;
    let ready = observed.databases.ready && observed.broker.ready && observed.services.ready;
    let overall = if observed.hibernation.is_some() {
        Verdict::not_ready("Hibernated", "spec.hibernate: the pipeline runs no pods")
    } else if ready {
        Verdict::ready("AllReady", "every child is available")
    } else {
        Verdict::not_ready("ChildrenNotReady", "waiting for children")
    };
    let hibernated = observed.hibernation.map(|running| match running {
        0 => Verdict::ready("Hibernated", "no pod runs; the volumes keep the data"),
        running => Verdict::not_ready("Hibernating", format!("{running} pods are still stopping")),
    });
    let paused = observed.paused.then(|| {
        Verdict::ready(
            "ReconciliationPaused",
            format!("{PAUSED_ANNOTATION}=true: the operator changes nothing of the pipeline and only reports"),
        )
    });
    for (type_, verdict) in [("Hibernated", hibernated), ("Paused", paused), ("StorageResized", observed.storage)] {
        match verdict {
            Some(verdict) => set_condition(&mut status.conditions, type_, &verdict, observed.generation, now),
            None => status.conditions.retain(|condition| condition.type_ != type_),
        }
    }
    for (type_, verdict) in [
        ("DatabasesReady", &observed.databases),
        ("BrokerReady", &observed.broker),
        ("ServicesReady", &observed.services),
        ("Ready", &overall),
    ] {
        set_condition(&mut status.conditions, type_, verdict, observed.generation, now);
    }
    let (consistent, reason, message) = match observed.read_model.as_ref().and_then(|r| r.last_verify.as_ref()) {
        None => ("Unknown", "NotVerified", "no verify has finished yet".to_owned()),
        Some(run) => match run.outcome {
            VerifyOutcome::Consistent => ("True", "Consistent", run.message.clone()),
            VerifyOutcome::Drift => ("False", "Drift", run.message.clone()),
            VerifyOutcome::Failed => ("Unknown", "VerifyFailed", run.message.clone()),
        },
    };
    put_condition(
        &mut status.conditions,
        READ_MODEL_CONSISTENT,
        consistent,
        reason,
        &message,
        observed.generation,
        now,
    );
    status.read_model = observed.read_model;
    status.postgres = observed.postgres;
    status.phase = Some(match (ready, was) {
        _ if observed.hibernation.is_some() => Phase::Hibernated,
        (true, _) => Phase::Ready,
        (false, Some(Phase::Ready | Phase::Degraded)) => Phase::Degraded,
        (false, _) => Phase::Provisioning,
    });
    status.endpoints = Some(observed.endpoints);
    status.consumer_replicas = Some(observed.consumer_replicas);
    status.queue_depth = observed.queue_depth;
    if observed.hibernation.is_some() {
        // Nothing runs to be behind: no lag, no backlog (and no lag alert from the last figures).
        status.lag_seconds = None;
        status.pending_events = None;
    }
    if let Some(sync) = observed.sync {
        status.lag_seconds = sync.lag_seconds;
        status.pending_events = sync.pending_events;
        status.last_sync_time = sync
            .last_processed_event_timestamp
            .and_then(|at| Timestamp::from_millisecond(at.timestamp_millis()).ok())
            .map(Time);
    }
    status
}

/// The status of a spec the operator refuses: Failed, with the reason in Ready.
pub fn invalid(
    previous: Option<&AnalyticsPipelineStatus>,
    generation: Option<i64>,
    reason: &str,
    now: Timestamp,
) -> AnalyticsPipelineStatus {
    let mut status = previous.cloned().unwrap_or_default();
    status.observed_generation = generation;
    status.phase = Some(Phase::Failed);
    set_condition(&mut status.conditions, "Ready", &Verdict::not_ready("InvalidSpec", reason), generation, now);
    status
}

/// The status after a pass that failed part-way: Degraded, with the error in Ready.
pub fn failed(
    previous: Option<&AnalyticsPipelineStatus>,
    generation: Option<i64>,
    error: &str,
    now: Timestamp,
) -> AnalyticsPipelineStatus {
    let mut status = previous.cloned().unwrap_or_default();
    status.phase = Some(Phase::Degraded);
    set_condition(&mut status.conditions, "Ready", &Verdict::not_ready("ReconcileFailed", error), generation, now);
    status
}

/// Sets a condition from a verdict.
fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    verdict: &Verdict,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if verdict.ready { "True" } else { "False" };
    put_condition(conditions, type_, status, verdict.reason, &verdict.message, generation, now);
}

/// Sets a condition (`status` True, False or Unknown); its transition time moves only when its status
/// changes.
fn put_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let previous = conditions.iter().position(|c| c.type_ == type_);
    let transition = previous
        .map(|i| &conditions[i])
        .filter(|c| c.status == status)
        .map_or_else(|| Time(now), |c| c.last_transition_time.clone());
    let condition = Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition_time: transition,
    };
    match previous {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

/// A sync-status that reports 2.5 s of lag and 40 pending events, the newest applied at
/// 2026-11-24T06:00:00.123Z.
#[cfg(test)]
pub(crate) fn catching_up() -> SyncStatus {
    SyncStatus {
        last_processed_event_timestamp: "2026-11-24T06:00:00.123Z".parse().ok(),
        lag_seconds: Some(2.5),
        pending_events: Some(40),
        outbox_pending_events: Some(10),
        queue_depth: Some(30),
        watermark_age_seconds: Some(0.2),
        status: analytics_events::SyncState::CatchingUp,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus, StatefulSetStatus};

    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn endpoints() -> Endpoints {
        Endpoints {
            command: "http://shop-command.prod.svc:8080".into(),
            query: "http://shop-query.prod.svc:8081".into(),
        }
    }

    fn observation(databases: bool, broker: bool, services: bool) -> Observation {
        let verdict = |ready| if ready { Verdict::ready("Ready", "ok") } else { Verdict::not_ready("NotReady", "no") };
        Observation {
            generation: Some(3),
            paused: false,
            hibernation: None,
            storage: None,
            databases: verdict(databases),
            broker: verdict(broker),
            services: verdict(services),
            endpoints: endpoints(),
            consumer_replicas: 2,
            queue_depth: Some(1_500),
            sync: None,
            read_model: None,
            postgres: None,
        }
    }

    fn condition<'a>(status: &'a AnalyticsPipelineStatus, type_: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn a_new_pipeline_provisions_until_every_child_is_ready() {
        let status = derive(None, observation(true, false, false), at(0));
        assert_eq!(status.phase, Some(Phase::Provisioning));
        let types: Vec<_> = status.conditions.iter().map(|c| (c.type_.as_str(), c.status.as_str())).collect();
        assert_eq!(
            types,
            [
                ("DatabasesReady", "True"),
                ("BrokerReady", "False"),
                ("ServicesReady", "False"),
                ("Ready", "False"),
                ("ReadModelConsistent", "Unknown")
            ]
        );
        assert_eq!(condition(&status, READ_MODEL_CONSISTENT).reason, "NotVerified");
        assert_eq!(condition(&status, "Ready").reason, "ChildrenNotReady");
        assert_eq!(
            (status.observed_generation, status.consumer_replicas, status.queue_depth),
            (Some(3), Some(2), Some(1_500))
        );
        assert_eq!(status.endpoints, Some(endpoints()));

        let ready = derive(Some(&status), observation(true, true, true), at(10));
        assert_eq!(ready.phase, Some(Phase::Ready));
        assert_eq!(condition(&ready, "Ready").reason, "AllReady");
    }

    #[test]
    fn a_ready_pipeline_that_loses_a_child_is_degraded_not_provisioning() {
        let ready = derive(None, observation(true, true, true), at(0));
        let degraded = derive(Some(&ready), observation(true, false, true), at(5));
        assert_eq!(degraded.phase, Some(Phase::Degraded));
        let still = derive(Some(&degraded), observation(false, false, true), at(9));
        assert_eq!(still.phase, Some(Phase::Degraded));
        assert_eq!(derive(Some(&still), observation(true, true, true), at(12)).phase, Some(Phase::Ready));
    }

    #[test]
    fn a_conditions_transition_time_moves_only_when_its_status_flips() {
        let first = derive(None, observation(true, false, true), at(0));
        let second = derive(Some(&first), observation(true, false, true), at(30));
        assert_eq!(second, first, "nothing changed, so nothing to write");
        let third = derive(Some(&second), observation(true, true, true), at(60));
        assert_eq!(condition(&third, "DatabasesReady").last_transition_time, Time(at(0)));
        assert_eq!(condition(&third, "BrokerReady").last_transition_time, Time(at(60)));
    }

    #[test]
    fn lag_and_pending_come_from_sync_status_and_stay_when_it_does_not_answer() {
        let mut observed = observation(true, true, true);
        observed.sync = Some(catching_up());
        let status = derive(None, observed, at(0));
        assert_eq!((status.lag_seconds, status.pending_events), (Some(2.5), Some(40)));
        assert_eq!(status.last_sync_time, Some(Time("2026-11-24T06:00:00.123Z".parse().unwrap())));
        let silent = derive(Some(&status), observation(true, true, true), at(15));
        assert_eq!((silent.lag_seconds, silent.pending_events), (Some(2.5), Some(40)));
    }

    #[test]
    fn an_invalid_spec_fails_and_a_failed_pass_degrades_keeping_the_rest() {
        let ready = derive(None, observation(true, true, true), at(0));
        let refused = invalid(Some(&ready), Some(4), "minReplicas exceeds maxReplicas", at(5));
        assert_eq!((refused.phase, refused.observed_generation), (Some(Phase::Failed), Some(4)));
        assert_eq!(condition(&refused, "Ready").reason, "InvalidSpec");
        assert_eq!(condition(&refused, "ServicesReady"), condition(&ready, "ServicesReady"));
        let broken = failed(Some(&ready), Some(3), "Kubernetes API error: boom", at(5));
        assert_eq!(broken.phase, Some(Phase::Degraded));
        assert_eq!(condition(&broken, "Ready").message, "Kubernetes API error: boom");
    }

    #[test]
    fn the_last_verify_decides_read_model_consistent_and_the_status_keeps_it() {
        let verified = |outcome, message: &str| {
            let mut observed = observation(true, true, true);
            observed.read_model = Some(ReadModelStatus {
                last_verify: Some(crate::crd::VerifyRun {
                    job: "shop-verify-29417160".into(),
                    finished_at: Some(Time(at(0))),
                    outcome,
                    message: message.into(),
                }),
                rebuild: None,
            });
            observed
        };
        let consistent = derive(None, verified(VerifyOutcome::Consistent, "consistent: 6 views, 40 keys"), at(0));
        let read_model = condition(&consistent, READ_MODEL_CONSISTENT);
        assert_eq!(
            (read_model.status.as_str(), read_model.reason.as_str(), read_model.message.as_str()),
            ("True", "Consistent", "consistent: 6 views, 40 keys")
        );
        assert_eq!(consistent.read_model.as_ref().unwrap().last_verify.as_ref().unwrap().job, "shop-verify-29417160");
        let drift = derive(Some(&consistent), verified(VerifyOutcome::Drift, "drift: 2 keys differ"), at(60));
        let read_model = condition(&drift, READ_MODEL_CONSISTENT);
        assert_eq!((read_model.status.as_str(), read_model.reason.as_str()), ("False", "Drift"));
        assert_eq!(read_model.last_transition_time, Time(at(60)));
        assert_eq!(drift.phase, Some(Phase::Ready), "drift is not an outage: the services serve");
        let failed = derive(Some(&drift), verified(VerifyOutcome::Failed, "failed: connection refused"), at(90));
        let read_model = condition(&failed, READ_MODEL_CONSISTENT);
        assert_eq!((read_model.status.as_str(), read_model.reason.as_str()), ("Unknown", "VerifyFailed"));
    }

    #[test]
    fn children_are_judged_by_their_live_status() {
        let mut set = StatefulSet::default();
        set.metadata.name = Some("shop-postgres".into());
        assert_eq!(Verdict::stateful_set(None, "shop-postgres").reason, "Missing");
        assert_eq!(Verdict::stateful_set(Some(&set), "shop-postgres").reason, "NotReady");
        set.status = Some(StatefulSetStatus { ready_replicas: Some(1), ..Default::default() });
        assert!(Verdict::stateful_set(Some(&set), "shop-postgres").ready);

        let mut deployment = Deployment::default();
        deployment.metadata.name = Some("shop-query".into());
        deployment.metadata.generation = Some(2);
        deployment.spec = Some(DeploymentSpec { replicas: Some(2), ..Default::default() });
        deployment.status = Some(DeploymentStatus {
            observed_generation: Some(2),
            updated_replicas: Some(2),
            available_replicas: Some(1),
            ..Default::default()
        });
        let verdict = Verdict::deployments(std::slice::from_ref(&deployment));
        assert_eq!(
            (verdict.reason, verdict.message.as_str()),
            ("NotAvailable", "shop-query: 1 of 2 replicas available")
        );
        deployment.status.as_mut().unwrap().available_replicas = Some(2);
        assert!(Verdict::deployments(&[deployment]).ready);
    }

    /// The broker of the `clusterOperator` mode is ready once the cluster operator has acted on the spec
    /// and reports every node ready, an endpoint and a successful pass; otherwise the first condition that
    /// is not True says why.
    #[test]
    fn a_rabbitmq_cluster_is_judged_by_the_cluster_operators_conditions() {
        use crate::children::rabbitmq_cluster::{ClusterCondition, RabbitmqClusterSpec, RabbitmqClusterStatus};
        let condition = |type_: &str, status: &str, reason: &str, message: &str| ClusterCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
        };
        let mut cluster =
            RabbitmqCluster::new("shop-rabbitmq", RabbitmqClusterSpec { replicas: 3, ..Default::default() });
        cluster.metadata.generation = Some(2);
        let verdict = |cluster: &RabbitmqCluster| Verdict::rabbitmq_cluster(Some(cluster), "shop-rabbitmq");
        assert_eq!(Verdict::rabbitmq_cluster(None, "shop-rabbitmq").reason, "Missing");
        assert_eq!(verdict(&cluster).message, "shop-rabbitmq: AllReplicasReady not reported yet; 3 nodes");
        cluster.status = Some(RabbitmqClusterStatus {
            conditions: vec![
                condition("AllReplicasReady", "False", "NotAllPodsReady", "2/3 Pods ready"),
                condition("ClusterAvailable", "True", "AtLeastOneEndpointAvailable", ""),
                condition("NoWarnings", "False", "MemoryRequestAndLimitDifferent", "unsafe"),
                condition("ReconcileSuccess", "True", "Success", ""),
            ],
            observed_generation: Some(2),
        });
        let not_ready = verdict(&cluster);
        assert_eq!(
            (not_ready.ready, not_ready.message.as_str()),
            (false, "shop-rabbitmq: AllReplicasReady is False (NotAllPodsReady: 2/3 Pods ready); 3 nodes")
        );
        let status = cluster.status.as_mut().unwrap();
        status.conditions[0] = condition("AllReplicasReady", "True", "AllPodsAreReady", "");
        let ready = verdict(&cluster);
        assert_eq!(
            (ready.ready, ready.message.as_str()),
            (true, "shop-rabbitmq: 3 nodes ready"),
            "NoWarnings is not needed"
        );
        // A spec the cluster operator has not finished rolling out: its ReconcileSuccess is from before.
        cluster.metadata.generation = Some(3);
        assert_eq!(verdict(&cluster).message, "shop-rabbitmq: the cluster operator is rolling out a change; 3 nodes");
    }
}
