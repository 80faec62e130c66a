//! Checks of the Helm chart with a real helm and a real promtool (paths in HELM and PROMTOOL, which
//! `make test` sets; without them these tests fail loudly instead of skipping).

#![allow(clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use analytics_operator::crd::AnalyticsPipeline;
use analytics_testkit::{env, run, tool, try_run};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Service, ServiceAccount},
    networking::v1::NetworkPolicy,
    policy::v1::PodDisruptionBudget,
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chart() -> PathBuf {
    repo().join("charts/analytics-pipeline")
}

/// helm's stdout; panics with what it printed if it fails.
fn helm(args: &[&str]) -> String {
    run(Command::new(tool("HELM")).args(args), None)
}

/// `helm template` of the chart; panics with helm's message if it fails.
fn render(extra: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut args = vec!["template", "analytics", chart.to_str().unwrap(), "--namespace", "analytics"];
    args.extend_from_slice(extra);
    let documents: Vec<Value> = serde_saphyr::from_multiple(&helm(&args)).unwrap();
    documents.into_iter().filter(|d| !d.is_null()).collect()
}

fn kinds(documents: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = documents.iter().map(|d| d["kind"].as_str().unwrap().to_owned()).collect();
    kinds.sort();
    kinds
}

/// The examples' specs, as `--set-json` for the chart's example pipeline.
fn example_specs() -> Vec<(String, Value)> {
    let mut examples = Vec::new();
    for entry in std::fs::read_dir(repo().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let pipeline: Value = serde_saphyr::from_str(&text).unwrap();
        examples.push((path.file_name().unwrap().to_string_lossy().into_owned(), pipeline));
    }
    examples.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(examples.len() >= 2, "examples/ holds a minimal and a production-like pipeline");
    examples
}

#[test]
fn the_charts_crd_is_the_generated_one() {
    let generated = std::fs::read_to_string(repo().join("crds/analyticspipeline.yaml")).unwrap();
    let packaged = std::fs::read_to_string(chart().join("crds/analyticspipeline.yaml")).unwrap();
    assert!(generated == packaged, "charts/analytics-pipeline/crds/ is stale: run `make crds`");
}

#[test]
fn helm_lint_passes_with_the_defaults_and_every_example() {
    let chart = chart();
    helm(&["lint", "--strict", chart.to_str().unwrap()]);
    for (name, example) in example_specs() {
        let spec =
            format!("examplePipeline.spec={}", example["spec"].as_object().map_or_else(|| json!({}), |s| json!(s)));
        let args =
            ["lint", "--strict", chart.to_str().unwrap(), "--set", "examplePipeline.enabled=true", "--set-json", &spec];
        if let Err(failure) = try_run(Command::new(tool("HELM")).args(args), None) {
            panic!("helm lint with examples/{name}: {failure}");
        }
    }
}

#[test]
fn the_default_render_is_the_operator_with_its_rbac_and_dashboard_as_valid_objects() {
    let documents = render(&[]);
    assert_eq!(
        kinds(&documents),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Deployment",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount"
        ]
    );
    // A schema check: each object parses as its Kubernetes type and serializes back to the same JSON, so a
    // wrong type fails the parse and a misspelt or misplaced field is missing from the round trip.
    for document in &documents {
        let kind = document["kind"].as_str().unwrap();
        let round_trip = match kind {
            "ClusterRole" => round_trip::<ClusterRole>(document),
            "ClusterRoleBinding" => round_trip::<ClusterRoleBinding>(document),
            "ConfigMap" => round_trip::<ConfigMap>(document),
            "Deployment" => round_trip::<Deployment>(document),
            "NetworkPolicy" => round_trip::<NetworkPolicy>(document),
            "PodDisruptionBudget" => round_trip::<PodDisruptionBudget>(document),
            "Service" => round_trip::<Service>(document),
            "ServiceAccount" => round_trip::<ServiceAccount>(document),
            other => panic!("unexpected kind {other}"),
        };
        assert_eq!(&round_trip, document, "{kind} has fields its schema does not know");
    }
    let deployment: Deployment =
        serde_json::from_value(documents.iter().find(|d| d["kind"] == "Deployment").unwrap().clone()).unwrap();
    let spec = deployment.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("analytics-operator"));
    let env: Vec<String> = pod.containers[0].env.clone().unwrap().into_iter().map(|e| e.name).collect();
    assert!(env.contains(&"POD_NAME".to_owned()) && env.contains(&"POD_NAMESPACE".to_owned()), "{env:?}");

    // The ClusterRole carries exactly the rules written in files/operator-rbac-rules.yaml and
    // files/operator-lease-rules.yaml.
    let role = documents.iter().find(|d| d["kind"] == "ClusterRole").unwrap();
    let (rules, leases) = (rules_file("operator-rbac-rules.yaml"), rules_file("operator-lease-rules.yaml"));
    assert_eq!(
        role["rules"],
        Value::Array([rules.as_array().unwrap().clone(), leases.as_array().unwrap().clone()].concat())
    );
    assert!(leases[0]["apiGroups"][0] == "coordination.k8s.io", "leader election needs Lease permissions");
}

/// The operator's two replicas preferably run on different nodes and a drain takes one at a time; a
/// private registry's pull Secrets reach the operator's pod and become every pipeline's default; the pod
/// takes a priority class and extra labels (which cannot replace its selector's).
#[test]
fn the_operator_spreads_its_replicas_keeps_one_through_a_drain_and_pulls_from_a_private_registry() {
    let find = |documents: &[Value], kind: &str| documents.iter().find(|d| d["kind"] == kind).cloned();
    let documents = render(&[]);
    let pod = &find(&documents, "Deployment").unwrap()["spec"]["template"];
    let selector = json!({"app.kubernetes.io/name": "analytics-operator", "app.kubernetes.io/instance": "analytics"});
    assert_eq!(
        pod["spec"]["affinity"],
        json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": selector}}}
        ]}})
    );
    let budget = find(&documents, "PodDisruptionBudget").unwrap();
    assert_eq!(budget["spec"]["maxUnavailable"], 1);
    assert_eq!(budget["spec"]["selector"]["matchLabels"], selector);
    assert!(pod["spec"].get("imagePullSecrets").is_none() && pod["spec"].get("priorityClassName").is_none());
    let resources = &pod["spec"]["containers"][0]["resources"];
    for (side, resource) in [("requests", "cpu"), ("requests", "memory"), ("limits", "cpu"), ("limits", "memory")] {
        assert!(resources[side][resource].is_string(), "the operator has no {side}.{resource}");
    }

    let documents = render(&[
        "--set-json",
        r#"imagePullSecrets=[{"name":"registry"},{"name":"mirror"}]"#,
        "--set",
        "operator.priorityClassName=system-cluster-critical",
        "--set-json",
        r#"operator.podLabels={"team":"platform","app.kubernetes.io/name":"other"}"#,
        "--set",
        "operator.replicas=1",
    ]);
    assert!(find(&documents, "PodDisruptionBudget").is_none(), "no budget for a single replica: it would block drains");
    let pod = &find(&documents, "Deployment").unwrap()["spec"]["template"];
    assert_eq!(pod["spec"]["imagePullSecrets"], json!([{"name": "registry"}, {"name": "mirror"}]));
    assert_eq!(pod["spec"]["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["metadata"]["labels"]["team"], "platform");
    assert_eq!(pod["metadata"]["labels"]["app.kubernetes.io/name"], "analytics-operator");
    let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
    let pull_secrets = env.iter().find(|e| e["name"] == "IMAGE_PULL_SECRETS").unwrap();
    assert_eq!(pull_secrets["value"], "registry,mirror");
}

fn rules_file(name: &str) -> Value {
    serde_saphyr::from_str(&std::fs::read_to_string(chart().join("files").join(name)).unwrap()).unwrap()
}

#[test]
fn with_a_watch_namespace_the_operator_gets_roles_in_two_namespaces_and_nothing_cluster_wide() {
    let documents = render(&["--namespace", "ops", "--set", "operator.watchNamespace=shop"]);
    let kinds = kinds(&documents);
    assert!(!kinds.iter().any(|k| k.starts_with("Cluster")), "{kinds:?}");
    let role = |namespace: &str| {
        documents.iter().find(|d| d["kind"] == "Role" && d["metadata"]["namespace"] == namespace).unwrap()["rules"]
            .clone()
    };
    assert_eq!(role("shop"), rules_file("operator-rbac-rules.yaml"), "the pipelines' namespace");
    assert_eq!(role("ops"), rules_file("operator-lease-rules.yaml"), "the Lease, in the operator's own namespace");
    let bindings: Vec<&Value> = documents.iter().filter(|d| d["kind"] == "RoleBinding").collect();
    assert_eq!(bindings.len(), 2);
    assert!(bindings.iter().all(|b| b["subjects"][0]["namespace"] == "ops"));
    // Watching its own namespace: one Role with both.
    let same = render(&["--namespace", "shop", "--set", "operator.watchNamespace=shop"]);
    let roles: Vec<&Value> = same.iter().filter(|d| d["kind"] == "Role").collect();
    assert_eq!(roles.len(), 1);
    assert_eq!(
        roles[0]["rules"],
        Value::Array(
            [
                rules_file("operator-rbac-rules.yaml").as_array().unwrap().clone(),
                rules_file("operator-lease-rules.yaml").as_array().unwrap().clone()
            ]
            .concat()
        )
    );
}

/// The install's notes, as `helm install --dry-run=client` prints them: it asks the test's API server for
/// its version and its kinds (the CRD, applied as `make crds` wrote it, for the example pipeline), and
/// creates nothing.
fn notes(extra: &[&str]) -> String {
    let kubeconfig = analytics_testkit::env("TEST_KUBECONFIG");
    let kubectl =
        |args: &[&str]| run(Command::new(tool("KUBECTL")).args(args).args(["--kubeconfig", &kubeconfig]), None);
    let crd = repo().join("crds/analyticspipeline.yaml");
    kubectl(&["apply", "--server-side", "--force-conflicts", "-f", crd.to_str().unwrap()]);
    kubectl(&["wait", "--for=condition=Established", "--timeout=60s", "crd/analyticspipelines.analytics.example.com"]);
    let chart = chart();
    let mut args = vec![
        "install",
        "analytics",
        chart.to_str().unwrap(),
        "-n",
        "ops",
        "--dry-run=client",
        "--kubeconfig",
        &kubeconfig,
    ];
    args.extend_from_slice(extra);
    let out = helm(&args);
    out.split_once("NOTES:\n").unwrap_or_else(|| panic!("no notes: {out}")).1.to_owned()
}

/// The example pipeline goes, and the notes send the user, where the operator looks: the namespace it
/// watches, or the release's when it watches all; with the example's name.
#[test]
fn the_example_pipeline_and_the_notes_use_the_namespace_the_operator_watches() {
    let watching = ["--set", "operator.watchNamespace=team-a"];
    let example = ["--set", "examplePipeline.enabled=true", "--set", "examplePipeline.name=orders"];
    let pipeline = |documents: Vec<Value>| {
        let found = documents.into_iter().find(|d| d["kind"] == "AnalyticsPipeline").unwrap();
        (
            found["metadata"]["namespace"].as_str().unwrap().to_owned(),
            found["metadata"]["name"].as_str().unwrap().to_owned(),
        )
    };
    assert_eq!(pipeline(render(&[&watching[..], &example[..]].concat())), ("team-a".into(), "orders".into()));
    assert_eq!(pipeline(render(&example)), ("analytics".into(), "orders".into()));

    let default = notes(&[]);
    assert!(default.contains("metadata: {name: shop, namespace: ops}"), "{default}");
    assert!(default.contains("kubectl get analyticspipelines -n ops -w"), "{default}");
    let watched = notes(&watching);
    assert!(watched.contains("in team-a, the one namespace the operator watches"), "{watched}");
    assert!(watched.contains("metadata: {name: shop, namespace: team-a}"), "{watched}");
    assert!(!watched.contains("-n ops"), "{watched}");
    let installed = notes(&[&watching[..], &example[..]].concat());
    assert!(installed.contains("The chart installed the pipeline orders in team-a."), "{installed}");
    assert!(installed.contains("svc/orders-command") && installed.contains("secret orders-api-tokens"), "{installed}");
    assert!(!installed.contains("shop"), "{installed}");
}

#[test]
fn monitoring_objects_appear_only_where_the_prometheus_operator_api_exists() {
    assert!(!kinds(&render(&[])).iter().any(|k| k.contains("Monitor") || k == "PrometheusRule"));
    let documents = render(&["--api-versions", "monitoring.coreos.com/v1"]);
    let kinds = kinds(&documents);
    for kind in ["PodMonitor", "PrometheusRule", "ServiceMonitor"] {
        assert!(kinds.contains(&kind.to_owned()), "{kind} in {kinds:?}");
    }
    // The operator's pipeline_* series carry the pipeline's namespace label, which must survive the scrape.
    let monitor = documents.iter().find(|d| d["kind"] == "ServiceMonitor").unwrap();
    assert_eq!(monitor["spec"]["endpoints"][0]["honorLabels"], true);
}

#[test]
fn every_example_renders_as_a_pipeline_the_operator_understands() {
    for (name, example) in example_specs() {
        assert_eq!(example["kind"], "AnalyticsPipeline", "{name}");
        let spec =
            format!("examplePipeline.spec={}", example["spec"].as_object().map_or_else(|| json!({}), |s| json!(s)));
        let documents = render(&["--set", "examplePipeline.enabled=true", "--set-json", &spec]);
        let pipeline = documents.iter().find(|d| d["kind"] == "AnalyticsPipeline").unwrap_or_else(|| panic!("{name}"));
        let typed: AnalyticsPipeline =
            serde_json::from_value(pipeline.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        analytics_operator::controller::validate(&typed).unwrap_or_else(|e| panic!("{name} is invalid: {e}"));
    }
}

#[test]
fn values_that_break_the_schema_fail_at_install_time() {
    let dir = tempdir();
    for (name, values) in [
        ("replicas-as-text", "operator:\n  image: {repository: x}\n  replicas: two\n"),
        ("unknown-key", "operatr:\n  replicas: 1\n"),
        ("bad-pull-policy", "operator:\n  image: {repository: x, pullPolicy: Sometimes}\n  replicas: 1\n"),
        ("negative-threshold", "monitoring:\n  prometheusRule: {lagSecondsThreshold: -5}\n"),
        ("alert-for-not-a-duration", "monitoring:\n  prometheusRule:\n    for: {AnalyticsPipelineLagHigh: soon}\n"),
        ("bad-pipeline-name", "examplePipeline: {enabled: true, name: Not_A_Name}\n"),
        ("short-digest", "images:\n  query: {repository: q, digest: \"sha256:abc\"}\n"),
        ("pull-secret-as-text", "imagePullSecrets: [registry]\n"),
    ] {
        let file = dir.join(format!("{name}.yaml"));
        std::fs::write(&file, values).unwrap();
        let chart = chart();
        let args = ["template", "analytics", chart.to_str().unwrap(), "-f", file.to_str().unwrap()];
        let Err(failure) = try_run(Command::new(tool("HELM")).args(args), None) else { panic!("{name} was accepted") };
        assert!(failure.contains("schema"), "{name} fails on the schema: {failure}");
    }
}

#[test]
fn images_may_be_pinned_by_digest() {
    let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
    let documents = render(&[
        "--set",
        &format!("images.query.digest={digest}"),
        "--set",
        &format!("operator.image.digest={digest}"),
    ]);
    let deployment = documents.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert!(container["image"].as_str().unwrap().ends_with(&format!("@{digest}")), "{container}");
    let query = container["env"].as_array().unwrap().iter().find(|e| e["name"] == "QUERY_IMAGE").unwrap();
    assert!(query["value"].as_str().unwrap().ends_with(&format!("@{digest}")), "{query}");
    // The operator parses what the chart passes.
    let image: analytics_operator::crd::Image = query["value"].as_str().unwrap().parse().unwrap();
    assert_eq!(image.digest.as_deref(), Some(digest.as_str()));
}

#[test]
fn the_dashboard_is_grafana_json_with_a_query_in_every_panel() {
    let text = std::fs::read_to_string(chart().join("dashboards/analytics-pipeline.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(dashboard["uid"], "analytics-pipeline");
    assert!(dashboard["schemaVersion"].as_i64().unwrap() >= 30);
    let panels = dashboard["panels"].as_array().unwrap();
    let titles: Vec<&str> = panels.iter().map(|p| p["title"].as_str().unwrap()).collect();
    for wanted in ["lag", "Pending", "Orders", "Events", "Consumer replicas", "Error", "Reconcile"] {
        assert!(titles.iter().any(|t| t.contains(wanted)), "a panel about {wanted}: {titles:?}");
    }
    for panel in panels {
        let targets = panel["targets"].as_array().unwrap();
        assert!(
            !targets.is_empty() && targets.iter().all(|t| !t["expr"].as_str().unwrap().is_empty()),
            "{}",
            panel["title"]
        );
    }
    // Installed as the sidecar's ConfigMap, with the same JSON.
    let documents = render(&[]);
    let config_map = documents.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    assert_eq!(config_map["metadata"]["labels"]["grafana_dashboard"], "1");
    let installed: Value =
        serde_json::from_str(config_map["data"]["analytics-pipeline.json"].as_str().unwrap()).unwrap();
    assert_eq!(installed, dashboard);
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let documents = render(&["--api-versions", "monitoring.coreos.com/v1"]);
    let rule = documents.iter().find(|d| d["kind"] == "PrometheusRule").unwrap();
    let dir = tempdir();
    // JSON is YAML: promtool reads the rule group as it is.
    std::fs::write(dir.join("rules.yaml"), serde_json::to_string(&rule["spec"]).unwrap()).unwrap();
    std::fs::copy(chart().join("tests/alerts.test.yaml"), dir.join("alerts.test.yaml")).unwrap();
    let promtool = tool("PROMTOOL");
    let check = run(Command::new(&promtool).args(["check", "rules", "rules.yaml"]).current_dir(&*dir), None);
    assert!(check.contains("SUCCESS: 5 rules found"), "{check}");
    run(Command::new(&promtool).args(["test", "rules", "alerts.test.yaml"]).current_dir(&*dir), None);
}

#[test]
fn every_operator_metric_the_dashboard_and_rules_use_is_exported_by_the_operator() {
    let registry = prometheus::Registry::new();
    let kinds = analytics_operator::controller::Error::KINDS;
    let metrics = analytics_operator::metrics::Metrics::register(&registry, &kinds).unwrap();
    let status = analytics_operator::crd::AnalyticsPipelineStatus {
        lag_seconds: Some(0.0),
        pending_events: Some(0),
        queue_depth: Some(0),
        consumer_replicas: Some(1),
        read_model: Some(analytics_operator::crd::ReadModelStatus {
            last_verify: Some(analytics_operator::crd::VerifyRun {
                job: "shop-verify-1".into(),
                finished_at: None,
                outcome: analytics_operator::crd::VerifyOutcome::Consistent,
                message: "consistent".into(),
            }),
            rebuild: None,
        }),
        ..Default::default()
    };
    metrics.observe("prod", "shop", &status, 10);
    let mut exported = Vec::new();
    prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &registry.gather(), &mut exported).unwrap();
    let exported = String::from_utf8(exported).unwrap();
    let used = analytics_operator::metric_names(&monitoring_text());
    let operator_names: Vec<&String> =
        used.iter().filter(|n| n.starts_with("operator_") || n.starts_with("pipeline_")).collect();
    assert!(operator_names.len() >= 6, "{operator_names:?}");
    for name in operator_names {
        assert!(exported.contains(&format!("\n{name}")), "the operator exports no {name}");
    }
}

fn round_trip<K: serde::de::DeserializeOwned + serde::Serialize>(document: &Value) -> Value {
    let typed: K =
        serde_json::from_value(document.clone()).unwrap_or_else(|e| panic!("{} does not parse: {e}", document["kind"]));
    serde_json::to_value(typed).unwrap()
}

/// The dashboard and the alert rules, whose metric names must exist.
fn monitoring_text() -> String {
    let dashboard = std::fs::read_to_string(chart().join("dashboards/analytics-pipeline.json")).unwrap();
    let rules = std::fs::read_to_string(chart().join("templates/monitoring.yaml")).unwrap();
    format!("{dashboard}\n{rules}")
}

/// A scratch directory, removed when the test ends.
struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        drop(std::fs::remove_dir_all(&self.0));
    }
}

fn tempdir() -> TempDir {
    let dir = std::env::temp_dir().join(format!("chart-test-{}-{:?}", std::process::id(), std::thread::current().id()));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn dockerfile_targets() -> Vec<String> {
    read("Dockerfile")
        .lines()
        .filter_map(|line| line.strip_prefix("FROM "))
        .filter_map(|from| {
            from.split_whitespace().collect::<Vec<_>>().windows(2).find(|w| w[0] == "AS").map(|w| w[1].to_owned())
        })
        .collect()
}

#[test]
fn the_dockerfile_passes_hadolint_and_builds_four_non_root_images() {
    run(Command::new(tool("HADOLINT")).arg("Dockerfile").current_dir(repo()), None);
    let targets = dockerfile_targets();
    for image in ["command", "consumer", "query", "operator"] {
        assert!(targets.contains(&image.to_owned()), "a {image} target in {targets:?}");
    }
    let dockerfile = read("Dockerfile");
    assert!(
        dockerfile.contains("ARG RUST_IMAGE=") && dockerfile.contains("ARG RUNTIME_IMAGE="),
        "base images are build args"
    );
    assert!(dockerfile.contains("USER 65532:65532") && dockerfile.contains("distroless"), "non-root, no shell");
    assert!(dockerfile.contains("cargo chef cook"), "the dependency layer is cached");
    assert!(read(".dockerignore").lines().any(|l| l.trim() == "target/"));
}

#[test]
fn compose_builds_every_service_from_the_dockerfile_with_health_checks_and_documented_settings() {
    let compose: Value = serde_saphyr::from_str(&read("docker-compose.yml")).unwrap();
    let targets = dockerfile_targets();
    let services = compose["services"].as_object().unwrap();
    for name in ["postgres", "rabbitmq", "command", "consumer", "query"] {
        assert!(services[name]["healthcheck"]["test"].is_array(), "{name} has a health check");
    }
    for (name, service) in services {
        if let Some(target) = service["build"]["target"].as_str() {
            assert!(targets.contains(&target.to_owned()), "{name} builds the Dockerfile's {target} target");
        }
    }
    // Every ${VAR} the file uses is in .env.example.
    let example = read(".env.example");
    let text = read("docker-compose.yml");
    for variable in text.split("${").skip(1).map(|rest| rest.split([':', '}']).next().unwrap()) {
        assert!(example.lines().any(|l| l.starts_with(&format!("{variable}="))), ".env.example sets {variable}");
    }
}

#[test]
fn kind_maps_the_node_ports_that_skaffolds_example_pipeline_uses() {
    let kind: Value = serde_saphyr::from_str(&read("kind-config.yaml")).unwrap();
    let mappings = kind["nodes"][0]["extraPortMappings"].as_array().unwrap();
    let mapped = |container: i64| {
        mappings.iter().find(|m| m["containerPort"] == container).map(|m| m["hostPort"].as_i64().unwrap())
    };
    let skaffold: Value = serde_saphyr::from_str(&read("skaffold.yaml")).unwrap();
    let release = &skaffold["deploy"]["helm"]["releases"][0];
    let values = &release["setValueTemplates"];
    assert_eq!(mapped(values["examplePipeline.spec.command.nodePort"].as_i64().unwrap()), Some(8080));
    assert_eq!(mapped(values["examplePipeline.spec.query.nodePort"].as_i64().unwrap()), Some(8081));
    assert!(repo().join(release["chartPath"].as_str().unwrap()).join("Chart.yaml").exists());
    let targets = dockerfile_targets();
    for artifact in skaffold["build"]["artifacts"].as_array().unwrap() {
        assert!(targets.contains(&artifact["docker"]["target"].as_str().unwrap().to_owned()), "{artifact}");
    }
    // The chart accepts skaffold's values, with the image templates filled in.
    let chart = chart();
    let mut args = vec!["template".to_owned(), "analytics".to_owned(), chart.to_string_lossy().into_owned()];
    for (key, value) in values.as_object().unwrap() {
        let value = value
            .as_str()
            .map_or_else(|| value.to_string(), |v| if v.starts_with("{{") { "x".to_owned() } else { v.to_owned() });
        args.extend(["--set".to_owned(), format!("{key}={value}")]);
    }
    let rendered = helm(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let documents: Vec<Value> = serde_saphyr::from_multiple(&rendered).unwrap();
    let pipeline = documents.iter().find(|d| d["kind"] == "AnalyticsPipeline").unwrap();
    let typed: AnalyticsPipeline = serde_json::from_value(pipeline.clone()).unwrap();
    assert_eq!(typed.spec.query.node_port, Some(30081));
}

/// `make up`, `make bench` and `make cluster` run release binaries from `CARGO_TARGET_DIR` when it is set:
/// no script names `target/release` itself (with the variable set, `make up` failed with exit 127 after
/// its whole build).
#[test]
fn the_scripts_find_the_release_binaries_where_cargo_put_them() {
    for entry in std::fs::read_dir(repo().join("hack")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|extension| extension != "sh") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (number, line) in text.lines().enumerate() {
            let bare = line.replace("${CARGO_TARGET_DIR:-target}/release", "");
            assert!(!bare.contains("target/release"), "{}:{}: {line}", path.display(), number + 1);
        }
    }
}

/// Every object the operator creates for a pipeline, as JSON documents: `children::desired` of each example
/// and of a spec that sets every option of every pod (hibernated too), with the NetworkPolicies, the
/// generated Secrets and a rebuild Job.
fn operator_objects() -> Vec<Value> {
    use analytics_operator::children::{self, Observed};
    let mut specs: Vec<(String, Value)> = example_specs();
    specs.push((
        "every-pod-option".to_owned(),
        json!({"apiVersion": "analytics.example.com/v1alpha1", "kind": "AnalyticsPipeline", "metadata": {"name": "full"},
               "spec": {"priorityClassName": "business-critical", "imagePullSecrets": [{"name": "registry"}],
                        "podMetadata": {"labels": {"team": "shop"}, "annotations": {"sidecar.istio.io/inject": "false"}},
                        "nodeSelector": {"pool": "analytics"}, "tolerations": [{"key": "dedicated", "operator": "Exists"}],
                        "hibernate": true, "apiAuthentication": "None",
                        "rabbitmq": {"clusterOperator": {"replicas": 3}}}}),
    ));
    let images = analytics_operator::crd::ImageSet::default();
    let mut documents = Vec::new();
    for (name, mut example) in specs {
        example["metadata"]["namespace"] = json!("analytics");
        // One name per spec, so that no two specs' objects share a name.
        example["metadata"]["name"] = json!(name.trim_end_matches(".yaml"));
        example["metadata"]["uid"] = json!("0f8fad5b-d9cb-469f-a165-70867728950e");
        if example.get("spec").is_none() {
            example["spec"] = json!({}); // as the API server defaults it
        }
        let pipeline: AnalyticsPipeline = serde_json::from_value(example).unwrap_or_else(|e| panic!("{name}: {e}"));
        let c = children::desired(&pipeline, &images, Observed { consumer_replicas: 2 });
        documents.extend(c.config_maps.iter().map(as_json));
        documents.extend(c.services.iter().map(as_json));
        documents.extend(c.stateful_sets.iter().map(as_json));
        documents.extend(c.deployments.iter().map(as_json));
        documents.extend(c.cron_jobs.iter().map(as_json));
        documents.extend(c.disruption_budgets.iter().map(as_json));
        documents.extend(c.jobs.iter().map(as_json));
        documents.extend(c.postgres_clusters.iter().map(as_json));
        documents.extend(c.rabbitmq_clusters.iter().map(as_json));
        let everyone = k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector::default();
        documents.extend(children::network::policies(&pipeline, "analytics-system", &everyone).iter().map(as_json));
        let mut random = || "generated".to_owned();
        documents.push(as_json(&children::credentials_secret(&pipeline, &mut random)));
        documents.push(as_json(&children::api_tokens_secret(&pipeline, &mut random)));
        documents.push(as_json(&children::cloudnative_pg::admin_secret(&pipeline, "generated")));
        let at = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2026-12-07T10:00:00Z".parse().unwrap());
        documents.push(as_json(&children::maintenance::rebuild_job(&pipeline, &images.consumer, &at)));
    }
    documents
}

/// An object the operator builds as JSON, with its apiVersion and kind.
fn as_json<K: kube::Resource<DynamicType = ()> + serde::Serialize>(object: &K) -> Value {
    let mut value = serde_json::to_value(object).unwrap();
    value["apiVersion"] = json!(K::api_version(&()));
    value["kind"] = json!(K::kind(&()));
    value
}

/// The chart's renders that the tests above check one by one: the defaults, the CRD, monitoring, a watched
/// namespace, each example as the chart's example pipeline, a private registry and a custom affinity.
fn chart_renders() -> Vec<Value> {
    let mut renders = vec![
        render(&[]),
        render(&["--include-crds"]),
        render(&["--api-versions", "monitoring.coreos.com/v1"]),
        render(&["--set", "operator.watchNamespace=shop"]),
        render(&[
            "--set-json",
            r#"imagePullSecrets=[{"name":"registry"}]"#,
            "--set",
            "operator.priorityClassName=high",
            "--set-json",
            r#"operator.affinity={"nodeAffinity":{}}"#,
        ]),
    ];
    for (_, example) in example_specs() {
        let spec =
            format!("examplePipeline.spec={}", example["spec"].as_object().map_or_else(|| json!({}), |s| json!(s)));
        renders.push(render(&["--set", "examplePipeline.enabled=true", "--set-json", &spec]));
    }
    renders.into_iter().flatten().collect()
}

/// `documents` as one multi-document file.
fn stream(dir: &Path, name: &str, documents: &[Value]) -> PathBuf {
    let path = dir.join(name);
    let text: Vec<String> = documents.iter().map(Value::to_string).collect();
    std::fs::write(&path, text.join("\n---\n")).unwrap();
    path
}

/// kubeconform, strict, against the schemas of the pinned Kubernetes and of the CRDs (ours, CloudNativePG's,
/// the RabbitMQ cluster operator's and the Prometheus operator's), all generated here (KUBE_SCHEMAS and
/// CRD_SCHEMAS, from `hack/tools.sh`): every chart render, every example and every object the operator
/// creates is valid, and a misspelt field is caught.
#[test]
fn kubeconform_accepts_every_render_example_and_object_the_operator_creates() {
    let dir = tempdir();
    let kubeconform = |files: &[&Path]| {
        let kube = format!("{}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json", env("KUBE_SCHEMAS"));
        let crds = format!("{}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json", env("CRD_SCHEMAS"));
        let mut command = Command::new(tool("KUBECONFORM"));
        command.args(["-strict", "-summary", "-schema-location", &kube, "-schema-location", &crds]);
        command.args(files);
        try_run(&mut command, None)
    };
    let renders = stream(&dir, "renders.yaml", &chart_renders());
    let objects = operator_objects();
    let kinds: std::collections::BTreeSet<&str> = objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    for kind in [
        "Deployment",
        "StatefulSet",
        "PodDisruptionBudget",
        "Cluster",
        "RabbitmqCluster",
        "NetworkPolicy",
        "Job",
        "CronJob",
    ] {
        assert!(kinds.contains(kind), "{kind} among {kinds:?}");
    }
    let operator = stream(&dir, "operator.yaml", &objects);
    let examples = repo().join("examples");
    let summary = kubeconform(&[&renders, &operator, &examples]).unwrap_or_else(|failure| panic!("{failure}"));
    assert!(summary.contains("Invalid: 0, Errors: 0, Skipped: 0"), "{summary}");

    let mut misspelt = objects.iter().find(|o| o["kind"] == "Deployment").unwrap().clone();
    misspelt["spec"]["template"]["spec"]["containers"][0]["resource"] = json!({});
    let misspelt = stream(&dir, "misspelt.yaml", &[misspelt]);
    let failure = kubeconform(&[&misspelt]).expect_err("a misspelt field must fail");
    assert!(failure.contains("resource"), "{failure}");
}

/// kube-score's checks over the chart's operator and every object the operator creates find nothing
/// critical, except what is by design (each ignored check says why).
#[test]
fn kube_score_finds_nothing_critical_in_the_chart_or_the_operators_objects() {
    let dir = tempdir();
    let documents: Vec<Value> = chart_renders().into_iter().chain(operator_objects()).collect();
    let file = stream(&dir, "all.yaml", &documents);
    let mut command = Command::new(tool("KUBE_SCORE"));
    command.args(["score", "--kubernetes-version", "v1.33", "--output-format", "ci"]);
    for ignored in KUBE_SCORE_BY_DESIGN {
        command.args(["--ignore-test", ignored.0]);
    }
    command.arg(&file);
    match try_run(&mut command, None) {
        Err(failure) => {
            let critical: Vec<&str> = failure.lines().filter(|line| line.contains("[CRITICAL]")).collect();
            panic!("kube-score found {} critical findings:\n{}", critical.len(), critical.join("\n"));
        }
        Ok(report) => {
            let mut warnings: Vec<&str> = report.lines().filter(|line| line.contains("[WARNING]")).collect();
            warnings.sort_unstable();
            println!("kube-score: no critical finding; {} warnings:\n{}", warnings.len(), warnings.join("\n"));
        }
    }
}

/// kube-score checks that do not apply, and why.
const KUBE_SCORE_BY_DESIGN: [(&str, &str); 6] = [
    (
        "container-image-pull-policy",
        "Images are pinned by tag or digest and their pull policy is the spec's (images.*.pullPolicy): \
         IfNotPresent spares a registry round trip at every start and keeps pods starting on air-gapped nodes",
    ),
    (
        "container-ephemeral-storage-request-and-limit",
        "The services' root file systems are read-only and the databases write to their volumes; an \
         ephemeral-storage limit would count the container logs too and evict a busy pod",
    ),
    (
        "container-security-context-user-group-id",
        "PostgreSQL and RabbitMQ run as the official images' users (uid and gid 999), who own their data \
         directories; the services run as 65532",
    ),
    (
        "container-security-context-readonlyrootfilesystem",
        "The official PostgreSQL and RabbitMQ images write beside their data (sockets, generated \
         configuration) at paths their entrypoints choose; every other container's root is read-only",
    ),
    (
        "pod-probes-identical",
        "PostgreSQL's readiness and liveness both ask pg_isready, the one signal that the server takes \
         connections; liveness tolerates a minute of failures (6 × 10 s) before a restart",
    ),
    (
        "networkpolicy-targets-pod",
        "The policies of the CloudNativePG instances and the RabbitMQ cluster's nodes select pods that \
         those operators make, which kube-score cannot see among the objects this operator writes",
    ),
];
