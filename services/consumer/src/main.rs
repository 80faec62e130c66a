use anyhow::Context;
use clap::Parser;
use consumer_service::{
    App, MIGRATOR,
    config::{Cli, Command},
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    analytics_kit::telemetry::init();
    match cli.command {
        Command::Serve(config) => {
            let shutdown = analytics_kit::shutdown::on_signal();
            let app = App::build(config).await.context("cannot start the consumer")?;
            tracing::info!(port = app.port(), "consumer running");
            app.run(shutdown).await
        }
        Command::Migrate(config) => {
            analytics_kit::db::migrate(&config.url, &MIGRATOR, "consumer-service-migrate")
                .await
                .context("cannot migrate the read database")?;
            tracing::info!("read database migrated");
            Ok(())
        }
    }
}
