//! What the reconciler needs to know from inside the pipeline: the depth of `order-events`, and the
//! query service's sync-status (with a read token from the API tokens Secret). Behind a trait, so that reconciler tests can script the answers.

pub use analytics_events::SyncStatusResponse as SyncStatus;
use analytics_events::{Stream, Topology};
use futures::future::BoxFuture;

use crate::{
    children,
    crd::{AnalyticsPipeline, ApiAuthentication},
};

pub trait Observer: Send + Sync {
    /// Ready messages on the pipeline's order queue (`order-events`); `None` if the broker cannot be asked.
    fn queue_depth<'a>(&'a self, pipeline: &'a AnalyticsPipeline) -> BoxFuture<'a, Option<i64>>;

    /// The query service's sync-status; `None` if it does not answer.
    fn sync_status<'a>(&'a self, pipeline: &'a AnalyticsPipeline) -> BoxFuture<'a, Option<SyncStatus>>;
}

/// The real observer: a passive declare of `order-events` on the pipeline's broker, and an HTTP GET of
/// the query service's sync-status. Either gives up after a few seconds; the reconciler then keeps the
/// current consumer count and leaves the lag as it was.
pub struct ClusterObserver {
    client: kube::Client,
    http: reqwest::Client,
    connect_to: Vec<ConnectTo>,
}

/// Reach `from` (an in-cluster `host:port`) at `to` instead, like curl's `--connect-to`: for an operator
/// that runs outside the cluster, where Service names do not resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectTo {
    pub from: String,
    pub to: String,
}

impl std::str::FromStr for ConnectTo {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let authority = |part: &str| match part.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(part.to_owned()),
            _ => Err(format!("`{part}` is not HOST:PORT")),
        };
        let (from, to) = s.split_once('=').ok_or_else(|| format!("`{s}` is not HOST:PORT=HOST:PORT"))?;
        Ok(Self { from: authority(from)?, to: authority(to)? })
    }
}

const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

impl ClusterObserver {
    pub fn new(client: kube::Client, connect_to: Vec<ConnectTo>) -> Self {
        let http = reqwest::Client::builder().timeout(TIMEOUT).build().expect("a plain HTTP client builds");
        Self { client, http, connect_to }
    }

    /// `url` with its host and port replaced when a `--connect-to` rule names them.
    fn redirect(&self, url: String) -> String {
        let Ok(mut parsed) = reqwest::Url::parse(&url) else { return url };
        let default_port = match parsed.scheme() {
            "amqp" => Some(5672),
            "amqps" => Some(5671),
            _ => parsed.port_or_known_default(),
        };
        let (Some(host), Some(port)) = (parsed.host_str(), parsed.port().or(default_port)) else { return url };
        let Some(rule) = self.connect_to.iter().find(|rule| rule.from == format!("{host}:{port}")) else {
            return url;
        };
        let (host, port) = rule.to.rsplit_once(':').expect("checked when parsed");
        if parsed.set_host(Some(host)).is_err() || parsed.set_port(port.parse().ok()).is_err() {
            return url;
        }
        parsed.into()
    }

    /// The value of `key` in the Secret `name` of the pipeline's namespace, if it can be read.
    async fn secret_value(&self, pipeline: &AnalyticsPipeline, name: String, key: &str) -> Option<String> {
        use kube::{Api, ResourceExt};
        let secrets: Api<k8s_openapi::api::core::v1::Secret> =
            Api::namespaced(self.client.clone(), &pipeline.namespace()?);
        let secret = secrets.get_opt(&name).await.ok()??;
        let bytes = secret.data?.remove(key)?;
        String::from_utf8(bytes.0).ok()
    }

    /// The AMQP URL the services use: from the user's Secret, or built from the generated credentials.
    async fn amqp_url(&self, pipeline: &AnalyticsPipeline) -> Option<String> {
        use kube::ResourceExt;
        match &pipeline.spec.rabbitmq.external {
            Some(external) => self.secret_value(pipeline, external.url.name.clone(), &external.url.key).await,
            None => {
                let password = self
                    .secret_value(
                        pipeline,
                        children::name(pipeline, children::CREDENTIALS),
                        children::RABBITMQ_PASSWORD_KEY,
                    )
                    .await?;
                Some(format!(
                    "amqp://{}:{password}@{}.{}.svc:{}/%2f",
                    children::broker::USER,
                    children::broker::host(pipeline),
                    pipeline.namespace()?,
                    children::broker::PORT
                ))
            }
        }
    }

    /// A token the query API accepts, if it asks for one: the first of the API tokens Secret's read key.
    async fn read_token(&self, pipeline: &AnalyticsPipeline) -> Option<String> {
        let tokens = self
            .secret_value(pipeline, children::name(pipeline, children::API_TOKENS), children::READ_TOKENS_KEY)
            .await?;
        children::first_token(&tokens).map(str::to_owned)
    }
}

impl Observer for ClusterObserver {
    fn queue_depth<'a>(&'a self, pipeline: &'a AnalyticsPipeline) -> BoxFuture<'a, Option<i64>> {
        Box::pin(async move {
            let url = self.redirect(self.amqp_url(pipeline).await?);
            let ca = match pipeline.spec.tls.as_ref().and_then(|tls| tls.ca_bundle.as_ref()) {
                Some(bundle) => Some(self.secret_value(pipeline, bundle.name.clone(), &bundle.key).await?),
                None => None,
            };
            let depth = async {
                let connection =
                    analytics_kit::amqp::connect_trusting(&url.into(), "analytics-operator queue depth", ca).await?;
                let channel = connection.create_channel().await?;
                let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
                let queue = channel
                    .queue_declare(
                        Topology::default().queue(Stream::Orders).into(),
                        passive,
                        lapin::types::FieldTable::default(),
                    )
                    .await?;
                drop(connection.close(200, "depth read".into()).await);
                lapin::Result::Ok(i64::from(queue.message_count()))
            };
            match tokio::time::timeout(TIMEOUT, depth).await {
                Ok(Ok(depth)) => Some(depth),
                Ok(Err(error)) => {
                    tracing::debug!(%error, "cannot read the queue depth");
                    None
                }
                Err(_) => {
                    tracing::debug!("the queue depth read timed out");
                    None
                }
            }
        })
    }

    fn sync_status<'a>(&'a self, pipeline: &'a AnalyticsPipeline) -> BoxFuture<'a, Option<SyncStatus>> {
        Box::pin(async move {
            use kube::ResourceExt;
            let url = self.redirect(format!(
                "http://{}.{}.svc:{}/api/analytics/sync-status",
                children::name(pipeline, "query"),
                pipeline.namespace()?,
                children::services::QUERY_PORT
            ));
            let mut request = self.http.get(&url);
            if pipeline.spec.api_authentication == ApiAuthentication::BearerToken {
                match self.read_token(pipeline).await {
                    Some(token) => request = request.bearer_auth(token),
                    None => tracing::warn!("no read token in the API tokens Secret; sync-status is asked without one"),
                }
            }
            let body = async { request.send().await?.error_for_status()?.json::<SyncStatus>().await };
            match body.await {
                Ok(body) => Some(body),
                Err(error) => {
                    tracing::warn!(%url, error = %error_chain(&error), "cannot read sync-status");
                    None
                }
            }
        })
    }
}

/// An error and its causes, `: `-separated (reqwest's own message leaves out why a request failed).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{ClusterObserver, ConnectTo};
    use crate::{
        children::fixtures::pipeline,
        crd::{AnalyticsPipelineSpec, ExternalRabbitmq, RabbitmqSpec, SecretKeyRef},
        fake_api::FakeApi,
    };

    #[tokio::test]
    async fn the_broker_url_comes_from_the_generated_credentials_or_the_users_secret() {
        let fake = FakeApi::default();
        // Secret data is base64 on the wire: "s3cret" and an external URL.
        fake.put(
            "/api/v1/namespaces/prod/secrets/shop-credentials",
            json!({"metadata": {"name": "shop-credentials"}, "data": {"rabbitmq-password": "czNjcmV0"}}),
        );
        fake.put(
            "/api/v1/namespaces/prod/secrets/mq",
            json!({"metadata": {"name": "mq"}, "data": {"url": "YW1xcDovL21xLmV4YW1wbGU6NTY3Mg=="}}),
        );
        let observer = ClusterObserver::new(fake.client(), Vec::new());

        let managed = pipeline(AnalyticsPipelineSpec::default());
        assert_eq!(
            observer.amqp_url(&managed).await.as_deref(),
            Some("amqp://analytics:s3cret@shop-rabbitmq.prod.svc:5672/%2f")
        );

        let external = pipeline(AnalyticsPipelineSpec {
            rabbitmq: RabbitmqSpec {
                external: Some(ExternalRabbitmq { url: SecretKeyRef { name: "mq".into(), key: "url".into() } }),
                ..RabbitmqSpec::default()
            },
            ..AnalyticsPipelineSpec::default()
        });
        assert_eq!(observer.amqp_url(&external).await.as_deref(), Some("amqp://mq.example:5672"));

        let missing = pipeline(AnalyticsPipelineSpec {
            rabbitmq: RabbitmqSpec {
                external: Some(ExternalRabbitmq { url: SecretKeyRef { name: "gone".into(), key: "url".into() } }),
                ..RabbitmqSpec::default()
            },
            ..AnalyticsPipelineSpec::default()
        });
        assert_eq!(
            observer.amqp_url(&missing).await,
            None,
            "no secret, no depth: the reconciler keeps the current count"
        );
    }

    #[tokio::test]
    async fn the_read_token_is_the_first_token_of_the_read_key() {
        let fake = FakeApi::default();
        let observer = ClusterObserver::new(fake.client(), Vec::new());
        let shop = pipeline(AnalyticsPipelineSpec::default());
        assert_eq!(observer.read_token(&shop).await, None, "no Secret yet");
        // "# rotated\n\nnew-token\nold-token\n", base64.
        fake.put(
            "/api/v1/namespaces/prod/secrets/shop-api-tokens",
            json!({"metadata": {"name": "shop-api-tokens"}, "data": {"read": "IyByb3RhdGVkCgpuZXctdG9rZW4Kb2xkLXRva2VuCg=="}}),
        );
        assert_eq!(observer.read_token(&shop).await.as_deref(), Some("new-token"));
    }

    #[tokio::test]
    async fn connect_to_rules_redirect_matching_addresses_only() {
        let rule = |s: &str| s.parse::<ConnectTo>();
        assert!(rule("shop-query.prod.svc:8081").is_err(), "no target");
        assert!(rule("shop-query.prod.svc=127.0.0.1:1").is_err(), "no port");
        assert!(rule("a:1=b:port").is_err());
        let observer = ClusterObserver::new(
            FakeApi::default().client(),
            vec![
                rule("shop-query.prod.svc:8081=127.0.0.1:40001").unwrap(),
                rule("mq.prod.svc:5672=[::1]:5673").unwrap(),
            ],
        );
        assert_eq!(
            observer.redirect("http://shop-query.prod.svc:8081/api/analytics/sync-status".into()),
            "http://127.0.0.1:40001/api/analytics/sync-status"
        );
        assert_eq!(observer.redirect("amqp://u:p@mq.prod.svc/%2f".into()), "amqp://u:p@[::1]:5673/%2f");
        assert_eq!(observer.redirect("amqp://u:p@mq.prod.svc:5671/%2f".into()), "amqp://u:p@mq.prod.svc:5671/%2f");
        assert_eq!(observer.redirect("http://other.prod.svc:8081/x".into()), "http://other.prod.svc:8081/x");
    }
}
