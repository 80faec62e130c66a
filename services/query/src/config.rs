//! Command-line and environment configuration. Every flag has an environment variable; `--help` lists both.

use std::net::SocketAddr;

use analytics_kit::http::AuthConfig;
use clap::Parser;
use secrecy::SecretString;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "query-service",
    version,
    about = "Serves analytics from the read database, and how far behind it is."
)]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long, env = "QUERY_LISTEN", default_value = "0.0.0.0:8081")]
    pub listen: SocketAddr,

    /// Address of /healthz, /readyz and /metrics, apart from the API so that only the kubelet and
    /// monitoring need reach them.
    #[arg(long, env = "QUERY_ADMIN_LISTEN", default_value = "0.0.0.0:8091")]
    pub admin_listen: SocketAddr,

    #[command(flatten)]
    pub auth: AuthConfig,

    /// PostgreSQL URL of the read database (the only database this service reads).
    #[arg(long = "database-url", env = "READ_DATABASE_URL", hide_env_values = true)]
    pub database_url: SecretString,

    /// Largest number of connections in the pool.
    #[arg(long = "database-max-connections", env = "READ_DATABASE_MAX_CONNECTIONS", default_value_t = 8)]
    pub database_max_connections: u32,

    /// AMQP URL of the broker, read only for queue depths in sync-status.
    #[arg(long, env = "AMQP_URL", hide_env_values = true)]
    pub amqp_url: SecretString,

    /// Prefix for exchange and queue names, to share one broker between pipelines.
    #[arg(long, env = "TOPOLOGY_PREFIX", default_value = "")]
    pub topology_prefix: String,
}
