//! Command-line and environment configuration. Every flag has an environment variable; `--help` lists both.

use std::{net::SocketAddr, time::Duration};

use analytics_kit::http::AuthConfig;
use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;

#[derive(Debug, Parser)]
#[command(
    name = "command-service",
    version,
    about = "The write side of the analytics pipeline: products, orders and the outbox relay."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API, with the outbox relay running inside unless --no-relay is given.
    Serve(ServeConfig),
    /// Run only the outbox relay, e.g. as its own Deployment.
    Relay(RelayProcessConfig),
    /// Apply the write database's migrations and exit. Safe to run concurrently.
    Migrate(DatabaseConfig),
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address the HTTP API listens on.
    #[arg(long, env = "COMMAND_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Address of /healthz, /readyz and /metrics, apart from the API so that only the kubelet and
    /// monitoring need reach them.
    #[arg(long, env = "COMMAND_ADMIN_LISTEN", default_value = "0.0.0.0:8090")]
    pub admin_listen: SocketAddr,

    /// Do not run the outbox relay in this process (run `command-service relay` elsewhere). The broker
    /// is then neither needed nor checked.
    #[arg(long, env = "NO_RELAY")]
    pub no_relay: bool,

    #[command(flatten)]
    pub auth: AuthConfig,

    #[command(flatten)]
    pub database: DatabaseConfig,

    #[command(flatten)]
    pub relay: RelayConfig,
}

#[derive(Debug, Clone, Args)]
pub struct RelayProcessConfig {
    /// Address of the relay's /healthz, /readyz and /metrics.
    #[arg(long, env = "RELAY_LISTEN", default_value = "0.0.0.0:8083")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub database: DatabaseConfig,

    #[command(flatten)]
    pub relay: RelayConfig,
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// PostgreSQL URL of the write database.
    #[arg(long = "database-url", env = "WRITE_DATABASE_URL", hide_env_values = true)]
    pub url: SecretString,

    /// Largest number of connections in the pool.
    #[arg(long = "database-max-connections", env = "WRITE_DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub max_connections: u32,
}

#[derive(Debug, Clone, Args)]
pub struct RelayConfig {
    /// AMQP URL of the RabbitMQ broker; required wherever the relay runs.
    #[arg(long, env = "AMQP_URL", hide_env_values = true)]
    pub amqp_url: Option<SecretString>,

    /// Prefix for exchange and queue names, to share one broker between pipelines.
    #[arg(long, env = "TOPOLOGY_PREFIX", default_value = "")]
    pub topology_prefix: String,

    /// Most outbox rows published per batch.
    #[arg(long, env = "RELAY_BATCH_SIZE", default_value_t = 500)]
    pub batch_size: i64,

    /// Longest wait for the broker to take and confirm a batch. The relay's claim on the batch's rows
    /// lasts as long, plus 2 s; a relay that stalls longer loses it, and the rows are published again.
    #[arg(long, env = "RELAY_CONFIRM_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub confirm_timeout: Duration,

    /// Longest poll interval, for rows written by other processes (commits here wake the relay at once);
    /// polling starts at 5 ms after activity and slows down to this while idle.
    #[arg(long, env = "RELAY_POLL_INTERVAL", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,
}
