//! NetworkPolicies for the managed backends. PostgreSQL accepts only the pipeline's own pods, on its
//! port. A CloudNativePG cluster's instances are the pipeline's pods too (they carry its labels), so they
//! replicate among themselves under the same rule; they also accept CloudNativePG's operator, from any
//! namespace, on the instance manager's status port, and they keep their egress: each instance manager
//! talks to the Kubernetes API and to the other instances. RabbitMQ accepts the pipeline's own pods and
//! the operator's namespace (the operator reads the queue depth), on AMQP only. Nothing reaches the
//! management UI (15672) or the Erlang ports (4369, 25672) of the managed node: a single node needs
//! neither from outside its pod. The nodes of a RabbitMQ cluster operator cluster also accept each other
//! on the Erlang ports and the cluster operator on the management API, and keep their egress. Neither backend opens a connection (their
//! pods reach themselves over loopback and find their names in /etc/hosts), so all their egress is
//! denied. The services' pods accept anyone on an API's port (who may call it is its bearer tokens'
//! business, and its Service is how users reach it), and only the monitoring namespaces (the
//! operator's `--metrics-from-namespaces`) on the admin port: its /metrics tell business figures. The
//! kubelet's probes come from the node, which a NetworkPolicy never blocks. Their egress stays open:
//! external backends may be anywhere.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::networking::v1::{
        NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, LabelSelectorRequirement},
        util::intstr::IntOrString,
    },
};
use kube::ResourceExt;

use super::{
    COMPONENT_LABEL, INSTANCE_LABEL, broker, cloudnative_pg, databases, maintenance, metadata, name, rabbitmq_cluster,
    selector, services,
};
use crate::crd::AnalyticsPipeline;

/// The policies of `pipeline`'s services and managed backends; `operator_namespace` is where the
/// operator runs, `monitoring` selects the namespaces that may scrape the services.
pub fn policies(
    pipeline: &AnalyticsPipeline,
    operator_namespace: &str,
    monitoring: &LabelSelector,
) -> Vec<NetworkPolicy> {
    let own_pods = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(INSTANCE_LABEL.to_owned(), pipeline.name_any())])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    let operator = NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_owned(),
                operator_namespace.to_owned(),
            )])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    let monitoring = NetworkPolicyPeer { namespace_selector: Some(monitoring.clone()), ..NetworkPolicyPeer::default() };
    let mut policies: Vec<NetworkPolicy> = [
        ("command", Some(services::COMMAND_PORT), services::COMMAND_ADMIN_PORT),
        ("query", Some(services::QUERY_PORT), services::QUERY_ADMIN_PORT),
        ("consumer", None, services::CONSUMER_ADMIN_PORT),
    ]
    .into_iter()
    .map(|(component, api, admin)| service_policy(pipeline, component, api, admin, monitoring.clone()))
    .collect();
    policies.push(jobs_policy(pipeline));
    match databases::mode(pipeline) {
        databases::Mode::Managed(_) => {
            policies.push(policy(
                pipeline,
                databases::COMPONENT,
                only(vec![own_pods.clone()], databases::PORT),
                Egress::Denied,
            ));
        }
        databases::Mode::CloudNativePg(_) => policies.push(cloudnative_pg_policy(pipeline, own_pods.clone())),
        databases::Mode::External(_) => {}
    }
    match broker::mode(pipeline) {
        broker::Mode::Managed(_) => {
            policies.push(policy(
                pipeline,
                broker::COMPONENT,
                only(vec![own_pods, operator], broker::PORT),
                Egress::Denied,
            ));
        }
        broker::Mode::ClusterOperator(_) => policies.push(rabbitmq_cluster_policy(pipeline, own_pods, operator)),
        broker::Mode::External(_) => {}
    }
    policies
}

/// The pipeline's Jobs (the read model's verify and rebuild, the roles on CloudNativePG) listen on nothing:
/// no ingress at all. Their egress stays open, to the databases.
fn jobs_policy(pipeline: &AnalyticsPipeline) -> NetworkPolicy {
    let jobs = [maintenance::VERIFY, maintenance::REBUILD, cloudnative_pg::ROLES];
    NetworkPolicy {
        metadata: metadata(pipeline, "jobs", "jobs"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(INSTANCE_LABEL.to_owned(), pipeline.name_any())])),
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: COMPONENT_LABEL.to_owned(),
                    operator: "In".to_owned(),
                    values: Some(jobs.map(str::to_owned).to_vec()),
                }]),
            }),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(Vec::new()),
            ..NetworkPolicySpec::default()
        }),
    }
}

/// The ports RabbitMQ nodes cluster over: epmd, and Erlang distribution (inter-node and CLI traffic).
const RABBITMQ_CLUSTERING_PORTS: [i32; 2] = [4369, 25672];
/// The management API, which the cluster operator calls on each node.
const RABBITMQ_MANAGEMENT_PORT: i32 = 15672;

/// The nodes of a RabbitMQ cluster accept the pipeline's pods and the operator's namespace on AMQP, each
/// other on the clustering ports, and the cluster operator on the management API; their egress stays
/// open: peer discovery asks the Kubernetes API, and the nodes call each other.
fn rabbitmq_cluster_policy(
    pipeline: &AnalyticsPipeline,
    own_pods: NetworkPolicyPeer,
    operator: NetworkPolicyPeer,
) -> NetworkPolicy {
    let nodes = BTreeMap::from([(rabbitmq_cluster::CLUSTER_LABEL.to_owned(), name(pipeline, broker::COMPONENT))]);
    let peer = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector { match_labels: Some(nodes.clone()), ..LabelSelector::default() }),
        ..NetworkPolicyPeer::default()
    };
    let cluster_operator = NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector::default()),
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_owned(),
                "rabbitmq-cluster-operator".to_owned(),
            )])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    NetworkPolicy {
        metadata: metadata(pipeline, broker::COMPONENT, broker::COMPONENT),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector { match_labels: Some(nodes), ..LabelSelector::default() }),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule { from: Some(vec![own_pods, operator]), ports: Some(vec![tcp(broker::PORT)]) },
                NetworkPolicyIngressRule {
                    from: Some(vec![peer]),
                    ports: Some(RABBITMQ_CLUSTERING_PORTS.map(tcp).to_vec()),
                },
                NetworkPolicyIngressRule {
                    from: Some(vec![cluster_operator]),
                    ports: Some(vec![tcp(RABBITMQ_MANAGEMENT_PORT)]),
                },
            ]),
            ..NetworkPolicySpec::default()
        }),
    }
}

/// A service's pods accept anyone on the API's port and `monitoring` on the admin port; their egress
/// stays open.
fn service_policy(
    pipeline: &AnalyticsPipeline,
    component: &str,
    api: Option<i32>,
    admin: i32,
    monitoring: NetworkPolicyPeer,
) -> NetworkPolicy {
    let callers = api.map(|port| NetworkPolicyIngressRule { from: None, ports: Some(vec![tcp(port)]) });
    let scrapers = NetworkPolicyIngressRule { from: Some(vec![monitoring]), ports: Some(vec![tcp(admin)]) };
    policy(pipeline, component, callers.into_iter().chain([scrapers]).collect(), Egress::Open)
}

fn tcp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".to_owned()),
        ..NetworkPolicyPort::default()
    }
}

/// The port of CloudNativePG's instance manager, which its operator polls for each instance's status.
const INSTANCE_STATUS_PORT: i32 = 8000;

/// The CloudNativePG instances accept the pipeline's pods on PostgreSQL's port and CloudNativePG's
/// operator on the status port; their egress stays open.
fn cloudnative_pg_policy(pipeline: &AnalyticsPipeline, own_pods: NetworkPolicyPeer) -> NetworkPolicy {
    let cloudnative_pg_operator = NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector::default()),
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([("app.kubernetes.io/name".to_owned(), "cloudnative-pg".to_owned())])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    NetworkPolicy {
        metadata: metadata(pipeline, databases::COMPONENT, databases::COMPONENT),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    cloudnative_pg::CLUSTER_LABEL.to_owned(),
                    name(pipeline, databases::COMPONENT),
                )])),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule { from: Some(vec![own_pods]), ports: Some(vec![tcp(databases::PORT)]) },
                NetworkPolicyIngressRule {
                    from: Some(vec![cloudnative_pg_operator]),
                    ports: Some(vec![tcp(INSTANCE_STATUS_PORT)]),
                },
            ]),
            ..NetworkPolicySpec::default()
        }),
    }
}

/// Whether a policy also governs what its pods may open.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Egress {
    Open,
    /// No egress rule: nothing goes out.
    Denied,
}

/// `ingress` into the pods of `component`, and `egress` out of them.
fn policy(
    pipeline: &AnalyticsPipeline,
    component: &str,
    ingress: Vec<NetworkPolicyIngressRule>,
    egress: Egress,
) -> NetworkPolicy {
    let types: &[&str] = if egress == Egress::Denied { &["Ingress", "Egress"] } else { &["Ingress"] };
    NetworkPolicy {
        metadata: metadata(pipeline, component, component),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector(pipeline, component)),
                ..LabelSelector::default()
            }),
            policy_types: Some(types.iter().map(|t| (*t).to_owned()).collect()),
            ingress: Some(ingress),
            ..NetworkPolicySpec::default()
        }),
    }
}

/// Only `from`, only on `port`.
fn only(from: Vec<NetworkPolicyPeer>, port: i32) -> Vec<NetworkPolicyIngressRule> {
    vec![NetworkPolicyIngressRule { from: Some(from), ports: Some(vec![tcp(port)]) }]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        children::fixtures::pipeline,
        crd::{
            AnalyticsPipelineSpec, ExternalPostgres, PostgresSpec, RabbitmqClusterOperator, RabbitmqSpec, SecretKeyRef,
        },
    };

    /// The services' policies come first: command, query, consumer; then the Jobs', then the backends'.
    const SERVICES: usize = 3;
    const BACKENDS: usize = SERVICES + 1;

    /// No one reaches the pipeline's Jobs: they listen on nothing.
    #[test]
    fn the_jobs_accept_nothing() {
        let policies =
            policies(&pipeline(AnalyticsPipelineSpec::default()), "analytics-system", &LabelSelector::default());
        let jobs = &policies[SERVICES];
        assert_eq!(jobs.name_any(), "shop-jobs");
        assert_eq!(
            serde_json::to_value(jobs.spec.as_ref().unwrap()).unwrap(),
            json!({"podSelector": {"matchLabels": {"app.kubernetes.io/instance": "shop"},
                                   "matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "In",
                                                         "values": ["verify", "rebuild", "postgres-roles"]}]},
                   "policyTypes": ["Ingress"], "ingress": []})
        );
    }

    #[test]
    fn the_apis_accept_anyone_and_only_monitoring_reaches_the_metrics() {
        let monitoring = LabelSelector {
            match_labels: Some(BTreeMap::from([("kubernetes.io/metadata.name".into(), "monitoring".into())])),
            ..LabelSelector::default()
        };
        let policies = policies(&pipeline(AnalyticsPipelineSpec::default()), "analytics-system", &monitoring);
        let names: Vec<_> = policies[..SERVICES].iter().map(|p| p.name_any()).collect();
        assert_eq!(names, ["shop-command", "shop-query", "shop-consumer"]);
        let from_monitoring =
            json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]);
        let ingress = |n: usize| serde_json::to_value(&policies[n].spec.as_ref().unwrap().ingress).unwrap();
        assert_eq!(
            ingress(0),
            json!([{"ports": [{"port": 8080, "protocol": "TCP"}]},
                   {"from": from_monitoring, "ports": [{"port": 8090, "protocol": "TCP"}]}])
        );
        assert_eq!(
            ingress(1),
            json!([{"ports": [{"port": 8081, "protocol": "TCP"}]},
                   {"from": from_monitoring, "ports": [{"port": 8091, "protocol": "TCP"}]}])
        );
        assert_eq!(ingress(2), json!([{"from": from_monitoring, "ports": [{"port": 8082, "protocol": "TCP"}]}]));
        let spec = serde_json::to_value(policies[0].spec.as_ref().unwrap()).unwrap();
        assert_eq!(spec["policyTypes"], json!(["Ingress"]), "egress stays open: external backends may be anywhere");
        assert_eq!(
            spec["podSelector"],
            json!({"matchLabels": {"app.kubernetes.io/instance": "shop", "app.kubernetes.io/component": "command"}})
        );
    }

    #[test]
    fn the_backends_accept_only_the_pipelines_pods_and_the_broker_also_the_operators_namespace_and_reach_nothing() {
        let policies =
            policies(&pipeline(AnalyticsPipelineSpec::default()), "analytics-system", &LabelSelector::default());
        let policies = &policies[BACKENDS..];
        let view: Vec<_> = policies.iter().map(|p| serde_json::to_value(p.spec.as_ref().unwrap()).unwrap()).collect();
        assert_eq!(policies.iter().map(|p| p.name_any()).collect::<Vec<_>>(), ["shop-postgres", "shop-rabbitmq"]);
        let own = json!({"podSelector": {"matchLabels": {"app.kubernetes.io/instance": "shop"}}});
        let operator =
            json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "analytics-system"}}});
        assert_eq!(
            view[0],
            json!({"podSelector": {"matchLabels": {"app.kubernetes.io/instance": "shop", "app.kubernetes.io/component": "postgres"}},
                   "policyTypes": ["Ingress", "Egress"],
                   "ingress": [{"from": [own], "ports": [{"port": 5432, "protocol": "TCP"}]}]})
        );
        assert_eq!(
            view[1]["ingress"],
            json!([{"from": [own, operator], "ports": [{"port": 5672, "protocol": "TCP"}]}])
        );
        assert_eq!(view[1]["policyTypes"], json!(["Ingress", "Egress"]));
        assert!(view.iter().all(|spec| spec.get("egress").is_none()), "no egress rule: nothing goes out");
        assert!(policies.iter().all(|p| p.metadata.owner_references.is_some()), "they go with the pipeline");
    }

    #[test]
    fn a_rabbitmq_clusters_nodes_accept_amqp_each_other_and_the_cluster_operator_and_keep_their_egress() {
        let cluster = pipeline(AnalyticsPipelineSpec {
            rabbitmq: RabbitmqSpec {
                cluster_operator: Some(RabbitmqClusterOperator::default()),
                ..RabbitmqSpec::default()
            },
            ..AnalyticsPipelineSpec::default()
        });
        let policies = policies(&cluster, "analytics-system", &LabelSelector::default());
        let policies = &policies[BACKENDS..];
        assert_eq!(policies.iter().map(|p| p.name_any()).collect::<Vec<_>>(), ["shop-postgres", "shop-rabbitmq"]);
        let nodes = json!({"matchLabels": {"app.kubernetes.io/name": "shop-rabbitmq"}});
        assert_eq!(
            serde_json::to_value(policies[1].spec.as_ref().unwrap()).unwrap(),
            json!({"podSelector": nodes,
                   "policyTypes": ["Ingress"],
                   "ingress": [
                       {"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/instance": "shop"}}},
                                 {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "analytics-system"}}}],
                        "ports": [{"port": 5672, "protocol": "TCP"}]},
                       {"from": [{"podSelector": nodes}],
                        "ports": [{"port": 4369, "protocol": "TCP"}, {"port": 25672, "protocol": "TCP"}]},
                       {"from": [{"namespaceSelector": {},
                                  "podSelector": {"matchLabels": {"app.kubernetes.io/name": "rabbitmq-cluster-operator"}}}],
                        "ports": [{"port": 15672, "protocol": "TCP"}]}]})
        );
    }

    #[test]
    fn external_backends_get_no_policy() {
        let external = pipeline(AnalyticsPipelineSpec {
            postgres: PostgresSpec {
                managed: None,
                external: Some(ExternalPostgres {
                    write_url: SecretKeyRef { name: "db".into(), key: "write".into() },
                    read_url: SecretKeyRef { name: "db".into(), key: "read".into() },
                }),
                ..PostgresSpec::default()
            },
            ..AnalyticsPipelineSpec::default()
        });
        let policies = policies(&external, "ops", &LabelSelector::default());
        assert_eq!(policies[BACKENDS..].iter().map(|p| p.name_any()).collect::<Vec<_>>(), ["shop-rabbitmq"]);
    }
}
