//! What the reconciler needs to know from inside the pipeline: the depth of `order-events`, and the
//! query service's sync-status. Behind a trait, so that reconciler tests can script the answers.

use futures::future::BoxFuture;

use crate::crd::AnalyticsPipeline;

/// The query service's view of how far behind the read model is.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncStatus {
    pub lag_seconds: Option<f64>,
    pub pending_events: i64,
    /// occurredAt of the newest applied event, as RFC 3339.
    pub last_processed_event: Option<String>,
}

pub trait Observer: Send + Sync {
    /// Ready messages on the pipeline's `order-events` queue; `None` if the broker cannot be asked.
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
}

const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

impl ClusterObserver {
    pub fn new(client: kube::Client) -> Self {
        let http = reqwest::Client::builder().timeout(TIMEOUT).build().expect("a plain HTTP client builds");
        Self { client, http }
    }

    /// The AMQP URL the services use: from the user's Secret, or built from the generated credentials.
    async fn amqp_url(&self, pipeline: &AnalyticsPipeline) -> Option<String> {
        use kube::{Api, ResourceExt};
        let namespace = pipeline.namespace()?;
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(self.client.clone(), &namespace);
        let read = |name: String, key: String| {
            let secrets = secrets.clone();
            async move {
                let secret = secrets.get_opt(&name).await.ok()??;
                let bytes = secret.data?.remove(&key)?;
                String::from_utf8(bytes.0).ok()
            }
        };
        match &pipeline.spec.rabbitmq.external {
            Some(external) => read(external.url.name.clone(), external.url.key.clone()).await,
            None => {
                let password = read(
                    crate::children::name(pipeline, crate::children::CREDENTIALS),
                    crate::children::RABBITMQ_PASSWORD_KEY.to_owned(),
                )
                .await?;
                let host = crate::children::broker::host(pipeline);
                Some(format!(
                    "amqp://{}:{password}@{host}.{namespace}.svc:{}/%2f",
                    crate::children::broker::USER,
                    crate::children::broker::PORT
                ))
            }
        }
    }
}

impl Observer for ClusterObserver {
    fn queue_depth<'a>(&'a self, pipeline: &'a AnalyticsPipeline) -> BoxFuture<'a, Option<i64>> {
        Box::pin(async move {
            let url = self.amqp_url(pipeline).await?;
            let depth = async {
                let connection = lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await?;
                let channel = connection.create_channel().await?;
                let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
                let queue =
                    channel.queue_declare("order-events".into(), passive, lapin::types::FieldTable::default()).await?;
                drop(connection.close(200, "depth read".into()).await);
                lapin::Result::Ok(i64::from(queue.message_count()))
            };
            match tokio::time::timeout(TIMEOUT, depth).await {
                Ok(Ok(depth)) => Some(depth),
                Ok(Err(error)) => {
                    tracing::debug!(%error, "cannot read the queue depth");
                    None
                }
                Err(_) => None,
            }
        })
    }

    fn sync_status<'a>(&'a self, pipeline: &'a AnalyticsPipeline) -> BoxFuture<'a, Option<SyncStatus>> {
        Box::pin(async move {
            use kube::ResourceExt;
            let url = format!(
                "http://{}.{}.svc:{}/api/analytics/sync-status",
                crate::children::name(pipeline, "query"),
                pipeline.namespace()?,
                crate::children::services::QUERY_PORT
            );
            let body: serde_json::Value =
                self.http.get(url).send().await.ok()?.error_for_status().ok()?.json().await.ok()?;
            Some(SyncStatus {
                lag_seconds: body["lagSeconds"].as_f64(),
                pending_events: body["pendingEvents"].as_i64().unwrap_or(0),
                last_processed_event: body["lastProcessedEventTimestamp"].as_str().map(str::to_owned),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::ClusterObserver;
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
        let observer = ClusterObserver::new(fake.client());

        let managed = pipeline(AnalyticsPipelineSpec::default());
        assert_eq!(
            observer.amqp_url(&managed).await.as_deref(),
            Some("amqp://analytics:s3cret@shop-rabbitmq.prod.svc:5672/%2f")
        );

        let external = pipeline(AnalyticsPipelineSpec {
            rabbitmq: RabbitmqSpec {
                managed: None,
                external: Some(ExternalRabbitmq { url: SecretKeyRef { name: "mq".into(), key: "url".into() } }),
            },
            ..AnalyticsPipelineSpec::default()
        });
        assert_eq!(observer.amqp_url(&external).await.as_deref(), Some("amqp://mq.example:5672"));

        let missing = pipeline(AnalyticsPipelineSpec {
            rabbitmq: RabbitmqSpec {
                managed: None,
                external: Some(ExternalRabbitmq { url: SecretKeyRef { name: "gone".into(), key: "url".into() } }),
            },
            ..AnalyticsPipelineSpec::default()
        });
        assert_eq!(
            observer.amqp_url(&missing).await,
            None,
            "no secret, no depth: the reconciler keeps the current count"
        );
    }
}
