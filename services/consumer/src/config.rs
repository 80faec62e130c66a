//! Command-line and environment configuration. Every flag has an environment variable; `--help` lists both.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;

#[derive(Debug, Parser)]
#[command(
    name = "consumer-service",
    version,
    about = "Applies order and product events to the analytics read model, exactly once."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume both queues, with /healthz, /readyz and /metrics on --listen.
    Serve(ServeConfig),
    /// Apply the read database's migrations and exit. Safe to run concurrently.
    Migrate(DatabaseConfig),
    /// Compare every view, key by key, with the write database's history, at a consistent cut.
    /// Exit status: 0 when they are equal, 1 on drift, 2 when the comparison could not be made.
    Verify(VerifyConfig),
    /// Build every view afresh from the write database into shadow tables, catch up on the orders
    /// applied meanwhile, and swap them in atomically, while orders flow and consumers apply them.
    Rebuild(MaintenanceConfig),
}

/// What `verify` and `rebuild` read: both databases, and the consumers' hash retention.
#[derive(Debug, Clone, Args)]
pub struct MaintenanceConfig {
    #[command(flatten)]
    pub database: DatabaseConfig,

    /// PostgreSQL URL of the write database, whose history is read (never written).
    #[arg(long = "write-database-url", env = "WRITE_DATABASE_URL", hide_env_values = true)]
    pub write_url: SecretString,

    #[command(flatten)]
    pub retention: Retention,

    /// `json`, `text` (a summary for people), or `auto`: text on a terminal, JSON elsewhere.
    #[arg(long, value_enum, default_value_t = Output::Auto)]
    pub output: Output,

    /// A file that gets the outcome in one line when the command ends (the report's headline, or the
    /// error), for an orchestrator: Kubernetes shows `/dev/termination-log` in the pod's status.
    #[arg(long, env = "OUTCOME_FILE")]
    pub outcome_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct VerifyConfig {
    #[command(flatten)]
    pub maintenance: MaintenanceConfig,

    /// How long a product that the catalog replica has at an older version may take to catch up
    /// before it counts as drift (product events are not covered by the cut that orders are).
    #[arg(long, env = "VERIFY_SETTLE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub settle: Duration,

    /// How many differences the report lists; the rest are counted.
    #[arg(long, env = "VERIFY_MAX_DIFFERENCES", default_value_t = 100)]
    pub max_differences: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Auto,
    Json,
    Text,
}

#[derive(Debug, Clone, Args)]
pub struct Retention {
    /// How long applied-message hashes are kept for idempotency.
    #[arg(long, env = "PROCESSED_EVENTS_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub processed_events_retention: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// PostgreSQL URL of the read database.
    #[arg(long = "database-url", env = "READ_DATABASE_URL", hide_env_values = true)]
    pub url: SecretString,

    /// Largest number of connections in the pool.
    #[arg(long = "database-max-connections", env = "READ_DATABASE_MAX_CONNECTIONS", default_value_t = 4)]
    pub max_connections: u32,
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address of the operational endpoints (/healthz, /readyz, /metrics).
    #[arg(long, env = "CONSUMER_LISTEN", default_value = "0.0.0.0:8082")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub database: DatabaseConfig,

    /// AMQP URL of the RabbitMQ broker.
    #[arg(long, env = "AMQP_URL", hide_env_values = true)]
    pub amqp_url: SecretString,

    /// Prefix for exchange and queue names, to share one broker between pipelines.
    #[arg(long, env = "TOPOLOGY_PREFIX", default_value = "")]
    pub topology_prefix: String,

    /// Unacknowledged messages the broker may hand this consumer per queue (basic_qos).
    #[arg(long, env = "CONSUMER_PREFETCH", default_value_t = 500)]
    pub prefetch: u16,

    /// Most messages applied in one transaction.
    #[arg(long, env = "CONSUMER_BATCH_SIZE", default_value_t = 250)]
    pub batch_size: usize,

    #[command(flatten)]
    pub retention: Retention,
}
