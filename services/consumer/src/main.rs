use std::{io::IsTerminal, process::ExitCode};

use anyhow::Context;
use clap::Parser;
use consumer_service::{
    App, MIGRATOR,
    config::{Cli, Command, MaintenanceConfig, Output},
    rebuild, verify,
};
use secrecy::SecretString;
use serde::Serialize;

/// Exit status of `verify` on drift; 2 is any failure, as with diff(1).
const DRIFT: u8 = 1;
const FAILURE: u8 = 2;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome_file = match &cli.command {
        Command::Verify(config) => config.maintenance.outcome_file.clone(),
        Command::Rebuild(config) => config.outcome_file.clone(),
        Command::Serve(_) | Command::Migrate(_) => None,
    };
    let (code, outcome) = match run(cli.command).await {
        Ok(done) => done,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "failed");
            eprintln!("consumer-service: {error:#}");
            (ExitCode::from(FAILURE), format!("failed: {error:#}"))
        }
    };
    if let Some(path) = outcome_file
        && let Err(error) = std::fs::write(&path, outcome)
    {
        eprintln!("consumer-service: cannot write the outcome to {}: {error}", path.display());
    }
    code
}

/// The exit status, and the outcome in one line (for `--outcome-file`).
async fn run(command: Command) -> anyhow::Result<(ExitCode, String)> {
    match command {
        Command::Serve(config) => {
            analytics_kit::telemetry::init();
            let shutdown = analytics_kit::shutdown::on_signal();
            let app = App::build(config).await.context("cannot start the consumer")?;
            tracing::info!(port = app.port(), "consumer running");
            analytics_kit::shutdown::bounded(&shutdown, app.run(shutdown.clone())).await?;
        }
        Command::Migrate(config) => {
            analytics_kit::telemetry::init();
            analytics_kit::db::migrate(&config.url, &MIGRATOR, "consumer-service-migrate")
                .await
                .context("cannot migrate the read database")?;
            tracing::info!("read database migrated");
        }
        Command::Verify(config) => {
            analytics_kit::telemetry::init_on_stderr();
            let (read, write) = pools(&config.maintenance, "consumer-service-verify")?;
            let settings = verify::Settings {
                retention: config.maintenance.retention.processed_events_retention,
                settle: config.settle,
                max_differences: config.max_differences,
            };
            let report = verify::verify(&read, &write, &settings).await.context("cannot verify the read model")?;
            print(&report, config.maintenance.output, || report.summary())?;
            let code = if report.consistent() { ExitCode::SUCCESS } else { ExitCode::from(DRIFT) };
            return Ok((code, report.headline()));
        }
        Command::Rebuild(config) => {
            analytics_kit::telemetry::init_on_stderr();
            let (read, write) = pools(&config, "consumer-service-rebuild")?;
            let report = rebuild::rebuild(&read, &write, config.retention.processed_events_retention)
                .await
                .context("cannot rebuild the read model")?;
            print(&report, config.output, || report.summary())?;
            return Ok((ExitCode::SUCCESS, report.headline()));
        }
    }
    Ok((ExitCode::SUCCESS, String::new()))
}

/// The read and the write database, without the services' statement timeout.
fn pools(config: &MaintenanceConfig, name: &str) -> anyhow::Result<(sqlx::PgPool, sqlx::PgPool)> {
    let pool = |url: &SecretString| analytics_kit::db::maintenance_pool(url, 4, name);
    Ok((pool(&config.database.url)?, pool(&config.write_url)?))
}

/// The report on stdout: JSON, or its summary for people on a terminal.
fn print(report: &impl Serialize, output: Output, summary: impl FnOnce() -> String) -> anyhow::Result<()> {
    let text = match output {
        Output::Text => true,
        Output::Json => false,
        Output::Auto => std::io::stdout().is_terminal(),
    };
    if text {
        print!("{}", summary());
    } else {
        println!("{}", serde_json::to_string_pretty(report)?);
    }
    Ok(())
}
