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
            let pool = analytics_kit::db::pool(&config.url, 1, "consumer-service-migrate")?;
            MIGRATOR.run(&pool).await.context("cannot migrate the read database")?;
            tracing::info!("read database migrated");
            Ok(())
        }
    }
}
