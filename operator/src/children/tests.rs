//! The builders, from spec to child objects, without a cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, LocalObjectReference, Toleration};
use kube::ResourceExt;
use serde_json::json;

use super::{
    COMPONENT_LABEL, Children, INSTANCE_LABEL, Observed, PIPELINE_UID_LABEL, credentials_secret, data_selector,
    desired, fixtures::pipeline, is_data_of, is_data_of_name,
};
use crate::crd::{
    AnalyticsPipelineSpec, AntiAffinity, ApiAuthentication, ApiSpec, BarmanBackup, CloudNativePg, ConsumerSpec,
    DataDurability, DeletionPolicy, ExternalPostgres, ExternalRabbitmq, Image, ImageSet, Images, PodMetadata,
    PostgresSpec, PullPolicy, RabbitmqClusterOperator, RabbitmqSpec, ReadsFrom, SecretKeyRef, ServiceType, Storage,
    Synchronous, TlsSpec,
};

fn children(spec: AnalyticsPipelineSpec) -> Children {
    desired(&pipeline(spec), &ImageSet::default(), Observed { consumer_replicas: 3 })
}

fn names<K: kube::Resource>(objects: &[K]) -> Vec<String> {
    objects.iter().map(ResourceExt::name_any).collect()
}

fn env<'a>(children: &'a Children, deployment: &str) -> &'a [EnvVar] {
    let deployment = children.deployments.iter().find(|d| d.name_any() == deployment).unwrap();
    deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].env.as_deref().unwrap()
}

fn var<'a>(env: &'a [EnvVar], name: &str) -> &'a EnvVar {
    env.iter().find(|v| v.name == name).unwrap_or_else(|| panic!("no {name}"))
}

#[test]
fn the_defaults_give_managed_databases_and_broker_and_three_services_all_owned_by_the_pipeline() {
    let c = children(AnalyticsPipelineSpec::default());
    assert_eq!(names(&c.stateful_sets), ["shop-postgres", "shop-rabbitmq"]);
    assert_eq!(names(&c.services), ["shop-postgres", "shop-rabbitmq", "shop-command", "shop-query"]);
    assert_eq!(names(&c.deployments), ["shop-command", "shop-consumer", "shop-query"]);
    assert_eq!(names(&c.config_maps), ["shop-postgres-init"]);

    let metas = c
        .stateful_sets
        .iter()
        .map(|o| &o.metadata)
        .chain(c.services.iter().map(|o| &o.metadata))
        .chain(c.deployments.iter().map(|o| &o.metadata))
        .chain(c.config_maps.iter().map(|o| &o.metadata));
    for meta in metas {
        assert_eq!(meta.namespace.as_deref(), Some("prod"));
        let owner = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("AnalyticsPipeline", "shop", Some(true))
        );
        assert_eq!(owner.uid, "0f8fad5b-d9cb-469f-a165-70867728950e");
        assert_eq!(meta.labels.as_ref().unwrap()["app.kubernetes.io/instance"], "shop");
    }
    // Headless services for the StatefulSets; the APIs default to ClusterIP.
    let service = |name: &str| c.services.iter().find(|s| s.name_any() == name).unwrap().spec.clone().unwrap();
    assert_eq!(service("shop-postgres").cluster_ip.as_deref(), Some("None"));
    assert_eq!(service("shop-command").type_.as_deref(), Some("ClusterIP"));
    assert_eq!(service("shop-query").ports.unwrap()[0].port, 8081);
}

/// The command API reads the write tokens, the query API the read tokens, each from a file of the API
/// tokens Secret mounted without `subPath` (so that the kubelet updates it in place); the consumer gets
/// none. Without authentication the APIs are told to run open, and nothing is mounted.
#[test]
fn each_api_reads_its_own_tokens_from_the_api_tokens_secret() {
    let pod = |c: &Children, name: &str| {
        let deployment = c.deployments.iter().find(|d| d.name_any() == name).unwrap();
        serde_json::to_value(deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap()).unwrap()
    };
    let c = children(AnalyticsPipelineSpec::default());
    for (api, key) in [("shop-command", "write"), ("shop-query", "read")] {
        let pod = pod(&c, api);
        assert_eq!(
            pod["volumes"],
            json!([{"name": "api-tokens", "secret": {"secretName": "shop-api-tokens", "defaultMode": 0o440,
                    "items": [{"key": key, "path": "tokens"}], "optional": false}}]),
            "{api}"
        );
        let container = &pod["containers"][0];
        assert_eq!(
            container["volumeMounts"],
            json!([{"name": "api-tokens", "mountPath": "/var/run/secrets/analytics/api", "readOnly": true}])
        );
        assert_eq!(
            var(env(&c, api), "API_TOKENS_FILE").value.as_deref(),
            Some("/var/run/secrets/analytics/api/tokens")
        );
        assert!(env(&c, api).iter().all(|v| v.name != "ALLOW_UNAUTHENTICATED"));
    }
    let consumer = pod(&c, "shop-consumer");
    assert!(consumer["volumes"].is_null() && consumer["containers"][0]["volumeMounts"].is_null());
    assert!(env(&c, "shop-consumer").iter().all(|v| !v.name.contains("TOKEN") && v.name != "ALLOW_UNAUTHENTICATED"));

    let open = children(AnalyticsPipelineSpec { api_authentication: ApiAuthentication::None, ..Default::default() });
    for api in ["shop-command", "shop-query"] {
        assert_eq!(var(env(&open, api), "ALLOW_UNAUTHENTICATED").value.as_deref(), Some("true"));
        assert!(pod(&open, api)["volumes"].is_null());
    }
}

/// A private CA for external backends is mounted, as `ca.crt`, into every container that connects to
/// one: each service and its migrations.
#[test]
fn the_ca_bundle_is_mounted_wherever_a_backend_is_reached() {
    let tls = Some(TlsSpec { ca_bundle: Some(SecretKeyRef { name: "shop-ca".into(), key: "pem".into() }) });
    let c = children(AnalyticsPipelineSpec { tls, ..AnalyticsPipelineSpec::default() });
    let mount = json!({"name": "ca-bundle", "mountPath": "/var/run/secrets/analytics/tls", "readOnly": true});
    for deployment in &c.deployments {
        let pod = serde_json::to_value(deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap()).unwrap();
        let volumes = pod["volumes"].as_array().unwrap();
        assert!(
            volumes.contains(&json!({"name": "ca-bundle", "secret": {"secretName": "shop-ca", "defaultMode": 0o440,
                "items": [{"key": "pem", "path": "ca.crt"}], "optional": false}})),
            "{}: {volumes:?}",
            deployment.name_any()
        );
        for container in [&pod["containers"][0], &pod["initContainers"][0]] {
            assert!(container["volumeMounts"].as_array().unwrap().contains(&mount), "{}", container["name"]);
        }
    }
    let plain = children(AnalyticsPipelineSpec::default());
    let consumer = plain.deployments.iter().find(|d| d.name_any() == "shop-consumer").unwrap();
    assert!(consumer.spec.as_ref().unwrap().template.spec.as_ref().unwrap().volumes.is_none());
}

#[test]
fn under_retain_the_claims_outlive_the_pipeline_and_under_delete_they_go_with_it() {
    for (policy, when_deleted) in [(DeletionPolicy::Retain, "Retain"), (DeletionPolicy::Delete, "Delete")] {
        let c = children(AnalyticsPipelineSpec { deletion_policy: policy, ..AnalyticsPipelineSpec::default() });
        for set in &c.stateful_sets {
            let spec = set.spec.as_ref().unwrap();
            let retention = spec.persistent_volume_claim_retention_policy.as_ref().unwrap();
            assert_eq!(retention.when_deleted.as_deref(), Some(when_deleted), "{}", set.name_any());
            let claim = &spec.volume_claim_templates.as_ref().unwrap()[0];
            assert!(claim.metadata.owner_references.is_none(), "claims carry no owner reference of ours");
            assert_eq!(
                claim.spec.as_ref().unwrap().resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
                "10Gi"
            );
        }
    }
}

/// Each service reaches the managed backends as itself: its own database role and broker user, with its
/// own generated password. Only the migrations run as the database's administrator, and they need no broker.
#[test]
fn managed_backends_are_reached_with_each_services_own_credentials() {
    let c = children(AnalyticsPipelineSpec::default());
    let key = |env: &[EnvVar], name: &str| {
        let reference = var(env, name).value_from.clone().unwrap().secret_key_ref.unwrap();
        assert_eq!(reference.name, "shop-credentials");
        reference.key
    };
    for (service, url, database) in [
        ("command", "WRITE_DATABASE_URL", "analytics_write"),
        ("consumer", "READ_DATABASE_URL", "analytics_read"),
        ("query", "READ_DATABASE_URL", "analytics_read"),
    ] {
        let env = env(&c, &format!("shop-{service}"));
        assert_eq!(
            var(env, url).value.as_deref(),
            Some(&*format!("postgres://{service}:$(POSTGRES_PASSWORD)@shop-postgres:5432/{database}"))
        );
        assert_eq!(key(env, "POSTGRES_PASSWORD"), format!("{service}-db-password"));
        assert_eq!(
            var(env, "AMQP_URL").value.as_deref(),
            Some(&*format!("amqp://{service}:$(RABBITMQ_PASSWORD)@shop-rabbitmq:5672/%2f"))
        );
        assert_eq!(key(env, "RABBITMQ_PASSWORD"), format!("{service}-mq-password"));
        // $(VAR) expands only from variables defined earlier.
        let position = |name: &str| env.iter().position(|v| v.name == name).unwrap();
        assert!(position("POSTGRES_PASSWORD") < position(url));
        assert!(position("RABBITMQ_PASSWORD") < position("AMQP_URL"));

        let deployment = c.deployments.iter().find(|d| d.name_any() == format!("shop-{service}")).unwrap();
        let migrate =
            &deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0];
        let migrate_env = migrate.env.as_deref().unwrap();
        assert_eq!(
            var(migrate_env, url).value.as_deref(),
            Some(&*format!("postgres://analytics:$(POSTGRES_PASSWORD)@shop-postgres:5432/{database}"))
        );
        assert_eq!(key(migrate_env, "POSTGRES_PASSWORD"), "postgres-password");
        assert!(migrate_env.iter().all(|v| !v.name.contains("AMQP") && !v.name.contains("RABBITMQ")));
    }
}

/// The PostgreSQL pod's `roles` container applies the shipped roles script with every service's
/// password; the broker's `definitions` init container writes the users that the broker imports at boot.
#[test]
fn the_backends_pods_give_every_service_its_own_identity() {
    let c = children(AnalyticsPipelineSpec::default());
    let pod = |name: &str| {
        let set = c.stateful_sets.iter().find(|s| s.name_any() == name).unwrap();
        serde_json::to_value(set.spec.as_ref().unwrap().template.spec.as_ref().unwrap()).unwrap()
    };
    let secret_keys = |container: &serde_json::Value| {
        let env = container["env"].as_array().unwrap();
        env.iter()
            .filter_map(|v| {
                Some((v["name"].as_str()?.to_owned(), v["valueFrom"]["secretKeyRef"]["key"].as_str()?.to_owned()))
            })
            .collect::<Vec<_>>()
    };

    let postgres = pod("shop-postgres");
    let roles = &postgres["containers"][1];
    assert_eq!(roles["name"], "roles");
    assert_eq!(
        secret_keys(roles),
        [
            ("PGPASSWORD", "postgres-password"),
            ("COMMAND_PASSWORD", "command-db-password"),
            ("CONSUMER_PASSWORD", "consumer-db-password"),
            ("QUERY_PASSWORD", "query-db-password"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    let config = &c.config_maps[0].data.as_ref().unwrap();
    assert_eq!(config["roles.sql"], include_str!("postgres-roles.sql"));
    // The image's entrypoint runs only the read database's script; roles.sql needs the passwords.
    assert_eq!(
        postgres["volumes"][0]["configMap"]["items"],
        json!([{"key": "10-read-database.sql", "path": "10-read-database.sql"}])
    );
    assert_eq!(postgres["volumes"][1]["configMap"]["items"], json!([{"key": "roles.sql", "path": "roles.sql"}]));

    let broker = pod("shop-rabbitmq");
    let definitions = &broker["initContainers"][0];
    assert_eq!(definitions["command"][2], include_str!("rabbitmq-definitions.sh"));
    assert_eq!(
        secret_keys(definitions),
        [
            ("RABBITMQ_DEFAULT_PASS", "rabbitmq-password"),
            ("COMMAND_PASSWORD", "command-mq-password"),
            ("CONSUMER_PASSWORD", "consumer-mq-password"),
            ("QUERY_PASSWORD", "query-mq-password"),
            ("ERLANG_COOKIE", "erlang-cookie"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    // The cookie goes into the node's home on its volume, as a file: not RabbitMQ's deprecated variable.
    assert!(definitions["env"].as_array().unwrap().contains(&json!({"name": "HOME", "value": "/var/lib/rabbitmq"})));
    assert!(
        definitions["volumeMounts"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "data", "mountPath": "/var/lib/rabbitmq"}))
    );
    assert!(secret_keys(&broker["containers"][0]).iter().all(|(name, _)| name != "RABBITMQ_ERLANG_COOKIE"));
    assert_eq!(broker["volumes"][0]["emptyDir"]["medium"], "Memory", "the definitions hold passwords");
    let mounts = broker["containers"][0]["volumeMounts"].as_array().unwrap();
    assert!(mounts.contains(&json!({"name": "definitions", "mountPath": "/etc/rabbitmq/conf.d/90-analytics.conf",
                                    "subPath": "analytics.conf", "readOnly": true})));
}

#[test]
fn external_backends_come_from_the_users_secrets_and_nothing_is_run_for_them() {
    let secret = |name: &str, key: &str| SecretKeyRef { name: name.into(), key: key.into() };
    let c = children(AnalyticsPipelineSpec {
        postgres: PostgresSpec {
            managed: None,
            external: Some(ExternalPostgres { write_url: secret("db", "write"), read_url: secret("db", "read") }),
            ..PostgresSpec::default()
        },
        rabbitmq: RabbitmqSpec {
            external: Some(ExternalRabbitmq { url: secret("mq", "url") }),
            ..RabbitmqSpec::default()
        },
        ..AnalyticsPipelineSpec::default()
    });
    assert!(c.stateful_sets.is_empty() && c.config_maps.is_empty());
    assert_eq!(names(&c.services), ["shop-command", "shop-query"]);
    let from = |env: &[EnvVar], name: &str| {
        let reference = var(env, name).value_from.clone().unwrap().secret_key_ref.unwrap();
        (reference.name, reference.key)
    };
    assert_eq!(from(env(&c, "shop-command"), "WRITE_DATABASE_URL"), ("db".into(), "write".into()));
    assert_eq!(from(env(&c, "shop-query"), "READ_DATABASE_URL"), ("db".into(), "read".into()));
    assert_eq!(from(env(&c, "shop-consumer"), "AMQP_URL"), ("mq".into(), "url".into()));
    assert!(env(&c, "shop-command").iter().all(|v| v.name != "POSTGRES_PASSWORD" && v.name != "RABBITMQ_PASSWORD"));
}

#[test]
fn deployments_migrate_first_probe_health_and_are_scraped() {
    let c = children(AnalyticsPipelineSpec {
        command: ApiSpec { replicas: 4, service_type: ServiceType::LoadBalancer, node_port: None, resources: None },
        query: ApiSpec { replicas: 2, service_type: ServiceType::NodePort, node_port: Some(30081), resources: None },
        consumers: ConsumerSpec { replicas: Some(7), ..ConsumerSpec::default() },
        ..AnalyticsPipelineSpec::default()
    });
    let replicas: Vec<_> = c.deployments.iter().map(|d| d.spec.as_ref().unwrap().replicas.unwrap()).collect();
    assert_eq!(replicas, [4, 3, 2], "command from the spec, consumers as observed, query by default");
    for deployment in &c.deployments {
        let template = &deployment.spec.as_ref().unwrap().template;
        let pod = serde_json::to_value(template).unwrap();
        assert_eq!(pod["metadata"]["annotations"]["prometheus.io/scrape"], "true");
        assert_eq!(pod["spec"]["initContainers"][0]["args"], json!(["migrate"]), "{}", deployment.name_any());
        let container = &pod["spec"]["containers"][0];
        assert_eq!(container["livenessProbe"]["httpGet"], json!({"path": "/healthz", "port": "metrics"}));
        assert_eq!(container["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": "metrics"}));
        let admin = container["ports"].as_array().unwrap().iter().find(|p| p["name"] == "metrics").unwrap();
        assert_eq!(pod["metadata"]["annotations"]["prometheus.io/port"], admin["containerPort"].to_string());
        assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"], true);
        // Selectors are a subset of the pod labels.
        let selector = deployment.spec.as_ref().unwrap().selector.match_labels.clone().unwrap();
        let labels = template.metadata.as_ref().unwrap().labels.clone().unwrap();
        assert!(selector.iter().all(|(k, v)| labels.get(k) == Some(v)));
    }
    let command = serde_json::to_value(&c.deployments[0]).unwrap();
    assert_eq!(
        command["spec"]["template"]["spec"]["containers"][0]["args"],
        json!(["serve", "--listen", "0.0.0.0:8080", "--admin-listen", "0.0.0.0:8090"])
    );
    assert_eq!(
        command["spec"]["template"]["spec"]["containers"][0]["ports"],
        json!([{"name": "http", "containerPort": 8080}, {"name": "metrics", "containerPort": 8090}])
    );
    let query = serde_json::to_value(&c.deployments[2]).unwrap();
    let migrate_image = query["spec"]["template"]["spec"]["initContainers"][0]["image"].as_str().unwrap();
    assert!(
        migrate_image.contains("analytics-consumer"),
        "the query service waits for the read schema: {migrate_image}"
    );
    let service = c.services.iter().find(|s| s.name_any() == "shop-command").unwrap();
    assert_eq!(service.spec.as_ref().unwrap().type_.as_deref(), Some("LoadBalancer"));
    let ports = serde_json::to_value(&service.spec.as_ref().unwrap().ports).unwrap();
    assert_eq!(ports, json!([{"name": "http", "port": 8080, "targetPort": "http"}]), "the Service exposes no metrics");
    let query = c.services.iter().find(|s| s.name_any() == "shop-query").unwrap().spec.clone().unwrap();
    assert_eq!((query.type_.as_deref(), query.ports.unwrap()[0].node_port), (Some("NodePort"), Some(30081)));
}

/// Every pod template of the pipeline, as JSON (`metadata` and `spec`), by object: the operator's own and
/// the cluster operator's override. (CloudNativePG's pods are checked through its Cluster's fields.)
fn every_pod(c: &Children) -> Vec<(String, serde_json::Value)> {
    let mut pods: Vec<(String, serde_json::Value)> = Vec::new();
    for d in &c.deployments {
        pods.push((d.name_any(), serde_json::to_value(&d.spec.as_ref().unwrap().template).unwrap()));
    }
    for s in &c.stateful_sets {
        pods.push((s.name_any(), serde_json::to_value(&s.spec.as_ref().unwrap().template).unwrap()));
    }
    for j in &c.cron_jobs {
        let job = j.spec.as_ref().unwrap().job_template.spec.as_ref().unwrap();
        pods.push((j.name_any(), serde_json::to_value(&job.template).unwrap()));
    }
    for j in &c.jobs {
        pods.push((j.name_any(), serde_json::to_value(&j.spec.as_ref().unwrap().template).unwrap()));
    }
    for r in &c.rabbitmq_clusters {
        pods.push((r.name_any(), r.spec.override_["statefulSet"]["spec"]["template"].clone()));
    }
    pods
}

/// What the spec says of every pod reaches every pod, in each mode: node selector, tolerations, priority
/// class, pull Secrets, and the extra labels and annotations (under the operator's own labels, which a
/// user's label of the same key cannot replace, since the selectors depend on them).
#[test]
fn the_spec_pod_settings_reach_every_pod() {
    let settings = AnalyticsPipelineSpec {
        node_selector: [("pool".to_owned(), "analytics".to_owned())].into(),
        tolerations: vec![Toleration {
            key: Some("dedicated".into()),
            operator: Some("Exists".into()),
            ..Toleration::default()
        }],
        priority_class_name: Some("business-critical".into()),
        image_pull_secrets: vec![LocalObjectReference { name: "registry".into() }],
        pod_metadata: PodMetadata {
            labels: [("team".to_owned(), "shop".to_owned()), (INSTANCE_LABEL.to_owned(), "mine".to_owned())].into(),
            annotations: [("sidecar.istio.io/inject".to_owned(), "false".to_owned())].into(),
        },
        ..AnalyticsPipelineSpec::default()
    };
    let highly_available = AnalyticsPipelineSpec {
        postgres: PostgresSpec { cloud_native_pg: Some(CloudNativePg::default()), ..PostgresSpec::default() },
        rabbitmq: RabbitmqSpec {
            cluster_operator: Some(RabbitmqClusterOperator::default()),
            ..RabbitmqSpec::default()
        },
        ..settings.clone()
    };
    for spec in [settings, highly_available] {
        let c = children(spec);
        let pods = every_pod(&c);
        for (name, pod) in &pods {
            assert_eq!(pod["metadata"]["labels"]["team"], "shop", "{name}");
            assert_eq!(pod["metadata"]["labels"][INSTANCE_LABEL], "shop", "{name}: the operator's label wins");
            assert_eq!(pod["metadata"]["annotations"]["sidecar.istio.io/inject"], "false", "{name}");
            assert_eq!(pod["spec"]["priorityClassName"], "business-critical", "{name}");
            if name.ends_with("-rabbitmq") && !c.rabbitmq_clusters.is_empty() {
                // The cluster operator sets placement from its own fields (affinity, tolerations).
                continue;
            }
            assert_eq!(pod["spec"]["nodeSelector"]["pool"], "analytics", "{name}");
            assert_eq!(pod["spec"]["tolerations"][0]["key"], "dedicated", "{name}");
            assert_eq!(pod["spec"]["imagePullSecrets"], json!([{"name": "registry"}]), "{name}");
            assert_eq!(pod["spec"]["automountServiceAccountToken"], false, "{name}");
        }
        assert!(pods.len() >= 5, "{pods:?}");
        for cluster in &c.rabbitmq_clusters {
            assert_eq!(cluster.spec.image_pull_secrets, [LocalObjectReference { name: "registry".into() }]);
        }
        for cluster in &c.postgres_clusters {
            let spec = serde_json::to_value(&cluster.spec).unwrap();
            assert_eq!(spec["priorityClassName"], "business-critical");
            assert_eq!(spec["imagePullSecrets"], json!([{"name": "registry"}]));
            assert_eq!(spec["affinity"]["nodeSelector"]["pool"], "analytics");
            assert_eq!(spec["affinity"]["tolerations"][0]["key"], "dedicated");
            assert_eq!(spec["inheritedMetadata"]["labels"]["team"], "shop");
            assert_eq!(spec["inheritedMetadata"]["labels"][INSTANCE_LABEL], "shop");
            assert_eq!(spec["inheritedMetadata"]["annotations"]["sidecar.istio.io/inject"], "false");
        }
    }
}

/// The operator's default pull Secrets (the chart's `imagePullSecrets`) are every pod's unless the spec
/// names its own, which replace them.
#[test]
fn the_operators_pull_secrets_are_the_default_and_the_spec_replaces_them() {
    let defaults =
        ImageSet { pull_secrets: vec![LocalObjectReference { name: "mirror".into() }], ..ImageSet::default() };
    let secrets = |spec: AnalyticsPipelineSpec| {
        let c = desired(&pipeline(spec), &defaults, Observed { consumer_replicas: 1 });
        let mut found: Vec<serde_json::Value> =
            every_pod(&c).into_iter().map(|(_, pod)| pod["spec"]["imagePullSecrets"].clone()).collect();
        found.dedup();
        found
    };
    assert_eq!(secrets(AnalyticsPipelineSpec::default()), [json!([{"name": "mirror"}])]);
    let own = AnalyticsPipelineSpec {
        image_pull_secrets: vec![LocalObjectReference { name: "own".into() }],
        ..AnalyticsPipelineSpec::default()
    };
    assert_eq!(secrets(own), [json!([{"name": "own"}])]);
}

/// Drains take one API, consumer or broker-cluster pod at a time, and never the only copy of a managed
/// database or broker; a pod that is not ready never blocks a drain. The APIs and consumers spread over
/// nodes and zones without ever staying unscheduled for it.
#[test]
fn disruption_budgets_and_spreading() {
    let budgets = |c: &Children| -> Vec<(String, serde_json::Value, serde_json::Value)> {
        c.disruption_budgets
            .iter()
            .map(|b| {
                let spec = serde_json::to_value(b.spec.as_ref().unwrap()).unwrap();
                assert_eq!(spec["unhealthyPodEvictionPolicy"], "AlwaysAllow");
                (b.name_any(), spec["maxUnavailable"].clone(), spec["selector"]["matchLabels"].clone())
            })
            .collect()
    };
    let selector = |component: &str| json!({INSTANCE_LABEL: "shop", COMPONENT_LABEL: component});
    assert_eq!(
        budgets(&children(AnalyticsPipelineSpec::default())),
        [
            ("shop-postgres".to_owned(), json!(0), selector("postgres")),
            ("shop-rabbitmq".to_owned(), json!(0), selector("rabbitmq")),
            ("shop-command".to_owned(), json!(1), selector("command")),
            ("shop-consumer".to_owned(), json!(1), selector("consumer")),
            ("shop-query".to_owned(), json!(1), selector("query")),
        ]
    );
    let highly_available = children(AnalyticsPipelineSpec {
        postgres: PostgresSpec { cloud_native_pg: Some(CloudNativePg::default()), ..PostgresSpec::default() },
        rabbitmq: RabbitmqSpec {
            cluster_operator: Some(RabbitmqClusterOperator::default()),
            ..RabbitmqSpec::default()
        },
        ..AnalyticsPipelineSpec::default()
    });
    assert_eq!(
        budgets(&highly_available)[0],
        ("shop-rabbitmq".to_owned(), json!(1), json!({"app.kubernetes.io/name": "shop-rabbitmq"})),
        "CloudNativePG makes its own budgets; the RabbitMQ cluster has one, one node at a time"
    );
    for deployment in &highly_available.deployments {
        let pod = serde_json::to_value(deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap()).unwrap();
        let component = deployment.name_any().trim_start_matches("shop-").to_owned();
        assert_eq!(
            pod["topologySpreadConstraints"],
            json!([
                {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
                 "labelSelector": {"matchLabels": selector(&component)}, "matchLabelKeys": ["pod-template-hash"]},
                {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
                 "labelSelector": {"matchLabels": selector(&component)}, "matchLabelKeys": ["pod-template-hash"]},
            ]),
            "{component}"
        );
    }
}

/// Hibernated, a pipeline asks for no pod in any mode, and keeps its claims; resumed, it asks for the
/// same pods as before.
#[test]
fn a_hibernated_pipeline_asks_for_no_pod_and_a_resumed_one_for_the_same_as_before() {
    let managed = AnalyticsPipelineSpec::default();
    let highly_available = AnalyticsPipelineSpec {
        postgres: PostgresSpec { cloud_native_pg: Some(CloudNativePg::default()), ..PostgresSpec::default() },
        rabbitmq: RabbitmqSpec {
            cluster_operator: Some(RabbitmqClusterOperator::default()),
            ..RabbitmqSpec::default()
        },
        ..AnalyticsPipelineSpec::default()
    };
    for awake in [managed, highly_available] {
        let asleep = children(AnalyticsPipelineSpec { hibernate: true, ..awake.clone() });
        for d in &asleep.deployments {
            assert_eq!(d.spec.as_ref().unwrap().replicas, Some(0), "{}", d.name_any());
        }
        for s in &asleep.stateful_sets {
            let spec = s.spec.as_ref().unwrap();
            assert_eq!(spec.replicas, Some(0), "{}", s.name_any());
            assert!(spec.volume_claim_templates.is_some(), "the claims stay");
        }
        for j in &asleep.cron_jobs {
            assert_eq!(j.spec.as_ref().unwrap().suspend, Some(true), "no verify while asleep");
        }
        for cluster in &asleep.rabbitmq_clusters {
            assert_eq!(cluster.spec.replicas, 0);
        }
        for cluster in &asleep.postgres_clusters {
            assert_eq!(cluster.annotations()["cnpg.io/hibernation"], "on");
            assert_eq!(cluster.spec.instances, 3, "CloudNativePG keeps the instances' claims");
        }
        let awake_children = children(awake.clone());
        let resumed = children(AnalyticsPipelineSpec { hibernate: false, ..awake });
        assert_eq!(resumed, awake_children);
        for cluster in &resumed.postgres_clusters {
            assert_eq!(cluster.annotations()["cnpg.io/hibernation"], "off");
        }
    }
}

#[test]
fn building_is_deterministic() {
    let spec = AnalyticsPipelineSpec::default();
    assert_eq!(children(spec.clone()), children(spec));
}

#[test]
fn the_credentials_secret_has_generated_values_and_no_owner() {
    let mut n = 0;
    let secret = credentials_secret(&pipeline(AnalyticsPipelineSpec::default()), &mut || {
        n += 1;
        format!("generated-{n}")
    });
    assert_eq!(secret.name_any(), "shop-credentials");
    assert!(secret.metadata.owner_references.is_none(), "credentials survive like the data they protect");
    let data = secret.string_data.unwrap();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        [
            "command-db-password",
            "command-mq-password",
            "consumer-db-password",
            "consumer-mq-password",
            "erlang-cookie",
            "postgres-password",
            "query-db-password",
            "query-mq-password",
            "rabbitmq-password"
        ]
    );
    let mut values: Vec<_> = data.values().collect();
    values.sort();
    values.dedup();
    assert_eq!(values.len(), 9);
}

/// `(container image, pull policy)` of every container and init container, by child name.
fn images_of(children: &Children) -> Vec<(String, String, String)> {
    let pods =
        children.deployments.iter().map(|d| (d.name_any(), d.spec.clone().unwrap().template.spec.unwrap())).chain(
            children.stateful_sets.iter().map(|s| (s.name_any(), s.spec.clone().unwrap().template.spec.unwrap())),
        );
    pods.flat_map(|(name, pod)| {
        pod.init_containers
            .unwrap_or_default()
            .into_iter()
            .chain(pod.containers)
            .map(move |c| (name.clone(), c.image.unwrap(), c.image_pull_policy.unwrap()))
    })
    .collect()
}

#[test]
fn every_image_is_the_operators_default_unless_the_pipeline_overrides_it() {
    let defaults = ImageSet {
        command: "mirror.internal:5000/shop/command:1.0".parse().unwrap(),
        consumer: "mirror.internal:5000/shop/consumer:1.0".parse().unwrap(),
        query: "mirror.internal:5000/shop/query:1.0".parse().unwrap(),
        postgres: "mirror.internal:5000/postgres:15".parse().unwrap(),
        rabbitmq: "mirror.internal:5000/rabbitmq:3.10-management".parse().unwrap(),
        pull_secrets: Vec::new(),
    };
    let from_defaults =
        desired(&pipeline(AnalyticsPipelineSpec::default()), &defaults, Observed { consumer_replicas: 1 });
    let by = |name: &str, image: &str| (name.to_owned(), image.to_owned(), "IfNotPresent".to_owned());
    assert_eq!(
        images_of(&from_defaults),
        [
            by("shop-command", "mirror.internal:5000/shop/command:1.0"),
            by("shop-command", "mirror.internal:5000/shop/command:1.0"),
            by("shop-consumer", "mirror.internal:5000/shop/consumer:1.0"),
            by("shop-consumer", "mirror.internal:5000/shop/consumer:1.0"),
            by("shop-query", "mirror.internal:5000/shop/consumer:1.0"),
            by("shop-query", "mirror.internal:5000/shop/query:1.0"),
            by("shop-postgres", "mirror.internal:5000/postgres:15"),
            // The roles container runs psql from the same image.
            by("shop-postgres", "mirror.internal:5000/postgres:15"),
            // The definitions init container, then the broker.
            by("shop-rabbitmq", "mirror.internal:5000/rabbitmq:3.10-management"),
            by("shop-rabbitmq", "mirror.internal:5000/rabbitmq:3.10-management"),
        ]
    );

    let pinned =
        Image { repository: "pg.example/pg".into(), tag: "16.4".into(), digest: None, pull_policy: PullPolicy::Always };
    let spec = AnalyticsPipelineSpec {
        images: Images { postgres: Some(pinned), ..Images::default() },
        ..AnalyticsPipelineSpec::default()
    };
    let overridden = images_of(&desired(&pipeline(spec), &defaults, Observed { consumer_replicas: 1 }));
    assert!(overridden.contains(&("shop-postgres".into(), "pg.example/pg:16.4".into(), "Always".into())));
    assert!(overridden.contains(&by("shop-rabbitmq", "mirror.internal:5000/rabbitmq:3.10-management")));
    assert!(overridden.contains(&by("shop-command", "mirror.internal:5000/shop/command:1.0")));
}

#[test]
fn an_image_flag_is_repository_and_tag() {
    let image: Image = "registry:5000/team/app:v1.2".parse().unwrap();
    assert_eq!((image.repository.as_str(), image.tag.as_str()), ("registry:5000/team/app", "v1.2"));
    assert_eq!(image.reference(), "registry:5000/team/app:v1.2");
    for bad in ["registry:5000/team/app", "app", "app:", ":v1", "app@sha256:abc", "@sha256:", "app:v1@md5:00"] {
        assert!(bad.parse::<Image>().is_err(), "{bad} has no tag or no valid digest");
    }
}

#[test]
fn an_image_may_be_pinned_by_digest_with_or_without_a_tag() {
    let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
    let by_digest: Image = format!("registry:5000/team/app@{digest}").parse().unwrap();
    assert_eq!(
        (by_digest.repository.as_str(), by_digest.tag.as_str(), by_digest.digest.as_deref()),
        ("registry:5000/team/app", "", Some(digest.as_str()))
    );
    assert_eq!(by_digest.reference(), format!("registry:5000/team/app@{digest}"));
    let both: Image = format!("app:v1.2@{digest}").parse().unwrap();
    assert_eq!(both.reference(), format!("app:v1.2@{digest}"));
    assert!(both.is_pinned() && by_digest.is_pinned());
    // In a spec: the digest reaches the pods, and an image with neither tag nor digest is refused.
    let spec = AnalyticsPipelineSpec {
        images: Images { query: Some(by_digest.clone()), ..Images::default() },
        ..AnalyticsPipelineSpec::default()
    };
    let built = images_of(&desired(&pipeline(spec), &ImageSet::default(), Observed { consumer_replicas: 1 }));
    assert!(built.iter().any(|(_, image, _)| *image == by_digest.reference()), "{built:?}");
    let unpinned = Image { tag: String::new(), digest: None, ..by_digest };
    assert!(!unpinned.is_pinned());
}

#[test]
fn the_claims_and_the_credentials_carry_the_pipeline_uid_and_only_they_count_as_its_data() {
    let shop = pipeline(AnalyticsPipelineSpec::default());
    let uid = shop.uid().unwrap();
    let built = children(AnalyticsPipelineSpec::default());
    for set in &built.stateful_sets {
        for template in set.spec.as_ref().unwrap().volume_claim_templates.as_ref().unwrap() {
            assert!(is_data_of(&shop, template.labels()), "{}: {:?}", set.name_any(), template.labels());
        }
        assert!(!set.labels().contains_key(PIPELINE_UID_LABEL), "only the data is marked; selectors stay as they were");
    }
    let secret = credentials_secret(&shop, &mut || "x".to_owned());
    assert!(is_data_of(&shop, secret.labels()));
    assert_eq!(
        data_selector(&shop),
        format!("app.kubernetes.io/managed-by=analytics-operator,{PIPELINE_UID_LABEL}={uid}")
    );

    let with = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let earlier: std::collections::BTreeMap<String, String> = with(&[
        ("app.kubernetes.io/managed-by", "analytics-operator"),
        ("app.kubernetes.io/instance", "shop"),
        (PIPELINE_UID_LABEL, "an-earlier-uid"),
    ]);
    assert!(!is_data_of(&shop, &earlier) && is_data_of_name(&shop, &earlier), "an earlier pipeline's: adoptable");
    let helm = with(&[
        ("app.kubernetes.io/managed-by", "Helm"),
        ("app.kubernetes.io/instance", "shop"),
        (PIPELINE_UID_LABEL, &uid),
    ]);
    assert!(!is_data_of(&shop, &helm) && !is_data_of_name(&shop, &helm), "someone else's: never touched");
}

fn cloudnative_pg(cluster: CloudNativePg) -> AnalyticsPipelineSpec {
    AnalyticsPipelineSpec {
        postgres: PostgresSpec { cloud_native_pg: Some(cluster), ..PostgresSpec::default() },
        ..AnalyticsPipelineSpec::default()
    }
}

/// In the `cloudNativePG` mode the operator runs no PostgreSQL of its own: it asks CloudNativePG for one
/// cluster with both databases, three instances and one synchronous standby by default, made of the
/// operator's PostgreSQL image as uid 999, whose administrator is the managed mode's, and whose pods and
/// claims carry the pipeline's labels and UID.
#[test]
fn cloudnative_pg_is_asked_for_one_replicated_cluster_with_both_databases() {
    let c = children(cloudnative_pg(CloudNativePg::default()));
    assert_eq!(names(&c.stateful_sets), ["shop-rabbitmq"]);
    assert_eq!(names(&c.services), ["shop-rabbitmq", "shop-command", "shop-query"]);
    assert_eq!(names(&c.postgres_clusters), ["shop-postgres"]);
    let cluster = &c.postgres_clusters[0];
    let owner = &cluster.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.controller), ("AnalyticsPipeline", Some(true)));
    let spec = serde_json::to_value(&cluster.spec).unwrap();
    let labels = json!({
        "app.kubernetes.io/name": "analytics-pipeline", "app.kubernetes.io/instance": "shop",
        "app.kubernetes.io/component": "postgres", "app.kubernetes.io/managed-by": "analytics-operator",
        "analytics.example.com/pipeline-uid": "0f8fad5b-d9cb-469f-a165-70867728950e"});
    assert_eq!(
        spec,
        json!({
            "instances": 3,
            "imageName": "postgres:16",
            "imagePullPolicy": "IfNotPresent",
            "postgresUID": 999,
            "postgresGID": 999,
            "storage": {"size": "10Gi"},
            "resources": {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "512Mi"}},
            "postgresql": {"synchronous": {"method": "any", "number": 1, "dataDurability": "required"}},
            "bootstrap": {"initdb": {
                "database": "analytics_write",
                "owner": "analytics",
                "secret": {"name": "shop-postgres-admin"},
                "postInitSQL": ["create database analytics_read owner analytics", "alter role analytics createrole"],
            }},
            "enableSuperuserAccess": false,
            "affinity": {"enablePodAntiAffinity": true, "podAntiAffinityType": "preferred",
                         "topologyKey": "kubernetes.io/hostname"},
            "probes": {"readiness": {"type": "streaming", "maximumLag": "16Mi"}},
            "inheritedMetadata": {"labels": labels},
        })
    );
    assert_eq!(names(&c.config_maps), ["shop-postgres-init"]);
    let scripts = c.config_maps[0].data.as_ref().unwrap();
    assert_eq!(scripts.keys().collect::<Vec<_>>(), ["roles.sql"], "CloudNativePG creates the read database");
}

/// The writers (and every migration) reach the primary through `-rw`; the query service reads where the
/// spec says, the standbys (`-ro`) by default, and then only from a standby.
#[test]
fn writers_reach_the_primary_and_the_query_service_reads_where_the_spec_says() {
    let url = |c: &Children, service: &str, variable: &str| {
        var(env(c, &format!("shop-{service}")), variable).value.clone().unwrap()
    };
    let migrate_url = |c: &Children, service: &str, variable: &str| {
        let deployment = c.deployments.iter().find(|d| d.name_any() == format!("shop-{service}")).unwrap();
        let pod = deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        var(pod.init_containers.as_ref().unwrap()[0].env.as_deref().unwrap(), variable).value.clone().unwrap()
    };
    for (reads_from, host, query) in [
        (ReadsFrom::Standbys, "shop-postgres-ro", "?target_session_attrs=standby"),
        (ReadsFrom::AnyInstance, "shop-postgres-r", ""),
        (ReadsFrom::Primary, "shop-postgres-rw", ""),
    ] {
        let c = children(cloudnative_pg(CloudNativePg { query_reads_from: reads_from, ..CloudNativePg::default() }));
        assert_eq!(
            url(&c, "query", "READ_DATABASE_URL"),
            format!("postgres://query:$(POSTGRES_PASSWORD)@{host}:5432/analytics_read{query}")
        );
        assert_eq!(
            url(&c, "command", "WRITE_DATABASE_URL"),
            "postgres://command:$(POSTGRES_PASSWORD)@shop-postgres-rw:5432/analytics_write"
        );
        assert_eq!(
            url(&c, "consumer", "READ_DATABASE_URL"),
            "postgres://consumer:$(POSTGRES_PASSWORD)@shop-postgres-rw:5432/analytics_read"
        );
        for (service, variable) in
            [("query", "READ_DATABASE_URL"), ("consumer", "READ_DATABASE_URL"), ("command", "WRITE_DATABASE_URL")]
        {
            assert!(migrate_url(&c, service, variable).contains("@shop-postgres-rw:5432/"), "{service} migrates");
        }
    }
}

/// Asynchronous replication, preferred durability, the failover knobs, required anti-affinity, the
/// pipeline's placement and a backup object store all reach the cluster as CloudNativePG names them.
#[test]
fn the_cluster_options_reach_cloudnative_pg() {
    let spec = |cluster: CloudNativePg| {
        let mut pipeline = cloudnative_pg(cluster);
        pipeline.node_selector = BTreeMap::from([("pool".to_owned(), "db".to_owned())]);
        serde_json::to_value(&children(pipeline).postgres_clusters[0].spec).unwrap()
    };
    let asynchronous = spec(CloudNativePg {
        synchronous: Synchronous { number: 0, data_durability: DataDurability::Required },
        ..CloudNativePg::default()
    });
    assert_eq!(asynchronous["postgresql"], json!({}), "no synchronous standby");
    let tuned = spec(CloudNativePg {
        instances: 5,
        storage: Storage { size: "50Gi".into(), storage_class_name: Some("fast".into()) },
        synchronous: Synchronous { number: 2, data_durability: DataDurability::Preferred },
        smart_shutdown_timeout: Some(15),
        switchover_delay: Some(60),
        failover_delay: Some(5),
        pod_anti_affinity: AntiAffinity::Required,
        backup: Some(BarmanBackup { barman_object_name: "shop-backups".into() }),
        ..CloudNativePg::default()
    });
    assert_eq!(tuned["instances"], 5);
    assert_eq!(tuned["storage"], json!({"size": "50Gi", "storageClass": "fast"}));
    assert_eq!(
        tuned["postgresql"]["synchronous"],
        json!({"method": "any", "number": 2, "dataDurability": "preferred"})
    );
    assert_eq!(
        (&tuned["smartShutdownTimeout"], &tuned["switchoverDelay"], &tuned["failoverDelay"]),
        (&json!(15), &json!(60), &json!(5))
    );
    assert_eq!(
        tuned["affinity"],
        json!({"enablePodAntiAffinity": true, "podAntiAffinityType": "required", "topologyKey": "kubernetes.io/hostname",
               "nodeSelector": {"pool": "db"}})
    );
    assert_eq!(
        tuned["plugins"],
        json!([{"name": "barman-cloud.cloudnative-pg.io", "isWALArchiver": true,
                "parameters": {"barmanObjectName": "shop-backups"}}])
    );
}

/// The services' roles come from the managed mode's script, applied once by a Job against the primary as
/// the administrator; the Job's name changes with its form, so a new image or script runs it again.
#[test]
fn a_job_applies_the_roles_script_on_the_primary() {
    let c = children(cloudnative_pg(CloudNativePg::default()));
    assert_eq!(c.jobs.len(), 1);
    let job = &c.jobs[0];
    assert!(job.name_any().starts_with("shop-postgres-roles-"), "{}", job.name_any());
    let pod = serde_json::to_value(job.spec.as_ref().unwrap().template.spec.as_ref().unwrap()).unwrap();
    assert_eq!(pod["restartPolicy"], "Never");
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "postgres:16");
    let env = container["env"].as_array().unwrap();
    let value = |name: &str| env.iter().find(|v| v["name"] == name).unwrap().clone();
    assert_eq!(value("PGHOST")["value"], "shop-postgres-rw");
    assert_eq!(value("PGUSER")["value"], "analytics");
    assert_eq!(value("PGPASSWORD")["valueFrom"]["secretKeyRef"]["key"], "postgres-password");
    for service in ["COMMAND", "CONSUMER", "QUERY"] {
        assert!(value(&format!("{service}_PASSWORD"))["valueFrom"]["secretKeyRef"].is_object());
    }
    let program = container["command"][2].as_str().unwrap();
    assert!(program.contains("-f /etc/analytics/roles.sql") && !program.contains("sleep infinity"), "{program}");
    assert_eq!(pod["volumes"][0]["configMap"]["name"], "shop-postgres-init");

    let other = desired(
        &pipeline(cloudnative_pg(CloudNativePg::default())),
        &ImageSet { postgres: "postgres:17".parse().unwrap(), ..ImageSet::default() },
        Observed { consumer_replicas: 3 },
    );
    assert_ne!(other.jobs[0].name_any(), job.name_any(), "a new image runs the roles again");
    assert_eq!(children(cloudnative_pg(CloudNativePg::default())).jobs[0].name_any(), job.name_any());
}

/// The administrator's Secret carries the credentials' password as basic auth, the pipeline's UID, and
/// no owner: like the claims, it outlives a pipeline deleted under Retain.
#[test]
fn the_administrators_secret_is_basic_auth_and_outlives_the_pipeline() {
    let secret = super::cloudnative_pg::admin_secret(&pipeline(cloudnative_pg(CloudNativePg::default())), "s3cret");
    assert_eq!(secret.name_any(), "shop-postgres-admin");
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/basic-auth"));
    let data = secret.string_data.unwrap();
    assert_eq!((data["username"].as_str(), data["password"].as_str()), ("analytics", "s3cret"));
    assert!(secret.metadata.owner_references.is_none());
    assert!(is_data_of(&pipeline(AnalyticsPipelineSpec::default()), secret.metadata.labels.as_ref().unwrap()));
}

fn rabbitmq_cluster(cluster: RabbitmqClusterOperator) -> AnalyticsPipelineSpec {
    AnalyticsPipelineSpec {
        rabbitmq: RabbitmqSpec { cluster_operator: Some(cluster), ..RabbitmqSpec::default() },
        ..AnalyticsPipelineSpec::default()
    }
}

/// In the `clusterOperator` mode the operator runs no RabbitMQ of its own: it asks the RabbitMQ cluster
/// operator for a cluster of three nodes named like the managed broker (so the services' URLs are the
/// same), always with the operator's image, whose pods import the managed mode's users (and the cluster
/// operator's default user) at boot, carry the pipeline's labels, and whose claims carry its UID.
#[test]
fn the_rabbitmq_cluster_operator_is_asked_for_a_cluster_with_the_pipelines_users_and_labels() {
    let c = children(rabbitmq_cluster(RabbitmqClusterOperator::default()));
    assert_eq!(names(&c.stateful_sets), ["shop-postgres"]);
    assert_eq!(names(&c.services), ["shop-postgres", "shop-command", "shop-query"]);
    assert_eq!(names(&c.rabbitmq_clusters), ["shop-rabbitmq"]);
    let cluster = &c.rabbitmq_clusters[0];
    let owner = &cluster.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.controller), ("AnalyticsPipeline", Some(true)));
    assert_eq!(cluster.labels()[PIPELINE_UID_LABEL], "0f8fad5b-d9cb-469f-a165-70867728950e");
    let spec = serde_json::to_value(&cluster.spec).unwrap();
    let selector = json!({"matchLabels": {"app.kubernetes.io/name": "shop-rabbitmq"}});
    assert_eq!(
        json!({"replicas": spec["replicas"], "image": spec["image"], "persistence": spec["persistence"],
               "affinity": spec["affinity"], "rabbitmq": spec["rabbitmq"],
               "delayStartSeconds": spec["delayStartSeconds"]}),
        json!({
            "replicas": 3,
            "image": "rabbitmq:4.3-management",
            "persistence": {"storage": "10Gi"},
            "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": {"labelSelector": selector, "topologyKey": "kubernetes.io/hostname"}}]}},
            "rabbitmq": {"additionalConfig":
                "quorum_queue.continuous_membership_reconciliation.enabled = true\n\
                 quorum_queue.continuous_membership_reconciliation.target_group_size = 3\n"},
            "delayStartSeconds": 0,
        })
    );
    let set = &spec["override"]["statefulSet"]["spec"];
    // The pods: the pipeline's labels, except app.kubernetes.io/name, the cluster operator's selector.
    assert_eq!(
        set["template"]["metadata"]["labels"],
        json!({"app.kubernetes.io/instance": "shop", "app.kubernetes.io/component": "rabbitmq",
               "app.kubernetes.io/managed-by": "analytics-operator"})
    );
    let pod = &set["template"]["spec"];
    let definitions = &pod["initContainers"][0];
    assert_eq!(definitions["name"], "definitions");
    assert_eq!(definitions["image"], "rabbitmq:4.3-management");
    let variables: Vec<(String, String, String)> = definitions["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|var| {
            let from = &var["valueFrom"]["secretKeyRef"];
            (
                var["name"].as_str().unwrap().into(),
                from["name"].as_str().unwrap().into(),
                from["key"].as_str().unwrap().into(),
            )
        })
        .collect();
    let owned = |name: &str, secret: &str, key: &str| (name.to_owned(), secret.to_owned(), key.to_owned());
    assert_eq!(
        variables,
        [
            owned("RABBITMQ_DEFAULT_PASS", "shop-credentials", "rabbitmq-password"),
            owned("COMMAND_PASSWORD", "shop-credentials", "command-mq-password"),
            owned("CONSUMER_PASSWORD", "shop-credentials", "consumer-mq-password"),
            owned("QUERY_PASSWORD", "shop-credentials", "query-mq-password"),
            owned("CLUSTER_OPERATOR_USER", "shop-rabbitmq-default-user", "username"),
            owned("CLUSTER_OPERATOR_PASSWORD", "shop-rabbitmq-default-user", "password"),
        ]
    );
    assert_eq!(
        pod["containers"],
        json!([{"name": "rabbitmq", "volumeMounts": [
            {"name": "definitions", "mountPath": "/var/run/analytics", "readOnly": true},
            {"name": "definitions", "mountPath": "/etc/rabbitmq/conf.d/90-analytics.conf", "subPath": "analytics.conf",
             "readOnly": true}]}])
    );
    assert_eq!(pod["volumes"], json!([{"name": "definitions", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}]));
    assert_eq!(
        set["volumeClaimTemplates"],
        json!([{"metadata": {"name": "persistence", "labels": {
                    "app.kubernetes.io/name": "analytics-pipeline", "app.kubernetes.io/instance": "shop",
                    "app.kubernetes.io/component": "rabbitmq", "app.kubernetes.io/managed-by": "analytics-operator",
                    "analytics.example.com/pipeline-uid": "0f8fad5b-d9cb-469f-a165-70867728950e"}},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}}}])
    );
    // The services reach the cluster's client Service, which has the managed broker's name.
    assert_eq!(
        var(env(&c, "shop-command"), "AMQP_URL").value.as_deref(),
        Some("amqp://command:$(RABBITMQ_PASSWORD)@shop-rabbitmq:5672/%2f")
    );
    assert_eq!(
        super::rabbitmq_cluster::claims(cluster).collect::<Vec<_>>(),
        [
            "persistence-shop-rabbitmq-server-0",
            "persistence-shop-rabbitmq-server-1",
            "persistence-shop-rabbitmq-server-2"
        ]
    );
}

/// Size, storage, resources, required anti-affinity and the grace period reach the cluster operator.
#[test]
fn the_cluster_options_reach_the_rabbitmq_cluster_operator() {
    let c = children(rabbitmq_cluster(RabbitmqClusterOperator {
        replicas: 5,
        storage: Storage { size: "2Gi".into(), storage_class_name: Some("fast".into()) },
        resources: Some(serde_json::from_value(json!({"requests": {"cpu": "500m", "memory": "1Gi"}})).unwrap()),
        pod_anti_affinity: AntiAffinity::Required,
        termination_grace_period_seconds: Some(120),
    }));
    let spec = serde_json::to_value(&c.rabbitmq_clusters[0].spec).unwrap();
    assert_eq!(spec["replicas"], 5);
    assert_eq!(spec["persistence"], json!({"storageClassName": "fast", "storage": "2Gi"}));
    assert_eq!(spec["resources"], json!({"requests": {"cpu": "500m", "memory": "1Gi"}}));
    assert_eq!(spec["terminationGracePeriodSeconds"], 120);
    assert_eq!(
        spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"],
        "kubernetes.io/hostname"
    );
    assert!(spec["rabbitmq"]["additionalConfig"].as_str().unwrap().contains("target_group_size = 5\n"));
    let claim = &spec["override"]["statefulSet"]["spec"]["volumeClaimTemplates"][0]["spec"];
    assert_eq!(claim["storageClassName"], "fast");
    assert_eq!(claim["resources"]["requests"]["storage"], "2Gi");
}

/// Every container the pipeline's pods run, init containers and the cluster operator's override included,
/// as JSON, by `object/container`.
fn every_container(c: &Children) -> Vec<(String, serde_json::Value)> {
    let mut pods: Vec<(String, serde_json::Value)> = Vec::new();
    let mut add = |name: String, pod: serde_json::Value| pods.push((name, pod));
    for d in &c.deployments {
        add(d.name_any(), serde_json::to_value(&d.spec.as_ref().unwrap().template.spec).unwrap());
    }
    for s in &c.stateful_sets {
        add(s.name_any(), serde_json::to_value(&s.spec.as_ref().unwrap().template.spec).unwrap());
    }
    for j in &c.cron_jobs {
        let job = j.spec.as_ref().unwrap().job_template.spec.as_ref().unwrap();
        add(j.name_any(), serde_json::to_value(&job.template.spec).unwrap());
    }
    for j in &c.jobs {
        add(j.name_any(), serde_json::to_value(&j.spec.as_ref().unwrap().template.spec).unwrap());
    }
    for r in &c.rabbitmq_clusters {
        add(r.name_any(), r.spec.override_["statefulSet"]["spec"]["template"]["spec"].clone());
    }
    let mut containers = Vec::new();
    for (name, pod) in pods {
        for kind in ["initContainers", "containers"] {
            for container in pod[kind].as_array().into_iter().flatten() {
                // The override's `rabbitmq` only adds mounts to the cluster operator's container.
                if container.get("image").is_none() {
                    continue;
                }
                containers.push((format!("{name}/{}", container["name"].as_str().unwrap()), container.clone()));
            }
        }
    }
    containers
}

/// A namespace whose ResourceQuota demands CPU and memory requests and limits admits a pod only if each
/// of its containers has all four, and a restricted Pod Security namespace only a pod whose containers
/// cannot escalate and drop every capability, run as a non-root user with the runtime's seccomp profile.
/// Every container the operator makes, helpers included (`migrate`, `definitions`, `roles`, `verify`), is
/// so in every mode, with the spec's resources or without (then the operator's defaults), and so is each
/// cluster another operator runs for it.
#[test]
fn every_container_has_requests_limits_and_the_restricted_security_context() {
    let resources: k8s_openapi::api::core::v1::ResourceRequirements = serde_json::from_value(json!({
        "requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}}))
    .unwrap();
    let managed = crate::crd::Managed { resources: Some(resources.clone()), ..crate::crd::Managed::default() };
    let api = ApiSpec { resources: Some(resources.clone()), ..ApiSpec::default() };
    let consumers = ConsumerSpec { resources: Some(resources.clone()), ..ConsumerSpec::default() };
    let everywhere = AnalyticsPipelineSpec {
        command: api.clone(),
        query: api,
        consumers,
        postgres: PostgresSpec { managed: Some(managed.clone()), ..PostgresSpec::default() },
        rabbitmq: RabbitmqSpec { managed: Some(managed), ..RabbitmqSpec::default() },
        ..AnalyticsPipelineSpec::default()
    };
    let highly_available =
        |resources: Option<&k8s_openapi::api::core::v1::ResourceRequirements>| AnalyticsPipelineSpec {
            postgres: PostgresSpec {
                cloud_native_pg: Some(CloudNativePg { resources: resources.cloned(), ..CloudNativePg::default() }),
                ..PostgresSpec::default()
            },
            rabbitmq: RabbitmqSpec {
                cluster_operator: Some(RabbitmqClusterOperator {
                    resources: resources.cloned(),
                    ..RabbitmqClusterOperator::default()
                }),
                ..RabbitmqSpec::default()
            },
            ..AnalyticsPipelineSpec::default()
        };
    let specs = [
        (everywhere.clone(), Some(&resources)),
        (AnalyticsPipelineSpec { ..highly_available(Some(&resources)) }, Some(&resources)),
        (AnalyticsPipelineSpec::default(), None),
        (highly_available(None), None),
    ];
    for (spec, given) in specs {
        let c = children(spec);
        let containers = every_container(&c);
        let names: Vec<&String> = containers.iter().map(|(name, _)| name).collect();
        for helper in ["/migrate", "/definitions", "/verify"] {
            assert!(names.iter().any(|name| name.ends_with(helper)), "{helper} among {names:?}");
        }
        assert!(names.iter().any(|name| name.ends_with("/roles")), "roles among {names:?}");
        for (name, container) in &containers {
            for (side, resource) in
                [("requests", "cpu"), ("requests", "memory"), ("limits", "cpu"), ("limits", "memory")]
            {
                assert!(container["resources"][side][resource].is_string(), "{name}: no {side}.{resource}");
            }
            let security = &container["securityContext"];
            assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
            assert_eq!(security["capabilities"]["drop"], json!(["ALL"]), "{name}");
        }
        for (name, pod) in every_pod(&c) {
            if c.rabbitmq_clusters.iter().any(|r| r.name_any() == name) {
                continue; // the cluster operator's pod security context, which the restricted e2e admits
            }
            let security = &pod["spec"]["securityContext"];
            assert_eq!(security["runAsNonRoot"], true, "{name}");
            assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault", "{name}");
        }
        let backend = super::Footprint::Backend.requirements();
        for cluster in &c.postgres_clusters {
            assert_eq!(cluster.spec.resources.as_ref(), Some(given.unwrap_or(&backend)));
        }
        for cluster in &c.rabbitmq_clusters {
            assert_eq!(cluster.spec.resources.as_ref(), Some(given.unwrap_or(&backend)));
        }
    }
}
