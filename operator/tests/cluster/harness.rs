//! The pieces the control-plane tests share: the API server that `make test` starts
//! (hack/control-plane.sh), a namespace per test with the chart's RBAC installed by a real helm, the
//! operator binary running as the chart's ServiceAccount, and the API server's audit log of writes.

use std::{
    fs,
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

use analytics_operator::crd::AnalyticsPipeline;
use analytics_testkit::{env, eventually, run, tool};
use k8s_openapi::{
    api::{
        authentication::v1::{TokenRequest, TokenRequestSpec},
        core::v1::{Pod, ServiceAccount},
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::{Value, json};
use uuid::Uuid;

pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The API server of this test run, as its administrator.
pub struct Cluster {
    pub kubeconfig: PathBuf,
    pub audit_log: PathBuf,
    pub client: Client,
}

impl Cluster {
    pub async fn connect() -> Self {
        let kubeconfig = PathBuf::from(env("TEST_KUBECONFIG"));
        let audit_log = PathBuf::from(env("TEST_KUBE_AUDIT_LOG"));
        let client = client_for(&kubeconfig).await;
        Self { kubeconfig, audit_log, client }
    }

    /// Runs kubectl (a real one, `KUBECTL`) as the administrator; returns stdout, or panics with stderr.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        run(&mut command(&tool("KUBECTL"), args, &self.kubeconfig), stdin)
    }

    /// The CRDs of CloudNativePG and the RabbitMQ cluster operator (`hack/tools.sh ha-crds`), once served.
    /// Cluster-scoped and shared by the tests: applying them again is a no-op.
    pub async fn install_ha_crds(&self) {
        self.kubectl(&["apply", "--server-side", "--force-conflicts", "-f", &env("HA_CRDS")], None);
        for crd in ["crd/clusters.postgresql.cnpg.io", "crd/rabbitmqclusters.rabbitmq.com"] {
            // `kubectl wait` fails at once on a CRD whose status is not written yet.
            let args = ["wait", "--for=condition=Established", "--timeout=10s", crd];
            eventually(TIMEOUT, &format!("{crd} established"), || async {
                analytics_testkit::try_run(&mut command(&tool("KUBECTL"), &args, &self.kubeconfig), None).ok()
            })
            .await;
        }
    }

    /// Runs helm (a real one, `HELM`) as the administrator.
    pub fn helm(&self, args: &[&str]) -> String {
        run(&mut command(&tool("HELM"), args, &self.kubeconfig), None)
    }

    /// A new namespace with the chart installed into it (its ServiceAccount, ClusterRole and binding), and a
    /// kubeconfig that authenticates as that ServiceAccount with a token from the TokenRequest API.
    pub async fn tenant(&self, prefix: &str) -> Tenant {
        self.tenant_with(prefix, false).await
    }

    /// A tenant whose chart is installed with `operator.watchNamespace` set to its own namespace: the
    /// operator then has Roles there and no cluster-wide permission at all.
    pub async fn namespaced_tenant(&self, prefix: &str) -> Tenant {
        self.tenant_with(prefix, true).await
    }

    async fn tenant_with(&self, prefix: &str, namespaced: bool) -> Tenant {
        let namespace = format!("{prefix}-{}", &Uuid::new_v4().simple().to_string()[..8]);
        // The release name is the namespace: the chart's ClusterRole is named after it.
        let watch = format!("operator.watchNamespace={namespace}");
        let extra: &[&str] = if namespaced { &["--set", &watch] } else { &[] };
        self.install_chart(&namespace, &namespace, extra);
        let service_account = format!("{namespace}-operator");
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec { expiration_seconds: Some(3600), ..TokenRequestSpec::default() },
            ..TokenRequest::default()
        };
        let token = accounts
            .create_token_request(&service_account, &PostParams::default(), &request)
            .await
            .expect("a token for the chart's ServiceAccount")
            .status
            .expect("a TokenRequest answers with a status")
            .token;
        let dir = std::env::temp_dir().join(format!("analytics-cluster-{namespace}"));
        fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("operator.kubeconfig");
        let admin = Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let cluster = admin.clusters[0].cluster.clone().unwrap();
        let config = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "test", "cluster": {
                "server": cluster.server, "certificate-authority": cluster.certificate_authority}}],
            "users": [{"name": "operator", "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "operator", "namespace": namespace}}],
            "current-context": "test",
        });
        fs::write(&kubeconfig, serde_json::to_string(&config).unwrap()).unwrap();
        Tenant { username: format!("system:serviceaccount:{namespace}:{service_account}"), namespace, kubeconfig, dir }
    }

    /// `helm install`, one at a time: the first one creates the CRD from the chart's crds/.
    pub fn install_chart(&self, release: &str, namespace: &str, extra: &[&str]) -> String {
        static HELM: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = HELM.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let chart = repo().join("charts/analytics-pipeline");
        let mut args =
            vec!["install", release, chart.to_str().unwrap(), "--namespace", namespace, "--create-namespace"];
        args.extend_from_slice(extra);
        self.helm(&args)
    }

    /// The byte offset where the audit log ends now: writes after it are "from now on".
    pub fn audit_mark(&self) -> u64 {
        fs::metadata(&self.audit_log).map(|m| m.len()).unwrap_or(0)
    }

    /// Every write request `username` made after `mark`, as audit events (JSON), lease renewals excluded.
    pub fn writes_since(&self, mark: u64, username: &str) -> Vec<Value> {
        let mut file = fs::File::open(&self.audit_log).unwrap();
        file.seek(SeekFrom::Start(mark)).unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        text.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|event| event["stage"] == "ResponseComplete" && event["user"]["username"] == username)
            .filter(|event| event["objectRef"]["resource"] != "leases")
            .collect()
    }
}

/// A namespace of its own for one test, and the operator's identity in it.
pub struct Tenant {
    pub namespace: String,
    /// The ServiceAccount's user name, as the audit log records it.
    pub username: String,
    pub kubeconfig: PathBuf,
    pub dir: PathBuf,
}

impl Drop for Tenant {
    /// The token and the operators' logs go with the test (a failing test has printed the logs).
    fn drop(&mut self) {
        drop(fs::remove_dir_all(&self.dir));
    }
}

pub async fn client_for(kubeconfig: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    Client::try_from(config).unwrap()
}

/// The operator binary, running as the tenant's ServiceAccount and watching only the tenant's namespace.
/// Its log goes to a file that is printed if the test fails.
pub struct Operator {
    child: Child,
    pub identity: String,
    metrics_port: u16,
    log: PathBuf,
}

impl Operator {
    pub fn start(tenant: &Tenant, identity: &str, extra: &[&str]) -> Self {
        let metrics_port = free_port();
        let log = tenant.dir.join(format!("operator-{identity}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_operator"))
            .args(["--namespace", &tenant.namespace, "--lease-namespace", &tenant.namespace, "--identity", identity])
            .args(["--listen", &format!("127.0.0.1:{metrics_port}")])
            .args(extra)
            .env("KUBECONFIG", &tenant.kubeconfig)
            .env("RUST_LOG", "info,analytics_operator=debug,kube_lease_manager=debug")
            .env_remove("WATCH_NAMESPACE")
            .stdout(fs::File::create(&log).unwrap())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("the operator binary starts");
        Self { child, identity: identity.to_owned(), metrics_port, log }
    }

    /// Reconciles this replica has finished (`operator_reconcile_duration_seconds_count` on its /metrics).
    /// Panics if the replica does not answer within 10 s: a dead replica must not pass for an idle one.
    pub async fn reconciles(&self) -> u64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|line| line.strip_prefix("operator_reconcile_duration_seconds_count "))
            .and_then(|value| value.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no reconcile count in the metrics of {}:\n{text}", self.identity))
    }

    /// This replica's /metrics; panics if it does not answer within 10 s.
    pub async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        eventually(Duration::from_secs(10), &format!("/metrics of {}", self.identity), || async {
            reqwest::get(&url).await.ok()?.error_for_status().ok()?.text().await.ok()
        })
        .await
    }

    /// SIGTERM, as Kubernetes stops a pod; waits for the process to exit and returns whether it exited 0.
    pub fn terminate(&mut self) -> bool {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill -TERM {}", self.child.id());
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(std::time::Instant::now() < deadline, "{} did not stop within 20 s of SIGTERM", self.identity);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        drop(self.child.kill());
        drop(self.child.wait());
        if std::thread::panicking() {
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- operator {} log (last 60 lines) ---", self.identity);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// Creates `pipeline` (YAML or JSON text) in `namespace` as the administrator, and returns it.
pub async fn create_pipeline(client: &Client, namespace: &str, pipeline: Value) -> AnalyticsPipeline {
    let api: Api<AnalyticsPipeline> = Api::namespaced(client.clone(), namespace);
    let pipeline: AnalyticsPipeline = serde_json::from_value(pipeline).unwrap();
    api.create(&PostParams::default(), &pipeline).await.expect("the API server accepts the pipeline")
}

/// Polls the pipeline until `check` passes on it; returns it.
pub async fn pipeline_until(
    client: &Client,
    namespace: &str,
    name: &str,
    what: &str,
    check: impl Fn(&AnalyticsPipeline) -> bool,
) -> AnalyticsPipeline {
    let api: Api<AnalyticsPipeline> = Api::namespaced(client.clone(), namespace);
    eventually(TIMEOUT, what, || async { api.get(name).await.ok().filter(|p| check(p)) }).await
}

/// The status of condition `type_` on a pipeline ("True", "False"), if it is set.
pub fn condition(pipeline: &AnalyticsPipeline, type_: &str) -> Option<String> {
    let status = pipeline.status.as_ref()?;
    status.conditions.iter().find(|c| c.type_ == type_).map(|c| c.status.clone())
}

/// What a kubelet would report: every pod of `namespace` that is not yet Ready becomes Running and Ready.
/// There are no nodes here, so the ReplicaSet and StatefulSet controllers see this and update their
/// objects' status, and the Deployments turn Available.
pub async fn make_pods_ready(client: &Client, namespace: &str) -> usize {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let now = Timestamp::now().to_string();
    let mut made = 0;
    for pod in pods.list(&ListParams::default()).await.unwrap() {
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|conditions| conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if ready || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let condition = |type_: &str| json!({"type": type_, "status": "True", "lastTransitionTime": now});
        let status = json!({"status": {
            "phase": "Running",
            "startTime": now,
            "conditions": [condition("PodScheduled"), condition("Initialized"), condition("ContainersReady"),
                           condition("Ready")],
        }});
        pods.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap_or_else(|e| panic!("cannot set the status of pod {}: {e}", pod.name_any()));
        made += 1;
    }
    made
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `program` with `args`, talking to the cluster as `kubeconfig`, with caches private to the test run.
pub fn command(program: &Path, args: &[&str], kubeconfig: &Path) -> Command {
    let mut command = Command::new(program);
    command
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        // kubectl's discovery cache: the API changes as tests add CRDs.
        .env("KUBECACHEDIR", std::env::temp_dir().join("analytics-kube-cache"))
        .env("HELM_CACHE_HOME", std::env::temp_dir().join("analytics-helm-cache"))
        .env("HELM_CONFIG_HOME", std::env::temp_dir().join("analytics-helm-config"))
        .env("HELM_DATA_HOME", std::env::temp_dir().join("analytics-helm-data"));
    command
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
