use anyhow::Context;
use clap::Parser;
use query_service::{App, config::Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    analytics_kit::telemetry::init();
    let shutdown = analytics_kit::shutdown::on_signal();
    let app = App::build(config).await.context("cannot start the query service")?;
    tracing::info!(port = app.port(), "query service listening");
    analytics_kit::shutdown::bounded(&shutdown, app.run(shutdown.clone())).await
}
