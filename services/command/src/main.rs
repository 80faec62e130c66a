use anyhow::Context;
use clap::Parser;
use command_service::{
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
            let app = App::build(config).await.context("cannot start the command service")?;
            tracing::info!(port = app.port(), "command service listening");
            analytics_kit::shutdown::bounded(&shutdown, app.run(shutdown.clone())).await
        }
        Command::Relay(config) => {
            let shutdown = analytics_kit::shutdown::on_signal();
            let relay = command_service::app::run_relay(config, shutdown.clone());
            analytics_kit::shutdown::bounded(&shutdown, relay).await.context("cannot run the relay")
        }
        Command::Migrate(config) => {
            analytics_kit::db::migrate(&config.url, &MIGRATOR, "command-service-migrate")
                .await
                .context("cannot migrate the write database")?;
            tracing::info!("write database migrated");
            Ok(())
        }
    }
}
